"""Every ```python block of README.md and docs/**/*.md runs as written, and so does the command line's sh block."""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README] + sorted(DOCS.rglob("*.md"))
CLI_PAGE = DOCS / "guide" / "cli.md"

# The README's first lines: the two commands that set up a fresh machine and run the tests.
FIRST_LINES = """# nplstm

```sh
python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m nplstm demo
.venv/bin/python -m pytest
```
"""


def python_blocks():
    for page in PAGES:
        name = page.relative_to(ROOT).as_posix()
        for k, code in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)):
            yield pytest.param(page, code, id=f"{name}:{k}")


BLOCKS = list(python_blocks())


def missing_modules(code):
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


@pytest.mark.parametrize("page, code", BLOCKS)
def test_python_block_runs(page, code, tmp_path, monkeypatch):
    missing = missing_modules(code)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(page), "exec"), {"__name__": "__main__"})


def test_blocks_are_found():
    """The README and the guides hold runnable examples; a fence typo would silently drop them."""
    pages = {page.relative_to(ROOT).as_posix() for page, _ in (p.values for p in BLOCKS)}
    assert {"README.md", "docs/guide/lstm.md", "docs/guide/training.md", "docs/guide/deploy.md"} <= pages
    assert len(BLOCKS) >= 15


def test_readme_opens_with_the_two_commands():
    assert README.read_text().startswith(FIRST_LINES)


def test_readme_is_short():
    """The README introduces; the details live in docs/."""
    assert len(README.read_bytes()) < 8 * 1024


def test_api_index_names_every_public_name():
    """docs/api/index.md's table lists every name `nplstm` exports."""
    import nplstm

    table = (DOCS / "api" / "index.md").read_text().split("::: nplstm", 1)[0]
    listed = set(re.findall(r"^\| ([^|]+) \|", table, flags=re.M))
    names = {name.strip(" `") for cell in listed for name in cell.split(",")}
    assert set(nplstm.__all__) <= names, set(nplstm.__all__) - names


def test_every_page_is_in_the_nav():
    """mkdocs --strict fails on a page missing from nav too; this says which without building the site."""
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        assert page.relative_to(DOCS).as_posix() in nav, page


def test_command_line_block_runs(tmp_path):
    """Each line of the Command line page's first sh block, in order, in a fresh folder."""
    block = re.search(r"```sh\n(.*?)```", CLI_PAGE.read_text(), flags=re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    if importlib.util.find_spec("matplotlib") is None:
        lines = [line for line in lines if not line.startswith("nplstm plot")]
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    for line in lines:
        proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{line}\n{proc.stderr}"
    assert (tmp_path / "sine.npz").exists() and (tmp_path / "h.npy").exists()
    assert np.load(tmp_path / "h.npy").shape == (40, 16)
