"""The command line as a user runs it: every subcommand, exit codes, messages."""

import json
import subprocess
import sys

import numpy as np
import pytest

from nplstm import SequenceModel, StackedLSTM
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


@pytest.fixture
def files(tmp_path, rng):
    stack = StackedLSTM(2, 3, num_layers=2, seed=0)
    x = rng.normal(size=(5, 2))
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    np.save(tmp_path / "x.npy", x)
    return {"stack": stack, "x": x, "npz": stack.save(tmp_path / "w.npz"), "dir": tmp_path}


def test_run_prints_final_states_and_writes_outputs(files, capsys):
    out_path = files["dir"] / "out.npy"
    assert main(["run", "--weights", str(files["npz"]), "--input", str(files["dir"] / "x.csv"), "--out", str(out_path)]) == 0
    printed = capsys.readouterr().out
    outputs, (h, c) = files["stack"].forward(files["x"])
    np.testing.assert_allclose(np.load(out_path), outputs, rtol=1e-15)
    assert f"{h[-1, 0]:.8f}" in printed and "final c =" in printed
    csv_out = files["dir"] / "out.csv"
    assert main(["run", "--weights", str(files["npz"]), "--input", str(files["dir"] / "x.npy"), "--out", str(csv_out)]) == 0
    np.testing.assert_allclose(np.loadtxt(csv_out, delimiter=","), outputs, rtol=1e-15)


def test_run_with_torch_and_onnx_weights(files, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from nplstm.interop import to_onnx, to_torch_state_dict

    stack = files["stack"]
    torch.save(to_torch_state_dict(stack), files["dir"] / "w.pt")
    to_onnx(stack, files["dir"] / "w.onnx", dtype=np.float64)
    outs = {}
    for suffix in ("pt", "onnx"):
        path = files["dir"] / f"out_{suffix}.npy"
        assert main(["run", "--weights", str(files["dir"] / f"w.{suffix}"), "--input", str(files["dir"] / "x.csv"), "--out", str(path)]) == 0
        outs[suffix] = np.load(path)
    expected = stack.forward(files["x"])[0]
    np.testing.assert_allclose(outs["pt"], expected, atol=1e-14)
    np.testing.assert_allclose(outs["onnx"], expected, atol=1e-14)


def test_info(files, capsys):
    assert main(["info", str(files["npz"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "StackedLSTM" and info["num_layers"] == 2 and info["dtype"] == "float64"
    assert info["parameters"] == 4 * 3 * (3 + 2) + 4 * 3 + 4 * 3 * (3 + 3) + 4 * 3  # W and summed b per layer
    assert main(["info", str(files["npz"])]) == 0
    assert "l1.Wf" in capsys.readouterr().out


def test_train_saves_a_model_that_beats_the_baseline(tmp_path, capsys):
    out = tmp_path / "sine.npz"
    assert main(["train", "--task", "sine", "--epochs", "8", "--out", str(out), "--no-progress"]) == 0
    model = SequenceModel.load(out)
    printed = capsys.readouterr().out
    mse, baseline = (float(v) for v in __import__("re").findall(r"MSE ([\d.]+) .*baseline ([\d.]+)", printed)[0])
    assert mse < baseline / 5
    assert model.lstm.hidden_size == 16


def test_plot_subcommand(files):
    pytest.importorskip("matplotlib")
    png = files["dir"] / "g.png"
    assert main(["plot", "--weights", str(files["npz"]), "--input", str(files["dir"] / "x.csv"), "--png", str(png), "--layer", "1"]) == 0
    assert png.stat().st_size > 10_000


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nplstm", *args], capture_output=True, text=True, timeout=120)


def test_exit_codes_and_one_line_errors(files):
    d = files["dir"]
    (d / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    proc = run_cli("run", "--weights", str(d / "bad.npz"), "--input", str(d / "x.csv"))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and "bad.npz" in proc.stderr
    wrong = d / "wrong.csv"
    np.savetxt(wrong, np.zeros((4, 5)), delimiter=",")
    proc = run_cli("run", "--weights", str(files["npz"]), "--input", str(wrong))
    assert proc.returncode == 1 and "does not fit" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("run", "--weights", str(files["npz"]))
    assert proc.returncode == 2 and "--input" in proc.stderr
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    proc = run_cli("run", "--weights", str(files["npz"]), "--input", str(d / "x.csv"), "--out", str(d / "o.xyz"))
    assert proc.returncode == 2 and "must end in .npy or .csv" in proc.stderr
    proc = run_cli("--debug", "run", "--weights", str(d / "bad.npz"), "--input", str(d / "x.csv"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr
