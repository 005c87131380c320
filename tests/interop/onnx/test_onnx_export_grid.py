"""to_onnx writes every stack feature; onnxruntime runs it like the stack, and from_onnx gives the stack back."""

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nplstm.cell import Activation, CellOptions  # noqa: E402
from nplstm.interop import from_onnx, to_onnx  # noqa: E402
from nplstm.stack import StackedLSTM  # noqa: E402

CELLS = {
    "default": CellOptions(),
    "peepholes": CellOptions(peepholes=True),
    "clip-coupled": CellOptions(clip=0.8, input_forget=True),
    "hard-relu": CellOptions(gate_activation=Activation("HardSigmoid", 0.25, 0.45), cell_activation=Activation("Relu"),
                             hidden_activation=Activation("Softsign")),
    "scaled-affine": CellOptions(gate_activation=Activation("Sigmoid"), cell_activation=Activation("ScaledTanh", 1.3, 0.7),
                                 hidden_activation=Activation("Affine", 0.9, 0.1), peepholes=True, clip=2.0),
    "elu-leaky": CellOptions(cell_activation=Activation("Elu", 0.8), hidden_activation=Activation("LeakyRelu", 0.1)),
}
SHAPES = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, batch_first=True, bias=False),
    dict(num_layers=3, bidirectional=True, batch_first=True),
]


def random_stack(rng, cell, dtype=np.float64, **shape):
    stack = StackedLSTM(3, 4, **shape, cell=cell, seed=0, dtype=dtype)
    for p in stack.parameters().values():
        p[...] = rng.uniform(-0.6, 0.6, size=p.shape)
    return stack


def inputs(rng, stack, B=3, T=6):
    D, L, H = stack.num_directions, stack.num_layers, stack.hidden_size
    x = rng.normal(size=(B, T, 3) if stack.batch_first else (T, B, 3))
    hx = (rng.normal(size=(L * D, B, H)), rng.normal(size=(L * D, B, H)))
    return x, hx, np.array([T, 2, 5])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("cell", list(CELLS), ids=str)
def test_round_trip_is_exact(cell, shape, rng):
    stack = random_stack(rng, CELLS[cell], **shape)
    # float64 keeps the weights exact; alpha/beta/clip (float32 attributes in ONNX) ride along in metadata.
    # from_onnx's verify runs the graph in onnxruntime (as float32) before returning.
    model = to_onnx(stack, dtype=np.float64, with_lengths=True)
    again = from_onnx(model)
    assert isinstance(again, StackedLSTM)
    for attr in ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first", "bias", "cell", "dtype"):
        assert getattr(again, attr) == getattr(stack, attr), attr
    assert again.parameters().keys() == stack.parameters().keys()
    for name, value in stack.parameters().items():
        np.testing.assert_array_equal(again.parameters()[name], value, err_msg=name)
    x, hx, lengths = inputs(rng, stack)
    got, want = again.forward(x, hx, lengths=lengths), stack.forward(x, hx, lengths=lengths)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1][0], want[1][0])


@pytest.mark.parametrize("with_lengths, with_states", list(itertools.product([False, True], [False, True])))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("cell", ["default", "peepholes", "hard-relu", "scaled-affine"])
def test_onnxruntime_runs_the_export_like_the_stack(cell, shape, with_lengths, with_states, rng):
    stack = random_stack(rng, CELLS[cell], dtype=np.float32, **shape)
    model = to_onnx(stack, with_lengths=with_lengths, with_initial_states=with_states)
    x, hx, lengths = inputs(rng, stack)
    feeds = {"X": x.astype(np.float32)}
    if with_states:
        feeds.update(initial_h=hx[0].astype(np.float32), initial_c=hx[1].astype(np.float32))
    if with_lengths:
        feeds["sequence_lens"] = lengths.astype(np.int32)
    Y, Y_h, Y_c = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    out, (h, c) = stack.forward(x, hx if with_states else None, lengths=lengths if with_lengths else None)
    np.testing.assert_allclose(Y, out, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(Y_h, h, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(Y_c, c, atol=2e-5, rtol=1e-4)
