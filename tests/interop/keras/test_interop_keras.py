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


def two_calls(layer, x):
    """Keras' second predict of a model around ``layer`` (batch_shape fixed, as stateful needs)."""
    inputs = keras.Input(batch_shape=x.shape)
    model = keras.Model(inputs, layer(inputs))
    model.predict(x, verbose=0)
    return model, model.predict(x, verbose=0)


def test_stateful_is_refused_and_the_advice_reproduces_the_second_call(rng):
    # issue 17 item 2: the import silently differed from Keras' second call by 0.024
    layer = keras.layers.LSTM(4, stateful=True)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    layer(x)
    randomize(layer, rng)
    layer.reset_state()
    model, second = two_calls(layer, x)
    with pytest.raises(InteropError, match=r"stateful=True.*stateful=False"):
        from_keras(model)
    with pytest.raises(InteropError, match="stateful"):
        from_keras(layer)
    # the advice: import the weights stateless and pass the states Keras held before its second call
    layer.reset_state()
    model.predict(x, verbose=0)
    h0, c0 = (keras_numpy(s)[None] for s in layer.states)
    stateless = from_keras(layer.get_weights(), config=dict(layer.get_config(), stateful=False))
    _, (h_n, _) = stateless.stack.forward(x, (h0, c0))
    np.testing.assert_allclose(h_n[0], second, atol=1e-5)


@pytest.mark.parametrize("make, message", [
    (lambda: keras.layers.LSTM(4, dtype="mixed_float16"), "dtype policy 'mixed_float16'"),
    (lambda: keras.layers.LSTM(4, dtype="mixed_bfloat16"), "dtype policy 'mixed_bfloat16'"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4, stateful=True)), "stateful=True"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4), merge_mode="sum"), "merge_mode 'sum'"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4), merge_mode=None), "merge_mode None"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4), backward_layer=keras.layers.LSTM(4, activation="relu", go_backwards=True)),
     r"differ in \['activation'\]"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4), backward_layer=keras.layers.LSTM(3, go_backwards=True)),
     r"differ in \['units'\]"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4), backward_layer=keras.layers.LSTM(4, use_bias=False, go_backwards=True)),
     r"differ in \['use_bias'\]"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4, go_backwards=True, return_sequences=True),
                                        backward_layer=keras.layers.LSTM(4, return_sequences=True)), "go_backwards=True and False"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4), dtype="mixed_float16"), "dtype policy 'mixed_float16'"),
], ids=["mixed_float16", "mixed_bfloat16", "bi-stateful", "merge-sum", "merge-None", "bwd-activation", "bwd-units",
        "bwd-bias", "fwd-backwards", "bi-mixed"])
def test_settings_that_change_the_output_are_refused_by_name(make, message, rng):
    layer = make()
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    model, _ = two_calls(layer, x)
    with pytest.raises(InteropError, match=message):
        from_keras(model)


@pytest.mark.parametrize("config, message", [
    ({"stateful": True}, "stateful=True"),
    ({"time_major": True}, "time_major=True"),
    ({"dtype": "mixed_float16"}, "dtype policy"),
    ({"a_future_option": 1}, r"config key\(s\) \['a_future_option'\]"),
    ({"units": 5}, "units=5 but the weights are for 3 units"),
])
def test_weight_list_config_is_checked_by_the_same_allow_list(config, message, rng):
    layer = keras.layers.LSTM(3)
    layer(np.zeros((1, 2, 2), dtype="float32"))
    with pytest.raises(InteropError, match=message):
        from_keras(layer.get_weights(), config=config)


@pytest.mark.parametrize("kwargs", [dict(unroll=True), dict(use_cudnn=False), dict(dropout=0.5, recurrent_dropout=0.5),
                                    dict(unit_forget_bias=False), dict(dtype="float64")], ids=str)
def test_settings_that_cannot_change_the_output_import_equal_to_predict(kwargs, rng):
    layer = keras.layers.LSTM(4, return_sequences=True, **kwargs)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    layer(x)
    randomize(layer, rng)
    model, expected = two_calls(layer, x)
    np.testing.assert_allclose(from_keras(model)(x), expected, atol=1e-5)


