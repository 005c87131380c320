"""Initialisation schemes (``init=``): bounds, variances and structure derived from torch's and Keras' own rules.

Every expected value is the scheme's definition (a bound, a variance of a
uniform distribution, an identity matrix, the exact forget bias), never a
value read from nplstm's output; statistical checks use tolerances many
standard errors wide, so they fail only when the distribution is wrong.
"""

import numpy as np
import pytest

from nplstm import LSTM, Dense, Embedding, SequenceModel, StackedLSTM
from nplstm.layout import GATE_ORDER
from nplstm.params import INIT_SCHEMES

F = GATE_ORDER.index("f")


def stack_arrays(stack):
    """(W_x entries, W_h entries, biases (4, H) per layer-direction, W_hT (P, 4H) per layer-direction)."""
    W_x, W_h, b, W_hT = [], [], [], []
    for pair in stack.layers:
        for p in pair:
            x_T, h_T, bias = p.fused()
            W_x.append(x_T.ravel())
            W_h.append(h_T.ravel())
            b.append(bias.reshape(4, -1))
            W_hT.append(h_T)
    return np.concatenate(W_x), np.concatenate(W_h), b, W_hT


def near_bound(values, bound):
    """max |v| <= bound (up to rounding), and n uniform draws reach within bound·40/n of each end.

    P(no draw beyond (1 - e)·bound) = (1 - e/2)^n ≈ exp(-n·e/2) = e^-20 for e = 40/n.
    """
    eps = 4 * np.finfo(values.dtype).eps * bound
    assert np.abs(values).max() <= bound + eps
    e = 40 / values.size
    assert values.min() < -bound * (1 - e) and values.max() > bound * (1 - e)


# ---------------------------------------------------------------- torch
def test_torch_weights_are_uniform_with_torchs_bound_and_variance():
    H, I = 256, 200
    stack = StackedLSTM(I, H, num_layers=2, init="torch", seed=1)
    W_x, W_h, b, _ = stack_arrays(stack)
    k = 1 / np.sqrt(H)
    W = np.concatenate([W_x, W_h])  # ~ 1.3 M draws: var's standard error 0.08 %
    near_bound(W, k)
    assert np.var(W) == pytest.approx(k * k / 3, rel=0.01)
    assert abs(np.mean(W)) < 5 * k / np.sqrt(3 * W.size)


def test_torch_bias_is_bias_ih_plus_bias_hh():
    """torch keeps two biases, each uniform(-k, k): the gate bias they add to has bound 2k and variance 2k²/3."""
    H = 512
    stack = StackedLSTM(3, H, num_layers=4, bidirectional=True, init="torch", seed=2)
    b = np.concatenate([bias.ravel() for bias in stack_arrays(stack)[2]])  # 16384 draws: var's SE 0.9 %
    k = 1 / np.sqrt(H)
    assert np.abs(b).max() <= 2 * k
    assert np.var(b) == pytest.approx(2 * k * k / 3, rel=0.05)  # a single uniform draw would give half
    assert b.min() < -1.8 * k and b.max() > 1.8 * k  # P(|b| > 1.8k) = 0.01 per draw, 16384 draws


def test_torch_scheme_matches_a_fresh_torch_lstm_in_distribution():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    H = 256
    ref = torch.nn.LSTM(64, H, num_layers=2)
    effective_bias = np.concatenate([(getattr(ref, f"bias_ih_l{l}") + getattr(ref, f"bias_hh_l{l}")).detach().numpy()
                                     for l in range(2)])
    ours = np.concatenate([bias.ravel() for bias in stack_arrays(StackedLSTM(64, H, num_layers=2, init="torch", seed=3))[2]])
    assert np.var(ours) == pytest.approx(np.var(effective_bias), rel=0.12)  # two samples of 2048: SE ≈ 3.7 % each
    torch_weights = np.concatenate([p.detach().numpy().ravel() for n, p in ref.named_parameters() if n.startswith("weight")])
    W_x, W_h, _, _ = stack_arrays(StackedLSTM(64, H, num_layers=2, init="torch", seed=3))
    assert np.var(np.concatenate([W_x, W_h])) == pytest.approx(np.var(torch_weights), rel=0.01)


def test_torch_projection_and_head():
    stack = StackedLSTM(4, 100, proj_size=30, init="torch", seed=4)
    near_bound(stack.layers[0][0].W_hr, 1 / np.sqrt(100))
    dense = Dense(400, 300, init="torch", seed=5)
    k = 1 / np.sqrt(400)
    near_bound(dense.W, k)
    near_bound(dense.b, k)
    assert np.var(dense.W) == pytest.approx(k * k / 3, rel=0.02)
    emb = Embedding(500, 200, padding_idx=3, init="torch", seed=6)
    rows = np.delete(emb.W, 3, axis=0)
    assert np.all(emb.W[3] == 0)
    assert np.mean(rows) == pytest.approx(0, abs=5 / np.sqrt(rows.size))
    assert np.var(rows) == pytest.approx(1.0, rel=0.02)


