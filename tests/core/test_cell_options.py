"""Cell variants (:class:`nplstm.cell.CellOptions`) against the ONNX LSTM operator.

References: a naive NumPy LSTM written here from the ONNX operator's
specification (one sequence at a time, per-gate matrices, its own
activations), onnxruntime's CPU LSTM kernel (float32) and, for peepholes,
``onnx.reference.ReferenceEvaluator``.  onnxruntime
(``uni_directional_lstm.cc``) adds the peephole term, then clips, then
activates; the output gate's peephole sees the new cell state; with
``input_forget`` the forget gate is ``1 - i`` and ``Pf`` is unused; ``h(c)``
is applied to the unclipped cell state.  Backward is held to central
finite differences.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from nplstm.cell import Activation, CellOptions
from nplstm.layer import LSTM
from nplstm.stack import StackedLSTM

from gradcheck import numeric_gradient

# ------------------------------------------------------------ the reference
NEEDS_ALPHA = {"Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"}
NEEDS_BETA = {"Affine", "ScaledTanh", "HardSigmoid"}


def onnx_activation(name: str, alpha: float | None, beta: float | None):
    """The activation as the ONNX LSTM operator's table defines it."""
    a, b = alpha, beta
    return {
        "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
        "Tanh": lambda x: (1 - np.exp(-2 * x)) / (1 + np.exp(-2 * x)),
        "Relu": lambda x: np.where(x > 0, x, 0.0),
        "Affine": lambda x: a * x + b,
        "LeakyRelu": lambda x: np.where(x >= 0, x, a * x),
        "ThresholdedRelu": lambda x: np.where(x > a, x, 0.0),
        "ScaledTanh": lambda x: a * np.tanh(b * x),
        "HardSigmoid": lambda x: np.minimum(np.maximum(a * x + b, 0), 1),
        "Elu": lambda x: np.where(x >= 0, x, a * (np.exp(x) - 1)),
        "Softsign": lambda x: x / (1 + np.abs(x)),
        "Softplus": lambda x: np.log(1 + np.exp(x)),
    }[name]


def kinks(act: Activation) -> list[float]:
    """Where the activation (or its derivative) is not smooth."""
    a, b = act.alpha, act.beta
    if act.name in ("Relu", "LeakyRelu", "Elu"):
        return [0.0]
    if act.name == "ThresholdedRelu":
        return [a]
    if act.name == "HardSigmoid":
        return [-b / a, (1 - b) / a]
    return []


def reference_direction(x, w, h, c, opts: CellOptions, record: dict):
    """One sequence ``x`` (n, I) through one direction, float64, straight from the ONNX equations.

    ``w`` holds per-gate ``W*`` (H, I), ``R*`` (H, P), ``b*`` (H,), ``P*`` (H,), maybe ``W_hr`` (P, H);
    ``record`` collects the unclipped inputs of each activation slot.
    """
    f_act = onnx_activation(opts.gate_activation.name, opts.gate_activation.alpha, opts.gate_activation.beta)
    g_act = onnx_activation(opts.cell_activation.name, opts.cell_activation.alpha, opts.cell_activation.beta)
    h_act = onnx_activation(opts.hidden_activation.name, opts.hidden_activation.alpha, opts.hidden_activation.beta)
    clip = (lambda v: np.clip(v, -opts.clip, opts.clip)) if opts.clip is not None else (lambda v: v)
    zero = np.zeros_like(w["bi"])
    P = {k: (w[f"P{k}"] if opts.peepholes else zero) for k in "ifo"}
    hs = []
    for x_t in x:
        a = {k: w[f"W{k}"] @ x_t + w[f"R{k}"] @ h + w[f"b{k}"] for k in "iofc"}
        a_i = a["i"] + P["i"] * c
        record["gate"].append(a_i)
        i = f_act(clip(a_i))
        if opts.input_forget:
            f = 1 - i
        else:
            a_f = a["f"] + P["f"] * c
            record["gate"].append(a_f)
            f = f_act(clip(a_f))
        record["cell"].append(a["c"])
        g = g_act(clip(a["c"]))
        c = f * c + i * g
        a_o = a["o"] + P["o"] * c
        record["gate"].append(a_o)
        o = f_act(clip(a_o))
        record["hidden"].append(c)
        h = o * h_act(c)
        if "W_hr" in w:  # LSTMP (not in ONNX): h_t = W_hr (o ⊙ h(c_t))
            h = w["W_hr"] @ h
        hs.append(h)
    return np.array(hs).reshape(len(x), -1), h, c


