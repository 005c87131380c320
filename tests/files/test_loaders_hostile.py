"""Hostile .pt and .keras files: refused within a memory and time bound before the model is built.

Issue 17 items 7, 8 and 11.  Each test bounds peak memory (tracemalloc,
which sees NumPy's and Python's allocations) and wall time, not just the
exception type.  Tests that need torch or keras skip cleanly without them.
"""

import os
import re
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
    from nplstm.interop.keras import MAX_KERAS_CONFIG_BYTES

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


# --------------------------------------------------------------- .pt (items 7, 8)
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def save_pt(torch, path, sd):
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("H", [4096, 16384])
def test_pt_stride0_tensors_are_refused_before_anything_is_built(torch, tmp_path, H):
    # issue 17 item 7: 1,769 bytes loaded as a 268 MB model (1 GiB peak); at H=16384 it asked for 12 GiB
    from nplstm.interop import load_torch

    zero = torch.zeros(1)
    sd = {"weight_ih_l0": zero.expand(4 * H, H), "weight_hh_l0": zero.expand(4 * H, H),
          "bias_ih_l0": zero.expand(4 * H), "bias_hh_l0": zero.expand(4 * H)}
    path = save_pt(torch, tmp_path / "s0.pt", sd)
    assert path.stat().st_size < 4096
    exc = bounded(load_torch, path, max_bytes=4 << 20, max_seconds=5)
    assert "'weight_ih_l0'" in str(exc) and "stride 0" in str(exc)


@pytest.mark.parametrize("make, message", [
    (lambda t: {"weight_ih_l0": t.randn(100).as_strided((20, 3), (3, 1)),
                "weight_hh_l0": t.randn(100).as_strided((20, 5), (1, 1))}, r"'weight_hh_l0' .* strides \(1, 1\)"),
    (lambda t: (lambda w: {"weight_hh_l0": w, "weight_ih_l0": w[:, :3]})(t.randn(20, 5)), "share only 400 stored bytes"),
], ids=["overlapping-strides", "tensors-sharing-storage"])
def test_pt_tensors_that_repeat_stored_elements_are_refused(torch, tmp_path, make, message):
    from nplstm.interop import load_torch

    path = save_pt(torch, tmp_path / "o.pt", make(torch))
    exc = bounded(load_torch, path, max_bytes=1 << 20, max_seconds=5)
    assert exc.args and re.search(message, str(exc)), str(exc)


def test_pt_dense_views_of_one_storage_still_load(torch, tmp_path):
    # a transposed (non-contiguous, non-overlapping) tensor and two halves of one storage are real data
    from nplstm.interop import from_torch, load_torch

    module = torch.nn.LSTM(3, 5, bidirectional=True)
    sd = module.state_dict()
    both = torch.cat([sd["weight_hh_l0"], sd["weight_hh_l0_reverse"]])
    sd["weight_hh_l0"], sd["weight_hh_l0_reverse"] = both[:20], both[20:]
    sd["weight_ih_l0"] = sd["weight_ih_l0"].t().contiguous().t()
    path = save_pt(torch, tmp_path / "views.pt", sd)
    x = torch.randn(4, 2, 3)
    expected = module(x)[0].detach().numpy()
    np.testing.assert_allclose(load_torch(path, batch_first=False).forward(x.numpy())[0], expected, atol=1e-6)
    np.testing.assert_allclose(from_torch(module).forward(x.numpy())[0], expected, atol=1e-6)


@pytest.mark.parametrize("layer", [300_000, 100_000_000])
def test_pt_absurd_layer_key_is_refused_before_building(torch, tmp_path, layer):
    # issue 17 item 8: a key bias_hh_l100000000 built a 10^8-layer stack (4 GiB, 22 s, then MemoryError)
    from nplstm.interop import load_torch

    sd = dict(torch.nn.LSTM(3, 4).state_dict())
    sd[f"bias_hh_l{layer}"] = torch.zeros(16)
    path = save_pt(torch, tmp_path / "k.pt", sd)
    exc = bounded(load_torch, path, max_bytes=2 << 20, max_seconds=5)
    assert "l0..l1 without gaps" in str(exc) and str(layer) in str(exc)


