"""Variable-length batches (``lengths=``) against torch's packed sequences and against each sequence alone.

Semantics are those of ``torch.nn.utils.rnn.pack_padded_sequence`` (and of
ONNX ``sequence_lens``): outputs past a sequence's length are zero, final
states are those of its last valid step, and the reverse direction of a
bidirectional layer starts at each sequence's own last step.
"""

from __future__ import annotations

import itertools
import tracemalloc
import warnings

import numpy as np
import pytest

from nplstm.layer import LSTM
from nplstm.model import SequenceModel
from nplstm.optim import Adam
from nplstm.stack import StackedLSTM
from nplstm.training import fit

T, B = 6, 5
#: Unsorted, with duplicates, the shortest possible (1) and the full length (T).
LENGTHS = np.array([3, T, 1, 4, T])

GRID = [
    dict(num_layers=L, bidirectional=bi, proj_size=proj, batch_first=bf, input_size=I, hidden_size=H)
    for (L, bi, proj, bf), (I, H) in zip(
        itertools.product([1, 2, 3], [False, True], [0, 2], [False, True]),
        itertools.cycle([(3, 4), (1, 5), (4, 3)]),
    )
]


def cfg_id(cfg: dict) -> str:
    return "L{num_layers}-bi{bidirectional:d}-p{proj_size}-bf{batch_first:d}".format(**cfg)


# ------------------------------------------------------------------ torch
def torch_setup(cfg: dict, seed: int = 0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    module = torch.nn.LSTM(**cfg, dtype=torch.float64)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.7, 0.7)
    g = torch.Generator().manual_seed(seed + 1)
    D = 2 if cfg["bidirectional"] else 1
    P = cfg["proj_size"] or cfg["hidden_size"]
    shape = (B, T, cfg["input_size"]) if cfg["batch_first"] else (T, B, cfg["input_size"])
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    h0 = torch.randn(cfg["num_layers"] * D, B, P, generator=g, dtype=torch.float64)
    c0 = torch.randn(cfg["num_layers"] * D, B, cfg["hidden_size"], generator=g, dtype=torch.float64)
    return torch, module, x, h0, c0


