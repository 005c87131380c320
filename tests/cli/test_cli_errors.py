"""The command line tried as a new user would (issue 12): every mistake is one line and the right exit code.

Exit codes: 0 success, 1 a bad input or weights file, 2 a usage error.  Each
case asserts the code and that stderr is exactly one line, ``nplstm <cmd>:
error: ...``, naming the problem.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from nplstm import SequenceModel, StackedLSTM
from nplstm.cli import build_parser, main
from nplstm.interop.torch import from_torch
from nplstm.io import WeightsFileError

from cli_output import one_line_error


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nplstm", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def files(tmp_path, rng):
    """A 2-feature stack, a 1-feature SequenceModel, and the hand-checkable classic 1x1 LSTM as a torch state dict."""
    classic_w = np.array([[0.5], [0.5], [0.3], [0.5]])  # torch gate order i, f, g, o
    classic = from_torch({"weight_ih_l0": classic_w, "weight_hh_l0": classic_w,
                          "bias_ih_l0": np.full(4, 0.1), "bias_hh_l0": np.zeros(4)}, batch_first=False)
    x = rng.normal(size=(6, 2))
    np.save(tmp_path / "x.npy", x)
    return {
        "dir": tmp_path,
        "x": x,
        "stack": StackedLSTM(2, 3, num_layers=2, seed=0).save(tmp_path / "stack.npz"),
        "seq": SequenceModel(1, 4, 1, seed=0).save(tmp_path / "seq.npz"),
        "classic": classic.save(tmp_path / "classic.npz"),
    }


def never_called(*args, **kwargs):
    raise AssertionError("work started although the arguments were bad")


# ------------------------------------------------------------ numeric options
@pytest.mark.parametrize("argv", [["demo", "--seed", "-1"], ["train", "--seed", "-1"], ["demo", "--seed", "1.5"]])
def test_negative_or_fractional_seed_is_a_usage_error(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    one_line_error(captured.err, argv[0], "--seed", argv[-1], "non-negative integer")
    assert captured.out == ""


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--epochs", "-3"), ("--hidden", "0"),
                                           ("--sequences", "0"), ("--hidden", "100000"), ("--epochs", "ten")])
def test_train_sizes_must_be_positive_and_bounded(option, value, tmp_path, monkeypatch, capsys):
    import nplstm.training

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nplstm.training, "fit", never_called)
    assert main(["train", option, value, "--no-progress"]) == 2
    one_line_error(capsys.readouterr().err, "train", option, repr(value))
    assert list(tmp_path.iterdir()) == []  # no model.npz from an untrained model


def test_train_sizes_are_used_as_given(tmp_path, capsys):
    out = tmp_path / "small.npz"
    assert main(["train", "--hidden", "3", "--sequences", "5", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    assert SequenceModel.load(out).lstm.hidden_size == 3


def test_bad_layer_is_one_line_naming_the_layer_count(files, capsys):
    pytest.importorskip("matplotlib")
    png = files["dir"] / "g.png"
    assert main(["plot", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy"),
                 "--png", str(png), "--layer", "5"]) == 2
    one_line_error(capsys.readouterr().err, "plot", "--layer 5", "2 layer")
    assert not png.exists()
    assert main(["plot", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy"),
                 "--png", str(png), "--layer", "-1"]) == 2
    one_line_error(capsys.readouterr().err, "plot", "--layer", "'-1'")


# ------------------------------------------------------------- output paths
def test_png_that_is_a_directory_is_a_usage_error_and_nothing_is_written(files, capsys):
    adir = files["dir"] / "adir"
    adir.mkdir()
    assert main(["plot", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy"), "--png", str(adir)]) == 2
    one_line_error(capsys.readouterr().err, "plot", "--png", str(adir), "is a directory")
    assert not (files["dir"] / "adir.png").exists() and list(adir.iterdir()) == []
    assert main(["plot", "--help"]) == 0
    assert "existing directory is refused" in " ".join(capsys.readouterr().out.split())


def test_png_suffix_is_required(files, capsys):
    assert main(["plot", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy"),
                 "--png", str(files["dir"] / "g.pdf")]) == 2
    one_line_error(capsys.readouterr().err, "plot", "--png", ".png")


@pytest.mark.parametrize("out, problem", [("o.xyz", "must end in .npy or .csv"), ("missing/o.npy", "does not exist"),
                                          ("afile/o.npy", "does not exist"), ("adir", "is a directory")])
def test_run_checks_out_before_computing(files, out, problem, monkeypatch, capsys):
    import nplstm.loading

    (files["dir"] / "afile").write_text("a file, not a folder")
    (files["dir"] / "adir").mkdir()
    monkeypatch.setattr(nplstm.loading, "run_model", never_called)
    assert main(["run", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy"),
                 "--out", str(files["dir"] / out)]) == 2
    captured = capsys.readouterr()
    one_line_error(captured.err, "run", "--out", problem)
    assert captured.out == ""  # nothing computed nor printed


@pytest.mark.parametrize("out, problem", [("/missing/m.npz", "does not exist"), ("m.txt", "must end in .npz")])
def test_train_checks_out_before_training(out, problem, tmp_path, monkeypatch, capsys):
    import nplstm.training

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nplstm.training, "fit", never_called)
    assert main(["train", "--out", out, "--no-progress"]) == 2
    one_line_error(capsys.readouterr().err, "train", "--out", out, problem)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to any folder")
def test_train_refuses_an_unwritable_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["train", "--out", str(locked / "m.npz")]) == 2
    finally:
        locked.chmod(0o700)
    one_line_error(capsys.readouterr().err, "train", "--out", "not writable")


def test_out_folder_writability_is_probed_for_real(tmp_path):
    """The probe leaves nothing behind in the folder."""
    from nplstm.cli._args import output_path

    assert output_path(".npz")(str(tmp_path / "m.npz")) == tmp_path / "m.npz"
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ inputs
@pytest.mark.parametrize("command", ["run", "plot"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_is_refused_by_default(files, command, bad, capsys):
    x = files["x"].copy()
    x[3, 1] = bad
    np.save(files["dir"] / "bad.npy", x)
    extra = ["--png", str(files["dir"] / "g.png")] if command == "plot" else []
    if command == "plot":
        pytest.importorskip("matplotlib")
    assert main([command, "--weights", str(files["stack"]), "--input", str(files["dir"] / "bad.npy"), *extra]) == 1
    captured = capsys.readouterr()
    one_line_error(captured.err, command, "bad.npy", "NaN or inf", "(3, 1)", "--allow-nonfinite")
    assert captured.out == ""


def test_nonfinite_csv_runs_with_allow_nonfinite(files, capsys):
    """NaN at step 1 reaches every later state, so the final states are all NaN; before it they are not."""
    csv = files["dir"] / "nan.csv"
    csv.write_text("1\nnan\n3\n")
    args = ["run", "--weights", str(files["classic"]), "--input", str(csv), "--out", str(files["dir"] / "o.npy")]
    assert main(args) == 1
    one_line_error(capsys.readouterr().err, "run", "nan.csv", "NaN or inf", "(1, 0)")
    assert main([*args, "--allow-nonfinite"]) == 0
    assert "final h = [[nan]]" in capsys.readouterr().out
    outputs = np.load(files["dir"] / "o.npy")
    assert outputs[0, 0] == pytest.approx(0.1552874607, abs=1e-10)  # σ(0.6)·tanh(σ(0.6)·tanh(0.4))
    assert np.isnan(outputs[1:]).all()


def test_directory_as_input_or_weights(files, capsys):
    adir = files["dir"] / "adir"
    adir.mkdir()
    assert main(["run", "--weights", str(files["stack"]), "--input", str(adir)]) == 1
    one_line_error(capsys.readouterr().err, "run", str(adir), "is a directory", ".npy, .npz or .csv")
    assert main(["info", str(adir)]) == 1
    one_line_error(capsys.readouterr().err, "info", str(adir), "is a directory", ".npz, .pt or .onnx")
    npz_dir = files["dir"] / "looks.npz"
    npz_dir.mkdir()
    assert main(["run", "--weights", str(npz_dir), "--input", str(files["dir"] / "x.npy")]) == 1
    one_line_error(capsys.readouterr().err, "run", "looks.npz", "is a directory")


def test_missing_input_names_the_file(files, capsys):
    assert main(["run", "--weights", str(files["stack"]), "--input", str(files["dir"] / "nope")]) == 1
    one_line_error(capsys.readouterr().err, "run", "nope: no such file")


@pytest.mark.parametrize("content", ["", "# only a comment\n", "\n\n"])
def test_empty_csv_says_it_holds_no_numbers(files, content, capsys):
    csv = files["dir"] / "empty.csv"
    csv.write_text(content)
    assert main(["run", "--weights", str(files["stack"]), "--input", str(csv)]) == 1
    one_line_error(capsys.readouterr().err, "run", "empty.csv", "no data rows")


def test_one_dimensional_input_is_one_feature_per_step(files, capsys):
    """(T,) runs on an input_size-1 model; the classic weights on [1, 2, 3] give the README's number."""
    np.save(files["dir"] / "x123.npy", np.array([1.0, 2.0, 3.0]))
    out = files["dir"] / "o.npy"
    assert main(["run", "--weights", str(files["classic"]), "--input", str(files["dir"] / "x123.npy"), "--out", str(out)]) == 0
    assert "final h = [[0.73698596]]" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(out)[:, 0], [0.1552874607, 0.4480231365, 0.7369859552], atol=1e-10)

    x = np.linspace(-1, 1, 7)
    np.save(files["dir"] / "x1.npy", x)
    assert main(["run", "--weights", str(files["seq"]), "--input", str(files["dir"] / "x1.npy"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    model = SequenceModel.load(files["seq"])
    prediction, outputs, _ = model.run(x[None, :, None], return_sequences=True)
    np.testing.assert_allclose(np.load(out), outputs[0], rtol=1e-15)
    assert f"prediction = [{prediction[0, 0]:.8f}]" in printed


def test_one_dimensional_input_for_a_wider_model_names_both_sizes(files, capsys):
    np.save(files["dir"] / "x1.npy", np.arange(10.0))
    assert main(["run", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x1.npy")]) == 1
    one_line_error(capsys.readouterr().err, "run", "(10,)", "takes 2", "(T, 2)")


@pytest.mark.parametrize("shape, names", [((6, 3), ["3 features", "expected 2"]), ((2, 3, 4, 2), ["4-D", "(2, 3, 4, 2)"])])
def test_wrong_input_shapes_are_named(files, shape, names, capsys):
    np.save(files["dir"] / "w.npy", np.zeros(shape))
    assert main(["run", "--weights", str(files["stack"]), "--input", str(files["dir"] / "w.npy")]) == 1
    one_line_error(capsys.readouterr().err, "run", "does not fit", *names)


# ------------------------------------------------ unexpected library errors
@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 8.00 GiB for an array"), RuntimeError("boom\nsecond line"),
                                   TypeError("odd"), ValueError("bad value"), MemoryError()])
def test_library_exceptions_in_run_are_one_line(files, error, monkeypatch, capsys):
    import nplstm.loading

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(nplstm.loading, "run_model", fail)
    assert main(["run", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy")]) == 1
    line = one_line_error(capsys.readouterr().err, "run")
    assert (str(error).split("\n")[0] or type(error).__name__) in line


@pytest.mark.parametrize("error", [MemoryError("no memory"), RuntimeError("boom\nsecond line"), KeyError("k")])
def test_library_exceptions_in_info_are_one_line(files, error, monkeypatch, capsys):
    import nplstm.loading

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(nplstm.loading, "describe", fail)
    assert main(["info", str(files["stack"])]) == 1
    line = one_line_error(capsys.readouterr().err, "info", type(error).__name__)
    assert "--debug" in line


def test_library_exceptions_in_plot_are_one_line(files, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import nplstm.plot

    def fail(*args, **kwargs):
        raise RuntimeError("renderer\nfailed")

    monkeypatch.setattr(nplstm.plot, "plot_trace", fail)
    assert main(["plot", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy"),
                 "--png", str(files["dir"] / "g.png")]) == 1
    one_line_error(capsys.readouterr().err, "plot", "RuntimeError: renderer failed")


def test_interrupt_is_one_line_exit_130(files, monkeypatch, capsys):
    import nplstm.loading

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nplstm.loading, "run_model", interrupt)
    assert main(["run", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy")]) == 130
    one_line_error(capsys.readouterr().err, "run", "interrupted")


# ---------------------------------------------------------------- --debug
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command_raises(files, where):
    (files["dir"] / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    argv = ["run", "--weights", str(files["dir"] / "bad.npz"), "--input", str(files["dir"] / "x.npy")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(WeightsFileError, match="bad.npz"):
        main(argv)


def test_debug_after_the_command_shows_the_traceback_in_a_real_process(files):
    (files["dir"] / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    args = ["run", "--weights", str(files["dir"] / "bad.npz"), "--input", str(files["dir"] / "x.npy")]
    proc = run_cli(*args, "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "WeightsFileError" in proc.stderr
    proc = run_cli(*args)
    assert proc.returncode == 1
    one_line_error(proc.stderr, "run", "bad.npz")


def test_unknown_option_names_the_command(files, capsys):
    assert main(["run", "--weights", str(files["stack"]), "--input", str(files["dir"] / "x.npy"), "--frobnicate"]) == 2
    one_line_error(capsys.readouterr().err, "run", "unrecognized arguments: --frobnicate")


# -------------------------------------------------------------- help texts
@pytest.mark.parametrize("command", ["demo", "run", "info", "train", "plot"])
def test_every_option_has_help(command):
    import argparse

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        assert action.help and action.help != argparse.SUPPRESS, (command, action.option_strings or action.dest)


# ------------------------------------------------------------ the plot itself
def test_heatmaps_label_their_unit_axis_and_the_png_goes_where_named(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from nplstm import LSTM
    from nplstm.plot import plot_trace

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))
    x = np.linspace(0, 1, 12).reshape(4, 3)
    trace = LSTM(3, 5, seed=0).trace(x)
    path = plot_trace(x, trace, tmp_path / "noext")
    assert path == tmp_path / "noext" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["noext"]
    labels = [ax.get_ylabel() for ax in figures[0].axes if ax.get_label() != "<colorbar>"]
    assert labels[0] == "input x"  # 3 features: drawn as lines, with a legend
    assert labels[1:] == [f"{name}\n(unit index)" for name in
                          ("hidden state h", "cell state c", "forget gate f", "input gate i", "candidate g", "output gate o")]


# ------------------------------------------------------- real processes
@pytest.mark.parametrize("args, code, names", [
    (["demo", "--seed", "-1"], 2, ["--seed"]),
    (["train", "--epochs", "0"], 2, ["--epochs"]),
    (["run", "--weights", "{stack}", "--input", "{nan}"], 1, ["NaN or inf"]),
    (["run", "--weights", "{stack}", "--input", "{dir}"], 1, ["is a directory"]),
])
def test_real_process_prints_one_line_and_no_traceback(files, args, code, names):
    x = files["x"].copy()
    x[0, 0] = np.nan
    np.save(files["dir"] / "nan.npy", x)
    values = {"stack": files["stack"], "nan": files["dir"] / "nan.npy", "dir": files["dir"]}
    proc = run_cli(*(a.format(**values) for a in args), cwd=files["dir"])
    assert proc.returncode == code, proc.stderr
    one_line_error(proc.stderr, args[0], *names)
    assert proc.stdout == ""


def test_finite_input_beyond_a_float32_model_is_refused(files, capsys):
    """1e300 is finite in the file but inf once cast to the model's float32: refused, not NaN with exit 0."""
    StackedLSTM(2, 3, seed=0, dtype=np.float32).save(files["dir"] / "s32.npz")
    x = files["x"].copy()
    x[2, 0] = 1e300
    np.save(files["dir"] / "big.npy", x)
    args = ["run", "--weights", str(files["dir"] / "s32.npz"), "--input", str(files["dir"] / "big.npy")]
    assert main(args) == 1
    one_line_error(capsys.readouterr().err, "run", "big.npy", "1e+300", "float32", "--allow-nonfinite")
    # the library itself refuses a cast that would turn a finite value into inf, opt-in or not
    assert main([*args, "--allow-nonfinite"]) == 1
    one_line_error(capsys.readouterr().err, "run", "1e+300", "float32")
    x[2, 0] = 3e38  # still inside float32's range (max 3.4028e38)
    np.save(files["dir"] / "big.npy", x)
    assert main(args) == 0


def test_nonfinite_results_from_a_finite_input_are_refused(files, capsys):
    """Weights 1e300 and -1e300 on inputs 1e10: each product overflows to ±inf and their sum is NaN."""
    w = np.tile([[1e300, -1e300]], (4, 1))
    huge = from_torch({"weight_ih_l0": w, "weight_hh_l0": np.zeros((4, 1)),
                       "bias_ih_l0": np.zeros(4), "bias_hh_l0": np.zeros(4)}, batch_first=False)
    huge.save(files["dir"] / "huge.npz")
    np.save(files["dir"] / "big.npy", np.full((3, 2), 1e10))
    args = ["run", "--weights", str(files["dir"] / "huge.npz"), "--input", str(files["dir"] / "big.npy")]
    # inf - inf is NaN, but whether BLAS meets it depends on its summation order (with FMA it may
    # round to ±inf first); the contract is that NaN/inf never leaves with exit code 0.
    code = main(args)
    captured = capsys.readouterr()
    if code == 1:
        one_line_error(captured.err, "run", "huge.npz", "NaN or inf", "input is finite")
        assert captured.out == ""
        assert main([*args, "--allow-nonfinite"]) == 0
        assert "final h = [[nan]]" in capsys.readouterr().out
    else:
        assert code == 0 and "nan" not in captured.out and "inf" not in captured.out


def test_plot_of_a_batch_says_which_sequence_it_drew(files, capsys):
    pytest.importorskip("matplotlib")
    np.save(files["dir"] / "batch.npy", np.zeros((5, 4, 2)))  # (T, B, I): the stack is not batch_first
    png = files["dir"] / "g.png"
    assert main(["plot", "--weights", str(files["stack"]), "--input", str(files["dir"] / "batch.npy"), "--png", str(png)]) == 0
    assert capsys.readouterr().out == f"wrote {png} (sequence 0 of a batch of 4)\n"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("option", ["--sequences", "--hidden", "--epochs"])
def test_absurd_train_sizes_are_refused_before_any_allocation(option, tmp_path, monkeypatch, capsys):
    """10**12 sequences would be 200 TB of data: refused by the parser, with no large allocation."""
    import tracemalloc

    monkeypatch.chdir(tmp_path)
    tracemalloc.start()
    try:
        assert main(["train", option, str(10**12), "--no-progress"]) == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line_error(capsys.readouterr().err, "train", option, "1000000000000")
    assert peak < 5_000_000
    assert list(tmp_path.iterdir()) == []


def test_input_header_claiming_terabytes_is_one_line_without_allocation(files, capsys):
    import tracemalloc

    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (10**12, 2)
    bogus = files["dir"] / "bogus.npy"
    with open(bogus, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)
    tracemalloc.start()
    try:
        assert main(["run", "--weights", str(files["stack"]), "--input", str(bogus)]) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line_error(capsys.readouterr().err, "run", "bogus.npy")
    assert peak < 5_000_000
