"""Fuzzing every loader: random and mutated files give a model or a WeightsFileError, nothing else.

Hypothesis mutates valid files (truncation, flipped bytes, inserted bytes,
pure noise); each loader must either read the file or refuse it with the
documented exception, never crash with another one or try a huge allocation.
"""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nplstm import SequenceModel, StackedLSTM, WeightsFileError
from nplstm.io import read_csv, read_npy
from nplstm.weights import load_model

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw, original: bytes):
    data = bytearray(original)
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "noise", "splice"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, max(0, len(data) - 1)))])
    if kind == "noise":
        return draw(st.binary(max_size=512))
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:])
    if kind == "splice":  # overwrite a run, e.g. a header field, with random bytes
        at = draw(st.integers(0, max(0, len(data) - 1)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=32)) + data[at + 32 :])
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


def fuzz_one(tmp_path, name, payload, loader):
    path = tmp_path / name
    path.write_bytes(payload)
    try:
        loader(path)
    except WeightsFileError:
        pass


def valid_bytes(tmp_path, name, write):
    path = tmp_path / f"valid_{name}"
    write(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("orig")
    out = {
        "model.npz": valid_bytes(d, "model.npz", lambda p: SequenceModel(2, 3, 1, seed=0).save(p)),
        "stack.npz": valid_bytes(d, "stack.npz", lambda p: StackedLSTM(2, 3, num_layers=2, bidirectional=True, seed=0).save(p)),
        "x.npy": valid_bytes(d, "x.npy", lambda p: np.save(p, np.arange(12.0).reshape(6, 2))),
        "x.csv": b"1.0,2.0\n3.5,-4e3\n# comment\n5,6\n",
    }
    try:
        import torch

        from nplstm.interop import to_torch_state_dict

        buf = io.BytesIO()
        torch.save(to_torch_state_dict(StackedLSTM(2, 3, seed=0)), buf)
        out["w.pt"] = buf.getvalue()
    except ImportError:
        pass
    try:
        from nplstm.interop import to_onnx

        out["w.onnx"] = to_onnx(StackedLSTM(2, 3, seed=0)).SerializeToString()
    except ImportError:
        pass
    return out


LOADERS = {
    "model.npz": load_model,
    "stack.npz": load_model,
    "x.npy": read_npy,
    "x.csv": read_csv,
    "w.pt": load_model,
    "w.onnx": load_model,
}


@pytest.mark.parametrize("name", list(LOADERS))
def test_valid_file_loads(name, originals, tmp_path):
    if name not in originals:
        pytest.skip("library not installed")
    path = tmp_path / name
    path.write_bytes(originals[name])
    assert LOADERS[name](path) is not None


@pytest.mark.parametrize("name", list(LOADERS))
def test_mutated_files_only_raise_weights_file_error(name, originals, tmp_path):
    if name not in originals:
        pytest.skip("library not installed")

    @FUZZ
    @given(payload=mutated(originals[name]))
    def check(payload):
        fuzz_one(tmp_path, name, payload, LOADERS[name])

    check()


@st.composite
def npz_with_mutated_member(draw, original: bytes):
    """A well-formed zip (good CRCs) whose .npy members' bytes are mutated."""
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(original))
    out = io.BytesIO()
    victim = draw(st.sampled_from(src.namelist()))
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, draw(mutated(data)) if name == victim else data)
    return out.getvalue()


@pytest.mark.parametrize("name", ["model.npz", "stack.npz"])
def test_npz_with_mutated_arrays_only_raise_weights_file_error(name, originals, tmp_path):
    @FUZZ
    @given(payload=npz_with_mutated_member(originals[name]))
    def check(payload):
        fuzz_one(tmp_path, name, payload, LOADERS[name])

    check()


def test_onnx_tensor_claiming_terabytes_is_refused(tmp_path):
    pytest.importorskip("onnx")
    from nplstm.interop import to_onnx

    model = to_onnx(StackedLSTM(2, 3, seed=0))
    w = next(t for t in model.graph.initializer if t.name == "W_0")
    del w.dims[:]
    w.dims.extend([1, 1 << 20, 1 << 20])
    path = tmp_path / "huge.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(WeightsFileError):
        load_model(path)


def test_nan_weights_and_wrong_dtypes_are_refused(tmp_path):
    from nplstm.io import read_npz, save_npz

    path = SequenceModel(2, 3, 1, seed=0).save(tmp_path / "m.npz")
    arrays = read_npz(path)
    arrays["lstm.l0.Wf"] = np.full_like(arrays["lstm.l0.Wf"], np.nan)
    save_npz(path, arrays)
    with pytest.raises(WeightsFileError, match="NaN"):
        load_model(path)
    arrays["lstm.l0.Wf"] = np.zeros(arrays["lstm.l0.Wf"].shape, dtype=np.complex128)
    save_npz(path, arrays)
    with pytest.raises(WeightsFileError, match="complex128"):
        load_model(path)
