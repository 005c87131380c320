"""The benchmark itself still runs (its numbers are not judged here: no timing asserts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args, timeout=400):
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_quick_benchmark_runs_and_reports(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("threadpoolctl")
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--reps", "1", "--min-time", "0.001", "--json", out, "--png", tmp_path / "b.png")
    assert proc.returncode == 0, proc.stderr
    assert "targets:" in proc.stdout and "/torch" in proc.stdout
    # the table is printed once, row by row (issue 12: it used to print twice)
    assert proc.stdout.count("sequence T=3 B=1 I=1 H=1 float32") == 1
    data = json.loads(out.read_text())
    kinds = {r["case"]["kind"] for r in data["results"]}
    assert kinds >= {"sequence", "train"}
    if data["machine"]["via"] == "api":
        assert "stream" in kinds
    for r in data["results"]:
        assert r["median_s"]["nplstm"] > 0 and r["median_s"]["torch"] > 0 and r["ratio_torch"] > 0
        if r["case"]["kind"] != "stream":
            assert r["floor_gflops"] > 0 and 0 < r["floor_fraction"]
    targets = {t["target"].split(" (")[0] for t in data["targets"]}
    assert "tiny seed case vs torch" in targets
    if data["machine"]["numba_kernel"]:
        assert "training step T=100 B=16 H=64 float32 vs torch autograd" in targets
        assert all("numpy" in r["median_s"] for r in data["results"])  # the NumPy-only path is timed alongside
        assert "serving T=52 B=1 H=32 float32 vs onnxruntime per call" in targets
    if "matplotlib" in sys.modules or __import__("importlib").util.find_spec("matplotlib"):
        assert (tmp_path / "b.png").stat().st_size > 1000

    # --markdown RUN.json: the README's table from a saved run, one row per result, the CPU named
    proc = run_bench("--markdown", out, timeout=60)
    assert proc.returncode == 0, proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(data["results"]) and table[0].startswith("| case | threads | nplstm | / torch")
    assert data["machine"]["cpu"] in proc.stdout and "serving (per call) T=52 B=1 I=1 H=32" in proc.stdout

    # --compare OLD NEW: per-row speedups between two saved runs, without running
    old = json.loads(out.read_text())
    for r in old["results"]:
        r["median_s"] = {k: 2 * v for k, v in r["median_s"].items()}
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    proc = run_bench("--compare", old_path, out, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("sequence T=3 ")]
    assert len(lines) == 1 and "2.00x" in lines[0]


def test_benchmark_without_threadpoolctl_says_so(tmp_path):
    """Without threadpoolctl the quick run still works and says BLAS threads are not limited."""
    pytest.importorskip("torch")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "threadpoolctl.py").write_text("raise ImportError('threadpoolctl blocked for this test')\n")
    env = dict(__import__("os").environ, PYTHONPATH=f"{blocker}:{ROOT / 'src'}")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--reps", "1", "--min-time", "0.001", "--threads", "1", "--json", tmp_path / "b.json", "--no-plot"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "threadpoolctl is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_packed_engine_benchmark_runs(tmp_path):
    """python -m bench.packed: the packed engine alone, against onnxruntime and torch, with the machine's FMA peak."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("numba")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.packed", "--quick", "--reps", "1", "--min-time", "0.001"], cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "FMA peak" in proc.stdout and "GFLOP/s per core" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:2] in (["1", "64"], ["4", "64"])]
    assert len(rows) == 2
    for row in rows:
        assert float(row[-1]) < 1e-5  # max |difference| from onnxruntime's outputs
