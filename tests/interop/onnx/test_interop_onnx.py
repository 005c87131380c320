"""ONNX interop: the exported model passes the checker and runs the same in onnxruntime."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nplstm.interop import InteropError, from_onnx, to_onnx  # noqa: E402
from nplstm.stack import StackedLSTM  # noqa: E402


def run_ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_stack(rng, **kwargs):
    stack = StackedLSTM(**kwargs, seed=0)
    for p in stack.parameters().values():
        p[...] = rng.uniform(-0.6, 0.6, size=p.shape)
    return stack


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5)], ids=["f32"])  # ORT's LSTM kernel is float32 only
def test_export_matches_onnxruntime(num_layers, bidirectional, batch_first, dtype, tol, rng):
    stack = random_stack(rng, input_size=3, hidden_size=5, num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=batch_first, dtype=dtype)
    D = 2 if bidirectional else 1
    x = rng.normal(size=(4, 6, 3) if batch_first else (6, 4, 3)).astype(dtype)
    h0 = rng.normal(size=(num_layers * D, 4, 5)).astype(dtype)
    c0 = rng.normal(size=(num_layers * D, 4, 5)).astype(dtype)
    model = to_onnx(stack)
    Y, Y_h, Y_c = run_ort(model, {"X": x, "initial_h": h0, "initial_c": c0})
    out, (h, c) = stack.forward(x, (h0, c0))
    np.testing.assert_allclose(Y, out, atol=tol)
    np.testing.assert_allclose(Y_h, h, atol=tol)
    np.testing.assert_allclose(Y_c, c, atol=tol)


def test_float64_export_is_a_valid_double_model(rng):
    stack = random_stack(rng, input_size=2, hidden_size=3, num_layers=2)
    model = to_onnx(stack, dtype=np.float64)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    again = from_onnx(model)
    assert again.dtype == np.float64
    for name, value in stack.parameters().items():
        np.testing.assert_array_equal(again.parameters()[name], value, err_msg=name)


def test_export_without_states_and_to_file_then_import(tmp_path, rng):
    stack = random_stack(rng, input_size=2, hidden_size=4, num_layers=2, bidirectional=True, dtype=np.float32)
    path = tmp_path / "lstm.onnx"
    to_onnx(stack, path, with_initial_states=False)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["X"]
    x = rng.normal(size=(5, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(run_ort(model, {"X": x})[0], stack.forward(x)[0], atol=1e-5)
    again = from_onnx(path)
    assert again.num_layers == 2 and again.bidirectional
    for name, value in stack.parameters().items():
        np.testing.assert_allclose(again.parameters()[name], value, rtol=0, atol=0, err_msg=name)


def single_node_model(W, R, B=None, **attrs):
    """A hand-built ONNX graph with one LSTM node, as other exporters write it."""
    D, H4, I = W.shape
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    inputs = ["X", "W", "R"]
    if B is not None:
        inits.append(numpy_helper.from_array(B, "B"))
        inputs.append("B")
    attrs.setdefault("hidden_size", H4 // 4)
    node = helper.make_node("LSTM", inputs, ["Y", "Y_h"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None), helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_import_a_foreign_node_with_both_biases(rng):
    W = rng.uniform(-0.5, 0.5, size=(2, 12, 2)).astype(np.float32)
    R = rng.uniform(-0.5, 0.5, size=(2, 12, 3)).astype(np.float32)
    B = rng.uniform(-0.5, 0.5, size=(2, 24)).astype(np.float32)
    model = single_node_model(W, R, B, direction="bidirectional")
    x = rng.normal(size=(4, 2, 2)).astype(np.float32)
    Y, Y_h = run_ort(model, {"X": x})
    stack = from_onnx(model)
    out, (h, _) = stack.forward(x)
    np.testing.assert_allclose(out, Y.transpose(0, 2, 1, 3).reshape(4, 2, 6), atol=1e-5)
    np.testing.assert_allclose(h, Y_h, atol=1e-5)


def test_import_refuses_what_does_not_map(rng, tmp_path):
    W = np.zeros((1, 12, 2), dtype=np.float32)
    R = np.zeros((1, 12, 3), dtype=np.float32)
    with pytest.raises(InteropError, match=r"tensor 'B' of LSTM node 'Y' has shape \(1, 20\); expected \(1, 24\)"):
        from_onnx(single_node_model(W, R, np.zeros((1, 20), dtype=np.float32)))
    with pytest.raises(InteropError, match=r"tensor 'R' must be \(1, 4H, H\); got \(1, 12, 4\)"):
        from_onnx(single_node_model(W, np.zeros((1, 12, 4), dtype=np.float32)))
    with pytest.raises(InteropError, match=r"hidden_size=4 but R implies 3"):
        from_onnx(single_node_model(W, R, hidden_size=4))
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(InteropError, match="not a valid ONNX model"):
        from_onnx(tmp_path / "bad.onnx")


def test_projection_cannot_be_exported():
    with pytest.raises(InteropError, match="no projection"):
        to_onnx(StackedLSTM(2, 4, proj_size=2, seed=0))