def per_gate(weights) -> dict[str, np.ndarray]:
    """nplstm's public ``W? (H, H+I)`` (hidden first) as ONNX's per-gate ``W``, ``R``, ``b``, ``P``, in float64."""
    P = weights.state_size
    w = {}
    for k, name in (("i", "i"), ("o", "o"), ("f", "f"), ("c", "c")):
        full = np.asarray(getattr(weights, f"W{name}"), dtype=np.float64)
        w[f"R{k}"], w[f"W{k}"] = full[:, :P], full[:, P:]
        w[f"b{k}"] = np.asarray(getattr(weights, f"b{name}"), dtype=np.float64)[:, 0]
    if weights.peepholes:
        for k in "ifo":
            w[f"P{k}"] = np.asarray(getattr(weights, f"P{k}"), dtype=np.float64)[:, 0]
    if weights.W_hr is not None:
        w["W_hr"] = np.asarray(weights.W_hr, dtype=np.float64)
    return w


def reference_stack(stack: StackedLSTM, x, h0, c0, lengths=None):
    """Time-major outputs, h_n, c_n and the activation inputs, one sequence at a time (truncated to its length)."""
    T_, B_, _ = x.shape
    D, H, P = stack.num_directions, stack.hidden_size, stack.state_size
    lengths = np.full(B_, T_) if lengths is None else np.asarray(lengths)
    out = np.zeros((T_, B_, D * P))
    h_n = np.zeros((stack.num_layers * D, B_, P))
    c_n = np.zeros((stack.num_layers * D, B_, H))
    record: dict[str, list] = {"gate": [], "cell": [], "hidden": []}
    for b, n in enumerate(lengths):
        layer_in = np.asarray(x[:n, b], dtype=np.float64)
        for l, pair in enumerate(stack.layers):
            outs = []
            for d, weights in enumerate(pair):
                k = l * D + d
                seq = layer_in if d == 0 else layer_in[::-1]
                hs, h_n[k, b], c_n[k, b] = reference_direction(
                    seq, per_gate(weights), np.asarray(h0[k, b], dtype=np.float64),
                    np.asarray(c0[k, b], dtype=np.float64), stack.cell, record)
                outs.append(hs if d == 0 else hs[::-1])
            layer_in = np.concatenate(outs, axis=1)
        out[:n, b] = layer_in
    return out, h_n, c_n, {k: np.concatenate(v) if v else np.zeros(0) for k, v in record.items()}


# --------------------------------------------------------------- the cases
NON_DEFAULT = {
    "Sigmoid": Activation("Sigmoid"),
    "Tanh": Activation("Tanh"),
    "Relu": Activation("Relu"),
    "Affine": Activation("Affine", alpha=0.7, beta=0.1),
    "LeakyRelu": Activation("LeakyRelu", alpha=0.05),
    "ThresholdedRelu": Activation("ThresholdedRelu", alpha=0.3),
    "ScaledTanh": Activation("ScaledTanh", alpha=1.3, beta=0.8),
    "HardSigmoid": Activation("HardSigmoid", alpha=0.25, beta=0.45),
    "Elu": Activation("Elu", alpha=0.9),
    "Softsign": Activation("Softsign"),
    "Softplus": Activation("Softplus"),
}
SLOTS = ("gate_activation", "cell_activation", "hidden_activation")

CASES = {f"{slot.split('_')[0]}={name}": CellOptions(**{slot: act}) for slot in SLOTS for name, act in NON_DEFAULT.items()}
CASES.update({
    "clip": CellOptions(clip=0.8),
    "input_forget": CellOptions(input_forget=True),
    "peepholes": CellOptions(peepholes=True),
    "combined": CellOptions(gate_activation=NON_DEFAULT["HardSigmoid"], cell_activation=NON_DEFAULT["ScaledTanh"],
                            hidden_activation=NON_DEFAULT["Softsign"], clip=1.1, input_forget=True, peepholes=True),
    "combined-uncoupled": CellOptions(gate_activation=NON_DEFAULT["LeakyRelu"], cell_activation=NON_DEFAULT["Elu"],
                                      hidden_activation=NON_DEFAULT["Softplus"], clip=0.9, peepholes=True),
})



