"""StackedLSTM: wiring, shapes, dropout, errors and gradients (no torch needed)."""

import numpy as np
import pytest

from nplstm import LSTM
from nplstm.stack import StackedLSTM

from gradcheck import numeric_gradient, rel_error


def as_lstm(weights):
    """A separate single LSTM with the same weights as one layer and direction of a stack."""
    lstm = LSTM(weights.input_size, weights.hidden_size, proj_size=weights.proj_size)
    for name, value in weights.parameters().items():
        setattr(lstm, name, value)
    return lstm

pytestmark = pytest.mark.usefixtures("each_backend")  # both step-loop paths, see conftest


def test_one_layer_stack_equals_the_layer(rng):
    stack = StackedLSTM(3, 4, seed=0)
    x = rng.normal(size=(6, 2, 3))
    out, (h_n, c_n) = stack.forward(x)
    ref_out, ref_h, ref_c = as_lstm(stack.layers[0][0]).forward(x)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(h_n[0], ref_h)
    np.testing.assert_array_equal(c_n[0], ref_c)


def test_two_layers_feed_one_into_the_other_and_reverse_reads_backwards(rng):
    stack = StackedLSTM(2, 3, num_layers=2, bidirectional=True, seed=1)
    x = rng.normal(size=(5, 2, 2))
    out, (h_n, c_n) = stack.forward(x)
    assert out.shape == (5, 2, 6) and h_n.shape == (4, 2, 3) and c_n.shape == (4, 2, 3)
    fwd0, h0f, _ = as_lstm(stack.layers[0][0]).forward(x)
    bwd0_rev, h0b, _ = as_lstm(stack.layers[0][1]).forward(x[::-1])
    layer0 = np.concatenate([fwd0, bwd0_rev[::-1]], axis=2)
    fwd1, _, _ = as_lstm(stack.layers[1][0]).forward(layer0)
    bwd1_rev, h1b, c1b = as_lstm(stack.layers[1][1]).forward(layer0[::-1])
    np.testing.assert_allclose(out, np.concatenate([fwd1, bwd1_rev[::-1]], axis=2), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(h_n[1], h0b, rtol=1e-14)  # index k = layer·2 + direction
    np.testing.assert_allclose(c_n[3], c1b, rtol=1e-14)


def test_unbatched_and_batch_first_shapes(rng):
    stack = StackedLSTM(3, 5, num_layers=2, proj_size=2, seed=0)
    x = rng.normal(size=(7, 3))
    out, (h, c) = stack.forward(x)
    assert out.shape == (7, 2) and h.shape == (2, 2) and c.shape == (2, 5)
    out_b, (h_b, _) = stack.forward(x[:, None])
    np.testing.assert_array_equal(out_b[:, 0], out)
    bf = StackedLSTM(3, 5, num_layers=2, proj_size=2, batch_first=True, seed=0)
    out_bf, (h_bf, _) = bf.forward(x[None])
    assert out_bf.shape == (1, 7, 2) and h_bf.shape == (2, 1, 2)
    np.testing.assert_array_equal(out_bf[0], out)


def test_dropout_only_in_training(rng):
    stack = StackedLSTM(2, 8, num_layers=2, dropout=0.5, seed=0)
    x = rng.normal(size=(4, 3, 2))
    a, _ = stack.forward(x)
    b, _ = stack.forward(x)
    np.testing.assert_array_equal(a, b)
    t1, _, _ = stack.forward_train(x)
    assert not np.allclose(t1, a)
    no_drop = StackedLSTM(2, 8, num_layers=2, seed=0)
    for (_, _, _, src), (_, _, _, dst) in zip(stack._cells(), no_drop._cells()):
        for name, value in src.parameters().items():
            setattr(dst, name, value)
    np.testing.assert_array_equal(no_drop.forward(x)[0], a)


def test_bias_false_has_no_bias_parameters(tmp_path):
    stack = StackedLSTM(2, 3, num_layers=2, bias=False, seed=0)
    assert not any(name.split(".")[1].startswith("b") for name in stack.parameters())
    assert len(stack.parameters()) == 2 * 4
    # nothing can set a bias that forward would use but save would drop
    with pytest.raises(AttributeError, match="bias=False"):
        stack.layers[0][0].bf = np.ones(3)
    with pytest.raises(ValueError, match="read-only"):
        stack.layers[0][0].bf[0] = 1.0
    again = StackedLSTM.load(stack.save(tmp_path / "nobias.npz"))
    x = np.ones((3, 1, 2))
    np.testing.assert_array_equal(again.forward(x)[0], stack.forward(x)[0])


@pytest.mark.parametrize(
    "hx, message",
    [
        ((np.zeros((2, 4, 3)), np.zeros((2, 4, 3))), r"h_0 must have shape \(2, 2, 3\); got \(2, 4, 3\)"),
        ((np.zeros((2, 2, 3)), np.zeros((1, 2, 3))), r"c_0 must have shape \(2, 2, 3\); got \(1, 2, 3\)"),
        (np.zeros((2, 2, 3)), r"hx must be a pair"),
    ],
)
def test_bad_states(hx, message, rng):
    stack = StackedLSTM(2, 3, num_layers=2, seed=0)
    with pytest.raises((ValueError, TypeError), match=message):
        stack.forward(rng.normal(size=(4, 2, 2)), hx)


def test_bad_options():
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        StackedLSTM(1, 2, dropout=1.0)
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        StackedLSTM(1, 2, num_layers=0)
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size"):
        StackedLSTM(1, 2, proj_size=2)


@pytest.mark.parametrize("batched", [True, False])
def test_stack_gradients_match_finite_differences(batched, rng):
    stack = StackedLSTM(2, 3, num_layers=2, bidirectional=True, proj_size=2, seed=2, batch_first=True)
    for p in stack.parameters().values():
        p[...] = rng.normal(scale=0.5, size=p.shape)
    x = rng.normal(size=(2, 4, 2)) if batched else rng.normal(size=(4, 2))
    h0 = rng.normal(size=(4, 2, 2) if batched else (4, 2))
    c0 = rng.normal(size=(4, 2, 3) if batched else (4, 3))
    out, (h, c), tape = stack.forward_train(x, (h0, c0))
    w = [rng.normal(size=a.shape) for a in (out, h, c)]
    grads = stack.backward(tape, *w)
    assert list(grads) == list(stack.parameters()) + ["x", "h_0", "c_0"]

    def loss():
        o, (hh, cc) = stack.forward(x, (h0, c0))
        return float(np.sum(w[0] * o) + np.sum(w[1] * hh) + np.sum(w[2] * cc))

    for name, param in stack.parameters().items():
        assert rel_error(grads[name], numeric_gradient(loss, param)) < 1e-6, name
    for name, arr in (("x", x), ("h_0", h0), ("c_0", c0)):
        assert rel_error(grads[name], numeric_gradient(loss, arr)) < 1e-6, name


def test_a_tape_is_independent_of_later_edits_to_the_input_and_the_weights(rng):
    """The caller reuses its input buffer and updates the weights before backward: the tape still gives the
    gradients of the forward it recorded (computed again on fresh copies as the reference)."""
    stack = StackedLSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    buf = rng.normal(size=(5, 2, 3))
    x, before = buf.copy(), {k: v.copy() for k, v in stack.parameters().items()}
    out, _, tape = stack.forward_train(buf)
    w = rng.normal(size=out.shape)
    buf[...] = rng.normal(size=buf.shape)  # reused buffer
    for p in stack.parameters().values():  # an optimizer step
        p += 0.3
    grads = stack.backward(tape, w)
    fresh = StackedLSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    for name, value in before.items():
        fresh.parameters()[name][...] = value
    expected = fresh.backward(fresh.forward_train(x)[2], w)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=0, atol=1e-13, err_msg=name)


