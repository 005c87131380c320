"""Whole Keras models (issue 18 item 2): from_keras(model or .keras path) against Keras' own ``predict``.

Every mapped model is checked in memory and saved to a ``.keras`` file, on
padded inputs whenever it masks (Masking or ``Embedding(mask_zero=True)``).
Keras builds models slowly: each model is built once per module and shared
by its in-memory and file parametrizations.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from nplstm.interop import InteropError, from_keras  # noqa: E402
from nplstm.interop.keras import KerasLSTM  # noqa: E402

L = keras.layers
B, T, I, V = 3, 6, 3, 11
LENGTHS = [6, 4, 2]


def floats(seed, masked, mask_value=0.0):
    x = np.random.default_rng(seed).normal(size=(B, T, I)).astype("float32")
    if masked:
        for b, n in enumerate(LENGTHS):
            x[b, n:] = mask_value
    return x


def ids(seed, masked):
    x = np.random.default_rng(seed).integers(1 if masked else 0, V, size=(B, T)).astype("int32")
    if masked:
        for b, n in enumerate(LENGTHS):
            x[b, n:] = 0
    return x


def randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.7, 0.7, size=w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def seq(*layers, functional=False, embedding=False):
    """A Sequential model, or the same chain as a functional model."""
    shape, dtype = ((T,), "int32") if embedding else ((T, I), "float32")
    if not functional:
        return keras.Sequential([keras.Input(shape, dtype=dtype), *layers])
    inputs = keras.Input(shape, dtype=dtype)
    out = inputs
    for layer in layers:
        out = layer(out)
    return keras.Model(inputs, out)


# name -> (build the model, make its input); a "masked" input has trailing padding
CASES = {
    # the issue's failure: Sequential([Masking, LSTM, Dense]) saved as .keras
    "masking-lstm-dense": (lambda: seq(L.Masking(), L.LSTM(4), L.Dense(2)), lambda: floats(1, True)),
    # the issue's other failure: a two-LSTM Keras stack
    "two-lstm-stack": (lambda: seq(L.LSTM(4, return_sequences=True), L.LSTM(4)), lambda: floats(2, False)),
    "two-lstm-stack-masked-dropout-dense": (
        lambda: seq(L.Masking(), L.LSTM(5, return_sequences=True), L.Dropout(0.3), L.LSTM(5), L.Dense(3, "tanh")),
        lambda: floats(3, True)),
    "relu-then-softmax": (lambda: seq(L.LSTM(4), L.Dense(5, "relu"), L.Dense(3, "softmax")), lambda: floats(4, False)),
    "tanh-then-log-softmax": (lambda: seq(L.LSTM(4), L.Dense(5, "tanh"), L.Dense(3, "log_softmax"), functional=True),
                              lambda: floats(5, False)),
    "sigmoid": (lambda: seq(L.Masking(mask_value=-1.0), L.LSTM(4), L.Dense(2, "sigmoid")), lambda: floats(6, True, -1.0)),
    "linear-no-bias": (lambda: seq(L.LSTM(4), L.Dense(2, use_bias=False, kernel_constraint="max_norm",
                                                     activity_regularizer="l2")), lambda: floats(7, False)),
    "dense-activation-folded": (lambda: seq(L.LSTM(4), L.Dense(3), L.Dropout(0.5), L.Activation("softmax")),
                                lambda: floats(8, False)),
    "go-backwards-masked": (lambda: seq(L.Masking(), L.LSTM(4, go_backwards=True), L.Dense(2)), lambda: floats(9, True)),
    "go-backwards-stack": (lambda: seq(L.LSTM(4, go_backwards=True, return_sequences=True), L.LSTM(4), L.Dense(2),
                                       functional=True), lambda: floats(10, False)),
    "bi-concat-masked": (lambda: seq(L.Masking(), L.Bidirectional(L.LSTM(4)), L.Dense(2)), lambda: floats(11, True)),
    "bi-sum-masked": (lambda: seq(L.Masking(), L.Bidirectional(L.LSTM(4), merge_mode="sum"), L.Dense(2, "relu")),
                      lambda: floats(12, True)),
    "bi-ave-dropout": (lambda: seq(L.Bidirectional(L.LSTM(4), merge_mode="ave"), L.Dropout(0.2), L.Dense(3, "softmax"),
                                   functional=True), lambda: floats(13, False)),
    "bi-stack-sequence-masked": (
        lambda: seq(L.Masking(), L.Bidirectional(L.LSTM(3, return_sequences=True)),
                    L.Bidirectional(L.LSTM(3, return_sequences=True)), L.TimeDistributed(L.Dense(2))),
        lambda: floats(14, True)),
    "bi-sum-sequence": (lambda: seq(L.Masking(), L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum"),
                                    L.TimeDistributed(L.Dense(2, "sigmoid")), functional=True), lambda: floats(15, True)),
    "sequence-repeat-masked": (lambda: seq(L.Masking(), L.LSTM(4, return_sequences=True), L.TimeDistributed(L.Dense(3)),
                                           functional=True), lambda: floats(16, True)),
    "sequence-zero-output-masked": (
        lambda: seq(L.Masking(), L.LSTM(4, return_sequences=True, zero_output_for_mask=True), L.Dense(3, "relu")),
        lambda: floats(17, True)),
    "sequence-go-backwards-masked": (
        lambda: seq(L.Masking(), L.LSTM(4, return_sequences=True, go_backwards=True), L.TimeDistributed(L.Dense(2))),
        lambda: floats(18, True)),
    "sequence-stack-dense-softmax": (
        lambda: seq(L.LSTM(4, return_sequences=True), L.LSTM(4, return_sequences=True), L.Dense(4, "relu"),
                    L.Dense(3, "softmax")), lambda: floats(19, False)),
    "embedding-mask-zero": (lambda: seq(L.Embedding(V, 3, mask_zero=True), L.LSTM(4), L.Dense(2, "softmax"),
                                        embedding=True), lambda: ids(20, True)),
    "embedding-no-mask": (lambda: seq(L.Embedding(V, 3), L.LSTM(4), L.Dense(2), embedding=True, functional=True),
                          lambda: ids(21, False)),
    "embedding-mask-zero-functional-stack": (
        lambda: seq(L.Embedding(V, 3, mask_zero=True), L.LSTM(4, return_sequences=True), L.LSTM(4),
                    L.Dense(2, "log_softmax"), embedding=True, functional=True), lambda: ids(22, True)),
    "embedding-bi-sequence": (
        lambda: seq(L.Embedding(V, 3, mask_zero=True), L.Bidirectional(L.LSTM(3, return_sequences=True)),
                    L.TimeDistributed(L.Dense(2, "tanh")), embedding=True), lambda: ids(23, True)),
    "embedding-lstm-only": (lambda: seq(L.Embedding(V, 3, mask_zero=True), L.LSTM(4, return_sequences=True),
                                        embedding=True), lambda: ids(24, True)),
    "dropout-family": (
        lambda: seq(L.Masking(), L.GaussianNoise(0.5), L.SpatialDropout1D(0.3), L.LSTM(4, return_sequences=True),
                    L.GaussianDropout(0.3), L.ActivityRegularization(l1=0.1), L.LSTM(4), L.Dropout(0.5), L.Dense(2)),
        lambda: floats(25, True)),
    "masked-lstm-stack-only": (lambda: seq(L.Masking(), L.LSTM(4, return_sequences=True), L.LSTM(4, return_sequences=True)),
                               lambda: floats(26, True)),
}
_BUILT: dict = {}


def built(name):
    """(model, x, Keras' predict) for a case, built once per module."""
    if name not in _BUILT:
        make, data = CASES[name]
        model = randomized(make(), seed=len(_BUILT))
        x = data()
        _BUILT[name] = (model, x, model.predict(x, verbose=0))
    return _BUILT[name]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras-models")

    def path(name):
        p = root / f"{name}.keras"
        if not p.exists():
            built(name)[0].save(p)
        return p

    return path


def predict(imported, x):
    return imported(x) if isinstance(imported, KerasLSTM) else imported.predict(x)


@pytest.mark.parametrize("source", ["memory", "file"])
@pytest.mark.parametrize("name", list(CASES))
def test_model_matches_keras_predict(name, source, saved):
    model, x, expected = built(name)
    imported = from_keras(model if source == "memory" else saved(name))
    got = predict(imported, x)
    assert got.shape == expected.shape
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_lstm_only_models_still_import_as_keras_lstm():
    # a model that is only LSTM layers returns what the Keras layers return, as before
    for name in ("two-lstm-stack", "masked-lstm-stack-only"):
        assert isinstance(from_keras(built(name)[0]), KerasLSTM)
    imported = from_keras(built("masking-lstm-dense")[0])
    assert not isinstance(imported, KerasLSTM)
    assert len(imported.dense) == 1 and imported.mask_value == 0.0


def test_issue_masking_lstm_dense_saved_as_keras_file(saved):
    # issue 18: "from_keras maps a model of [Input], [Masking], LSTM or Bidirectional(LSTM); got layers
    # ['Masking', 'LSTM', 'Dense']"
    model, x, expected = built("masking-lstm-dense")
    np.testing.assert_allclose(from_keras(saved("masking-lstm-dense")).predict(x), expected, atol=1e-5)


def test_issue_two_lstm_stack(saved):
    model, x, expected = built("two-lstm-stack")
    imported = from_keras(saved("two-lstm-stack"))
    assert imported.stack.num_layers == 2
    np.testing.assert_allclose(imported(x), expected, atol=1e-5)


def test_what_the_model_maps_onto():
    m = from_keras(built("bi-sum-masked")[0])
    assert (m.output, m.mask_value, m.go_backwards) == ("h_n", 0.0, False)
    assert m.dense[0].W.shape == (2, 8)  # the sum folded into the Dense: [W; W]
    m = from_keras(built("sequence-repeat-masked")[0])
    assert (m.output, m.masked_outputs) == ("sequence", "repeat")
    assert from_keras(built("bi-stack-sequence-masked")[0]).masked_outputs == "zero"
    m = from_keras(built("embedding-mask-zero")[0])
    assert m.embedding.mask_zero and m.mask_value is None and m.dense[0].activation == "softmax"
    assert from_keras(built("dense-activation-folded")[0]).dense[-1].activation == "softmax"
    assert from_keras(built("go-backwards-stack")[0]).go_backwards


def test_padding_in_the_middle_is_a_value_error():
    model, x, _ = built("embedding-mask-zero")
    bad = x.copy()
    bad[0, 2] = 0
    with pytest.raises(ValueError):
        from_keras(model).predict(bad)


def test_a_returned_state_read_by_the_head(rng):
    inputs = keras.Input((T, I))
    out, h, _ = L.LSTM(4, return_sequences=True, return_state=True)(L.Masking()(inputs))
    by_h = randomized(keras.Model(inputs, L.Dense(2)(h)))
    by_output = randomized(keras.Model(inputs, L.TimeDistributed(L.Dense(2))(out)))
    x = floats(30, True)
    for model in (by_h, by_output):
        np.testing.assert_allclose(from_keras(model).predict(x), model.predict(x, verbose=0), atol=1e-5)
    assert from_keras(by_h).output == "h_n"


def test_lstm_only_stack_returns_the_last_layers_states():
    inputs = keras.Input((T, I))
    first = L.Bidirectional(L.LSTM(3, return_sequences=True))(L.Masking()(inputs))
    model = randomized(keras.Model(inputs, L.Bidirectional(L.LSTM(3, return_sequences=True, return_state=True))(first)))
    x = floats(31, True)
    imported = from_keras(model)
    assert isinstance(imported, KerasLSTM)
    got, expected = imported(x), model.predict(x, verbose=0)
    assert len(got) == len(expected) == 5
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5)
    # an LSTM-only model returning the final h that a return_state LSTM hands on
    _, h, _ = L.LSTM(4, return_sequences=True, return_state=True, zero_output_for_mask=True)(L.Masking()(inputs))
    only_h = randomized(keras.Model(inputs, L.Dropout(0.5)(h)))
    np.testing.assert_allclose(from_keras(only_h)(x), only_h.predict(x, verbose=0), atol=1e-5)


