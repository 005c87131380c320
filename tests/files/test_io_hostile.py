"""Hostile files: zip bombs, lying headers, devices, FIFOs, directories, huge CSVs.

Each test builds the hostile file, checks that it is refused with a
WeightsFileError naming the problem, and bounds what refusing it cost in
memory (tracemalloc sees NumPy's buffers and zlib's output, so reading a
bomb would show).  The bombs are a few MB on disk and declare GBs; they are
built from one repeated deflate block, so building them is cheap.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import socket
import struct
import threading
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from nplstm.io import (
    MAX_CSV_LINE_BYTES,
    MAX_ZIP_MEMBERS,
    NpzArchive,
    WeightsFileError,
    check_regular_file,
    check_zip_budget,
    open_regular_file,
    parameter_budget,
    read_bounded_bytes,
    read_csv,
    read_input,
    read_npy,
    read_npz,
)
from nplstm.loading import load_model

MiB = 1 << 20
GiB = 1 << 30


# ----------------------------------------------------------- building bombs
def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def deflated_zeros(prefix: bytes, zero_mib: int) -> bytes:
    """A raw deflate stream of ``prefix`` then ``zero_mib`` MiB of zeros, ~1 KB per MiB.

    After a full flush the compressor's state is reset, so each MiB of zeros
    compresses to the same bytes: compress one and repeat it.
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(MiB)) + comp.flush(zlib.Z_FULL_FLUSH)
    return head + block * zero_mib + comp.flush()


