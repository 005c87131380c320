"""The command line: `python -m nplstm ...` as a user runs it."""

import subprocess
import sys

from nplstm.cli import main


def test_demo_prints_all_states_and_the_classic_number(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Random weights" in out and "Classic explicit weights" in out
    assert out.count("h[2]") == 2 and out.count("final c") == 2
    assert "final h =  0.7369859552" in out
    assert "h[0] =  0.1552874607" in out  # σ(0.6)·tanh(σ(0.6)·tanh(0.4)), see test_layer


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "nplstm", "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "0.7369859552" in proc.stdout
