"""from_onnx on real torch exports (legacy TorchScript exporter and dynamo), compared with torch itself."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from nplstm.interop import InteropError, from_onnx  # noqa: E402
from nplstm.stack import StackedLSTM  # noqa: E402


def export(module, args, path, dynamo, **kwargs):
    if dynamo:
        pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=dynamo, **kwargs)


CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=1, batch_first=True),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, batch_first=True, bidirectional=True),
    dict(num_layers=2, batch_first=True),
]


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-states", "states"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_torch_export_imports_and_matches_torch(config, with_states, dynamo, tmp_path):
    torch.manual_seed(0)
    module = torch.nn.LSTM(4, 5, **config).eval()
    L, D = config["num_layers"], 2 if config.get("bidirectional") else 1
    x = torch.randn(3, 6, 4)
    B = 3 if config.get("batch_first") else 6
    args = (x, (torch.randn(L * D, B, 5), torch.randn(L * D, B, 5))) if with_states else (x,)
    path = tmp_path / "lstm.onnx"
    export(module, args, path, dynamo)
    imported = from_onnx(path, allow_external_data=dynamo)  # dynamo writes the weights to a side file
    assert isinstance(imported, StackedLSTM)
    assert (imported.num_layers, imported.bidirectional, imported.batch_first) == (L, D == 2, bool(config.get("batch_first")))
    hx = tuple(a.numpy() for a in args[1]) if with_states else None
    out, (h, c) = imported.forward(x.numpy(), hx)
    with torch.no_grad():
        want, (wh, wc) = module(*args)
    assert h.shape == tuple(wh.shape)
    np.testing.assert_allclose(out, want.numpy(), atol=1e-5)
    np.testing.assert_allclose(h, wh.numpy(), atol=1e-5)
    np.testing.assert_allclose(c, wc.numpy(), atol=1e-5)


def test_legacy_export_with_dynamic_axes(tmp_path, rng):
    torch.manual_seed(1)
    module = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True).eval()
    path = tmp_path / "dyn.onnx"
    export(module, (torch.randn(2, 5, 3),), path, False, input_names=["x"], dynamic_axes={"x": {0: "batch", 1: "time"}})
    imported = from_onnx(path)
    x = rng.normal(size=(7, 9, 3)).astype(np.float32)  # other sizes than the export's
    with torch.no_grad():
        want, (wh, _) = module(torch.from_numpy(x))
    out, (h, _) = imported.forward(x)
    np.testing.assert_allclose(out, want.numpy(), atol=1e-5)
    np.testing.assert_allclose(h, wh.numpy(), atol=1e-5)


def test_dynamo_export_without_opt_in_names_the_side_file(tmp_path):
    path = tmp_path / "lstm.onnx"
    export(torch.nn.LSTM(4, 5).eval(), (torch.randn(3, 6, 4),), path, True)
    with pytest.raises(InteropError, match=r"lstm\.onnx: tensor '.*' keeps its data in the external file 'lstm\.onnx\.data'"):
        from_onnx(path)