@pytest.mark.parametrize("edit, message", [
    (lambda sd, t: sd.update({f"{k}_l2": v for k, v in (("weight_ih", t.zeros(16, 4)), ("weight_hh", t.zeros(16, 4)))}),
     r"l0..l1 without gaps; found layer\(s\) \[2\]"),
    (lambda sd, t: sd.update(weight_hr_l1=t.zeros(2, 4)), r"does not use: \[.weight_hr_l1.\]"),
    (lambda sd, t: sd.update(weight_ih_l0_reverse=t.zeros(16, 3)), r"missing tensor 'weight_hh_l0_reverse'"),
    (lambda sd, t: sd.pop("bias_hh_l0"), r"missing tensor 'bias_hh_l0'"),
], ids=["gap", "stray-projection", "half-a-direction", "half-a-bias"])
def test_pt_keys_must_be_one_configuration(torch, tmp_path, edit, message):
    from nplstm.interop import load_torch

    sd = dict(torch.nn.LSTM(3, 4).state_dict())
    edit(sd, torch)
    path = save_pt(torch, tmp_path / "keys.pt", sd)
    exc = bounded(load_torch, path, max_bytes=1 << 20, max_seconds=5)
    assert re.search(message, str(exc)), str(exc)


def test_pt_real_layer0_of_a_model_too_large_is_refused_before_building(torch, tmp_path):
    # a (4H, 1) weight_ih_l0 of real data (256 KB) implies a 1 GiB model: the size is checked before building
    from nplstm.interop import load_torch

    H = 16384
    sd = {"weight_ih_l0": torch.randn(4 * H, 1), "weight_hh_l0": torch.randn(4 * H, 1)}
    path = save_pt(torch, tmp_path / "wide.pt", sd)
    exc = bounded(load_torch, path, max_bytes=4 << 20, max_seconds=5)
    assert "'weight_hh_l0' has shape (65536, 1); expected (65536, 16384)" in str(exc) or "MAX_MODEL_BYTES" in str(exc)


def edited_keras(keras_file, tmp_path, edit):
    import json

    with zipfile.ZipFile(keras_file[0]) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    path = tmp_path / "edited.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("units", [2048, 10**6])
def test_keras_config_declaring_a_huge_layer_is_refused_before_keras_builds_it(keras, keras_file, tmp_path, units):
    # Keras builds (orthogonally initialises) every declared variable before reading a weight:
    # units=2048 in a 15 KB file took 3 s and 600 MB, units=8192 a gigabyte and longer
    from nplstm.interop import from_keras

    def edit(config):
        config["config"]["layers"][-1]["config"]["units"] = units

    path = edited_keras(keras_file, tmp_path, edit)
    exc = bounded(from_keras, path, max_bytes=4 << 20, max_seconds=1)
    assert "LSTM parameters but the file stores only" in str(exc) or "MAX_MODEL_BYTES" in str(exc)


def test_keras_file_of_other_layers_is_refused_before_keras_reads_them(keras, tmp_path):
    from nplstm.interop import from_keras

    path = tmp_path / "dense.keras"
    keras.Sequential([keras.Input((5, 3)), keras.layers.Dense(2)]).save(path)
    exc = bounded(from_keras, path, max_bytes=4 << 20, max_seconds=2)
    assert "of layers ['InputLayer', 'Dense']" in str(exc)


def test_keras_initialisers_do_not_change_the_import(keras, tmp_path, rng):
    # the copy Keras reads has zero initialisers; the weights loaded over them are the file's
    from nplstm.interop import from_keras

    layer = keras.layers.LSTM(5, return_sequences=True, recurrent_initializer="orthogonal", bias_initializer="ones")
    model = keras.Sequential([keras.Input((4, 3)), keras.layers.Masking(), layer])
    path = tmp_path / "m.keras"
    model.save(path)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    np.testing.assert_allclose(from_keras(path)(x), model.predict(x, verbose=0), atol=1e-5)
