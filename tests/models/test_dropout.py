"""Dropout inside the stack: input dropout and variational recurrent dropout (Keras' ``dropout`` / ``recurrent_dropout``).

Held to: finite differences with the masks fixed (the same ``rng`` seed draws
the same masks), a reference LSTM written from the equations and fed the
tape's masks, the expectation of the first, linear product (the one place
where the dropped forward's mean equals the undropped one), and the mask
statistics the definition implies.
"""

import numpy as np
import pytest

from nplstm import SequenceModel, StackedLSTM, kernels
from nplstm.io import WeightsFileError, read_npz
from nplstm.layout import split_gates

from gradcheck import numeric_gradient, rel_error


@pytest.fixture(autouse=True)
def _every_backend(each_backend):
    """Every test once per step-loop path: input dropout alone still runs the compiled engine when it is loaded."""
    return each_backend


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def randomise(stack, rng, scale=0.6):
    for p in stack.parameters().values():
        p[...] = rng.normal(scale=scale, size=p.shape)


def user_rows(mask, tape):
    """A tape's mask (run order: rows sorted by length) in the caller's row order."""
    return mask if tape.packing is None else mask[tape.packing.inverse]


# ------------------------------------------------------------ exact gradients
CASES = {
    "input": dict(num_layers=1, input_dropout=0.4),
    "recurrent": dict(num_layers=1, recurrent_dropout=0.4),
    "both-2-layers": dict(num_layers=2, input_dropout=0.3, recurrent_dropout=0.5),
    "bidirectional-lengths": dict(num_layers=2, bidirectional=True, input_dropout=0.3, recurrent_dropout=0.3, lengths=True),
    "projection-bidirectional": dict(num_layers=2, bidirectional=True, proj_size=2, recurrent_dropout=0.5, input_dropout=0.2),
    "with-torch-dropout": dict(num_layers=2, dropout=0.5, input_dropout=0.3, recurrent_dropout=0.3, lengths=True),
}


@pytest.mark.parametrize("case", CASES)
def test_gradients_with_fixed_masks_match_finite_differences(case, rng):
    opts = dict(CASES[case])
    lengths = np.array([5, 2, 4]) if opts.pop("lengths", False) else None
    I, H, B, T = 3, 4, 3, 5
    stack = StackedLSTM(I, H, seed=0, **opts)
    randomise(stack, rng)
    LD, P = stack.num_layers * stack.num_directions, stack.state_size
    x = rng.normal(size=(T, B, I))
    h0, c0 = rng.normal(size=(LD, B, P)), rng.normal(size=(LD, B, H))
    w_out, w_h, w_c = rng.normal(size=(T, B, stack.output_size)), rng.normal(size=h0.shape), rng.normal(size=c0.shape)

    def loss():
        out, (h_n, c_n), _ = stack.forward_train(x, (h0, c0), lengths=lengths, rng=77)
        return np.sum(w_out * out) + np.sum(w_h * h_n) + np.sum(w_c * c_n)

    out, _, tape = stack.forward_train(x, (h0, c0), lengths=lengths, rng=77)
    undropped, _ = stack.forward(x, (h0, c0), lengths=lengths)
    assert not np.allclose(out, undropped)  # the masks are in play
    for masks in (tape.input_masks, tape.recurrent_masks):
        for m in (m for layer in masks for m in layer if m is not None):
            assert np.any(m == 0)
    grads = stack.backward(tape, w_out, w_h, w_c)
    for name, param in {**stack.parameters(), "x": x, "h_0": h0, "c_0": c0}.items():
        numeric = numeric_gradient(loss, param)
        assert rel_error(grads[name], numeric) < 1e-6, name


