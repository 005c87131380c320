"""Deploy on NumPy alone: torch models exported to ONNX and converted to ``.npz`` give the outputs torch computed.

The fixtures in ``tests/interop/onnx/deploy/`` were written by ``tests/interop/onnx/deploy/make_fixtures.py``
on a machine with torch; CI also runs this file in a venv holding NumPy
and the test tools only (``NPLSTM_NUMPY_ONLY=1``), where onnx, onnxruntime
and torch must be absent.
"""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from nplstm import SequenceModel
from nplstm.cli import main
from nplstm.interop import from_onnx

HERE = Path(__file__).resolve().parent / "deploy"
EXPECTED = dict(np.load(HERE / "expected.npz"))


def test_this_job_really_has_numpy_alone():
    if os.environ.get("NPLSTM_NUMPY_ONLY") != "1":
        pytest.skip("only in the NumPy-only CI job")
    for module in ("onnx", "onnxruntime", "torch", "keras", "numba"):
        assert importlib.util.find_spec(module) is None, module


@pytest.mark.parametrize("name", ["classifier", "forecaster"])
def test_an_exported_onnx_file_predicts_what_torch_did(name):
    model = from_onnx(HERE / f"{name}.onnx")
    assert isinstance(model, SequenceModel)
    np.testing.assert_allclose(model.predict(EXPECTED[f"{name}_x"]), EXPECTED[f"{name}_y"], atol=1e-5)


def test_a_converted_npz_predicts_what_torch_did_and_so_does_the_command_line(tmp_path):
    model = SequenceModel.load(HERE / "classifier.npz")
    x, y = EXPECTED["classifier_x"], EXPECTED["classifier_y"]
    np.testing.assert_allclose(model.predict(x), y, atol=1e-5)
    np.save(tmp_path / "ids.npy", x)
    for weights in ("classifier.npz", "classifier.onnx"):
        out = tmp_path / "p.npy"
        assert main(["predict", "--weights", str(HERE / weights), "--input", str(tmp_path / "ids.npy"), "--out", str(out)]) == 0
        np.testing.assert_allclose(np.load(out), y, atol=1e-5)


def test_verify_without_onnx_says_what_it_needs():
    if importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None:
        pytest.skip("onnx and onnxruntime are installed: verify runs")
    from nplstm.interop import InteropError

    with pytest.raises(InteropError, match=r"verify=True needs onnx and onnxruntime"):
        from_onnx(HERE / "forecaster.onnx", verify=True)