def test_nan_in_padding_never_reaches_the_gradients(rng):
    stack = StackedLSTM(2, 3, num_layers=2, bidirectional=True, seed=0)
    x = rng.normal(size=(5, 2, 2))
    clean = x.copy()
    x[3:, 1] = np.nan  # past the second sequence's length
    out, (h, c), tape = stack.forward_train(x, lengths=[5, 3])
    grads = stack.backward(tape, np.ones_like(out), np.ones_like(h))
    ref_out, _, ref_tape = stack.forward_train(clean, lengths=[5, 3])
    ref = stack.backward(ref_tape, np.ones_like(out), np.ones_like(h))
    np.testing.assert_array_equal(out, ref_out)
    for name, value in ref.items():
        np.testing.assert_array_equal(grads[name], value, err_msg=name)


def test_empty_sequences_train_and_trace():
    stack = StackedLSTM(2, 3, num_layers=2, seed=0)
    h0 = np.ones((2, 1, 3))
    out, (h, c), tape = stack.forward_train(np.zeros((0, 1, 2)), (h0, np.zeros((2, 1, 3))))
    assert out.shape == (0, 1, 3)
    np.testing.assert_array_equal(h, h0)
    grads = stack.backward(tape, None, np.ones_like(h))
    np.testing.assert_array_equal(grads["h_0"], 1.0)  # h_n is h_0 itself
    assert all(np.all(grads[name] == 0) for name in stack.parameters())
    assert LSTM(2, 3).trace(np.zeros((0, 2)))["h"].shape == (0, 3)