def test_sequence_model_gradients_with_dropout_match_finite_differences(rng):
    model = SequenceModel(3, 4, 2, num_layers=2, bidirectional=True, output="last", input_dropout=0.3,
                          recurrent_dropout=0.4, num_embeddings=7, seed=1)
    for p in model.parameters().values():
        p[...] = rng.normal(scale=0.6, size=p.shape)
    ids = rng.integers(1, 7, size=(3, 5))
    lengths = np.array([5, 3, 4])
    w = rng.normal(size=(3, 2))

    def loss():
        return np.sum(w * model.forward_train(ids, lengths=lengths, rng=5)[0])

    _, _, tape = model.forward_train(ids, lengths=lengths, rng=5)
    grads = model.backward(tape, w)
    for name, param in model.parameters().items():
        assert rel_error(grads[name], numeric_gradient(loss, param)) < 1e-6, name


# ------------------------------------------------------------ semantics against a reference
def masked_reference(x, W, b, m, r, h, c, W_hr=None):
    """One sequence from the equations: gates of [h_{t-1} ⊙ r; x_t ⊙ m]; W (4, H, P + I) in f, i, g, o order."""
    hs = []
    for x_t in x:
        z = np.concatenate([h * r, x_t * m])
        f, i, g, o = (W[k] @ z + b[k] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        if W_hr is not None:
            h = W_hr @ h
        hs.append(h)
    return np.array(hs), h, c


@pytest.mark.parametrize("proj_size", [0, 2])
def test_one_mask_per_sequence_same_at_every_step_against_a_reference(proj_size, rng):
    """Each layer and direction reads x_t ⊙ m and h_{t-1} ⊙ r with m, r fixed over time; returned states are not dropped."""
    I, H, T = 3, 4, 6
    stack = StackedLSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj_size, input_dropout=0.4,
                        recurrent_dropout=0.5, seed=2)
    randomise(stack, rng)
    x = rng.normal(size=(T, 3, I))
    lengths = np.array([4, 6, 3])
    out, (h_n, _), tape = stack.forward_train(x, lengths=lengths, rng=3)
    D, P = 2, stack.state_size
    layer_input = x
    for l in range(2):
        expected = np.zeros((T, 3, D * P))
        for d in range(D):
            params = stack.layers[l][d]
            W = np.stack([getattr(params, f"W{g}") for g in "fico"])
            b = np.stack([getattr(params, f"b{g}")[:, 0] for g in "fico"])
            m = user_rows(tape.input_masks[l][d], tape)
            r = user_rows(tape.recurrent_masks[l][d], tape)
            assert m.shape == (3, layer_input.shape[2]) and r.shape == (3, P)
            for row, n in enumerate(lengths):
                seq = layer_input[:n, row] if d == 0 else layer_input[:n, row][::-1]
                hs, h_last, _ = masked_reference(seq, W, b, m[row], r[row], np.zeros(P), np.zeros(H), params.W_hr)
                expected[:n, row, d * P : (d + 1) * P] = hs if d == 0 else hs[::-1]
                if l == 1:
                    np.testing.assert_allclose(h_n[2 + d, row], h_last, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out if l == 1 else tape.inputs[1][:, tape.packing.inverse], expected, rtol=1e-10, atol=1e-12)
        layer_input = expected


def test_masks_are_inverted_bernoulli_and_independent(rng):
    p_in, p_rec, B = 0.3, 0.6, 4000
    stack = StackedLSTM(5, 6, bidirectional=True, input_dropout=p_in, recurrent_dropout=p_rec, seed=0)
    _, _, tape = stack.forward_train(rng.normal(size=(2, B, 5)), rng=4)
    (m_f, m_r), (r_f, r_r) = tape.input_masks[0], tape.recurrent_masks[0]
    for mask, p in ((m_f, p_in), (m_r, p_in), (r_f, p_rec), (r_r, p_rec)):
        assert set(np.unique(mask)) == {0.0, 1 / (1 - p)}
        dropped = np.mean(mask == 0)
        assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / mask.size)  # binomial, 5 standard errors
    both = np.mean((m_f == 0) & (m_r == 0))  # each direction draws its own mask
    assert abs(both - p_in * p_in) < 5 * np.sqrt(p_in**2 * (1 - p_in**2) / m_f.size)


