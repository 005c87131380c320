"""Issue 17, file and command-line edges: budgets for every .npz path, OnnxLSTM in the CLI,
one-line OS errors, strict CSV numbers, and saves that keep special mode bits.

Hostile files bound their peak memory (tracemalloc) and time; numbers are
compared with a peer (onnxruntime, numpy.loadtxt).
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_io_hostile import deflated_zeros, npy_header, peak_bytes, refused, write_raw_zip

from nplstm import StackedLSTM
from nplstm.cli import main
from nplstm.io import NpzArchive, WeightsFileError, read_csv, read_input, save_npz, write_array
from nplstm.loading import load_model
from nplstm.modelfile import MAX_CONFIG_DEPTH, parse_config

from cli_output import one_line_error

MiB = 1 << 20


def npy_bytes(value) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value))
    return buf.getvalue()


def stored(name: str, value) -> tuple[str, bytes, int, int, int]:
    data = npy_bytes(value)
    return (f"{name}.npy", data, zipfile.ZIP_STORED, len(data), zlib.crc32(data))


def bomb_member(name: str, mib: int) -> tuple[str, bytes, int, int, int]:
    """A member whose deflated ~1 KB per MiB really inflates to ``mib`` MiB of float64 zeros (bad CRC)."""
    header = npy_header((mib * MiB // 8,))
    return (f"{name}.npy", deflated_zeros(header, mib), zipfile.ZIP_DEFLATED, len(header) + mib * MiB, 0)


def bounded(fn, *args, max_peak: int = 8 * MiB, max_seconds: float = 3.0):
    start = time.perf_counter()
    result, peak = peak_bytes(fn, *args)
    elapsed = time.perf_counter() - start
    assert peak < max_peak, f"peak {peak} bytes"
    assert elapsed < max_seconds, f"{elapsed:.2f} s"
    return result


# ------------------------------------------------- item 10: .npz budgets
@pytest.mark.parametrize("tag, config, member", [
    ("nplstm.SequenceModel/1", [1, 2, 1, 0], "lstm.Wf"),
    ("nplstm.StackedLSTM/1", [1, 2, 1, 0, 1, 0, 0], "weight_ih_l0"),
])
def test_a_legacy_tagged_npz_bomb_is_refused_before_inflating(tmp_path, tag, config, member):
    """A 1 MB file tagged as a version-1 schema declared a 1 GiB member; it was inflated (7 s) before refusal."""
    path = write_raw_zip(tmp_path / "old.npz", [stored("format", np.array(tag)), stored("config", np.array(config)),
                                                bomb_member(member, 1024)])
    assert path.stat().st_size < 2 * MiB
    refused(bounded(load_model, path), r"old.npz: its members declare \d+ bytes uncompressed, over the budget")


def test_an_archive_reads_no_large_member_before_its_budget_is_set(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, small=np.zeros(2), big=np.zeros(10_000))
    with NpzArchive(path, small_until_limited=1000) as npz:
        assert npz.read("small").shape == (2,)
        assert npz.header("big")[0] == (10_000,)  # headers stay readable
        with pytest.raises(WeightsFileError, match=r"'big' declares \d+ bytes, more than the 1000 allowed before"):
            npz.read("big")
        npz.limit_to(1 << 20)
        assert npz.read("big").shape == (10_000,)


def test_read_input_names_the_arrays_without_reading_any(tmp_path):
    """--input of a 1 MB two-array .npz read 1 GiB before saying it wants the array 'x'."""
    path = write_raw_zip(tmp_path / "two.npz", [bomb_member("a", 1024), stored("b", np.zeros(3))])
    refused(bounded(read_input, path), r"two.npz: holds 2 arrays \('a', 'b'\); name the input array 'x'")


def test_read_input_reads_only_the_array_named_x(tmp_path, rng):
    x = rng.normal(size=(5, 2))
    path = write_raw_zip(tmp_path / "x.npz", [bomb_member("junk", 1024), stored("x", x)])
    np.testing.assert_array_equal(bounded(read_input, path), x)


def test_read_input_checks_the_dtype_from_the_header(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.array(["a", "b"]))
    refused(bounded(read_input, tmp_path / "s.npz"), r"input 'x' has dtype <U1; expected numbers")


# ----------------------------------------------- item 14: OnnxLSTM in the CLI
def onnx_variant(kind: str, rng) -> tuple[object, StackedLSTM]:
    """nplstm's own export with one edit that makes from_onnx return an OnnxLSTM."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from nplstm.interop.onnx import to_onnx

    stack = StackedLSTM(2, 3, seed=1)
    model = to_onnx(stack, with_initial_states=kind == "states", with_lengths=kind == "lengths")
    graph = model.graph
    if kind == "reverse":
        node = next(n for n in graph.node if n.op_type == "LSTM")
        next(a for a in node.attribute if a.name == "direction").s = b"reverse"
    constants = {
        "states": {"initial_h": rng.normal(size=(1, 3, 3)), "initial_c": rng.normal(size=(1, 3, 3))},
        "lengths": {"sequence_lens": np.array([2, 3, 1], np.int32)},
    }.get(kind, {})
    for name, value in constants.items():  # a graph input becomes a constant
        graph.input.remove(next(v for v in graph.input if v.name == name))
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32) if value.dtype.kind == "f" else value, name))
    onnx.checker.check_model(model)
    return model, stack