def test_models_whose_wiring_nplstm_does_not_reproduce_are_refused(rng):
    inputs = keras.Input((5, 3))
    state_in = keras.Input((4,))
    with_state = keras.Model([inputs, state_in], keras.layers.LSTM(4)(inputs, initial_state=[state_in, state_in]))
    masking = keras.layers.Masking()
    skipped_masking = keras.Model(inputs, [keras.layers.LSTM(4)(inputs), masking(inputs)])
    shared = keras.layers.Masking()
    twice = keras.Model(inputs, keras.layers.LSTM(4)(shared(shared(inputs))))
    for model in (with_state, skipped_masking, twice):
        with pytest.raises(InteropError, match="runs through each layer once|breaks the chain|cannot map layer"):
            from_keras(model)
    chain = keras.Model(inputs, keras.layers.LSTM(4)(keras.layers.Masking(mask_value=0.5)(inputs)))
    assert from_keras(chain).mask_value == 0.5

    class MyLSTM(keras.layers.LSTM):
        def call(self, sequences, initial_state=None, mask=None, training=False):
            return 2 * super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    mine = MyLSTM(4)
    mine(np.zeros((1, 5, 3), dtype="float32"))
    with pytest.raises(InteropError, match="own LSTM"):
        from_keras(mine)


def test_a_mask_not_computed_by_the_masking_layer_is_refused(rng):
    # a saved functional model stores Masking's mask as NotEqual/Any operations of its own
    inputs = keras.Input((5, 3))
    other = keras.ops.any(keras.ops.not_equal(inputs, 1.0), axis=-1)
    wrong = keras.Model(inputs, keras.layers.LSTM(4)(keras.layers.Masking(mask_value=0.0)(inputs), mask=other))
    unmasked = keras.Model(inputs, keras.layers.LSTM(4)(inputs, mask=keras.ops.any(keras.ops.not_equal(inputs, 0.0), axis=-1)))
    for model in (wrong, unmasked):
        with pytest.raises(InteropError, match="runs through each layer once"):
            from_keras(model)
    right = keras.Model(inputs, keras.layers.LSTM(4)(keras.layers.Masking(mask_value=0.0)(inputs)))
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    x[1, 3:] = 0.0
    np.testing.assert_allclose(from_keras(right)(x), right.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("where", ["masking", "input"])
def test_reduced_precision_before_the_lstm_is_refused(where, rng):
    # found by the edited-config fuzz: a mixed_float16 Masking hands the LSTM float16-rounded inputs
    inputs = keras.Input((5, 3), dtype="float16" if where == "input" else "float32")
    masking = keras.layers.Masking(dtype="mixed_float16" if where == "masking" else "float32")
    model = keras.Model(inputs, keras.layers.LSTM(4)(masking(inputs)))
    with pytest.raises(InteropError, match="float16"):
        from_keras(model)


def test_saved_functional_mask_edited_apart_from_masking_is_refused(tmp_path, rng):
    # a saved functional model stores Masking's mask as NotEqual(x, 0.0)/Any ops: edit only the op's value
    import json
    import zipfile

    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, keras.layers.LSTM(4)(keras.layers.Masking(mask_value=0.0)(inputs)))
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    (op,) = [layer for layer in config["config"]["layers"] if layer["class_name"] == "NotEqual"]
    assert op["inbound_nodes"][0]["args"][1] == 0.0
    op["inbound_nodes"][0]["args"][1] = 5.0
    members["config.json"] = json.dumps(config).encode()
    edited = tmp_path / "edited.keras"
    with zipfile.ZipFile(edited, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    x[1, 3:] = 0.0
    reloaded = keras.saving.load_model(edited, compile=False)
    assert np.abs(reloaded.predict(x, verbose=0) - model.predict(x, verbose=0)).max() > 1e-3  # Keras now masks on 5.0
    with pytest.raises(InteropError, match="runs through each layer once"):
        from_keras(edited)
    np.testing.assert_allclose(from_keras(path)(x), model.predict(x, verbose=0), atol=1e-5)
