"""Saving and loading: round trip, atomic writes, and refusing bad files."""

import io
import zipfile

import numpy as np
import pytest

import nplstm.io as nio
from nplstm.io import WeightsFileError, read_npz
from nplstm.model import SequenceModel


def saved_model(tmp_path, **kwargs):
    model = SequenceModel(3, 4, 2, seed=0, **kwargs)
    model.lstm.bf = np.arange(4.0)
    return model, model.save(tmp_path / "model.npz")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_round_trip_gives_the_same_predictions(tmp_path, rng, dtype):
    model = SequenceModel(3, 4, 2, many_to_many=True, seed=0, dtype=dtype)
    path = model.save(tmp_path / "m.npz")
    loaded = SequenceModel.load(path)
    assert loaded.many_to_many and loaded.dtype == dtype
    x = rng.normal(size=(2, 5, 3))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    with np.load(path, allow_pickle=False) as npz:  # an ordinary npz, readable without pickle
        assert "lstm.l0.Wf" in npz.files


def test_interrupted_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    model, path = saved_model(tmp_path)
    before = path.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(nio.np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left behind


def test_truncated_and_garbage_files(tmp_path):
    _, path = saved_model(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError):
        SequenceModel.load(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(WeightsFileError, match="not a readable .npz"):
        SequenceModel.load(tmp_path / "junk.npz")
    with pytest.raises(WeightsFileError, match="no such file"):
        SequenceModel.load(tmp_path / "missing.npz")


def npz_with_raw_member(path, name, header_shape, payload):
    """An .npz whose member's header claims header_shape but stores payload bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": header_shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}.npy", buf.getvalue() + payload)


def test_a_header_claiming_terabytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    npz_with_raw_member(path, "lstm.Wf", (1 << 20, 1 << 20), b"\0" * 64)
    with pytest.raises(WeightsFileError, match=r"claims shape \(1048576, 1048576\).*over the limit"):
        read_npz(path)
    npz_with_raw_member(path, "lstm.Wf", (4, 4), b"\0" * 64)  # 128 bytes claimed, 64 stored
    with pytest.raises(WeightsFileError, match=r"\(128 bytes\) but 64 bytes are stored"):
        read_npz(path)


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(WeightsFileError, match="dtype object; only numeric and text arrays"):
        read_npz(path)