def pre_activations(gates, H):
    """Invert the standard cell's activations: logit for f, i, o and artanh for g, in f, i, g, o order."""
    f, i, o, g = split_gates(gates, H)
    return np.stack([np.log(f / (1 - f)), np.log(i / (1 - i)), np.arctanh(g), np.log(o / (1 - o))])


@pytest.mark.parametrize("which", ["input", "recurrent"])
def test_first_linear_product_keeps_its_expectation(which, rng):
    """E[(x ⊙ m) W_xᵀ] = x W_xᵀ and E[(h_0 ⊙ r) W_hᵀ] = h_0 W_hᵀ with inverted scaling: the first step's
    pre-activations, averaged over 20000 sequences with their own masks, are the undropped ones (5 standard errors)."""
    I, H, B, p = 6, 4, 20000, 0.5
    kwargs = {"input_dropout": p} if which == "input" else {"recurrent_dropout": p}
    stack = StackedLSTM(I, H, seed=0, **kwargs)
    params = stack.layers[0][0]
    randomise(stack, rng, scale=0.3)
    x_row, h_row = rng.normal(size=I), rng.normal(size=H)
    x = np.broadcast_to(x_row, (1, B, I)).copy()
    h0 = np.broadcast_to(h_row, (1, B, H)).copy()
    _, _, tape = stack.forward_train(x, (h0, np.zeros((1, B, H))), rng=6)
    pre = pre_activations(tape.traces[0][0].gates[0], H)  # (4, B, H)
    W = np.stack([getattr(params, f"W{g}") for g in "fico"])  # (4, H, H + I)
    b = np.stack([getattr(params, f"b{g}")[:, 0] for g in "fico"])
    expected = W @ np.concatenate([h_row, x_row]) + b  # (4, H)
    dropped_part = W[:, :, H:] * x_row if which == "input" else W[:, :, :H] * h_row
    sd = np.sqrt((dropped_part**2).sum(axis=2) * p / (1 - p) / B)  # Var(m) = p / (1 - p)
    assert np.all(np.abs(pre.mean(axis=1) - expected) < 5 * sd)
    assert np.all(sd > 1e-4)  # the check has power: without the 1/(1-p) the means would be off by ~|x W|/2 >> 5 sd


# ------------------------------------------------------------ training only, reproducible, p = 0 unchanged
def test_inference_never_drops_and_training_masks_follow_the_rng(rng):
    stack = StackedLSTM(3, 5, num_layers=2, input_dropout=0.5, recurrent_dropout=0.5, seed=0)
    plain = StackedLSTM(3, 5, num_layers=2, seed=0)
    x = rng.normal(size=(4, 2, 3))
    np.testing.assert_array_equal(stack.forward(x)[0], plain.forward(x)[0])
    np.testing.assert_array_equal(stack.trace(x)[1][0]["h"], plain.trace(x)[1][0]["h"])
    a = stack.forward_train(x, rng=1)[0]
    np.testing.assert_array_equal(a, stack.forward_train(x, rng=np.random.default_rng(1))[0])
    assert not np.allclose(a, stack.forward_train(x, rng=2)[0])
    assert not np.allclose(a, plain.forward(x)[0])
    # without rng: the stack's own generator, from its seed
    twin = StackedLSTM(3, 5, num_layers=2, input_dropout=0.5, recurrent_dropout=0.5, seed=0)
    np.testing.assert_array_equal(stack.forward_train(x)[0], twin.forward_train(x)[0])


def test_sequence_model_predict_never_drops(rng):
    kwargs = dict(num_layers=2, hidden_layers=[(4, "relu")], seed=3)
    model = SequenceModel(2, 5, 3, input_dropout=0.5, recurrent_dropout=0.5, **kwargs)
    plain = SequenceModel(2, 5, 3, **kwargs)
    x = rng.normal(size=(3, 4, 2))
    np.testing.assert_array_equal(model.predict(x), plain.predict(x))
    np.testing.assert_array_equal(model.forward_train(x, rng=0)[0], model.forward_train(x, rng=0)[0])
    assert not np.allclose(model.forward_train(x, rng=0)[0], plain.predict(x))