def write_raw_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip of ``(name, stored bytes, method, declared uncompressed size, crc)`` members, as given.

    zipfile would compute sizes and CRCs itself; a hostile file declares what it likes.
    """
    local, central = bytearray(), bytearray()
    for name, data, method, size, crc in members:
        raw = name.encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0)
        local += raw + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0, 0, 0, 0, 0, offset
        )
        central += raw
    n = len(members)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path


def npz_bomb(path: Path, zero_mib: int, members: int = 1, crc: int = 0) -> Path:
    """An .npz whose ``members`` float64 arrays each really inflate to ``zero_mib`` MiB of zeros."""
    header = npy_header((zero_mib * MiB // 8,))
    data = deflated_zeros(header, zero_mib)
    size = len(header) + zero_mib * MiB
    return write_raw_zip(path, [(f"m{k}.npy", data, zipfile.ZIP_DEFLATED, size, crc) for k in range(members)])


def peak_bytes(fn, *args, **kwargs):
    """``(result or exception, tracemalloc peak in bytes)`` of one call."""
    tracemalloc.start()
    try:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # the caller asserts on it
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_bounded(fn, *args, hang_guard: float = 60.0):
    """``peak_bytes(fn, *args)`` in a thread; fails (instead of hanging the suite) if it blocks.

    The guard is not a speed assertion: a refusal takes milliseconds, and
    the guard only turns "blocked forever on a FIFO" into a failure.
    """
    out: list = []
    worker = threading.Thread(target=lambda: out.append(peak_bytes(fn, *args)), daemon=True)
    worker.start()
    worker.join(hang_guard)
    assert out, f"{getattr(fn, '__name__', fn)} still blocked after {hang_guard} s"
    return out[0]


def refused(result, match: str) -> str:
    assert isinstance(result, WeightsFileError), f"expected a WeightsFileError, got {result!r}"
    assert re.search(match, str(result)), f"{str(result)!r} does not match {match!r}"
    assert "\n" not in str(result)
    return str(result)


# ----------------------------------------------------------------- zip bombs
def test_npz_bomb_is_refused_from_its_directory_before_inflating(tmp_path):
    path = npz_bomb(tmp_path / "bomb.npz", 3 * 1024)  # 3 GiB of zeros
    assert path.stat().st_size < 4 * MiB
    for loader in (read_npz, load_model):
        result, peak = peak_bytes(loader, path)
        refused(result, r"bomb.npz: its members declare 3221225600 bytes uncompressed, over the budget of 2147483648")
        assert peak < 1 * MiB


def test_many_member_bomb_is_refused_on_the_total(tmp_path):
    path = npz_bomb(tmp_path / "bomb4.npz", 600, members=4)  # each member under 2 GiB, 2.4 GiB together
    result, peak = peak_bytes(read_npz, path)
    refused(result, r"declare 2516582912 bytes uncompressed, over the budget of 2147483648")
    assert peak < 1 * MiB
    result, peak = peak_bytes(read_npz, path, max_total_bytes=100 * MiB)  # a caller's tighter budget
    refused(result, r"over the budget of 104857600")


def test_a_bomb_within_budget_costs_one_copy_of_its_data(tmp_path):
    header = npy_header((32 * MiB // 8,))
    crc = zlib.crc32(bytes(32 * MiB), zlib.crc32(header))
    path = npz_bomb(tmp_path / "zeros.npz", 32, crc=crc)
    arrays, peak = peak_bytes(read_npz, path)
    assert set(arrays) == {"m0"} and arrays["m0"].shape == (4 * MiB,) and not arrays["m0"].any()
    assert peak < 32 * MiB + 4 * MiB  # one array and a chunk; reading then copying cost twice that


def test_a_bad_checksum_is_found_with_the_same_memory(tmp_path):
    path = npz_bomb(tmp_path / "zeros.npz", 32, crc=12345)
    result, peak = peak_bytes(read_npz, path)
    refused(result, r"zeros.npz is corrupted \(array 'm0'\): BadZipFile: Bad CRC-32")
    assert peak < 32 * MiB + 4 * MiB


def test_header_is_read_without_the_data(tmp_path):
    path = npz_bomb(tmp_path / "bomb.npz", 3 * 1024)
    with NpzArchive(path, max_total_bytes=1 << 40) as npz:
        result, peak = peak_bytes(npz.header, "m0")
        assert result == ((3 * GiB // 8,), np.dtype("<f8"))
        assert npz.names == ["m0"] and npz.declared_bytes == 3 * GiB + 128
    assert peak < 1 * MiB


def test_a_member_inflating_past_its_claim_is_read_only_up_to_the_claim(tmp_path):
    header = npy_header((4,))
    crc = zlib.crc32(bytes(32), zlib.crc32(header))
    data = deflated_zeros(header, 256)  # really inflates to 256 MiB
    path = write_raw_zip(tmp_path / "liar.npz", [("x.npy", data, zipfile.ZIP_DEFLATED, len(header) + 32, crc)])
    arrays, peak = peak_bytes(read_npz, path)
    np.testing.assert_array_equal(arrays["x"], np.zeros(4))
    assert peak < 4 * MiB


def test_a_header_claiming_more_than_the_budget_is_refused_before_allocating(tmp_path):
    path = tmp_path / "stack.npz"  # consistent sizes: 3.2 GB of zeros behind a (50_000_000, 8) header
    header = npy_header((50_000_000, 8))
    write_raw_zip(path, [("weight_ih_l0.npy", deflated_zeros(header, 1), zipfile.ZIP_DEFLATED, len(header) + 3_200_000_000, 0)])
    with NpzArchive(path, max_total_bytes=1 << 40) as npz:
        assert npz.header("weight_ih_l0") == ((50_000_000, 8), np.dtype("<f8"))
    result, peak = peak_bytes(read_npz, path, max_total_bytes=parameter_budget(1000, 8))
    refused(result, r"declare 3200000128 bytes uncompressed, over the budget of 1080576")
    assert peak < 1 * MiB


def test_limit_to_lowers_the_budget_after_the_small_members_are_read(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, config=np.array([3, 4]), w=np.zeros((4, 4)))  # 128 + 16 and 128 + 128 bytes declared
    with NpzArchive(path) as npz:
        np.testing.assert_array_equal(npz.read("config"), [3, 4])
        npz.limit_to(400)
        assert npz.max_total_bytes == 400
        refused(peak_bytes(npz.limit_to, 399)[0], r"m.npz: its members declare 400 bytes uncompressed, over the budget of 399")
        npz.limit_to(1 << 30)  # never raised again
        assert npz.max_total_bytes == 400


@pytest.mark.parametrize(
    "members, message",
    [
        ([("a.npy", b"", 0, 0, 0), ("a.npy", b"", 0, 0, 0)], r"the array 'a' is stored twice"),
        ([("a.npy", b"", 0, 0, 0), ("evil.pkl", b"", 0, 0, 0)], r"unexpected member 'evil.pkl' \(not an .npy array\)"),
        ([("a.npy", b"", zipfile.ZIP_LZMA, 0, 0)], r"zip compression method 14; only stored and deflated"),
    ],
)
def test_members_are_checked_from_the_directory(tmp_path, members, message):
    path = write_raw_zip(tmp_path / "odd.npz", members)
    refused(peak_bytes(read_npz, path)[0], message)


def test_a_directory_of_too_many_members_is_refused_before_zipfile_parses_it(tmp_path):
    members = [(f"{k}.npy", b"", 0, 0, 0) for k in range(MAX_ZIP_MEMBERS + 1)]
    path = write_raw_zip(tmp_path / "many.npz", members)
    result, peak = peak_bytes(read_npz, path)
    refused(result, rf"its zip directory lists {MAX_ZIP_MEMBERS + 1} members")
    assert peak < 1 * MiB


def test_check_zip_budget(tmp_path):
    arrays = {"a": np.zeros(1000), "b": np.ones((3, 5), dtype=np.float32)}
    path = tmp_path / "ok.npz"
    np.savez(path, **arrays)
    # each stored member is a 128-byte .npy header and its data
    assert check_zip_budget(path, 1 << 20) == (128 + 8000) + (128 + 60)
    refused(peak_bytes(check_zip_budget, path, 8000)[0], r"ok.npz: its members declare 8316 bytes uncompressed, over the budget of 8000")
    bomb = npz_bomb(tmp_path / "bomb.npz", 64)
    assert check_zip_budget(bomb, 1 << 30) == 64 * MiB + 128  # within budget: compression alone is not refused
    refused(peak_bytes(check_zip_budget, bomb, 1 << 30, max_expansion=2)[0], r"more than 2x its size\): a zip bomb")
    with open_regular_file(bomb) as fh:  # an open file is checked and rewound
        assert check_zip_budget(fh, 1 << 30) == 64 * MiB + 128 and fh.tell() == 0


def test_parameter_budget_rule():
    assert parameter_budget(1000, 8) == 4 * 8000 + 1048576
    assert parameter_budget(0, 4) == 1048576
    with pytest.raises(ValueError):
        parameter_budget(-1, 8)


# ----------------------------------------------- torch .pt with a zip bomb
def test_compressed_pt_bomb_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from nplstm import StackedLSTM
    from nplstm.interop import InteropError, to_torch_state_dict
    from nplstm.interop.torch import load_torch

    good = tmp_path / "good.pt"
    torch.save(to_torch_state_dict(StackedLSTM(2, 3, seed=0)), good)
    members = []
    with zipfile.ZipFile(good) as zf:
        for info in zf.infolist():
            data = zf.read(info)
            if info.filename.endswith("data/0"):  # one storage, now 1.5 GiB of compressed zeros
                members.append((info.filename, deflated_zeros(data, 1536), zipfile.ZIP_DEFLATED, len(data) + 1536 * MiB, 0))
            else:
                members.append((info.filename, data, zipfile.ZIP_STORED, len(data), info.CRC))
    bomb = write_raw_zip(tmp_path / "bomb.pt", members)
    assert bomb.stat().st_size < 2 * MiB

    def torch_load_must_not_run(*args, **kwargs):
        raise AssertionError("torch.load ran on a zip bomb")

    monkeypatch.setattr(torch, "load", torch_load_must_not_run)
    for loader in (load_torch, load_model):
        result, peak = peak_bytes(loader, bomb)
        assert isinstance(result, InteropError)
        refused(result, r"bomb.pt: its members declare \d+ bytes uncompressed from a \d+-byte file \(more than 2x")
        assert peak < 1 * MiB


def test_pt_refusals_say_what_nplstm_needs_in_one_plain_line(tmp_path):
    torch = pytest.importorskip("torch")
    from nplstm.interop import InteropError
    from nplstm.interop.torch import load_torch

    text = tmp_path / "text.pt"
    text.write_text("hello, I am not a torch file\n")
    module = tmp_path / "module.pt"
    torch.save(torch.nn.LSTM(2, 3), module)
    for path, what in [(text, r"\(KeyError\)"), (module, r"\(it holds a pickled torch.nn.modules.rnn.LSTM object\)")]:
        with pytest.raises(InteropError) as info:
            load_torch(path)
        message = str(info.value)
        assert re.fullmatch(
            re.escape(str(path)) + r" is not a loadable weights-only torch file " + what
            + r"; nplstm needs a state_dict\(\) saved with torch.save, e.g. torch.save\(lstm.state_dict\(\), path\)",
            message,
        ), message
        assert "\x1b" not in message and "weights_only=False" not in message and "False" not in message


# -------------------------------------------------- devices, FIFOs, folders
def all_loaders(path: Path):
    loaders = [read_npz, read_npy, read_csv, read_input, NpzArchive, check_regular_file, open_regular_file]
    if path.suffix in (".npz", ".pt"):  # load_model picks a reader by suffix first
        loaders.append(load_model)
    loaders += [lambda p: read_bounded_bytes(p, 1 << 20), lambda p: check_zip_budget(p, 1 << 20)]
    if importlib.util.find_spec("torch") is not None:
        from nplstm.interop.torch import load_torch

        loaders.append(load_torch)
    return loaders


def check_every_loader_refuses(path: Path, message: str) -> None:
    for loader in all_loaders(path):
        result, peak = run_bounded(loader, path)
        refused(result, re.escape(str(path)) + ": " + message)
        assert peak < 1 * MiB


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_and_a_symlink_to_it_are_refused_without_reading(tmp_path):
    check_every_loader_refuses(Path("/dev/zero"), "is a character device, not a regular file")
    for name in ("zero.npz", "zero.npy", "zero.csv", "zero.pt"):
        (tmp_path / name).symlink_to("/dev/zero")
        check_every_loader_refuses(tmp_path / name, "is a character device, not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_at_once_instead_of_blocking(tmp_path):
    for name in ("in.npz", "in.npy", "in.csv", "in.pt"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        try:
            check_every_loader_refuses(fifo, "is a FIFO, not a regular file")
        finally:  # a loader stuck in open() on the FIFO is released by a writer
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


def test_a_directory_is_refused_as_a_directory(tmp_path):
    for name in ("folder", "folder.npz", "folder.csv", "folder.pt"):
        (tmp_path / name).mkdir()
        check_every_loader_refuses(tmp_path / name, "is a directory$")


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.npz"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        check_every_loader_refuses(path, "is a socket, not a regular file")


def test_a_missing_file_is_named(tmp_path):
    check_every_loader_refuses(tmp_path / "missing.npz", "no such file$")


# ------------------------------------------------------------- bounded reads
def test_read_bounded_bytes(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x" * 1000)
    assert read_bounded_bytes(path, 1000) == b"x" * 1000
    refused(peak_bytes(read_bounded_bytes, path, 999)[0], r"m.onnx: 1000 bytes, over the limit of 999")


# ----------------------------------------------------------------------- CSV
def test_csv_is_read_with_memory_near_the_result(tmp_path, rng):
    values = rng.normal(size=(20_000, 20)) * 10.0 ** rng.integers(-5, 5, size=(20_000, 20))
    path = tmp_path / "big.csv"
    np.savetxt(path, values, delimiter=",", fmt="%.17g")
    result, peak = peak_bytes(read_csv, path)
    np.testing.assert_array_equal(result, values)  # %.17g round-trips float64 exactly
    assert result.dtype == np.float64 and result.shape == (20_000, 20)
    assert peak < 1.5 * values.nbytes + 1 * MiB, (peak, values.nbytes, path.stat().st_size)


def test_csv_details(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xef\xbb\xbf# a comment\n1, 2;3\n\n  4,5e-1,-inf  \n")
    np.testing.assert_array_equal(read_csv(path), [[1.0, 2.0, 3.0], [4.0, 0.5, -np.inf]])
    for text in ("", "\n\n", "# only a comment\n"):
        path.write_text(text)
        refused(peak_bytes(read_csv, path)[0], r"x.csv: no data rows")
        refused(peak_bytes(read_input, path)[0], r"x.csv: no data rows")
    path.write_text("1,2\n3,4,5\n")
    refused(peak_bytes(read_csv, path)[0], r"x.csv: line 2 has 3 values; the rows before it have 2")
    path.write_text("1,2\n3,x\n")
    refused(peak_bytes(read_csv, path)[0], r"x.csv: line 2 is not a list of numbers: 'x' is not a number")
    path.write_text("1,-2\n" * 100)  # not "1,2": every row "1,2" could be 1.2 written with a decimal comma (issue 17)
    refused(peak_bytes(read_csv, path, max_bytes=499)[0], r"x.csv: 500 bytes, over the limit of 499")
    refused(peak_bytes(read_csv, path, max_values=199)[0], r"x.csv: more than 199 values, over the limit")
    assert read_csv(path, max_bytes=500, max_values=200).shape == (100, 2)


def test_a_csv_line_without_end_is_refused_after_a_bounded_read(tmp_path):
    path = tmp_path / "one_line.csv"
    path.write_bytes(b"0," * (4 * MiB))
    result, peak = peak_bytes(read_csv, path)
    refused(result, rf"line 1 is longer than {MAX_CSV_LINE_BYTES} bytes")
    assert peak < 3 * MAX_CSV_LINE_BYTES
