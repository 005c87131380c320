"""Keras 3 interop: parity with keras.layers.LSTM (torch backend) when keras is installed."""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from nplstm.interop import InteropError, from_keras  # noqa: E402


def keras_numpy(value):
    return [keras.ops.convert_to_numpy(v) for v in value] if isinstance(value, (list, tuple)) else keras.ops.convert_to_numpy(value)


def randomize(layer, rng):
    layer.set_weights([rng.uniform(-0.6, 0.6, size=w.shape).astype(w.dtype) for w in layer.get_weights()])


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_lstm_layer_parity(return_sequences, return_state, go_backwards, rng):
    layer = keras.layers.LSTM(5, return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards)
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    layer(x)
    randomize(layer, rng)
    expected = keras_numpy(layer(x))
    got = from_keras(layer)(x)
    if not return_state:
        expected, got = [expected], [got]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=1e-5)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_parity(return_sequences, rng):
    layer = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=return_sequences))
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    layer(x)
    randomize(layer, rng)
    np.testing.assert_allclose(from_keras(layer)(x), keras_numpy(layer(x)), atol=1e-5)


def test_weight_list_with_config_and_float64(rng):
    layer = keras.layers.LSTM(3, return_sequences=True)
    x = rng.normal(size=(2, 4, 2)).astype("float32")
    layer(x)
    randomize(layer, rng)
    weights = [w.astype(np.float64) for w in layer.get_weights()]
    model = from_keras(weights, config={"return_sequences": True})
    assert model.stack.dtype == np.float64
    np.testing.assert_allclose(model(x), keras_numpy(layer(x)), atol=1e-5)


def test_mismatches_are_refused(rng):
    layer = keras.layers.LSTM(3)
    layer(np.zeros((1, 2, 2), dtype="float32"))
    kernel, recurrent, bias = layer.get_weights()
    with pytest.raises(InteropError, match=r"'bias' has shape \(11,\); expected \(12,\)"):
        from_keras([kernel, recurrent, bias[:-1]])
    with pytest.raises(InteropError, match=r"'recurrent_kernel' must be \(H, 4H\); got \(3, 10\)"):
        from_keras([kernel, recurrent[:, :10], bias])
    with pytest.raises(InteropError, match=r"expected 3 weight arrays"):
        from_keras([kernel, recurrent])
    odd = keras.layers.LSTM(3, activation="gelu")
    odd(np.zeros((1, 2, 2), dtype="float32"))
    with pytest.raises(InteropError, match="activation='gelu' does not map"):
        from_keras(odd)
    with pytest.raises(InteropError, match="build it"):
        from_keras(keras.layers.LSTM(3))