def test_a_tape_goes_back_to_the_face_that_made_it(rng):
    lstm = LSTM(2, 3, seed=0)
    *_, tape = lstm.forward_train(rng.normal(size=(4, 2)))
    with pytest.raises(ValueError, match="another face of the model"):
        lstm.engine.backward(tape, np.ones((4, 3)))


@pytest.mark.parametrize("args, kwargs", [((1, 1), dict(num_layers=10**7)), ((1, 10**9), {}), ((4096, 8192), dict(num_layers=4)),
                                          ((1, 1), dict(num_layers=10**6, bidirectional=True))])
def test_constructor_refuses_a_model_over_the_size_limit_before_allocating(args, kwargs):
    # issue 17 item 8: StackedLSTM(1, 1, num_layers=10**7) churned 60 s and 4 GB before failing
    import time
    import tracemalloc

    from nplstm.params import MAX_MODEL_BYTES

    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=f"over nplstm.params.MAX_MODEL_BYTES = {MAX_MODEL_BYTES}"):
            StackedLSTM(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and time.perf_counter() - start < 1.0


def test_the_size_limit_is_the_documented_one_and_can_be_raised(monkeypatch):
    from nplstm import params
    from nplstm.stack import stack_parameter_count

    stack = StackedLSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float32)
    assert stack_parameter_count(3, 5, 2, bidirectional=True, proj_size=2, bias=True, peepholes=False) == stack.num_parameters
    need = stack.num_parameters * 4 + 4 * params.CELL_OVERHEAD_BYTES
    monkeypatch.setattr(params, "MAX_MODEL_BYTES", need)
    StackedLSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float32)  # exactly at the limit
    with pytest.raises(ValueError, match=f"needs about {need + 4 * 4 * 5 * 2} bytes"):  # one more input: 4H weights per direction
        StackedLSTM(4, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float32)


@pytest.mark.parametrize("layers, bidirectional, proj, bias, peepholes", [
    (1, False, 0, True, False), (1, False, 0, False, False), (3, True, 0, True, True),
    (2, False, 2, False, True), (2, True, 3, True, False), (1, True, 2, False, False),
])
def test_closed_form_parameter_count_equals_the_built_stack(layers, bidirectional, proj, bias, peepholes):
    """The size check counts before building; it must count what the constructor then builds."""
    from nplstm.cell import CellOptions
    from nplstm.stack import stack_parameter_count

    cell = CellOptions(peepholes=True) if peepholes else None
    stack = StackedLSTM(4, 5, num_layers=layers, bidirectional=bidirectional, proj_size=proj, bias=bias, cell=cell)
    built = sum(p.size for p in stack.parameters().values())
    assert stack_parameter_count(4, 5, layers, bidirectional=bidirectional, proj_size=proj, bias=bias, peepholes=peepholes) == built