# ------------------------------------------------------------------ refusals
def functional_two_inputs():
    a, b = keras.Input((T, I)), keras.Input((T, I))
    return keras.Model([a, b], L.Dense(2)(L.LSTM(4)(L.Add()([a, b]))))


def dropout_in_training_mode():
    inputs = keras.Input((T, I))
    return keras.Model(inputs, L.Dense(2)(L.LSTM(4)(L.Dropout(0.5)(inputs, training=True))))


REFUSALS = {
    "conv1d": (lambda: seq(L.Conv1D(4, 2), L.LSTM(4), L.Dense(2)), r"layer 'conv1d\w*' \(Conv1D\).*it maps"),
    "gru": (lambda: seq(L.GRU(4), L.Dense(2)), r"layer 'gru\w*' \(GRU\)"),
    "merge-mul": (lambda: seq(L.Bidirectional(L.LSTM(4), merge_mode="mul"), L.Dense(2)),
                  r"Bidirectional 'bidirectional\w*' has merge_mode 'mul'"),
    "merge-none": (lambda: keras.Model(*(lambda i: (i, L.Bidirectional(L.LSTM(4), merge_mode=None)(i)))(keras.Input((T, I)))),
                   r"merge_mode None"),
    "merge-sum-without-dense": (lambda: seq(L.Bidirectional(L.LSTM(4), merge_mode="sum")), r"merge_mode 'sum'.*Dense"),
    "merge-sum-into-lstm": (lambda: seq(L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum"),
                                        L.Bidirectional(L.LSTM(4)), L.Dense(2)), r"merge_mode 'sum' and feeds another LSTM"),
    "different-units": (lambda: seq(L.LSTM(4, return_sequences=True), L.LSTM(3), L.Dense(2)),
                        r"LSTM 'lstm\w*' has units=3 but LSTM 'lstm\w*' has units=4"),
    "different-activation": (lambda: seq(L.LSTM(4, return_sequences=True), L.LSTM(4, activation="relu"), L.Dense(2)),
                             r"activation='relu'"),
    "lstm-then-bidirectional": (lambda: seq(L.LSTM(4, return_sequences=True), L.Bidirectional(L.LSTM(4)), L.Dense(2)),
                                r"all LSTM or all Bidirectional"),
    "go-backwards-second": (lambda: seq(L.LSTM(4, return_sequences=True), L.LSTM(4, go_backwards=True), L.Dense(2)),
                            r"LSTM 'lstm\w*' has go_backwards=True"),
    "go-backwards-masked-stack": (lambda: seq(L.Masking(), L.LSTM(4, return_sequences=True, go_backwards=True), L.LSTM(4)),
                                  r"go_backwards=True under a mask"),
    "multi-input": (functional_two_inputs, r"layer 'add\w*' \(Add\)"),
    "dense-before-lstm": (lambda: seq(L.Dense(4), L.LSTM(4), L.Dense(2)), r"layer 'dense\w*' \(Dense\): a Dense layer before"),
    "lstm-after-dense": (lambda: seq(L.LSTM(4, return_sequences=True), L.Dense(4), L.LSTM(4)), r"an LSTM after Dense"),
    "activation-after-relu": (lambda: seq(L.LSTM(4), L.Dense(3, "relu"), L.Activation("softmax")),
                              r"layer 'activation\w*' \(Activation\).*folds only into a Dense with linear"),
    "dense-gelu": (lambda: seq(L.LSTM(4), L.Dense(3, "gelu")), r"Dense 'dense\w*' has activation='gelu'"),
    "dense-lora": (lambda: seq(L.LSTM(4), L.Dense(3, lora_rank=2)), r"lora_rank=2"),
    "dense-unknown-key": (lambda: seq(L.LSTM(4), L.Dense(3, dtype="mixed_float16")), r"dtype policy 'mixed_float16'"),
    "masking-after-embedding": (lambda: seq(L.Embedding(V, 3), L.Masking(), L.LSTM(4), L.Dense(2), embedding=True),
                                r"layer 'masking\w*' \(Masking\)"),
    "zero-output-last-masked": (lambda: seq(L.Masking(), L.LSTM(4, zero_output_for_mask=True), L.Dense(2)),
                                r"zero_output_for_mask=True and return_sequences=False under a mask"),
    "embedding-return-state": (lambda: keras.Model(*(lambda i: (i, L.LSTM(4, return_state=True)(L.Embedding(V, 3)(i))))(
        keras.Input((T,), dtype="int32"))), r"return_state=True and ends the model"),
    "training-dropout": (dropout_in_training_mode, r"layer 'dropout\w*' is called with training=True"),
    "stateful": (lambda: keras.Sequential([keras.Input(batch_shape=(B, T, I)), L.LSTM(4, stateful=True), L.Dense(2)]),
                 r"stateful=True"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_unsupported_models_are_refused_by_name(name):
    make, message = REFUSALS[name]
    with pytest.raises(InteropError, match=message):
        from_keras(make())


@pytest.mark.parametrize("name", ["conv1d", "gru", "merge-mul", "different-units"])
def test_unsupported_files_are_refused_by_name(name, tmp_path):
    make, message = REFUSALS[name]
    path = tmp_path / f"{name}.keras"
    make().save(path)
    with pytest.raises(InteropError, match=message):
        from_keras(path)
