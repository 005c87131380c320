"""The benchmark itself still runs (its numbers are not judged here: no timing asserts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_runs_and_reports(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("threadpoolctl")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--reps", "1", "--min-time", "0.001", "--json", str(out), "--png", str(tmp_path / "b.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "targets:" in proc.stdout and "/torch" in proc.stdout
    data = json.loads(out.read_text())
    kinds = {r["case"]["kind"] for r in data["results"]}
    assert kinds == {"sequence", "stream"}
    for r in data["results"]:
        assert r["median_s"]["nplstm"] > 0 and r["median_s"]["torch"] > 0 and r["ratio_torch"] > 0
        if r["case"]["kind"] == "sequence":
            assert r["gemm_gflops"] > 0 and r["peak_extra_bytes"] >= 0
    assert {t["target"].split(" (")[0] for t in data["targets"]} >= {"tiny seed case vs torch", "step H=64 vs one torch call"}
    if "matplotlib" in sys.modules or __import__("importlib").util.find_spec("matplotlib"):
        assert (tmp_path / "b.png").stat().st_size > 1000