def numbers(line: str) -> np.ndarray:
    return np.array(re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", line), dtype=float)


@pytest.mark.parametrize("kind, shape", [("reverse", (6, 2)), ("reverse", (6, 3, 2)), ("states", (6, 3, 2)), ("lengths", (6, 3, 2))])
def test_run_and_info_of_an_onnx_lstm_agree_with_onnxruntime(kind, shape, tmp_path, rng, capsys):
    """`nplstm run --weights rev.onnx` raised KeyError: 'input_size'; `info` printed no sizes."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, _ = onnx_variant(kind, rng)
    path = tmp_path / f"{kind}.onnx"
    onnx.save(model, str(path))
    x = rng.normal(size=shape)
    if x.ndim == 2:
        np.savetxt(tmp_path / "x.csv", x, delimiter=",", fmt="%.17g")
        source = tmp_path / "x.csv"
    else:
        np.save(tmp_path / "x.npy", x)
        source = tmp_path / "x.npy"
    Y, Y_h, Y_c = ort.InferenceSession(str(path)).run(None, {"X": (x if x.ndim == 3 else x[:, None]).astype(np.float32)})

    assert main(["run", "--weights", str(path), "--input", str(source), "--out", str(tmp_path / "y.npy")]) == 0
    out = capsys.readouterr().out
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, Y if x.ndim == 3 else Y[:, 0], atol=1e-5)
    h_text = out.split("final c")[0]
    np.testing.assert_allclose(numbers(h_text), Y_h.ravel(), atol=2e-6)
    np.testing.assert_allclose(numbers(out.split("final c")[1]), Y_c.ravel(), atol=2e-6)

    assert main(["info", str(path)]) == 0
    info = capsys.readouterr().out
    assert "OnnxLSTM" in info and "input_size = 2" in info and "hidden_size = 3" in info
    feature = {"reverse": "reverse = True", "states": "initial_states = [1, 3, 3]", "lengths": "lengths = [2, 3, 1]"}[kind]
    assert feature in info
    assert main(["info", "--json", str(path)]) == 0
    assert '"input_size": 2' in capsys.readouterr().out


def test_plot_refuses_an_onnx_lstm_it_would_draw_wrongly(tmp_path, rng, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("matplotlib")
    model, _ = onnx_variant("reverse", rng)
    onnx.save(model, str(tmp_path / "rev.onnx"))
    np.save(tmp_path / "x.npy", rng.normal(size=(5, 2)))
    code = main(["plot", "--weights", str(tmp_path / "rev.onnx"), "--input", str(tmp_path / "x.npy"),
                 "--png", str(tmp_path / "p.png")])
    assert code == 1
    one_line_error(capsys.readouterr().err, "plot", "reverse", "nplstm run")
    assert not (tmp_path / "p.png").exists()


# --------------------------------------------- item 15: one line for every file problem
@pytest.fixture
def stack_files(tmp_path, rng):
    StackedLSTM(2, 3, seed=0).save(tmp_path / "s.npz")
    np.save(tmp_path / "x.npy", rng.normal(size=(4, 2)))
    return tmp_path


@pytest.mark.parametrize("option, suffix", [("--out", ".npy"), ("--png", ".png")])
def test_an_output_name_over_255_bytes_is_one_line(stack_files, option, suffix, capsys):
    """Printed a 49-line traceback (ENAMETOOLONG escaped argparse)."""
    command = "run" if option == "--out" else "plot"
    long = str(stack_files / ("a" * 300 + suffix))
    argv = [command, "--weights", str(stack_files / "s.npz"), "--input", str(stack_files / "x.npy"), option, long]
    assert main(argv) == 2
    one_line_error(capsys.readouterr().err, command, option, "File name too long")


def test_a_real_process_with_a_long_output_name_prints_one_line(stack_files):
    proc = subprocess.run([sys.executable, "-m", "nplstm", "run", "--weights", "s.npz", "--input", "x.npy", "--out",
                           "b" * 300 + ".npy"], capture_output=True, text=True, timeout=120, cwd=stack_files)
    assert proc.returncode == 2
    one_line_error(proc.stderr, "run", "File name too long")


def test_symlink_loops_and_special_outputs_are_named(stack_files, capsys):
    os.symlink("loop2.npy", stack_files / "loop1.npy")
    os.symlink("loop1.npy", stack_files / "loop2.npy")
    os.symlink("/dev/null", stack_files / "null.npy")
    weights, x = str(stack_files / "s.npz"), str(stack_files / "x.npy")
    assert main(["run", "--weights", weights, "--input", str(stack_files / "loop1.npy")]) == 1  # was "no such file"
    one_line_error(capsys.readouterr().err, "run", "loop1.npy", "Too many levels of symbolic links")
    assert main(["run", "--weights", weights, "--input", x, "--out", str(stack_files / "loop1.npy")]) == 2
    one_line_error(capsys.readouterr().err, "run", "--out", "Too many levels of symbolic links")
    assert main(["run", "--weights", weights, "--input", x, "--out", str(stack_files / "null.npy")]) == 2
    one_line_error(capsys.readouterr().err, "run", "--out", "not a regular file")


def test_a_full_disk_during_the_save_is_one_line(stack_files, monkeypatch, capsys):
    import nplstm.io

    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(nplstm.io, "write_array", full)
    out = str(stack_files / "y.npy")
    assert main(["run", "--weights", str(stack_files / "s.npz"), "--input", str(stack_files / "x.npy"), "--out", out]) == 1
    line = one_line_error(capsys.readouterr().err, "run", out, "No space left on device")
    assert "Errno" not in line


def test_a_deeply_nested_config_is_refused_before_json_parses_it(tmp_path):
    """A 24 KB file whose config is "["*3000 + "]"*3000 raised RecursionError out of load_model."""
    np.savez(tmp_path / "deep.npz", format=np.array("nplstm"), version=np.array(2), kind=np.array("StackedLSTM"),
             config=np.array("[" * 3000 + "]" * 3000), dtype=np.array("float64"))
    refused(bounded(load_model, tmp_path / "deep.npz"), rf"deep.npz: 'config' nests deeper than {MAX_CONFIG_DEPTH} levels")


def test_config_depth_counts_brackets_outside_strings_only():
    assert parse_config('{"a": "' + "[" * 100 + '\\"{"}', "f") == {"a": "[" * 100 + '"{'}
    nested = parse_config("[" * MAX_CONFIG_DEPTH + "]" * MAX_CONFIG_DEPTH, "f")
    for _ in range(MAX_CONFIG_DEPTH - 1):
        nested = nested[0]
    assert nested == []
    with pytest.raises(WeightsFileError, match="nests deeper"):
        parse_config("{" * (MAX_CONFIG_DEPTH + 1), "f")
    with pytest.raises(WeightsFileError, match="characters, over the limit"):
        parse_config(" " * (1 << 17), "f")


# ------------------------------------------------------------ item 17: CSV
@pytest.mark.parametrize("token", ["1_0", "0x10", "1 0", "1e", "--1", "1.2.3", "", "infx", "١"])
def test_csv_numbers_are_read_as_numpy_loadtxt_reads_them(tmp_path, token):
    """`1_0` was read as 10.0 (Python's float accepts it; numpy.loadtxt does not)."""
    path = tmp_path / "x.csv"
    path.write_text(f"0.5,1.5\n2.5,{token}\n", encoding="utf-8")
    with pytest.raises(ValueError):
        np.loadtxt(path, delimiter=",", ndmin=2)  # the peer refuses it too
    message = refused(bounded(read_csv, path), r"x.csv: line 2 is not a list of numbers: '.*' is not a number")
    assert "0.5" not in message and "2.5" not in message  # only the offending token


def test_csv_values_equal_numpy_loadtxt(tmp_path):
    text = "1.5, -2e-3 ,+.5\n  -INF,nan,1E+300\n4.,5,6\n"
    path = tmp_path / "x.csv"
    path.write_text(text)
    np.testing.assert_array_equal(read_csv(path), np.loadtxt(path, delimiter=",", ndmin=2))


@pytest.mark.parametrize("text, line", [("0,5\n1,25\n-3,75\n", "every row is two whole numbers"),
                                        ("0.5;1.5\n0,5;1,5\n", "line 2 separates values with ';'")])
def test_decimal_commas_are_refused_not_read_as_columns(tmp_path, text, line):
    """`0,5` silently became the two columns 0 and 5."""
    path = tmp_path / "x.csv"
    path.write_text(text)
    refused(bounded(read_csv, path), rf"x.csv: {line}.*decimal")


@pytest.mark.parametrize("text", ["1,2\n3,4.0\n", "1, 2\n3, 4\n", "1,-2\n3,4\n", "1,2,3\n4,5,6\n", "1;2\n3;4\n"])
def test_unambiguous_integer_columns_are_read(tmp_path, text):
    path = tmp_path / "x.csv"
    path.write_text(text)
    np.testing.assert_array_equal(read_csv(path), np.loadtxt(io.StringIO(text.replace(";", ",")), delimiter=",", ndmin=2))


@pytest.mark.parametrize("values", [np.zeros((4, 2)), np.array([[0.0, 5.0], [-3.0, 2.0**60]]), np.array([[0.5, 5.0]])])
def test_csv_written_by_nplstm_reads_back(tmp_path, values):
    """Two whole-number columns written as "0,5" would read back as decimal commas: the writer adds ".0"."""
    write_array(tmp_path / "y.csv", values)
    np.testing.assert_array_equal(read_csv(tmp_path / "y.csv"), values)
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "y.csv", delimiter=",", ndmin=2), values)


