"""The single-layer LSTM forward pass: values, shapes, dtypes, contract, errors."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nplstm import LSTM
from reference import load_into, random_weights, reference_lstm

pytestmark = pytest.mark.usefixtures("each_backend")  # both step-loop paths, see conftest


def classic(dtype=np.float64):
    lstm = LSTM(1, 1, seed=0, dtype=dtype)
    lstm.Wf = lstm.Wi = lstm.Wo = [[0.5, 0.5]]
    lstm.Wc = [[0.3, 0.3]]
    lstm.bf = lstm.bi = lstm.bc = lstm.bo = [[0.1]]
    return lstm


def classic_by_hand():
    """The classic example stepped through with scalars and math.exp."""
    sig = lambda a: 1 / (1 + math.exp(-a))  # noqa: E731
    h = c = 0.0
    hs = []
    for x in (1.0, 2.0, 3.0):
        f = i = o = sig(0.5 * h + 0.5 * x + 0.1)
        g = math.tanh(0.3 * h + 0.3 * x + 0.1)
        c = f * c + i * g
        h = o * math.tanh(c)
        hs.append(h)
    return hs, h, c


# ----------------------------------------------------------------- values
def test_classic_example_matches_hand_derivation():
    hs, h, c = classic_by_hand()
    outputs, final_h, final_c = classic().forward(np.array([[1.0], [2.0], [3.0]]), np.zeros((1, 1)), np.zeros((1, 1)))
    assert outputs.shape == (3, 1, 1) and final_h.shape == (1, 1) and final_c.shape == (1, 1)
    np.testing.assert_allclose(outputs[:, 0, 0], hs, rtol=0, atol=1e-14)
    assert final_h[0, 0] == pytest.approx(h, abs=1e-14)
    assert final_c[0, 0] == pytest.approx(c, abs=1e-14)
    # The number everybody knows, and the first step worked out on paper:
    # f = i = o = σ(0.6) = 0.645656, g = tanh(0.4) = 0.379949, c1 = 0.245317, h1 = 0.155287.
    assert final_h[0, 0] == pytest.approx(0.7369859552, abs=1e-9)
    assert outputs[0, 0, 0] == pytest.approx(0.155287, abs=1e-6)


def test_random_weights_do_not_give_the_classic_number():
    for seed in range(20):
        _, h, _ = LSTM(1, 1, seed=seed).forward(np.array([[1.0], [2.0], [3.0]]), np.zeros((1, 1)), np.zeros((1, 1)))
        assert abs(h[0, 0] - 0.7369859552) > 1e-3


def test_two_inputs_two_hidden_against_reference():
    W = {
        "Wf": np.array([[0.1, -0.2, 0.3, 0.4], [0.5, 0.6, -0.7, 0.8]]),
        "Wi": np.array([[-0.3, 0.2, 0.1, 0.0], [0.2, -0.1, 0.4, -0.5]]),
        "Wc": np.array([[0.7, -0.6, 0.5, 0.9], [-0.4, 0.3, 0.2, -0.1]]),
        "Wo": np.array([[0.2, 0.2, -0.3, 0.1], [0.6, -0.5, 0.4, 0.3]]),
        "bf": np.array([[0.1], [-0.1]]),
        "bi": np.array([[0.0], [0.2]]),
        "bc": np.array([[-0.2], [0.3]]),
        "bo": np.array([[0.05], [0.0]]),
    }
    x = np.array([[1.0, -1.0], [0.5, 2.0], [-1.5, 0.3], [0.0, 0.0]])
    h0, c0 = np.array([[0.2], [-0.4]]), np.array([[1.0], [0.5]])
    ref_hs, ref_h, ref_c = reference_lstm(x, W, h0, c0)
    outputs, h, c = load_into(LSTM(2, 2), W).forward(x, h0, c0)
    np.testing.assert_allclose(outputs[:, :, 0], ref_hs, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(h[:, 0], ref_h, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(c[:, 0], ref_c, rtol=1e-13, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(
    T=st.integers(0, 7),
    B=st.integers(1, 4),
    I=st.integers(1, 5),
    H=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_batch_equals_stacked_single_sequences(T, B, I, H, seed):
    rng = np.random.default_rng(seed)
    W = random_weights(rng, I, H)
    lstm = load_into(LSTM(I, H), W)
    x = rng.normal(size=(T, B, I))
    h0, c0 = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    outputs, h, c = lstm.forward(x, h0, c0)
    assert outputs.shape == (T, B, H) and h.shape == (B, H) and c.shape == (B, H)
    for b in range(B):
        ref_hs, ref_h, ref_c = reference_lstm(x[:, b], W, h0[b], c0[b])
        np.testing.assert_allclose(outputs[:, b], ref_hs, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(h[b], ref_h, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(c[b], ref_c, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------- shapes
def test_every_shape_convention_gives_the_same_numbers(rng):
    T, I, H = 5, 3, 4
    W = random_weights(rng, I, H)
    lstm = load_into(LSTM(I, H), W)
    lstm_bf = load_into(LSTM(I, H, batch_first=True), W)
    x = rng.normal(size=(T, I))
    h0, c0 = rng.normal(size=H), rng.normal(size=H)
    ref_hs, ref_h, ref_c = reference_lstm(x, W, h0, c0)

    cases = {
        "column": (lstm.forward(x, h0[:, None], c0[:, None]), (T, H, 1), (H, 1)),
        "vector": (lstm.forward(x, h0, c0), (T, H), (H,)),
        "rows": (lstm.forward(x, h0[None], c0[None]), (T, 1, H), (1, H)),
        "batch": (lstm.forward(x[:, None], h0[None], c0[None]), (T, 1, H), (1, H)),
        "batch_first": (lstm_bf.forward(x[None], h0[None], c0[None]), (1, T, H), (1, H)),
    }
    for name, ((outputs, h, c), out_shape, state_shape) in cases.items():
        assert outputs.shape == out_shape, name
        assert h.shape == state_shape and c.shape == state_shape, name
        np.testing.assert_allclose(outputs.reshape(T, H), ref_hs, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(h.reshape(H), ref_h, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(c.reshape(H), ref_c, rtol=1e-12, err_msg=name)


def test_omitted_states_are_zeros_and_follow_x(rng):
    lstm = LSTM(1, 3, seed=1)
    x = rng.normal(size=6)
    out_1d, h_1d, c_1d = lstm.forward(x)
    assert out_1d.shape == (6, 3) and h_1d.shape == (3,)
    out_col, h_col, c_col = lstm.forward(x[:, None], np.zeros((3, 1)), np.zeros((3, 1)))
    np.testing.assert_array_equal(out_1d, out_col[:, :, 0])
    np.testing.assert_array_equal(c_1d, c_col[:, 0])
    out_b, h_b, _ = lstm.forward(np.stack([x, x], axis=1)[:, :, None])
    assert out_b.shape == (6, 2, 3) and h_b.shape == (2, 3)
    np.testing.assert_array_equal(h_b[1], h_1d)
    # only one state given: the other is zeros in the same orientation
    out_h, h_h, _ = lstm.forward(x, initial_cell_state=np.zeros((3, 1)))
    assert h_h.shape == (3, 1)
    np.testing.assert_array_equal(h_h[:, 0], h_1d)


def test_batch_first_batch(rng):
    W = random_weights(rng, 2, 3)
    a = load_into(LSTM(2, 3), W)
    b = load_into(LSTM(2, 3, batch_first=True), W)
    x = rng.normal(size=(7, 4, 2))
    out_a, h_a, c_a = a.forward(x)
    out_b, h_b, c_b = b.forward(x.transpose(1, 0, 2))
    assert out_b.shape == (4, 7, 3)
    np.testing.assert_array_equal(out_b, out_a.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_a, h_b)


def test_empty_sequence_returns_initial_states():
    lstm = LSTM(2, 3, seed=0)
    h0, c0 = np.arange(3.0)[:, None], -np.arange(3.0)[:, None]
    outputs, h, c = lstm.forward(np.zeros((0, 2)), h0, c0)
    assert outputs.shape == (0, 3, 1)
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(c, c0)
    assert h is not h0
    out_b, h_b, _ = lstm.forward(np.zeros((0, 4, 2)))
    assert out_b.shape == (0, 4, 3) and h_b.shape == (4, 3) and not h_b.any()


def test_return_sequences_false_keeps_final_states(rng):
    lstm = LSTM(3, 5, seed=2)
    x = rng.normal(size=(9, 2, 3))
    outputs, h, c = lstm.forward(x)
    none, h2, c2 = lstm.forward(x, return_sequences=False)
    assert none is None
    np.testing.assert_array_equal(h, h2)
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(outputs[-1], h)


def test_long_sequence_crosses_projection_chunks(rng):
    W = random_weights(rng, 2, 3, scale=0.3)
    x = rng.normal(size=(200, 2))
    ref_hs, ref_h, ref_c = reference_lstm(x, W)
    outputs, h, c = load_into(LSTM(2, 3), W).forward(x)
    np.testing.assert_allclose(outputs, ref_hs, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(c, ref_c, rtol=1e-11)


# ----------------------------------------------------------------- dtypes
def test_float32_close_to_float64(rng):
    W = random_weights(rng, 3, 4)
    x = rng.normal(size=(20, 5, 3))
    out64, h64, c64 = load_into(LSTM(3, 4), W).forward(x)
    m32 = load_into(LSTM(3, 4, dtype=np.float32), W)
    assert m32.Wf.dtype == np.float32
    out32, h32, c32 = m32.forward(x)
    assert out32.dtype == h32.dtype == c32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c32, c64, rtol=1e-4, atol=1e-5)


def test_integer_inputs_are_accepted():
    lstm = classic()
    out_int, h_int, _ = lstm.forward(np.array([1, 2, 3]), np.zeros((1, 1), dtype=int), np.zeros((1, 1), dtype=int))
    assert h_int.dtype == np.float64
    assert h_int[0, 0] == pytest.approx(0.7369859552, abs=1e-9)


def test_unsupported_model_dtype():
    with pytest.raises(TypeError, match="float64 or float32; got float16"):
        LSTM(1, 1, dtype=np.float16)


# ----------------------------------------------------------- init + params
def test_init_is_seeded_bounded_and_biases_zero():
    a, b = LSTM(3, 16, seed=7), LSTM(3, 16, seed=np.random.default_rng(7))
    for name in ("Wf", "Wi", "Wc", "Wo"):
        w = getattr(a, name)
        assert w.shape == (16, 19)
        np.testing.assert_array_equal(w, getattr(b, name))
        assert np.abs(w).max() <= 1 / 4 and np.abs(w).max() > 0.2
    for name in ("bf", "bi", "bc", "bo"):
        bias = getattr(a, name)
        assert bias.shape == (16, 1) and not bias.any()
    assert not np.array_equal(LSTM(3, 16, seed=8).Wf, a.Wf)
    assert a.num_parameters == 4 * 16 * 19 + 4 * 16


def test_assignment_takes_effect_on_next_forward():
    lstm = LSTM(1, 1, seed=0)
    x = np.array([[1.0], [2.0], [3.0]])
    before = lstm.forward(x)[1]
    lstm.Wf = lstm.Wi = lstm.Wo = np.array([[0.5, 0.5]])
    lstm.Wc = np.array([[0.3, 0.3]])
    for name in ("bf", "bi", "bc", "bo"):
        setattr(lstm, name, np.full((1, 1), 0.1))
    after = lstm.forward(x)[1]
    assert after[0] == pytest.approx(0.7369859552, abs=1e-9)
    assert abs(before[0] - after[0]) > 1e-3


def test_in_place_writes_take_effect(rng):
    W = random_weights(rng, 2, 3)
    lstm = load_into(LSTM(2, 3), W)
    x = rng.normal(size=(4, 2))
    lstm.Wc[1, 2] += 0.75
    lstm.bo[0, 0] = -1.0
    W["Wc"][1, 2] += 0.75
    W["bo"][0, 0] = -1.0
    np.testing.assert_allclose(lstm.forward(x)[0], reference_lstm(x, W)[0], rtol=1e-12)


def test_bias_accepts_a_vector():
    lstm = LSTM(2, 3, seed=0)
    lstm.bf = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(lstm.bf, [[1.0], [2.0], [3.0]])


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("Wf", np.zeros((3, 4)), r"Wf must have shape \(3, 5\); got \(3, 4\)"),
        ("Wo", np.zeros((5, 3)), r"Wo must have shape \(3, 5\); got \(5, 3\)"),
        ("Wc", np.zeros(15), r"Wc must have shape \(3, 5\); got \(15,\)"),
        ("bi", np.zeros((1, 3)), r"bi must have shape \(3, 1\) or \(3,\); got \(1, 3\)"),
        ("bc", np.zeros((3, 2)), r"bc must have shape \(3, 1\) or \(3,\); got \(3, 2\)"),
    ],
)
def test_wrong_weight_shape_is_refused(name, value, message):
    lstm = LSTM(2, 3, seed=0)
    before = getattr(lstm, name).copy()
    with pytest.raises(ValueError, match=message):
        setattr(lstm, name, value)
    np.testing.assert_array_equal(getattr(lstm, name), before)


def test_non_numeric_weight_is_refused():
    with pytest.raises(TypeError, match="Wf must hold real numbers"):
        LSTM(1, 1).Wf = [["a", "b"]]


# -------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_huge_pre_activations_are_stable(dtype):
    lstm = LSTM(2, 3, seed=0, dtype=dtype)
    big = 1e300 if dtype == np.float64 else 1e38
    lstm.Wf = np.full((3, 5), big)
    lstm.Wi = np.full((3, 5), -big)
    lstm.Wc = np.full((3, 5), big)
    lstm.Wo = np.full((3, 5), big)
    x = np.array([[1.0, -1.0], [1.0, 1.0], [-3.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs, h, c = lstm.forward(x)
    assert np.isfinite(outputs).all() and np.isfinite(h).all() and np.isfinite(c).all()
    # saturated gates: f = 1, i = 0 so c stays 0; o = 1 so h = tanh(0) = 0 at first.
    np.testing.assert_array_equal(outputs[0], 0.0)


def test_huge_inputs_give_no_nan():
    lstm = LSTM(1, 2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs, h, c = lstm.forward(np.array([1e300, -1e300, 1e300]))
    assert np.isfinite(outputs).all()
    assert np.all(np.abs(outputs) <= 1)


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "x, h0, c0, exc, message",
    [
        (np.zeros((4, 3)), None, None, ValueError, r"x must have shape \(T, 2\) for one sequence; got \(4, 3\)"),
        (np.zeros(4), None, None, ValueError, r"only accepted when input_size is 1.*got \(4,\)"),
        (np.zeros((4, 2, 5)), None, None, ValueError, r"\(T, B, I\) with I = 2; got \(4, 2, 5\)"),
        (np.zeros((1, 4, 2, 2)), None, None, ValueError, r"got 4-D shape \(1, 4, 2, 2\)"),
        (np.float64(1.0), None, None, ValueError, r"got 0-D shape \(\)"),
        (np.zeros((4, 2)), np.zeros(4), None, ValueError, r"initial_hidden_state must be \(3, 1\), \(3,\) or \(1, 3\); got \(4,\)"),
        (np.zeros((4, 5, 2)), np.zeros((4, 3)), None, ValueError, r"has 4 rows but x has a batch of 5.*expected \(5, 3\)"),
        (np.zeros((4, 5, 2)), np.zeros((3, 1)), None, ValueError, r"state of one sequence but x has a batch of 5"),
        (np.zeros((4, 5, 2)), None, np.zeros(3), ValueError, r"initial_cell_state of shape \(3,\) is the state of one sequence"),
        (np.zeros((4, 2)), np.zeros((3, 1)), np.zeros(3), ValueError, r"column .* but initial_cell_state is a vector"),
        (np.zeros((4, 2)), np.zeros((1, 3, 1)), None, ValueError, r"got 3-D shape \(1, 3, 1\)"),
        (np.array([["a", "b"]]), None, None, TypeError, r"x must hold real numbers .*got dtype <U1"),
        (np.zeros((4, 2), dtype=bool), None, None, TypeError, r"got dtype bool"),
        (np.zeros((4, 2), dtype=complex), None, None, TypeError, r"got dtype complex128"),
        (np.zeros((4, 2)), np.array(["x", "y", "z"]), None, TypeError, r"initial_hidden_state must hold real numbers"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(x, h0, c0, exc, message):
    with pytest.raises(exc, match=message):
        LSTM(2, 3, seed=0).forward(x, h0, c0)


def test_non_finite_passes_by_default_and_check_finite_refuses():
    lstm = LSTM(1, 2, seed=0)
    x = np.array([1.0, np.nan, 2.0])
    outputs, _, _ = lstm.forward(x)
    assert np.isfinite(outputs[0]).all() and np.isnan(outputs[1:]).all()
    with pytest.raises(ValueError, match=r"x has 1 non-finite value\(s\)"):
        lstm.forward(x, check_finite=True)
    with pytest.raises(ValueError, match=r"initial_cell_state has 1 non-finite"):
        lstm.forward(np.ones(3), None, np.array([np.inf, 0.0]), check_finite=True)


@pytest.mark.parametrize("kwargs", [dict(input_size=0, hidden_size=1), dict(input_size=1, hidden_size=-2), dict(input_size=1.5, hidden_size=2)])
def test_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        LSTM(**kwargs)