def assert_matches_reference_over_lengths(stack: StackedLSTM, x, h0, c0, lengths):
    """The stack's outputs and final states over ``lengths`` equal :func:`reference_stack`'s (float64, 1e-12)."""
    out, (h, c) = stack.forward(x, (h0, c0), lengths=lengths)
    ref_out, ref_h, ref_c, _ = reference_stack(stack, x, h0, c0, lengths)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, ref_h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, ref_c, rtol=0, atol=1e-12)

def make_stack(opts: CellOptions, rng, *, dtype=np.float64, num_layers=1, bidirectional=False, proj_size=0, I=3, H=4):
    stack = StackedLSTM(I, H, num_layers, bidirectional=bidirectional, proj_size=proj_size, cell=opts, seed=0, dtype=dtype)
    for name, value in stack.parameters().items():
        scale = 0.5 if ".P" in name else 0.7
        value[...] = rng.uniform(-scale, scale, size=value.shape)
    return stack


def make_inputs(stack: StackedLSTM, rng, T=5, B=3):
    LD = stack.num_layers * stack.num_directions
    x = rng.normal(size=(T, B, stack.input_size)).astype(stack.dtype)
    h0 = (0.5 * rng.normal(size=(LD, B, stack.state_size))).astype(stack.dtype)
    c0 = (0.5 * rng.normal(size=(LD, B, stack.hidden_size))).astype(stack.dtype)
    return x, h0, c0