# ---------------------------------------------------------------- keras
def test_keras_kernels_forget_bias_and_orthogonal_recurrent_kernel():
    I, H, P = 37, 64, 20
    stack = StackedLSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, init="keras", seed=7)
    for l, pair in enumerate(stack.layers):
        for p in pair:
            W_xT, W_hT, b = p.fused()
            fan_in = I if l == 0 else 2 * P
            near_bound(W_xT, np.sqrt(6 / (fan_in + 4 * H)))
            np.testing.assert_allclose(W_hT @ W_hT.T, np.eye(P), atol=1e-6)  # orthonormal rows, (P, 4H)
            bias = b.reshape(4, H)
            assert np.all(bias[F] == 1.0) and np.all(np.delete(bias, F, axis=0) == 0.0)
            near_bound(p.W_hr, np.sqrt(6 / (H + P)))
    square = StackedLSTM(3, 16, init="keras", seed=8).layers[0][0].fused()[1]  # (16, 64)
    np.testing.assert_allclose(square @ square.T, np.eye(16), atol=1e-6)


def test_keras_recurrent_kernel_is_not_always_the_same_orthogonal_matrix():
    a = StackedLSTM(3, 8, init="keras", seed=1).layers[0][0].fused()[1]
    b = StackedLSTM(3, 8, init="keras", seed=2).layers[0][0].fused()[1]
    assert not np.allclose(a, b)


def test_keras_dense_and_embedding():
    dense = Dense(300, 100, init="keras", seed=9)
    limit = np.sqrt(6 / 400)
    near_bound(dense.W, limit)
    assert np.var(dense.W) == pytest.approx(limit * limit / 3, rel=0.02)
    assert np.all(dense.b == 0)
    emb = Embedding(1000, 64, init="keras", seed=10)
    near_bound(emb.W, 0.05)


def test_keras_without_bias_keeps_the_biases_zero():
    stack = StackedLSTM(3, 5, bias=False, init="keras", seed=0)
    assert np.all(stack.layers[0][0].b == 0)


# ---------------------------------------------------------------- textbook, defaults, seeds
def test_the_textbook_lstm_keeps_zero_biases_and_the_stacks_default_draws():
    lstm = LSTM(3, 6, seed=11)
    for name in ("bf", "bi", "bc", "bo"):
        assert np.all(getattr(lstm, name) == 0)
    stack = StackedLSTM(3, 6, seed=11, init="textbook")
    default = StackedLSTM(3, 6, seed=11)
    for name, value in lstm.parameters().items():
        np.testing.assert_array_equal(stack.parameters()["l0." + name], value)
        np.testing.assert_array_equal(default.parameters()["l0." + name], value)


def test_textbook_sequence_model_draws_its_parts_in_order_from_one_generator():
    """init="textbook" reproduces the parts built one after the other from the seed's generator."""
    model = SequenceModel(4, 5, 3, num_layers=2, hidden_layers=[(7, "relu")], num_embeddings=11, init="textbook", seed=12)
    rng = np.random.default_rng(12)
    emb = Embedding(11, 4, seed=rng)
    stack = StackedLSTM(4, 5, 2, seed=rng)
    hidden, head = Dense(5, 7, "relu", seed=rng), Dense(7, 3, seed=rng)
    expected = {"embedding.W": emb.W, **{f"lstm.{k}": v for k, v in stack.parameters().items()},
                "dense.0.W": hidden.W, "dense.0.b": hidden.b, "head.W": head.W, "head.b": head.b}
    got = model.parameters()
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)


def test_sequence_model_defaults_to_torch_init():
    model = SequenceModel(3, 64, 20, seed=13)
    H = 64
    b = np.concatenate([model.lstm.parameters()[f"l0.b{g}"].ravel() for g in "fico"])
    assert np.any(b != 0) and np.abs(b).max() <= 2 / np.sqrt(H)
    assert np.any(model.head.b != 0) and np.abs(model.head.b).max() <= 1 / np.sqrt(H)


@pytest.mark.parametrize("init", INIT_SCHEMES)
def test_same_seed_same_weights_other_seed_other_weights(init):
    def build(seed):
        return SequenceModel(3, 6, 2, num_layers=2, bidirectional=True, proj_size=4, hidden_layers=[(5, "tanh")],
                             num_embeddings=9, padding_idx=0, init=init, seed=seed).parameters()

    a, b, c = build(21), build(21), build(22)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.array_equal(a[name], c[name]) for name in a if np.any(a[name]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_schemes_respect_the_dtype(dtype):
    for init in INIT_SCHEMES:
        model = SequenceModel(3, 6, 2, num_embeddings=5, init=init, seed=0, dtype=dtype)
        assert all(p.dtype == dtype for p in model.parameters().values())


@pytest.mark.parametrize("build", [
    lambda: SequenceModel(2, 3, 1, init="xavier"),
    lambda: StackedLSTM(2, 3, init="Torch"),
    lambda: Dense(2, 3, init=None),
    lambda: Embedding(2, 3, init="glorot"),
])
def test_an_unknown_scheme_is_refused_by_name(build):
    with pytest.raises(ValueError, match=r"init must be one of \['torch', 'keras', 'textbook'\]; got"):
        build()


def test_init_does_not_enter_the_saved_file(tmp_path):
    """Only the weights matter once built: a saved model reloads identically whatever its init."""
    model = SequenceModel(3, 4, 2, init="keras", seed=0)
    loaded = SequenceModel.load(model.save(tmp_path / "m.npz"))
    assert "init" not in model.config()
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[name], value)