def test_zero_rates_are_the_stack_of_before(rng):
    """p = 0 draws nothing and records no mask: forward_train and backward are bit for bit the undropped ones."""
    x, d = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2, 4))
    zero = StackedLSTM(3, 4, num_layers=2, input_dropout=0.0, recurrent_dropout=0.0, seed=0)
    plain = StackedLSTM(3, 4, num_layers=2, seed=0)
    out, _, tape = zero.forward_train(x)
    np.testing.assert_array_equal(out, plain.forward(x)[0])
    assert zero._rng.random() == plain._rng.random()  # no draws were made
    assert all(m is None for masks in (tape.input_masks, tape.recurrent_masks) for layer in masks for m in layer)
    g0, g1 = zero.backward(tape, d), plain.backward(plain.forward_train(x)[2], d)
    for name in g1:
        np.testing.assert_array_equal(g0[name], g1[name])
    assert zero.config() == plain.config() and "input_dropout" not in zero.config()


def test_recurrent_masks_never_reach_the_compiled_engine(monkeypatch, rng):
    if not kernels.available():
        pytest.skip("numba not installed")

    def refuse(*args, **kwargs):
        raise AssertionError("the compiled engine has no recurrent masks")

    before = kernels.get_backend()
    kernels.set_backend("numba")
    try:
        stack = StackedLSTM(3, 4, bidirectional=True, recurrent_dropout=0.5, seed=0)
        x = rng.normal(size=(5, 2, 3))
        expected = stack.forward(x)[0]  # the engine may run inference
        monkeypatch.setattr(kernels, "forward", refuse)
        monkeypatch.setattr(kernels, "backward", refuse)
        out, _, tape = stack.forward_train(x, rng=0)
        stack.backward(tape, np.ones_like(out))
        assert out.shape == expected.shape
    finally:
        kernels.set_backend(before)


def test_float32_draws_the_same_masks_and_agrees_with_float64(rng):
    kwargs = dict(num_layers=2, bidirectional=True, input_dropout=0.3, recurrent_dropout=0.4, seed=0)
    wide, narrow = StackedLSTM(3, 4, **kwargs), StackedLSTM(3, 4, dtype=np.float32, **kwargs)
    for name, value in wide.parameters().items():
        narrow.parameters()[name][...] = value
    x = rng.normal(size=(6, 2, 3))
    out64, _, tape64 = wide.forward_train(x, rng=8)
    out32, _, tape32 = narrow.forward_train(x, rng=8)
    assert out32.dtype == np.float32 and tape32.recurrent_masks[1][1].dtype == np.float32
    np.testing.assert_array_equal(tape32.input_masks[1][0], tape64.input_masks[1][0].astype(np.float32))
    np.testing.assert_allclose(out32, out64, atol=2e-6)
    d = rng.normal(size=out64.shape)
    g64, g32 = wide.backward(tape64, d), narrow.backward(tape32, d)
    for name in g64:
        np.testing.assert_allclose(g32[name], g64[name], atol=2e-5 * max(1.0, np.abs(g64[name]).max()))


# ------------------------------------------------------------ files and errors
def test_rates_round_trip_through_files(tmp_path, rng):
    model = SequenceModel(2, 4, 3, num_layers=2, dropout=0.25, input_dropout=0.2, recurrent_dropout=0.3, seed=0)
    path = model.save(tmp_path / "m.npz")
    assert int(read_npz(path)["version"]) == 3
    loaded = SequenceModel.load(path)
    assert (loaded.lstm.dropout, loaded.lstm.input_dropout, loaded.lstm.recurrent_dropout) == (0.25, 0.2, 0.3)
    x = rng.normal(size=(3, 5, 2))
    np.testing.assert_array_equal(loaded.forward_train(x, rng=9)[0], model.forward_train(x, rng=9)[0])
    stack = StackedLSTM(2, 3, recurrent_dropout=0.1, seed=0)
    again = StackedLSTM.load(stack.save(tmp_path / "s.npz"))
    assert again.recurrent_dropout == 0.1 and again.input_dropout == 0.0
    assert repr(again) == repr(stack)


