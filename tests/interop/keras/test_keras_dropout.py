"""Keras LSTM ``dropout`` / ``recurrent_dropout`` import as the stack's ``input_dropout`` / ``recurrent_dropout``.

Training-only settings: the imported model still predicts exactly what Keras
does (test_keras_models.py holds that); here the rates Keras would train
with arrive, as Keras applies them (only a rate in (0, 1) drops).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from nplstm.interop import InteropError, from_keras  # noqa: E402

L = keras.layers


def model(*layers):
    return keras.Sequential([keras.Input((5, 3)), *layers])


def rates(imported):
    stack = imported.lstm if hasattr(imported, "lstm") else imported.stack
    return stack.input_dropout, stack.recurrent_dropout


def test_rates_of_a_stack_and_a_bidirectional_layer_arrive():
    two = model(L.LSTM(4, dropout=0.2, recurrent_dropout=0.3, return_sequences=True),
                L.LSTM(4, dropout=0.2, recurrent_dropout=0.3), L.Dense(2))
    assert rates(from_keras(two)) == (0.2, 0.3)
    bi = model(L.Bidirectional(L.LSTM(4, dropout=0.25)), L.Dense(2))
    assert rates(from_keras(bi)) == (0.25, 0.0)
    assert rates(from_keras(model(L.LSTM(4), L.Dense(1)))) == (0.0, 0.0)


def test_a_lone_layer_and_a_weight_list_with_its_config():
    layer = L.LSTM(3, recurrent_dropout=0.4)
    layer(np.zeros((1, 2, 2), dtype="float32"))
    assert rates(from_keras(layer)) == (0.0, 0.4)
    assert rates(from_keras(layer.get_weights(), config=layer.get_config())) == (0.0, 0.4)


def test_a_rate_keras_does_not_apply_imports_as_none():
    """Keras clips rates to [0, 1] and drops only for 0 < rate < 1: dropout=1.0 trains without dropout there."""
    assert rates(from_keras(model(L.LSTM(4, dropout=1.0), L.Dense(1)))) == (0.0, 0.0)


def test_layers_with_different_rates_import_without_dropout_and_say_so():
    two = model(L.LSTM(4, dropout=0.2, return_sequences=True), L.LSTM(4, dropout=0.5), L.Dense(2))
    with pytest.warns(UserWarning, match="different dropout/recurrent_dropout"):
        assert rates(from_keras(two)) == (0.0, 0.0)


def test_a_rate_that_is_not_a_number_is_refused_by_name():
    layer = L.LSTM(3)
    layer(np.zeros((1, 2, 2), dtype="float32"))
    with pytest.raises(InteropError, match="config: dropout must be a number; got 'high'"):
        from_keras(layer.get_weights(), config=dict(layer.get_config(), dropout="high"))
