"""The ONNX LSTM operator's attributes, imported, against onnxruntime and ONNX's reference evaluator.

Each case is one hand-built LSTM node; onnxruntime (which implements the
whole operator in float32) runs it and from_onnx's model must agree.  The
import is made in float64 so the comparison measures the mapping, not
float32 rounding.  onnxruntime runs layout 0 only: a layout=1 node is
compared with the same node at layout 0 on transposed inputs.
"""

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nplstm.interop import from_onnx  # noqa: E402

I, H, T, B = 3, 4, 5, 3

# (f, g, h) with alpha / beta lists as onnxruntime consumes them (one per activation that takes it)
ACTIVATIONS = [
    (("Sigmoid", "Tanh", "Tanh"), [], []),
    (("HardSigmoid", "Tanh", "Tanh"), [0.25], [0.45]),
    (("Sigmoid", "Relu", "Relu"), [], []),
    (("Sigmoid", "LeakyRelu", "Softsign"), [0.05], []),
    (("HardSigmoid", "ScaledTanh", "Elu"), [0.3, 1.2, 0.8], [0.5, 0.7]),
    (("Sigmoid", "Affine", "Softplus"), [0.6], [0.1]),
    (("Sigmoid", "ThresholdedRelu", "Tanh"), [0.2], []),
    (("Softsign", "Tanh", "Elu"), [1.0], []),
    (("Sigmoid", "Elu", "LeakyRelu"), [], []),  # defaults on which ONNX and onnxruntime agree
]


