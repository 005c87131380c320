"""Keras layers beyond tanh/sigmoid: every activation pair, Masking as lengths, forward/repr, loading, backends."""

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from test_interop_keras import keras_numpy, randomize  # noqa: E402

from nplstm.interop import InteropError, from_keras  # noqa: E402
from nplstm.interop.keras import KERAS_ACTIVATIONS  # noqa: E402


def as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def assert_parity(got, expected, atol=1e-5):
    got, expected = as_list(got), as_list(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=atol)


ACTIVATION_PAIRS = [(a, r) for a in sorted(KERAS_ACTIVATIONS) for r in sorted(KERAS_ACTIVATIONS)]


@pytest.mark.parametrize("activation, recurrent_activation", ACTIVATION_PAIRS)
def test_activation_pairs_match_keras(activation, recurrent_activation, rng):
    layer = keras.layers.LSTM(4, activation=activation, recurrent_activation=recurrent_activation, return_sequences=True, return_state=True)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    layer(x)
    randomize(layer, rng)
    assert_parity(from_keras(layer, dtype=np.float64)(x), keras_numpy(layer(x)), atol=2e-5)


def test_unit_forget_bias_only_initialises(rng):
    layer = keras.layers.LSTM(3, unit_forget_bias=False, recurrent_activation="hard_sigmoid")
    x = rng.normal(size=(2, 4, 2)).astype("float32")
    layer(x)
    randomize(layer, rng)
    assert_parity(from_keras(layer)(x), keras_numpy(layer(x)))


def masked_model(layer, T=6, I=3, mask_value=0.0):
    inputs = keras.Input((T, I))
    return keras.Model(inputs, layer(keras.layers.Masking(mask_value=mask_value)(inputs)))


def padded(rng, lengths, T=6, I=3, pad=0.0):
    x = rng.normal(size=(len(lengths), T, I)).astype("float32")
    for b, n in enumerate(lengths):
        x[b, n:] = pad
    return x


@pytest.mark.parametrize("kwargs", [
    dict(return_sequences=True),
    dict(return_sequences=True, return_state=True),
    dict(return_sequences=False, return_state=True),
    dict(return_sequences=True, go_backwards=True),
    dict(return_sequences=True, zero_output_for_mask=True),
    # found by the edited-config fuzz: Keras' last output is step T-1's, zero when it is padding
    dict(zero_output_for_mask=True),
    dict(zero_output_for_mask=True, return_state=True),
    dict(zero_output_for_mask=True, go_backwards=True),
], ids=lambda k: "-".join(k))
def test_masking_maps_to_lengths(kwargs, rng):
    layer = keras.layers.LSTM(4, **kwargs)
    model = masked_model(layer)
    x = padded(rng, [6, 3, 1])
    model(x)
    randomize(layer, rng)
    imported = from_keras(model)
    assert imported.mask_value == 0.0
    assert_parity(imported(x), keras_numpy(model(x)))


@pytest.mark.parametrize("return_state", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_masked_bidirectional(return_sequences, return_state, rng):
    layer = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=return_sequences, return_state=return_state))
    model = masked_model(layer, mask_value=-1.0)
    x = padded(rng, [2, 6, 4], pad=-1.0)
    model(x)
    randomize(layer.forward_layer, rng)
    randomize(layer.backward_layer, rng)
    assert_parity(from_keras(model)(x), keras_numpy(model(x)))


def test_padding_in_the_middle_is_refused(rng):
    layer = keras.layers.LSTM(3)
    model = masked_model(layer)
    x = padded(rng, [6, 6])
    x[1, 2] = 0.0
    model(x)
    with pytest.raises(ValueError, match="sequence 1 has masked steps before unmasked ones"):
        from_keras(model)(x)


def test_other_layers_are_refused():
    inputs = keras.Input((4, 2))
    model = keras.Model(inputs, keras.layers.Conv1D(3, 2)(keras.layers.LSTM(3, return_sequences=True)(inputs)))
    with pytest.raises(InteropError, match=r"cannot map layer 'conv1d\w*' \(Conv1D\); it maps Sequential"):
        from_keras(model)


def test_forward_and_repr(rng):
    layer = keras.layers.LSTM(5, return_sequences=True, go_backwards=True)
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    layer(x)
    imported = from_keras(layer)
    np.testing.assert_array_equal(imported.forward(x), imported(x))
    assert repr(imported) == (
        "KerasLSTM(input_size=4, units=5, bidirectional=False, return_sequences=True, return_state=False, "
        "go_backwards=True, dtype=float32)"
    )


def test_saved_keras_file_loads(tmp_path, rng):
    layer = keras.layers.LSTM(3, activation="relu", return_sequences=True)
    model = masked_model(layer, T=4, I=2)
    x = padded(rng, [4, 2], T=4, I=2)
    model(x)
    randomize(layer, rng)
    path = tmp_path / "m.keras"
    model.save(path)
    assert_parity(from_keras(path)(x), keras_numpy(model(x)))


@pytest.mark.parametrize("code", [
    "from nplstm.interop.keras import import_keras; print(import_keras().backend.backend())",
    "from nplstm.interop import from_keras; import keras; print(keras.backend.backend())",
], ids=["import_keras", "user-import-after"])
def test_a_backend_is_chosen_when_keras_backend_is_unset(code):
    """Without KERAS_BACKEND keras 3 would pick tensorflow; nplstm picks torch when it is installed."""
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "torch"


def test_a_backend_set_by_the_user_is_kept():
    env = dict(os.environ, KERAS_BACKEND="numpy")
    code = "from nplstm.interop import from_keras; import os; print(os.environ['KERAS_BACKEND'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "numpy", done.stderr
