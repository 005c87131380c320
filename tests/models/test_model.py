"""The whole model: Embedding -> StackedLSTM -> Dense layers, against hand values, an independent reference and finite differences."""

import json

import numpy as np
import pytest

from nplstm import Adam, Dense, Embedding, SequenceModel, StackedLSTM, fit
from nplstm.head import HEAD_ACTIVATIONS
from nplstm.io import read_npz
from nplstm.losses import mse, softmax_cross_entropy
from nplstm.model import _reverse_each

from gradcheck import numeric_gradient, rel_error
from reference import reference_lstm


def randomise(model, rng, scale=0.8):
    for p in model.parameters().values():  # gradients well above finite-difference noise
        p[...] = rng.normal(scale=scale, size=p.shape)


# ------------------------------------------------------------ the layers
def test_dense_activations_give_hand_values():
    x = np.array([[0.0, np.log(2.0)]])
    cases = {
        "linear": [[0.0, np.log(2.0)]],
        "relu": [[0.0, np.log(2.0)]],
        "sigmoid": [[0.5, 2.0 / 3.0]],
        "tanh": [[0.0, 0.6]],  # tanh(ln 2) = (2 - 1/2) / (2 + 1/2)
        "softmax": [[1.0 / 3.0, 2.0 / 3.0]],
        "log_softmax": [[np.log(1.0 / 3.0), np.log(2.0 / 3.0)]],
    }
    assert set(cases) == set(HEAD_ACTIVATIONS)
    for activation, expected in cases.items():
        layer = Dense(2, 2, activation)
        layer.W = np.eye(2)
        np.testing.assert_allclose(layer.forward(x), expected, atol=1e-15, err_msg=activation)
    relu = Dense(1, 1, "relu")
    relu.W = [[1.0]]
    np.testing.assert_array_equal(relu.forward([[-3.0], [2.0]]), [[0.0], [2.0]])