def lstm_model(rng, *, direction="forward", layout=0, acts=ACTIVATIONS[0], clip=None, input_forget=0,
               peepholes=False, lens=False, states=None):
    """One LSTM node; returns (model, feeds) with feeds laid out for ``layout``."""
    D = 2 if direction == "bidirectional" else 1
    inits = {
        "W": rng.uniform(-0.6, 0.6, size=(D, 4 * H, I)),
        "R": rng.uniform(-0.6, 0.6, size=(D, 4 * H, H)),
        "B": rng.uniform(-0.4, 0.4, size=(D, 8 * H)),
    }
    names, attrs = ["X", "W", "R", "B", "", "", ""], dict(hidden_size=H, direction=direction, layout=layout)
    names_acts, alphas, betas = acts
    if names_acts != ("Sigmoid", "Tanh", "Tanh"):
        attrs["activations"] = list(names_acts) * D
    if alphas:
        attrs["activation_alpha"] = alphas * D
    if betas:
        attrs["activation_beta"] = betas * D
    if clip is not None:
        attrs["clip"] = clip
    if input_forget:
        attrs["input_forget"] = 1
    x_shape = (B, T, I) if layout else (T, B, I)
    s_shape = (B, D, H) if layout else (D, B, H)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))]
    feeds = {"X": rng.normal(size=x_shape).astype(np.float32)}
    if lens:
        names[4] = "sequence_lens"
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
        feeds["sequence_lens"] = np.array([T, 2, 4][:B], dtype=np.int32)
    if states == "inputs":
        names[5:7] = ["initial_h", "initial_c"]
        for n in ("initial_h", "initial_c"):
            inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s_shape)))
            feeds[n] = rng.normal(size=s_shape).astype(np.float32)
    elif states == "initializers":
        names[5:7] = ["initial_h", "initial_c"]
        inits["initial_h"] = rng.normal(size=s_shape)
        inits["initial_c"] = rng.normal(size=s_shape)
    if peepholes:
        names.append("P")
        inits["P"] = rng.uniform(-0.6, 0.6, size=(D, 3 * H))
    while names[-1] == "":
        names.pop()
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], name="lstm", **attrs)
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")]
    tensors = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    graph = helper.make_graph([node], "grid", inputs, outputs, initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, feeds


def as_layout0(model, feeds):
    """The same node at layout 0, with its inputs transposed (onnxruntime has no layout 1)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for a in m.graph.node[0].attribute:
        if a.name == "layout":
            a.i = 0
    for t in m.graph.initializer:
        if t.name in ("initial_h", "initial_c"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).transpose(1, 0, 2).copy(), t.name))
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 3:
            a, b = dims[0].dim_value, dims[1].dim_value
            dims[0].dim_value, dims[1].dim_value = b, a
    new = {k: (v.transpose(1, 0, 2).copy() if v.ndim == 3 else v) for k, v in feeds.items()}
    return m, new


def expected(model, feeds, layout):
    if layout:
        model, feeds = as_layout0(model, feeds)
    Y, Y_h, Y_c = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    if layout:  # back to the layout=1 node's outputs
        Y, Y_h, Y_c = Y.transpose(2, 0, 1, 3), Y_h.transpose(1, 0, 2), Y_c.transpose(1, 0, 2)
    return Y, Y_h, Y_c


def imported_outputs(model, feeds, layout):
    imported = from_onnx(model, dtype=np.float64)
    stack = getattr(imported, "stack", imported)
    hx = None
    if "initial_h" in feeds:
        hx = tuple(feeds[n].transpose(1, 0, 2) if layout else feeds[n] for n in ("initial_h", "initial_c"))
    kwargs = {"lengths": feeds["sequence_lens"]} if "sequence_lens" in feeds else {}
    out, (h, c) = imported.forward(feeds["X"], hx, **kwargs)
    D = stack.num_directions
    seq = out.transpose(1, 0, 2) if stack.batch_first else out
    Y = seq.reshape(T, B, D, H).transpose(0, 2, 1, 3)
    if layout:
        return Y.transpose(2, 0, 1, 3), h.transpose(1, 0, 2), c.transpose(1, 0, 2)
    return Y, h, c


def check(model, feeds, layout=0, atol=3e-5):
    for name, got, want in zip(("Y", "Y_h", "Y_c"), imported_outputs(model, feeds, layout), expected(model, feeds, layout)):
        np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("cell", [dict(), dict(clip=0.7), dict(input_forget=1), dict(peepholes=True),
                                  dict(clip=1.5, input_forget=1, peepholes=True)], ids=lambda c: "-".join(c) or "plain")
@pytest.mark.parametrize("acts", ACTIVATIONS, ids=lambda a: "-".join(a[0]))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_activations_and_cell_options_match_onnxruntime(direction, acts, cell, rng):
    model, feeds = lstm_model(rng, direction=direction, acts=acts, **cell)
    check(model, feeds)


@pytest.mark.parametrize("states", [None, "inputs", "initializers"])
@pytest.mark.parametrize("lens", [False, True])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_layout_lengths_and_states_match_onnxruntime(direction, layout, lens, states, rng):
    model, feeds = lstm_model(rng, direction=direction, layout=layout, lens=lens, states=states, peepholes=True)
    check(model, feeds, layout)


@pytest.mark.parametrize("layout, direction", list(itertools.product([0, 1], ["forward", "reverse", "bidirectional"])))
def test_default_cell_matches_onnx_reference_evaluator(layout, direction, rng):
    """ONNX's ReferenceEvaluator implements the default cell (it ignores activations, clip and lengths)."""
    from onnx.reference import ReferenceEvaluator

    model, feeds = lstm_model(rng, direction=direction, layout=layout, states="inputs", peepholes=True)
    want = ReferenceEvaluator(model).run(None, feeds)
    for name, got, w in zip(("Y", "Y_h", "Y_c"), imported_outputs(model, feeds, layout), want):
        np.testing.assert_allclose(got, w, atol=3e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64_initializers(dtype, rng):
    model, feeds = lstm_model(rng, direction="bidirectional", peepholes=True)
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(dtype), t.name))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model.graph.input[0].type.tensor_type.elem_type = elem
    for o in model.graph.output:
        o.type.tensor_type.elem_type = elem
    imported = from_onnx(model)  # verify runs a float32 copy in onnxruntime
    assert imported.dtype == (np.float64 if dtype == np.float64 else np.float32)
    # the weights are the file's values exactly (float16 widens exactly)
    W = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W")).astype(np.float64)
    np.testing.assert_array_equal(imported.layers[0][1].Wi[:, H:], W[1, :H].astype(imported.dtype))