# ------------------------------------------------------------ naive forward
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_the_naive_onnx_reference(case, dtype, tol):
    rng = np.random.default_rng(sum(map(ord, case)))
    stack = make_stack(CASES[case], rng, dtype=dtype)
    x, h0, c0 = make_inputs(stack, rng)
    out, (h, c) = stack.forward(x, (h0, c0))
    assert out.dtype == h.dtype == c.dtype == dtype
    ref_out, ref_h, ref_c, _ = reference_stack(stack, x, h0, c0)
    scale = max(1.0, np.abs(ref_c).max())
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=tol * scale)
    np.testing.assert_allclose(h, ref_h, rtol=0, atol=tol * scale)
    np.testing.assert_allclose(c, ref_c, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("case", ["combined", "combined-uncoupled", "hidden=Affine", "gate=ThresholdedRelu"])
def test_bidirectional_two_layers_with_lengths_match_the_naive_reference(case):
    rng = np.random.default_rng(7)
    stack = make_stack(CASES[case], rng, num_layers=2, bidirectional=True)
    x, h0, c0 = make_inputs(stack, rng, T=6, B=4)
    assert_matches_reference_over_lengths(stack, x, h0, c0, np.array([4, 6, 1, 5]))


def test_single_layer_lstm_and_its_stream_run_the_variant(rng):
    opts = CASES["combined-uncoupled"]
    lstm = LSTM(3, 4, cell=opts, seed=0)
    for value in lstm.parameters().values():
        value[...] = rng.uniform(-0.6, 0.6, size=value.shape)
    x = rng.normal(size=(5, 3))
    out, h, c = lstm.forward(x)
    ref_out, ref_h, ref_c, _ = reference_stack(lstm.engine, x[:, None], np.zeros((1, 1, 4)), np.zeros((1, 1, 4)))
    np.testing.assert_allclose(out, ref_out[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, ref_c[0, 0], rtol=0, atol=1e-12)
    state = lstm.initial_state()
    for t in range(len(x)):
        np.testing.assert_allclose(lstm.step(x[t], state), ref_out[t, 0], rtol=0, atol=1e-12)


# -------------------------------------------------------------- onnxruntime
def onnx_lstm_node_model(stack: StackedLSTM, dtype, *, with_lengths: bool):
    """A one-node ONNX model of ``stack``'s single layer, every tensor a graph input."""
    from onnx import TensorProto, helper

    opts = stack.cell
    H, I, D = stack.hidden_size, stack.input_size, stack.num_directions
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    acts = [opts.gate_activation, opts.cell_activation, opts.hidden_activation] * D
    attrs = dict(
        hidden_size=H,
        direction="bidirectional" if D == 2 else "forward",
        activations=[a.name for a in acts],
    )
    alphas = [a.alpha for a in acts if a.name in NEEDS_ALPHA]
    betas = [a.beta for a in acts if a.name in NEEDS_BETA]
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    if opts.clip is not None:
        attrs["clip"] = opts.clip
    if opts.input_forget:
        attrs["input_forget"] = 1
    names = ["X", "W", "R", "B", "sequence_lens" if with_lengths else "", "initial_h", "initial_c", "P" if opts.peepholes else ""]
    shapes = {"X": ["T", "N", I], "W": [D, 4 * H, I], "R": [D, 4 * H, H], "B": [D, 8 * H],
              "initial_h": [D, "N", H], "initial_c": [D, "N", H], "P": [D, 3 * H]}
    inputs = [helper.make_tensor_value_info(n, elem, shapes[n]) for n in names if n in shapes]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["N"]))
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], **attrs)
    outputs = [helper.make_tensor_value_info(n, elem, None) for n in ("Y", "Y_h", "Y_c")]
    graph = helper.make_graph([node], "lstm", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def onnx_feeds(stack: StackedLSTM, x, h0, c0, dtype, lengths=None):
    Ws, Rs, Bs, Ps = [], [], [], []
    for weights in stack.layers[0]:
        w = per_gate(weights)
        Ws.append(np.concatenate([w[f"W{k}"] for k in "iofc"]))
        Rs.append(np.concatenate([w[f"R{k}"] for k in "iofc"]))
        Bs.append(np.concatenate([w[f"b{k}"] for k in "iofc"] + [np.zeros(4 * stack.hidden_size)]))
        if stack.cell.peepholes:
            Ps.append(np.concatenate([w[f"P{k}"] for k in "iof"]))
    feeds = {"X": x, "W": np.stack(Ws), "R": np.stack(Rs), "B": np.stack(Bs), "initial_h": h0, "initial_c": c0}
    if Ps:
        feeds["P"] = np.stack(Ps)
    feeds = {k: np.asarray(v, dtype=dtype) for k, v in feeds.items()}
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
    return feeds


def run_onnxruntime(stack, x, h0, c0, lengths=None):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = onnx_lstm_node_model(stack, np.float32, with_lengths=lengths is not None)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    Y, Y_h, Y_c = session.run(None, onnx_feeds(stack, x, h0, c0, np.float32, lengths))
    T_, D, B_, H = Y.shape
    return Y.transpose(0, 2, 1, 3).reshape(T_, B_, D * H), Y_h, Y_c


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_onnxruntime(case):
    rng = np.random.default_rng(sum(map(ord, case)) + 1)
    stack = make_stack(CASES[case], rng, dtype=np.float32)
    x, h0, c0 = make_inputs(stack, rng)
    out, (h, c) = stack.forward(x, (h0, c0))
    ref_out, ref_h, ref_c = run_onnxruntime(stack, x, h0, c0)
    for got, want in ((out, ref_out), (h, ref_h), (c, ref_c)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["combined", "combined-uncoupled", "peepholes", "cell=Relu"])
def test_bidirectional_with_sequence_lens_matches_onnxruntime(case):
    rng = np.random.default_rng(11)
    stack = make_stack(CASES[case], rng, dtype=np.float32, bidirectional=True)
    x, h0, c0 = make_inputs(stack, rng, T=6, B=4)
    lengths = np.array([4, 6, 1, 5])
    out, (h, c) = stack.forward(x, (h0, c0), lengths=lengths)
    ref_out, ref_h, ref_c = run_onnxruntime(stack, x, h0, c0, lengths)
    for got, want in ((out, ref_out), (h, ref_h), (c, ref_c)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_peepholes_match_the_onnx_reference_evaluator(rng, bidirectional):
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    stack = make_stack(CellOptions(peepholes=True), rng, bidirectional=bidirectional)
    x, h0, c0 = make_inputs(stack, rng)
    model = onnx_lstm_node_model(stack, np.float64, with_lengths=False)
    Y, Y_h, Y_c = ReferenceEvaluator(model).run(None, onnx_feeds(stack, x, h0, c0, np.float64))
    out, (h, c) = stack.forward(x, (h0, c0))
    np.testing.assert_allclose(out, Y.transpose(0, 2, 1, 3).reshape(out.shape), rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, Y_h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, Y_c, rtol=0, atol=1e-12)


# -------------------------------------------------------- finite differences
FD_CASES = {
    "clip": CASES["clip"],
    "input_forget": CASES["input_forget"],
    "peepholes": CASES["peepholes"],
    "combined": CASES["combined"],
    "combined-uncoupled": CASES["combined-uncoupled"],
    "HardSigmoid-ScaledTanh-Softsign": CellOptions(gate_activation=NON_DEFAULT["HardSigmoid"],
                                                   cell_activation=NON_DEFAULT["ScaledTanh"],
                                                   hidden_activation=NON_DEFAULT["Softsign"]),
    "Softplus-Relu-Affine": CellOptions(gate_activation=NON_DEFAULT["Softplus"], cell_activation=NON_DEFAULT["Relu"],
                                        hidden_activation=NON_DEFAULT["Affine"]),
    "Affine-Elu-LeakyRelu": CellOptions(gate_activation=NON_DEFAULT["Affine"], cell_activation=NON_DEFAULT["Elu"],
                                        hidden_activation=NON_DEFAULT["LeakyRelu"], peepholes=True),
    "ThresholdedRelu-Softsign-Tanh": CellOptions(gate_activation=NON_DEFAULT["ThresholdedRelu"],
                                                 cell_activation=NON_DEFAULT["Softsign"], clip=1.2),
    "Sigmoid-Tanh-ScaledTanh": CellOptions(hidden_activation=NON_DEFAULT["ScaledTanh"], input_forget=True, peepholes=True),
}
FD_EPS = 1e-6
#: Distance every activation input keeps from a kink (and from ±clip), so
#: that ±FD_EPS on one parameter never crosses one.
KINK_MARGIN = 1e-3


def kink_distance(opts: CellOptions, record: dict) -> float:
    distance = np.inf
    for slot, act in (("gate", opts.gate_activation), ("cell", opts.cell_activation), ("hidden", opts.hidden_activation)):
        values = record[slot]
        points = list(kinks(act))
        if opts.clip is not None and slot != "hidden":  # h() sees the unclipped cell state
            points += [-opts.clip, opts.clip]
        for p in points:
            distance = min(distance, float(np.abs(values - p).min()))
    return distance


def smooth_setup(opts: CellOptions, lengths, bidirectional: bool, num_layers: int, proj_size: int = 0):
    """Weights and inputs whose activation inputs all stay KINK_MARGIN away from every kink."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        stack = make_stack(opts, rng, bidirectional=bidirectional, num_layers=num_layers, proj_size=proj_size, I=2, H=3)
        x, h0, c0 = make_inputs(stack, rng, T=4, B=3)
        *_, record = reference_stack(stack, x, h0, c0, lengths)
        if kink_distance(opts, record) > KINK_MARGIN:
            return stack, x, h0, c0, record, rng
    raise AssertionError("no seed keeps the activation inputs away from the kinks")


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(FD_CASES))
def test_gradients_match_finite_differences(case, with_lengths):
    opts = FD_CASES[case]
    lengths = np.array([2, 4, 1]) if with_lengths else None
    stack, x, h0, c0, record, rng = smooth_setup(opts, lengths, bidirectional=True, num_layers=1)
    if opts.clip is not None:  # the clipped branch (zero gradient) is really taken
        assert (np.abs(record["gate"]) > opts.clip).any() or (np.abs(record["cell"]) > opts.clip).any()
    out, (h, c), tape = stack.forward_train(x, (h0, c0), lengths=lengths)
    weights = [rng.normal(size=a.shape) for a in (out, h, c)]
    grads = stack.backward(tape, *weights)

    def loss() -> float:
        o, (hn, cn) = stack.forward(x, (h0, c0), lengths=lengths)
        return float(sum((a * w).sum() for a, w in zip((o, hn, cn), weights)))

    targets = dict(stack.parameters(), x=x, h_0=h0, c_0=c0)
    if opts.peepholes:
        assert {"l0.Pi", "l0.Pf", "l0.Po", "l0_reverse.Po"} <= set(targets)
    for name, array in targets.items():
        numeric = numeric_gradient(loss, array, eps=FD_EPS)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    if opts.peepholes and opts.input_forget:  # ONNX's coupled gate ignores Pf
        assert not grads["l0.Pf"].any()


@pytest.mark.parametrize("case", ["combined", "combined-uncoupled"])
def test_two_projected_bidirectional_layers_match_finite_differences_with_lengths(case):
    opts = CASES[case]
    lengths = np.array([3, 4, 1])
    stack, x, h0, c0, _, rng = smooth_setup(opts, lengths, bidirectional=True, num_layers=2, proj_size=2)
    out, (h, c), tape = stack.forward_train(x, (h0, c0), lengths=lengths)
    weights = [rng.normal(size=a.shape) for a in (out, h, c)]
    grads = stack.backward(tape, *weights)

    def loss() -> float:
        o, (hn, cn) = stack.forward(x, (h0, c0), lengths=lengths)
        return float(sum((a * w).sum() for a, w in zip((o, hn, cn), weights)))

    for name, array in dict(stack.parameters(), x=x, h_0=h0, c_0=c0).items():
        numeric = numeric_gradient(loss, array, eps=FD_EPS)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)


# -------------------------------------------------------------- huge inputs
HUGE = {np.dtype(np.float64): 1e300, np.dtype(np.float32): 1e30}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(NON_DEFAULT))
def test_activations_of_huge_inputs_are_finite_without_warnings(name, dtype):
    act = NON_DEFAULT[name]
    big = HUGE[np.dtype(dtype)]
    x = np.array([-big, -1e10, -1.0, 0.5, 1e10, big], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = act(x)
        d = act.derivative(x)
    assert y.dtype == d.dtype == dtype
    assert np.isfinite(y).all() and np.isfinite(d).all(), (y, d)
    # the moderate entries are the ONNX table's values
    ref = onnx_activation(act.name, act.alpha, act.beta)(np.array([-1.0, 0.5]))
    np.testing.assert_allclose(y[2:4], ref, rtol=1e-6)


#: Gate activations with bounded values.  An unbounded one (Relu, Affine, …)
#: makes gates as huge as the input, and then c_t = f ⊙ c_{t-1} + i ⊙ g
#: really is beyond the dtype (1e300 · 1e300): there ``clip`` bounds them.
BOUNDED = {"Sigmoid", "Tanh", "ScaledTanh", "HardSigmoid", "Softsign"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
def test_huge_inputs_run_without_warnings_or_nan(case, dtype):
    rng = np.random.default_rng(3)
    opts = CASES[case]
    if opts.gate_activation.name not in BOUNDED and opts.clip is None:
        opts = dataclasses.replace(opts, clip=20.0)
    stack = make_stack(opts, rng, dtype=dtype, bidirectional=True)
    big = HUGE[np.dtype(dtype)]
    x = (big * np.sign(rng.normal(size=(3, 2, stack.input_size)))).astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out, (h, c) = stack.forward(x)
        out_t, (h_t, c_t), _ = stack.forward_train(x, lengths=[3, 2])
    for a in (out, h, c, out_t, h_t, c_t):
        assert a.dtype == dtype
        assert not np.isnan(a).any()


# ---------------------------------------------------------------- files
@pytest.mark.parametrize("case", ["combined", "combined-uncoupled", "gate=Affine"])
def test_save_and_load_keep_the_cell(tmp_path, case):
    from nplstm.loading import load_model

    rng = np.random.default_rng(5)
    stack = make_stack(CASES[case], rng, num_layers=2, bidirectional=True)
    path = tmp_path / "stack.npz"
    stack.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, StackedLSTM)
    assert loaded.cell == stack.cell
    assert loaded.parameters().keys() == stack.parameters().keys()
    for name, value in stack.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[name], value, err_msg=name)
    x, h0, c0 = make_inputs(stack, rng)
    expected = stack.forward(x, (h0, c0), lengths=[5, 2, 4])
    got = loaded.forward(x, (h0, c0), lengths=[5, 2, 4])
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1][0], expected[1][0])
    np.testing.assert_array_equal(got[1][1], expected[1][1])


def test_single_layer_save_and_load_keep_the_cell(tmp_path, rng):
    lstm = LSTM(2, 3, cell=CASES["combined"], seed=0)
    for value in lstm.parameters().values():
        value[...] = rng.uniform(-0.6, 0.6, size=value.shape)
    lstm.save(tmp_path / "lstm.npz")
    loaded = LSTM.load(tmp_path / "lstm.npz")
    assert loaded.cell == lstm.cell
    x = rng.normal(size=(4, 2))
    np.testing.assert_array_equal(loaded.forward(x)[0], lstm.forward(x)[0])


# ---------------------------------------------------------- refusing options
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(input_forget="False"), TypeError, r"input_forget must be True or False; got 'False'"),
        (dict(input_forget=2), TypeError, r"input_forget must be True or False; got 2"),
        (dict(peepholes="no"), TypeError, r"peepholes must be True or False; got 'no'"),
        (dict(clip=True), TypeError, r"clip must be a positive finite number or None; got True"),
        (dict(clip="1"), TypeError, r"clip must be a positive finite number or None; got '1'"),
        (dict(clip=0.0), ValueError, r"clip must be a positive finite number or None; got 0.0"),
        (dict(clip=float("inf")), ValueError, r"clip must be a positive finite number or None; got inf"),
        (dict(gate_activation="Sigmoid"), TypeError, r"gate_activation must be an nplstm.cell.Activation"),
    ],
)
def test_malformed_cell_options_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        CellOptions(**kwargs)


def test_numpy_scalars_are_accepted_as_options():
    opts = CellOptions(clip=np.float32(0.5), input_forget=np.bool_(True), peepholes=np.bool_(False))
    assert opts == CellOptions(clip=0.5, input_forget=True)
    assert type(opts.clip) is float and opts.input_forget is True and opts.peepholes is False


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(alpha=True), TypeError, r"activation Elu: alpha must be a finite number; got True"),
        (dict(alpha="1"), TypeError, r"activation Elu: alpha must be a finite number; got '1'"),
        (dict(alpha=[1.0]), TypeError, r"activation Elu: alpha must be a finite number; got \[1.0\]"),
        (dict(alpha=float("nan")), ValueError, r"activation Elu: alpha must be finite; got nan"),
        (dict(beta=0.5), ValueError, r"activation Elu takes no beta; got 0.5"),
    ],
)
def test_malformed_activation_parameters_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        Activation("Elu", **kwargs)


@pytest.mark.parametrize(
    "edit",
    [
        lambda cfg: cfg.update(input_forget="yes"),
        lambda cfg: cfg.update(peepholes=1),
        lambda cfg: cfg.update(clip="0.5"),
        lambda cfg: cfg.update(gate_activation=["Elu", "x", None]),
        lambda cfg: cfg.update(cell_activation=["tanh", None, None]),
        lambda cfg: cfg.pop("clip"),
    ],
    ids=["input_forget-str", "peepholes-int", "clip-str", "alpha-str", "unknown-name", "missing-key"],
)
def test_malformed_cell_configs_raise_value_error(edit):
    config = CASES["combined"].to_config()
    edit(config)
    with pytest.raises(ValueError, match="cell"):
        CellOptions.from_config(config)


def test_cell_config_round_trip():
    for opts in CASES.values():
        assert CellOptions.from_config(opts.to_config()) == opts


def test_projected_variant_matches_the_naive_reference():
    rng = np.random.default_rng(2)
    stack = make_stack(CASES["combined"], rng, num_layers=2, bidirectional=True, proj_size=2)
    x, h0, c0 = make_inputs(stack, rng, T=5, B=3)
    assert_matches_reference_over_lengths(stack, x, h0, c0, np.array([5, 1, 3]))


def test_a_weights_file_with_a_malformed_cell_is_refused(tmp_path):
    """A string where a flag belongs must not load as ``True`` (a silently different cell)."""
    import json

    from nplstm.io import WeightsFileError
    from nplstm.loading import load_model

    path = tmp_path / "stack.npz"
    make_stack(CellOptions(peepholes=True), np.random.default_rng(0)).save(path)
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    config = json.loads(str(arrays["config"]))
    config["cell"]["input_forget"] = "no"
    arrays["config"] = np.array(json.dumps(config))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(WeightsFileError, match="input_forget must be True or False; got 'no'"):
        load_model(bad)


def test_onnx_export_of_a_variant_is_refused_or_faithful():
    ort = pytest.importorskip("onnxruntime")
    from nplstm.interop import InteropError
    from nplstm.interop.onnx import to_onnx

    rng = np.random.default_rng(4)
    stack = make_stack(CASES["combined-uncoupled"], rng, dtype=np.float32)
    x, _, _ = make_inputs(stack, rng)
    try:
        model = to_onnx(stack, with_initial_states=False)
    except InteropError:
        return  # a refusal is a fine answer
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"X": x})[0], stack.forward(x)[0], rtol=1e-5, atol=1e-5)
