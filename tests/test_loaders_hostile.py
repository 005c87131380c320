"""Hostile .pt and .keras files: refused within a memory and time bound before the model is built.

Issue 17 items 7, 8 and 11.  Each test bounds peak memory (tracemalloc,
which sees NumPy's and Python's allocations) and wall time, not just the
exception type.  Tests that need torch or keras skip cleanly without them.
"""

import os
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from nplstm import WeightsFileError


def bounded(fn, *args, max_bytes=64 << 20, max_seconds=20.0, **kwargs):
    """``fn(*args)``'s exception (it must raise WeightsFileError), checked against memory and time bounds."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(WeightsFileError) as info:
            fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert peak < max_bytes, f"peak {peak} bytes"
    assert elapsed < max_seconds, f"took {elapsed:.1f} s"
    return info.value


def within(seconds, fn, *args):
    """``fn(*args)`` in a daemon thread; fails the test (instead of hanging it) after ``seconds``."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # handed to the test below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return thread.is_alive(), box


# --------------------------------------------------------------- .keras (item 11)
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.fixture(scope="module")
def keras_file(keras, tmp_path_factory):
    """A valid saved .keras model of one LSTM and its bytes."""
    path = tmp_path_factory.mktemp("k") / "valid.keras"
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4)])
    model.save(path)
    return path, model


def bomb_zip(path, members, big_name, big_size):
    """``path``: a zip with ``members`` (name -> bytes) and ``big_name`` deflated from ``big_size`` spaces."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in members.items():
            if name != big_name:
                zf.writestr(name, data)
        with zf.open(big_name, "w", force_zip64=True) as fh:
            chunk = b" " * (1 << 22)
            for _ in range(big_size // len(chunk)):
                fh.write(chunk)
            fh.write(b"{}")
    return path


def test_keras_file_still_loads_and_matches_predict(keras, keras_file, rng):
    from nplstm.interop import from_keras

    path, model = keras_file
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_allclose(from_keras(path)(x), model.predict(x, verbose=0), atol=1e-5)


def test_keras_fifo_is_refused_at_once(keras, tmp_path):
    from nplstm.interop import InteropError, from_keras

    fifo = tmp_path / "k.keras"
    os.mkfifo(fifo)
    link = tmp_path / "link.keras"
    link.symlink_to(fifo)
    for path in (fifo, link):
        hung, box = within(20, from_keras, path)
        if hung:  # unblock the reader so the thread ends, then fail
            with open(fifo, "wb"):
                pass
        assert not hung, "from_keras blocked on a FIFO"
        assert isinstance(box.get("error"), InteropError) and "not a regular file" in str(box["error"]), box


@pytest.mark.parametrize("target", ["/dev/zero", "dir"])
def test_keras_symlink_to_a_non_regular_file_is_refused(keras, tmp_path, target):
    from nplstm.interop import from_keras

    link = tmp_path / "m.keras"
    link.symlink_to(tmp_path if target == "dir" else target)
    exc = bounded(from_keras, link, max_bytes=1 << 20, max_seconds=5)
    assert "not a regular file" in str(exc) or "directory" in str(exc)


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5"])
def test_keras_zip_bomb_is_refused_before_keras_inflates_it(keras, keras_file, tmp_path, member):
    # issue 17 item 11: a 1 MB .keras with a deflated 1 GiB config.json took 2.3 GiB and 15 s;
    # 256 MiB here (Keras' own guard only starts at 4 GiB)
    from nplstm.interop import from_keras

    with zipfile.ZipFile(keras_file[0]) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    path = bomb_zip(tmp_path / "bomb.keras", members, member, 256 << 20)
    assert path.stat().st_size < 2 << 20
    exc = bounded(from_keras, path, max_bytes=16 << 20, max_seconds=5)
    assert "zip bomb" in str(exc) or "over the limit" in str(exc)


def test_keras_config_over_its_own_limit_is_refused(keras, keras_file, tmp_path):
    from nplstm.interop import from_keras
    from nplstm.interop.keras_format import MAX_KERAS_CONFIG_BYTES

    with zipfile.ZipFile(keras_file[0]) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members["config.json"] = members["config.json"] + b" " * MAX_KERAS_CONFIG_BYTES  # stored: no expansion at all
    path = tmp_path / "big.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    exc = bounded(from_keras, path, max_bytes=8 << 20, max_seconds=5)
    assert "'config.json'" in str(exc) and f"limit of {MAX_KERAS_CONFIG_BYTES}" in str(exc)


@pytest.mark.parametrize("config", [b"[" * 100_000 + b"]" * 100_000, b"{not json", b'{"class_name": "Lambda"}', b"[]"],
                         ids=["deep", "junk", "lambda", "list"])
def test_keras_bad_config_is_one_interop_error(keras, keras_file, tmp_path, config):
    from nplstm.interop import from_keras

    with zipfile.ZipFile(keras_file[0]) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members["config.json"] = config
    path = tmp_path / "bad.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    exc = bounded(from_keras, path, max_bytes=64 << 20, max_seconds=10)
    assert str(path) in str(exc) and "\n" not in str(exc)


def test_keras_file_that_is_not_a_zip_is_refused(keras, tmp_path):
    from nplstm.interop import from_keras

    path = tmp_path / "m.keras"
    path.write_bytes(b"\x89HDF\r\n" + b"\0" * 100)
    exc = bounded(from_keras, path, max_bytes=1 << 20, max_seconds=5)
    assert "not a Keras 3 .keras file" in str(exc)
