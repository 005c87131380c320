"""A Griffe extension: nplstm's docstrings are numpydoc with reST markup; show it as Markdown.

- roles (``:class:`~nplstm.stack.StackedLSTM```, ``:func:`fit```, ``:meth:`forward```, ...)
  become links: the name is resolved in the docstring's own scope, as Sphinx would, and the link
  is optional (a name that is not rendered, e.g. a private one, stays code without a warning);
- simple tables (``=====  =====`` borders) become Markdown tables;
- a paragraph ending in ``::`` introduces an indented code block: the colons become one.

Only the rendering changes; the source docstrings stay reST, as numpydoc expects.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`<>]+?)(\(\))?`")
BORDER = re.compile(r"^( *)=+( +=+)+ *$")


def resolve(obj: griffe.Object, name: str) -> str:
    if name.startswith("nplstm."):
        return name
    head, _, rest = name.partition(".")
    try:
        full = obj.resolve(head)
    except Exception:  # noqa: BLE001 - an unresolvable name stays code
        return name
    return f"{full}.{rest}" if rest else full


def roles(obj: griffe.Object, text: str) -> str:
    def link(m: re.Match[str]) -> str:
        tilde, name, call = m.group(1), m.group(2).strip(), m.group(3) or ""
        title = (name.rsplit(".", 1)[-1] if tilde else name) + call
        return f'<autoref identifier="{html.escape(resolve(obj, name))}" optional><code>{html.escape(title)}</code></autoref>'

    return ROLE.sub(link, text)


def tables(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    k = 0
    while k < len(lines):
        m = BORDER.match(lines[k])
        if not m:
            out.append(lines[k])
            k += 1
            continue
        indent, border = len(m.group(1)), lines[k]
        starts = [s.start() for s in re.finditer(r"=+", border)]
        rows: list[list[str]] = []
        header: list[str] | None = None
        j, ended = k + 1, False
        while j < len(lines) and not ended:
            if BORDER.match(lines[j]):
                # a border followed by a blank line (or the end) closes the table; any other closes the header
                ended = j + 1 == len(lines) or not lines[j + 1].strip()
                if not ended and header is None and len(rows) == 1:
                    header, rows = rows[0], []
            elif lines[j].strip():
                cells = [lines[j][a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
                if rows and not cells[0]:
                    rows[-1] = [f"{p} {c}".strip() for p, c in zip(rows[-1], cells)]
                else:
                    rows.append(cells)
            j += 1
        if not ended or not rows:
            out.append(lines[k])
            k += 1
            continue
        if header is None:
            header = [""] * len(starts)
        pad = " " * indent
        out.append("")
        out.append(pad + "| " + " | ".join(header) + " |")
        out.append(pad + "|" + "---|" * len(starts))
        out.extend(pad + "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows)
        out.append("")
        k = j
    return "\n".join(out)


def literal_blocks(text: str) -> str:
    return re.sub(r"(\S)::\n\n", r"\1:\n\n", re.sub(r"\n *::\n\n", "\n\n", text))


class RstMarkup(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = roles(obj, literal_blocks(tables(obj.docstring.value)))
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)  # type: ignore[arg-type]

        walk(pkg)