def torch_packed_forward(torch, module, x, hx, lengths, batch_first):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out, (h, c) = module(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return out, h, c


@pytest.mark.parametrize("with_hx", [False, True], ids=["zero-hx", "hx"])
@pytest.mark.parametrize("cfg", GRID, ids=cfg_id)
def test_forward_equals_torch_packed_sequence(cfg, with_hx):
    from nplstm.interop import from_torch

    torch, module, x, h0, c0 = torch_setup(cfg)
    hx = (h0, c0) if with_hx else None
    with torch.no_grad():
        ref_out, ref_h, ref_c = torch_packed_forward(torch, module, x, hx, LENGTHS, cfg["batch_first"])
    stack = from_torch(module)
    out, (h, c) = stack.forward(x.numpy(), (h0.numpy(), c0.numpy()) if with_hx else None, lengths=LENGTHS)
    assert out.shape == tuple(ref_out.shape)
    np.testing.assert_allclose(out, ref_out.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h, ref_h.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(c, ref_c.numpy(), rtol=0, atol=1e-10)
    # padded steps are exactly zero, not merely small
    time_major = out.transpose(1, 0, 2) if cfg["batch_first"] else out
    for b, n in enumerate(LENGTHS):
        assert not time_major[n:, b].any()


@pytest.mark.parametrize("cfg", [GRID[5], GRID[18], GRID[23]], ids=cfg_id)
def test_float32_forward_equals_torch_packed_sequence(cfg):
    from nplstm.interop import from_torch

    torch, module, x, h0, c0 = torch_setup(cfg)
    module = module.float()
    x, h0, c0 = x.float(), h0.float(), c0.float()
    with torch.no_grad():
        ref_out, ref_h, ref_c = torch_packed_forward(torch, module, x, (h0, c0), LENGTHS, cfg["batch_first"])
    stack = from_torch(module)
    assert stack.dtype == np.float32
    out, (h, c) = stack.forward(x.numpy(), (h0.numpy(), c0.numpy()), lengths=LENGTHS)
    assert out.dtype == h.dtype == c.dtype == np.float32
    for got, want in ((out, ref_out), (h, ref_h), (c, ref_c)):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)


BACKWARD_GRID = [
    dict(num_layers=1, bidirectional=False, proj_size=0, batch_first=False, input_size=3, hidden_size=4),
    dict(num_layers=1, bidirectional=True, proj_size=0, batch_first=True, input_size=2, hidden_size=3),
    dict(num_layers=2, bidirectional=False, proj_size=2, batch_first=True, input_size=3, hidden_size=4),
    dict(num_layers=2, bidirectional=True, proj_size=2, batch_first=False, input_size=3, hidden_size=4),
    dict(num_layers=3, bidirectional=True, proj_size=0, batch_first=True, input_size=1, hidden_size=3),
]


@pytest.mark.parametrize("cfg", BACKWARD_GRID, ids=cfg_id)
def test_backward_equals_torch_autograd_through_packed_sequence(cfg):
    from nplstm.interop import from_torch

    torch, module, x, h0, c0 = torch_setup(cfg, seed=3)
    for t in (x, h0, c0):
        t.requires_grad_(True)
    out, h, c = torch_packed_forward(torch, module, x, (h0, c0), LENGTHS, cfg["batch_first"])
    g = torch.Generator().manual_seed(9)
    # the weights on padded output steps must have no effect: those outputs are constants
    w = [torch.randn(*a.shape, generator=g, dtype=torch.float64) for a in (out, h, c)]
    sum((a * b).sum() for a, b in zip((out, h, c), w)).backward()

    stack = from_torch(module)
    _, _, tape = stack.forward_train(x.detach().numpy(), (h0.detach().numpy(), c0.detach().numpy()), lengths=LENGTHS)
    grads = stack.backward(tape, *(t.numpy() for t in w))
    torch_grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    expected = from_torch(torch_grads, batch_first=cfg["batch_first"]).parameters()  # the same name mapping, applied to gradients
    assert set(expected) == set(stack.parameters())
    for name, value in expected.items():
        if ".b" in name:  # torch's bias_ih and bias_hh gradients are equal; from_torch summed them
            value = value / 2
        np.testing.assert_allclose(grads[name], value, rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(grads["x"], x.grad.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(grads["h_0"], h0.grad.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(grads["c_0"], c0.grad.numpy(), rtol=0, atol=1e-9)
    dx = grads["x"].transpose(1, 0, 2) if cfg["batch_first"] else grads["x"]
    for b, n in enumerate(LENGTHS):
        assert not dx[n:, b].any(), "padded input steps cannot influence the loss"


# ------------------------------------------------------ without torch
def random_inputs(rng, stack: StackedLSTM, T_: int = T, B_: int = B):
    LD = stack.num_layers * stack.num_directions
    x = rng.normal(size=(T_, B_, stack.input_size))
    h0 = rng.normal(size=(LD, B_, stack.state_size))
    c0 = rng.normal(size=(LD, B_, stack.hidden_size))
    return x, h0, c0


def randomize(stack: StackedLSTM, rng) -> StackedLSTM:
    for value in stack.parameters().values():
        value[...] = rng.uniform(-0.7, 0.7, size=value.shape)
    return stack


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_a_batch_with_lengths_equals_each_sequence_run_alone(rng, bidirectional, proj_size):
    stack = randomize(StackedLSTM(3, 4, 2, bidirectional=bidirectional, proj_size=proj_size, seed=0), rng)
    x, h0, c0 = random_inputs(rng, stack)
    out, (h, c) = stack.forward(x, (h0, c0), lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        alone, (h_alone, c_alone) = stack.forward(x[:n, b], (h0[:, b], c0[:, b]))
        np.testing.assert_allclose(out[:n, b], alone, rtol=0, atol=1e-13)
        assert not out[n:, b].any()
        np.testing.assert_allclose(h[:, b], h_alone, rtol=0, atol=1e-13)
        np.testing.assert_allclose(c[:, b], c_alone, rtol=0, atol=1e-13)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_batch_gradients_are_the_sums_of_each_sequence_alone(rng, bidirectional):
    """Parameter gradients add up over sequences; x, h_0, c_0 gradients are each sequence's own."""
    stack = randomize(StackedLSTM(3, 4, 2, bidirectional=bidirectional, proj_size=2, seed=0), rng)
    x, h0, c0 = random_inputs(rng, stack)
    out, (h, c), tape = stack.forward_train(x, (h0, c0), lengths=LENGTHS)
    d_out, d_h, d_c = (rng.normal(size=a.shape) for a in (out, h, c))
    grads = stack.backward(tape, d_out, d_h, d_c)
    summed = {name: np.zeros_like(v) for name, v in stack.parameters().items()}
    for b, n in enumerate(LENGTHS):
        _, _, tape_b = stack.forward_train(x[:n, b], (h0[:, b], c0[:, b]))
        g_b = stack.backward(tape_b, d_out[:n, b], d_h[:, b], d_c[:, b])
        for name in summed:
            summed[name] += g_b[name]
        np.testing.assert_allclose(grads["x"][:n, b], g_b["x"], rtol=0, atol=1e-12)
        assert not grads["x"][n:, b].any()
        np.testing.assert_allclose(grads["h_0"][:, b], g_b["h_0"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(grads["c_0"][:, b], g_b["c_0"], rtol=0, atol=1e-12)
    for name, value in summed.items():
        np.testing.assert_allclose(grads[name], value, rtol=0, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_all_equal_to_T_are_bit_identical_to_no_lengths(rng, bidirectional):
    stack = randomize(StackedLSTM(3, 4, 2, bidirectional=bidirectional, seed=0), rng)
    x, h0, c0 = random_inputs(rng, stack)
    full = np.full(B, T)
    out_a, (h_a, c_a) = stack.forward(x, (h0, c0))
    out_b, (h_b, c_b) = stack.forward(x, (h0, c0), lengths=full)
    for a, b in ((out_a, out_b), (h_a, h_b), (c_a, c_b)):
        np.testing.assert_array_equal(a, b)
    d = [rng.normal(size=a.shape) for a in (out_a, h_a, c_a)]
    grads_a = stack.backward(stack.forward_train(x, (h0, c0))[2], *d)
    grads_b = stack.backward(stack.forward_train(x, (h0, c0), lengths=full)[2], *d)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        np.testing.assert_array_equal(grads_a[name], grads_b[name], err_msg=name)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_single_layer_lstm_with_lengths_agrees_with_the_stack(rng, batch_first, proj_size):
    lstm = LSTM(3, 4, seed=1, batch_first=batch_first, proj_size=proj_size)
    stack = StackedLSTM(3, 4, batch_first=batch_first, proj_size=proj_size, seed=2)
    for name, value in lstm.parameters().items():
        value[...] = rng.uniform(-0.7, 0.7, size=value.shape)
        stack.parameters()[f"l0.{name}"][...] = value
    x, h0, c0 = random_inputs(rng, stack)
    x_user = x.transpose(1, 0, 2) if batch_first else x
    out, h, c = lstm.forward(x_user, h0[0], c0[0], lengths=LENGTHS)
    ref_out, (ref_h, ref_c) = stack.forward(x_user, (h0, c0), lengths=LENGTHS)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(h, ref_h[0])
    np.testing.assert_array_equal(c, ref_c[0])

    out_t, h_t, c_t, tape = lstm.forward_train(x_user, h0[0], c0[0], lengths=LENGTHS)
    np.testing.assert_array_equal(out_t, ref_out)
    d_out, d_h, d_c = (rng.normal(size=a.shape) for a in (out_t, h_t, c_t))
    grads = lstm.backward(d_out, d_h, d_c, tape=tape)
    _, _, stack_tape = stack.forward_train(x_user, (h0, c0), lengths=LENGTHS)
    ref = stack.backward(stack_tape, d_out, d_h[None], d_c[None])
    for name in lstm.parameter_names():
        np.testing.assert_array_equal(grads[name], ref[f"l0.{name}"], err_msg=name)
    np.testing.assert_array_equal(grads["x"], ref["x"])
    np.testing.assert_array_equal(grads["h_0"], ref["h_0"][0])
    np.testing.assert_array_equal(grads["c_0"], ref["c_0"][0])
    # and the layer's own training forward gives what its inference forward gives
    np.testing.assert_array_equal(h_t, h)
    np.testing.assert_array_equal(c_t, c)


def test_single_layer_trace_with_lengths_stops_at_each_length(rng):
    lstm = LSTM(2, 3, seed=0)
    x = rng.normal(size=(T, B, 2))
    traced = lstm.trace(x, lengths=LENGTHS)
    out, _, _ = lstm.forward(x, lengths=LENGTHS)
    np.testing.assert_array_equal(traced["h"], out)
    for b, n in enumerate(LENGTHS):
        alone = lstm.trace(x[:n, b])
        for k in ("f", "i", "g", "o", "c", "h"):
            np.testing.assert_allclose(traced[k][:n, b], alone[k], rtol=0, atol=1e-13, err_msg=k)
            assert not traced[k][n:, b].any(), k


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stack_trace_with_lengths_equals_each_sequence_traced_alone(rng, bidirectional):
    stack = randomize(StackedLSTM(2, 3, 2, bidirectional=bidirectional, proj_size=2, seed=0), rng)
    x, h0, c0 = random_inputs(rng, stack)
    traced = stack.trace(x, (h0, c0), lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        alone = stack.trace(x[:n, b], (h0[:, b], c0[:, b]))
        for l, layer in enumerate(traced):
            for d, named in enumerate(layer):
                for k, v in named.items():
                    np.testing.assert_allclose(v[:n, b], alone[l][d][k], rtol=0, atol=1e-13, err_msg=f"{l}{d}{k}")
                    assert not v[n:, b].any(), (l, d, k)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "lengths, error, message",
    [
        (np.array([3, 2]), ValueError, r"lengths must have one entry per sequence, shape \(5,\); got \(2,\)"),
        (LENGTHS[:, None], ValueError, r"lengths .*shape \(5,\); got \(5, 1\)"),
        (np.array([3, 0, 1, 4, 6]), ValueError, r"lengths must lie in \[1, T=6\]; got values from 0 to 6"),
        (np.array([3, 7, 1, 4, 6]), ValueError, r"lengths must lie in \[1, T=6\]; got values from 1 to 7"),
        (np.array([3, -2, 1, 4, 6]), ValueError, r"lengths must lie in \[1, T=6\]"),
        (np.array([3.5, 6, 1, 4, 6]), TypeError, r"lengths must be integers; got dtype float64"),
        (np.array([3, np.nan, 1, 4, 6]), TypeError, r"lengths must be integers"),
        (np.array([True, True, True, True, True]), TypeError, r"lengths must be integers; got dtype bool"),
        (["3", "6", "1", "4", "6"], TypeError, r"lengths must be integers"),
    ],
    ids=["short", "2d", "zero", "over-T", "negative", "fraction", "nan", "bool", "str"],
)
def test_bad_lengths_are_refused_naming_lengths(lengths, error, message):
    stack = StackedLSTM(2, 3, seed=0)
    lstm = LSTM(2, 3, seed=0)
    model = SequenceModel(2, 3, 1, seed=0)
    x = np.zeros((T, B, 2))
    for call in (
        lambda: stack.forward(x, lengths=lengths),
        lambda: stack.forward_train(x, lengths=lengths),
        lambda: lstm.forward(x, lengths=lengths),
        lambda: lstm.forward_train(x, lengths=lengths),
        lambda: model.predict(x.transpose(1, 0, 2), lengths=lengths),
    ):
        with pytest.raises(error, match=message):
            call()


def test_huge_float_lengths_are_refused_with_their_own_value():
    lengths = np.array([1e20, 2, 1, 4, 6])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=6\]; got values from 1(\.0)? to 1e\+20"):
            StackedLSTM(2, 3, seed=0).forward(np.zeros((T, B, 2)), lengths=lengths)


def test_integral_float_lengths_are_accepted_as_ints(rng):
    stack = StackedLSTM(2, 3, seed=0)
    x = rng.normal(size=(T, B, 2))
    a = stack.forward(x, lengths=LENGTHS)[0]
    b = stack.forward(x, lengths=LENGTHS.astype(float))[0]
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------ SequenceModel, fit
@pytest.mark.parametrize("bidirectional", [False, True])
def test_many_to_one_reads_each_sequences_last_valid_step(rng, bidirectional):
    model = SequenceModel(2, 4, 3, num_layers=2, bidirectional=bidirectional, seed=0)
    for value in model.parameters().values():
        value[...] = rng.uniform(-0.7, 0.7, size=value.shape)
    X = rng.normal(size=(B, T, 2))
    X_garbage = X.copy()
    for b, n in enumerate(LENGTHS):
        X_garbage[b, n:] = rng.normal(scale=100, size=X_garbage[b, n:].shape)
    pred = model.predict(X, lengths=LENGTHS)
    np.testing.assert_array_equal(model.predict(X_garbage, lengths=LENGTHS), pred)  # padding is never read
    for b, n in enumerate(LENGTHS):
        alone = model.predict(X[b : b + 1, :n])
        np.testing.assert_allclose(pred[b], alone[0], rtol=0, atol=1e-13)
    # and the training forward predicts the same
    train_pred, _, _ = model.forward_train(X, lengths=LENGTHS)
    np.testing.assert_allclose(train_pred, pred, rtol=0, atol=1e-13)


def test_model_tape_keeps_the_lengths_in_the_users_row_order():
    model = SequenceModel(2, 3, 1, seed=0)
    _, _, tape = model.forward_train(np.zeros((B, T, 2)), lengths=LENGTHS)
    np.testing.assert_array_equal(tape.lengths, LENGTHS)


def test_many_to_many_with_lengths_equals_each_sequence_alone(rng):
    model = SequenceModel(2, 4, 3, num_layers=2, bidirectional=True, many_to_many=True, seed=0)
    for value in model.parameters().values():
        value[...] = rng.uniform(-0.7, 0.7, size=value.shape)
    X = rng.normal(size=(B, T, 2))
    pred = model.predict(X, lengths=LENGTHS)
    assert pred.shape == (B, T, 3)
    for b, n in enumerate(LENGTHS):
        np.testing.assert_allclose(pred[b, :n], model.predict(X[b : b + 1, :n])[0], rtol=0, atol=1e-13)


def test_fit_learns_the_sum_of_sequences_of_different_lengths():
    rng = np.random.default_rng(0)
    sequences = [rng.uniform(-1, 1, size=(int(n), 1)) for n in rng.integers(1, 9, size=96)]
    targets = np.array([[s.sum()] for s in sequences])
    model = SequenceModel(1, 8, 1, seed=0)
    history = fit(model, sequences, targets, epochs=25, batch_size=16, seed=0, progress=False,
                  optimizer=Adam(model.parameters(), lr=1e-2), clip_norm=1.0)  # fit's defaults before issue 19
    assert len(history.loss) == 25
    assert history.loss[-1] < 0.1 * history.loss[0], history.loss
    # the trained model predicts sums for new sequences, read at their own last step
    fresh = [rng.uniform(-1, 1, size=(n, 1)) for n in (1, 4, 8)]
    from nplstm.model import pad_sequences

    X, lengths = pad_sequences(fresh)
    pred = model.predict(X, lengths=lengths)[:, 0]
    np.testing.assert_allclose(pred, [s.sum() for s in fresh], atol=0.5)


# ------------------------------------------------------------------ memory
LONG_T, MEMORY_H = 30_000, 32
MEMORY_LIMIT = 1 << 20  # 1 MiB; keeping every step would take T·B·H·8 = 7.7 MB per array


def peak_bytes(fn, warm_up) -> int:
    warm_up()  # a short run first: one-time imports and caches are not what this measures
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_long_sequence_inference_without_sequences_keeps_memory_constant():
    stack = StackedLSTM(4, MEMORY_H, num_layers=2, seed=0)
    x = np.random.default_rng(0).normal(size=(LONG_T, 1, 4))
    peak = peak_bytes(lambda: stack.forward(x, return_sequences=False), lambda: stack.forward(x[:300]))
    assert peak < MEMORY_LIMIT, f"peak {peak / 1e6:.2f} MB"
    # same numbers as the full run that keeps every step
    _, (h, c) = stack.forward(x[:2000], return_sequences=False)
    out, (h_ref, c_ref) = stack.forward(x[:2000])
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=1e-13)
    np.testing.assert_allclose(c, c_ref, rtol=0, atol=1e-13)
    np.testing.assert_allclose(h[-1], out[-1], rtol=0, atol=1e-13)


def test_long_sequence_many_to_one_predict_keeps_memory_constant():
    model = SequenceModel(4, MEMORY_H, 2, num_layers=2, seed=0)
    x = np.random.default_rng(0).normal(size=(1, LONG_T, 4))
    peak = peak_bytes(lambda: model.predict(x), lambda: model.predict(x[:, :300], lengths=[299]))
    assert peak < MEMORY_LIMIT, f"peak {peak / 1e6:.2f} MB"