def test_a_csv_error_quotes_a_bounded_token_only(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("0.5,1.5,2.5\n0.5," + "S" * 1000 + ",NEIGHBOUR\n")
    message = refused(bounded(read_csv, path), r"line 2 is not a list of numbers: 'S{24}'\.\.\. is not a number")
    assert "NEIGHBOUR" not in message and len(message) < len(str(path)) + 120


def test_a_csv_symlink_to_proc_environ_prints_no_environment(tmp_path):
    """The error echoed 60 bytes of the file: the environment of the process."""
    if not os.path.exists("/proc/self/environ"):
        pytest.skip("no /proc")
    StackedLSTM(2, 3, seed=0).save(tmp_path / "s.npz")
    os.symlink("/proc/self/environ", tmp_path / "env.csv")
    secret = "nplstm-secret-4b1d"
    env = {**os.environ, "NPLSTM_TEST_SECRET": secret, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "nplstm", "run", "--weights", "s.npz", "--input", "env.csv"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    line = one_line_error(proc.stderr, "run", "env.csv", "not quoted")
    assert secret not in line and "PATH" not in line and "=" not in line.split("env.csv", 1)[1]


# ------------------------------------------------------------ item 18: saves
@pytest.mark.parametrize("mode", [0o2644, 0o1644, 0o4755, 0o6750])
def test_a_save_keeps_the_special_bits_of_the_file_it_replaces(tmp_path, mode):
    """The setgid bit was dropped (2644 -> 644)."""
    path = tmp_path / "m.npz"
    save_npz(path, {"a": np.zeros(2)})
    os.chmod(path, mode)
    if stat.S_IMODE(os.stat(path).st_mode) != mode:
        pytest.skip(f"this file system does not keep mode {oct(mode)}")
    save_npz(path, {"a": np.ones(2)})
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    np.testing.assert_array_equal(np.load(path)["a"], np.ones(2))


def test_special_bits_go_only_to_the_same_owner_and_group():
    from nplstm.io._write import _kept_mode

    def st(mode, uid, gid):
        return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    assert _kept_mode(st(0o6755, 1, 2), st(0o644, 1, 2)) == 0o6755
    assert _kept_mode(st(0o6755, 1, 2), st(0o644, 3, 2)) == 0o2755  # another owner: no setuid
    assert _kept_mode(st(0o6755, 1, 2), st(0o644, 1, 4)) == 0o4755  # another group: no setgid
    assert _kept_mode(st(0o1644, 1, 2), st(0o644, 3, 4)) == 0o1644  # sticky grants nothing


def test_saving_through_a_symlink_to_proc_says_what_failed(tmp_path, capsys):
    """Saving through a symlink to /proc/self/status reported a bare "No such file"."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc")
    link = tmp_path / "st.npy"
    os.symlink("/proc/self/status", link)
    with pytest.raises(OSError, match=r"cannot create a file in '/proc/[^']+' \(the folder of '/proc/[^']+/status'\)"):
        write_array(link, np.zeros(2))
    StackedLSTM(2, 3, seed=0).save(tmp_path / "s.npz")
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    assert main(["run", "--weights", str(tmp_path / "s.npz"), "--input", str(tmp_path / "x.npy"), "--out", str(link)]) == 1
    one_line_error(capsys.readouterr().err, "run", str(link), "cannot create a file in '/proc/")
    assert Path("/proc/self/status").read_text().startswith("Name:")


def test_config_with_code_points_past_unicode_is_a_weights_file_error(tmp_path):
    """Found by the fuzz test: NumPy stores UTF-32 units unchecked; U+110063 must not reach Python's str."""
    from nplstm.loading import load_model

    path = tmp_path / "stack.npz"
    StackedLSTM(2, 3, seed=0).save(path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    config = np.load(io.BytesIO(members["config.npy"]))
    raw = bytearray(config.tobytes())
    raw[8:12] = (0x110063).to_bytes(4, "little")  # the third character, inside '"batch_first"'
    bad = np.frombuffer(bytes(raw), dtype=config.dtype).reshape(())
    buffer = io.BytesIO()
    np.save(buffer, bad)
    members["config.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(WeightsFileError, match="'config' holds code points that are not Unicode"):
        load_model(path)