def test_softmax_heads_are_stable_for_huge_scores():
    layer = Dense(1, 3, "softmax")
    layer.W = [[1.0], [2.0], [3.0]]
    log_layer = Dense(1, 3, "log_softmax")
    log_layer.W = layer.W
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = layer.forward([[1e300]])
        logp = log_layer.forward([[1.0]])
    np.testing.assert_array_equal(p, [[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(logp, [[-2 - np.log1p(np.exp(-1) + np.exp(-2)) + 0, -1 - np.log1p(np.exp(-1) + np.exp(-2)) + 0,
                                      -np.log1p(np.exp(-1) + np.exp(-2))]] , rtol=1e-14)


@pytest.mark.parametrize("activation", HEAD_ACTIVATIONS)
def test_dense_gradients(activation, rng):
    layer = Dense(4, 3, activation, seed=0)
    layer.b = rng.normal(size=3)
    h = rng.normal(size=(2, 5, 4))
    w = rng.normal(size=(2, 5, 3))
    f = lambda: float(np.sum(w * layer.forward(h)))  # noqa: E731
    grads, dh = layer.backward(h, w)
    assert rel_error(grads["W"], numeric_gradient(f, layer.W)) < 1e-7
    assert rel_error(grads["b"], numeric_gradient(f, layer.b)) < 1e-7
    assert rel_error(dh, numeric_gradient(f, h)) < 1e-7


def test_embedding_lookup_gradient_and_padding_row(rng):
    emb = Embedding(5, 3, padding_idx=1, seed=0)
    assert not emb.W[1].any()  # torch starts the padding row at zero
    emb.W = rng.normal(size=(5, 3))
    ids = np.array([[0, 1, 4], [4, 4, 2]])
    np.testing.assert_array_equal(emb.forward(ids), emb.W[ids])
    w = rng.normal(size=(2, 3, 3))
    grads = emb.backward(ids, w)
    expected = np.zeros((5, 3))
    for (b, t), token in np.ndenumerate(ids):
        expected[token] += w[b, t]
    expected[1] = 0  # padding_idx: no gradient, as in torch
    np.testing.assert_allclose(grads["W"], expected)
    np.testing.assert_array_equal(emb.forward(np.array([[2.0, 3.0]])), emb.W[[[2, 3]]])  # whole floats are ids


@pytest.mark.parametrize(
    "ids, error, message",
    [
        ([[0, 5]], ValueError, r"token ids in \[0, 5\); got values from 0 to 5"),
        ([[-1, 2]], ValueError, r"token ids in \[0, 5\); got values from -1 to 2"),
        ([[0.5, 2]], TypeError, r"integer token ids for the embedding; got dtype float64"),
        ([["a"]], TypeError, r"integer token ids"),
    ],
)
def test_embedding_refuses_bad_ids(ids, error, message):
    with pytest.raises(error, match=message):
        Embedding(5, 2).forward(np.array(ids))


# ------------------------------------------------- forward vs a reference
def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_forward_equals_an_independent_reference(rng):
    """Embedding -> 1-layer LSTM -> relu Dense -> softmax Dense, computed by hand with the reference LSTM."""
    model = SequenceModel(3, 4, 2, num_embeddings=6, hidden_layers=[(5, "relu")], activation="softmax", seed=0)
    randomise(model, rng)
    ids = rng.integers(0, 6, size=(2, 7))
    one_hot = np.eye(6)[ids]  # the lookup as a product: independent of fancy indexing
    layer = model.lstm.layers[0][0]
    weights = {name: getattr(layer, name) for name in ("Wf", "Wi", "Wc", "Wo", "bf", "bi", "bc", "bo")}
    expected = []
    for b in range(2):
        x = one_hot[b] @ model.embedding.W
        _, h, _ = reference_lstm(x, weights)
        hidden = np.maximum(model.dense[0].W @ h + model.dense[0].b, 0)
        expected.append(_softmax(model.head.W @ hidden + model.head.b))
    np.testing.assert_allclose(model.predict(ids), expected, atol=1e-12)


def test_last_step_output_of_a_bidirectional_stack_is_torchs_out_minus_one(rng):
    model = SequenceModel(2, 3, 2, bidirectional=True, output="last", seed=0)
    x = rng.normal(size=(3, 5, 2))
    out, (h_n, _) = model.lstm.forward(x)
    np.testing.assert_allclose(model.predict(x), out[:, -1] @ model.head.W.T + model.head.b, atol=1e-14)
    assert not np.allclose(out[:, -1, 3:], h_n[1])  # the backward half differs from h_n: "last" is not "h_n"
    lengths = np.array([5, 2, 3])
    out, _ = model.lstm.forward(x, lengths=lengths)
    np.testing.assert_allclose(model.predict(x, lengths=lengths),
                               out[[0, 1, 2], lengths - 1] @ model.head.W.T + model.head.b, atol=1e-14)


def test_a_masked_model_equals_each_sequence_run_alone(rng):
    """Keras Masking (mask_value) and mask_zero read trailing padding as each sequence's length."""
    model = SequenceModel(2, 3, 2, mask_value=0.0, many_to_many=True, masked_outputs="repeat", seed=0)
    x = rng.normal(size=(2, 5, 2))
    x[1, 3:] = 0.0
    pred = model.predict(x)
    alone = model.predict(x[1:, :3])
    np.testing.assert_allclose(pred[1, :3], alone[0], atol=1e-14)
    np.testing.assert_allclose(pred[1, 3:], np.repeat(alone[0, -1:], 2, axis=0), atol=1e-14)  # "repeat"
    x[0, 1] = 0.0
    with pytest.raises(ValueError, match=r"sequence 0 has padding \(steps equal to mask_value=0.0\) before valid steps"):
        model.predict(x)
    with pytest.raises(ValueError, match=r"lengths \[5\] disagree with the padding the inputs show .*: \[3\]"):
        model.predict(x[1:], lengths=[5])
    np.testing.assert_allclose(model.predict(x[1:], lengths=[3]), pred[1:], rtol=0, atol=1e-14)  # agreeing lengths are fine

    tokens = SequenceModel(2, 3, 2, num_embeddings=4, mask_zero=True, seed=0)
    ids = np.array([[1, 2, 3, 0, 0], [3, 1, 1, 2, 1]])
    np.testing.assert_allclose(tokens.predict(ids)[0], tokens.predict(ids[:1, :3])[0], atol=1e-14)
    with pytest.raises(ValueError, match=r"sequence 1 is all padding"):
        tokens.predict(np.array([[1, 2], [0, 0]]))


def test_go_backwards_reads_each_sequence_reversed(rng):
    model = SequenceModel(2, 3, 2, go_backwards=True, many_to_many=True, seed=0)
    plain = SequenceModel.from_parts(model.lstm, list(model.dense), output="sequence")
    x = rng.normal(size=(2, 4, 2))
    np.testing.assert_allclose(model.predict(x), plain.predict(x[:, ::-1]), atol=1e-14)
    lengths = np.array([4, 2])
    got = model.predict(x, lengths=lengths)
    short = plain.predict(x[1:, 1::-1])  # sequence 1 alone, reversed
    np.testing.assert_allclose(got[1, 2:], short[0], atol=1e-14)  # Keras order: padding first, then the valid steps
    np.testing.assert_allclose(got[1, :2], np.broadcast_to(plain.head.b, (2, 2)), atol=1e-14)  # zero outputs there
    np.testing.assert_array_equal(_reverse_each(_reverse_each(x, lengths), lengths), x)


# ------------------------------------------------------------ gradients
GRID = [
    dict(),
    dict(num_embeddings=5, padding_idx=0),
    dict(hidden_layers=[(3, "tanh"), (2, "sigmoid")], activation="softmax"),
    dict(hidden_layers=[(4, "relu")], activation="log_softmax", output="last", bidirectional=True),
    dict(num_layers=2, bidirectional=True, proj_size=2, output="sequence", activation="tanh"),
    dict(output="sequence", go_backwards=True),
    dict(output="sequence", masked_outputs="repeat", mask_value=0.0),
    dict(num_embeddings=4, mask_zero=True, bidirectional=True, output="last", hidden_layers=[(3, "relu")]),
    dict(output="sequence", go_backwards=True, mask_value=0.0, bidirectional=True),
]


@pytest.mark.parametrize("config", GRID, ids=[json.dumps(c, sort_keys=True) for c in GRID])
def test_every_parameter_gradient_matches_finite_differences(config, rng):
    model = SequenceModel(2, 3, 2, seed=1, **config)
    randomise(model, rng)
    if model.embedding is not None:
        x = np.array([[1, 2, 3, 1], [3, 1, 0, 0]] if model.embedding.mask_zero else [[1, 2, 3, 0], [4, 0, 0, 1]])
    else:
        x = rng.normal(size=(2, 4, 2))
        if model.mask_value is not None:
            x[1, 2:] = 0.0
    pred, _, tape = model.forward_train(x)
    target = rng.normal(size=pred.shape)
    _, d_pred = mse(pred, target)
    grads = model.backward(tape, d_pred)
    names = list(model.parameters()) + (["h_0", "c_0"] if model.embedding is not None else ["x", "h_0", "c_0"])
    assert list(grads) == names
    f = lambda: mse(model.predict(x), target)[0]  # noqa: E731
    for name, param in model.parameters().items():
        numeric = numeric_gradient(f, param)
        if name == "embedding.W" and model.embedding.padding_idx is not None:
            assert numeric[model.embedding.padding_idx].any()  # the padding row does move the loss ...
            assert not grads[name][model.embedding.padding_idx].any()  # ... but, as in torch, gets no gradient
            numeric[model.embedding.padding_idx] = 0
        assert rel_error(grads[name], numeric) < 1e-6, name
    if model.embedding is None and model.mask_value is None:  # (moving a padded entry would unmask it)
        assert rel_error(grads["x"], numeric_gradient(f, x)) < 1e-6


def test_softmax_output_trains_on_the_scores_before_it(rng):
    """Cross-entropy of a softmax output: the gradient given at the pre-activation equals d(-log p)/dθ."""
    model = SequenceModel(2, 3, 3, hidden_layers=[(4, "tanh")], activation="softmax", seed=0)
    randomise(model, rng)
    x, labels = rng.normal(size=(4, 3, 2)), np.array([0, 2, 1, 2])
    _, _, tape = model.forward_train(x)
    _, d_scores = softmax_cross_entropy(tape.pre_activation, labels)
    grads = model.backward(tape, d_scores, of_pre_activation=True)

    def f():
        p = model.predict(x)
        return float(-np.mean(np.log(p[np.arange(4), labels])))

    for name, param in model.parameters().items():
        assert rel_error(grads[name], numeric_gradient(f, param)) < 1e-6, name
    np.testing.assert_allclose(model.logits(x), tape.pre_activation, atol=1e-14)


def test_fit_trains_a_token_classifier_with_a_softmax_output():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 6, size=(96, 6))
    labels = (ids == 5).any(axis=1).astype(np.int64)  # "does token 5 occur?"
    model = SequenceModel(4, 8, 2, num_embeddings=6, activation="softmax", seed=0)
    history = fit(model, ids, labels, loss="cross_entropy", epochs=40, batch_size=16, seed=0, progress=False,
                  optimizer=Adam(model.parameters(), lr=1e-2), clip_norm=1.0)  # fit's defaults before issue 19
    assert history.loss[-1] < 0.3 * history.loss[0]
    accuracy = np.mean(model.predict(ids).argmax(axis=1) == labels)
    assert accuracy > 0.95
    sigmoid = SequenceModel(4, 8, 2, num_embeddings=6, activation="sigmoid", seed=0)
    with pytest.raises(ValueError, match="activation must be linear \\(logits\\), softmax or log_softmax; got 'sigmoid'"):
        fit(sigmoid, ids, labels, loss="cross_entropy", epochs=1)


# ------------------------------------------------------------- structure
def test_from_parts_uses_the_layers_and_checks_their_widths(rng):
    stack = StackedLSTM(2, 3, bidirectional=True, seed=0)  # time-major: the model keeps a batch-first twin
    head = [Dense(6, 4, "relu", seed=0), Dense(4, 1, seed=1)]
    model = SequenceModel.from_parts(stack, head)
    assert model.lstm.batch_first and model.dense[0] is head[0]
    x = rng.normal(size=(2, 5, 2))
    _, (h_n, _) = stack.forward(x.transpose(1, 0, 2))
    np.testing.assert_allclose(model.predict(x), head[1](head[0](np.concatenate([h_n[0], h_n[1]], -1))), atol=1e-14)
    with pytest.raises(ValueError, match=r"dense\[0\] reads 3 features; what feeds it gives 6"):
        SequenceModel.from_parts(stack, [Dense(3, 1)])
    with pytest.raises(ValueError, match=r"dense\[1\] reads 5 features; what feeds it gives 4"):
        SequenceModel.from_parts(stack, [head[0], Dense(5, 1)])
    with pytest.raises(ValueError, match="the embedding gives 4 features; the stack reads 2"):
        SequenceModel.from_parts(stack, head, embedding=Embedding(3, 4))
    with pytest.raises(ValueError, match=r"dense\[0\] is float32 but the stack is float64"):
        SequenceModel.from_parts(stack, [Dense(6, 1, dtype=np.float32)])
    with pytest.raises(ValueError, match=r"output must be one of \['h_n', 'last', 'sequence'\]; got 'first'"):
        SequenceModel.from_parts(stack, head, output="first")
    with pytest.raises(TypeError, match="head must be a non-empty sequence of Dense layers"):
        SequenceModel.from_parts(stack, [])


def test_repr_shows_the_architecture():
    model = SequenceModel(3, 4, 2, num_embeddings=9, mask_zero=True, hidden_layers=[(5, "relu")], activation="softmax")
    text = repr(model)
    for part in ("Embedding(9, 3, mask_zero=True", "StackedLSTM(input_size=3, hidden_size=4",
                 "Dense(in_features=4, out_features=5, activation='relu'",
                 "Dense(in_features=5, out_features=2, activation='softmax'"):
        assert part in text, (part, text)


def test_save_and_load_keep_every_part(tmp_path, rng):
    model = SequenceModel(3, 4, 2, num_embeddings=9, padding_idx=0, num_layers=2, bidirectional=True,
                          hidden_layers=[(5, "relu")], activation="log_softmax", output="last", dtype=np.float32, seed=0)
    randomise(model, rng)
    loaded = SequenceModel.load(model.save(tmp_path / "m.npz"))
    assert repr(loaded) == repr(model)
    ids = rng.integers(0, 9, size=(2, 6))
    np.testing.assert_array_equal(loaded.predict(ids), model.predict(ids))


def test_a_version_2_file_still_loads(tmp_path, rng):
    """Files of the earlier schema (flat config, one linear output layer named head) load as they did."""
    model = SequenceModel(2, 3, 2, num_layers=2, many_to_many=True, seed=0)
    randomise(model, rng)
    arrays = read_npz(model.save(tmp_path / "new.npz"))
    arrays["version"] = np.array(2)
    arrays["config"] = np.array(json.dumps({
        "input_size": 2, "hidden_size": 3, "output_size": 2, "num_layers": 2, "bidirectional": False,
        "dropout": 0.0, "proj_size": 0, "many_to_many": True,
    }))
    np.savez(tmp_path / "old.npz", **arrays)
    old = SequenceModel.load(tmp_path / "old.npz")
    x = rng.normal(size=(2, 4, 2))
    assert old.many_to_many and old.head.activation == "linear"
    np.testing.assert_array_equal(old.predict(x), model.predict(x))