def test_a_file_with_a_bad_rate_is_refused_by_name(tmp_path):
    import json

    arrays = read_npz(StackedLSTM(2, 3, seed=0).save(tmp_path / "s.npz"))
    config = json.loads(str(arrays["config"]))
    arrays["config"] = np.array(json.dumps(dict(config, recurrent_dropout=1.5)))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(WeightsFileError, match=r"recurrent_dropout must be a number in \[0, 1\); got 1.5"):
        StackedLSTM.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_dropout=1.0), r"input_dropout must be a number in \[0, 1\); got 1.0"),
    (dict(recurrent_dropout=-0.1), r"recurrent_dropout must be a number in \[0, 1\); got -0.1"),
    (dict(recurrent_dropout="0.5"), r"recurrent_dropout must be a number in \[0, 1\); got '0.5'"),
])
def test_bad_rates_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StackedLSTM(2, 3, **kwargs)
    with pytest.raises(ValueError, match=message):
        SequenceModel(2, 3, 1, **kwargs)


@pytest.mark.parametrize("name, value", [("dropout", 1.5), ("input_dropout", 1.0), ("recurrent_dropout", -0.1),
                                         ("recurrent_dropout", "0.5"), ("dropout", None)])
def test_a_bad_rate_assigned_later_is_refused_by_name_and_the_rate_kept(name, value):
    """An attribute assignment meets the constructor's check (1.5 would scale the kept units by -2, silently)."""
    stack = StackedLSTM(2, 3, num_layers=2, dropout=0.25, input_dropout=0.25, recurrent_dropout=0.25, seed=0)
    model = SequenceModel(2, 3, 1, num_layers=2, dropout=0.25, seed=0)
    for target in (stack, model.lstm):
        with pytest.raises(ValueError, match=rf"{name} must be a number in \[0, 1\); got {value!r}"):
            setattr(target, name, value)
        assert getattr(target, name) == (0.25 if target is stack or name == "dropout" else 0.0)
    stack.recurrent_dropout = 0.5
    assert stack.recurrent_dropout == 0.5 and "recurrent_dropout=0.5" in repr(stack)


def test_a_bad_rng_is_refused_by_name(rng):
    stack = StackedLSTM(2, 3, input_dropout=0.5, seed=0)
    with pytest.raises(ValueError, match="rng must be a non-negative integer, a numpy.random.Generator or None"):
        stack.forward_train(rng.normal(size=(2, 1, 2)), rng="seven")


def test_fit_draws_dropout_masks_from_its_seed_one_stream_for_all_batches(monkeypatch):
    """fit's seed decides the masks (same seed, same weights; another seed, others), drawn afresh for each batch."""
    from nplstm import SequenceModel, fit

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(24, 6, 2)), rng.normal(size=(24, 1))

    def trained(seed):
        model = SequenceModel(2, 5, 1, input_dropout=0.3, recurrent_dropout=0.4, seed=0)
        fit(model, X, Y, epochs=2, batch_size=8, seed=seed, verbose=0)
        return model.parameters()

    first, again, other = trained(0), trained(0), trained(1)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert any(not np.array_equal(first[k], other[k]) for k in first)

    model = SequenceModel(2, 5, 1, recurrent_dropout=0.4, seed=0)
    seen, original = [], type(model.lstm).forward_train

    def spy(self, *args, rng=None, **kwargs):
        seen.append(rng)
        return original(self, *args, rng=rng, **kwargs)

    monkeypatch.setattr(type(model.lstm), "forward_train", spy)
    fit(model, X, Y, epochs=1, batch_size=8, seed=3, verbose=0)
    assert len(seen) == 3 and all(isinstance(g, np.random.Generator) for g in seen)
    assert seen[0] is seen[1] is seen[2]  # one advancing stream: each batch its own masks
