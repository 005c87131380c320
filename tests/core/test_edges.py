"""Edges found by an adversarial review: each once returned a wrong number, crashed or said the wrong thing."""

import warnings

import numpy as np
import pytest

from nplstm import LSTM, SequenceModel, StackedLSTM, WeightsFileError, fit
from nplstm.io import read_npz, save_npz
from nplstm.loading import load_model


def test_a_float32_file_holding_values_beyond_float32_is_refused(tmp_path):
    path = StackedLSTM(2, 3, seed=0, dtype=np.float32).save(tmp_path / "s.npz")
    arrays = read_npz(path)
    arrays["l0.Wf"] = np.full(arrays["l0.Wf"].shape, 1e39)  # float64: finite, but inf as float32
    save_npz(path, arrays)
    with pytest.raises(WeightsFileError, match="beyond float32's range"):
        load_model(path)


def test_per_step_targets_must_match_their_sequences():
    model = SequenceModel(1, 3, 1, many_to_many=True, seed=0)
    X = [np.ones((4, 1)), np.ones((2, 1))]
    with pytest.raises(ValueError, match="sequence 1 has 2 steps but its targets have 1"):
        fit(model, X, [np.ones((4, 1)), np.ones((1, 1))], epochs=1, progress=False)


def test_streaming_and_dask_refuse_what_forward_refuses():
    lstm = LSTM(2, 3, seed=0, dtype=np.float32)
    state = lstm.initial_state()
    with pytest.raises(ValueError, match="beyond float32's range"):
        lstm.step(np.array([1e39, 0.0]), state)
    da = pytest.importorskip("dask.array")
    from nplstm.dask import forward

    with pytest.raises(TypeError, match="real numbers"):
        forward(lstm, da.zeros((4, 5, 2), dtype=bool))


def test_a_perfect_first_batch_is_no_yardstick_for_divergence():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(16, 4, 1)), rng.normal(size=(16, 1))
    X[0], Y[0] = 0, 0
    model = SequenceModel(1, 3, 1, seed=0)
    model.head.W = np.zeros((1, 3))  # predicts exactly 0: the first batch (sequence 0) has loss 0
    history = fit(model, X, Y, epochs=3, batch_size=1, shuffle=False, progress=False)
    assert len(history.loss) == 3


def test_empty_batches_and_ragged_inputs_are_refused_clearly():
    stack = StackedLSTM(2, 3, seed=0)
    with pytest.raises(ValueError, match="batch of 0 sequences"):
        stack.forward(np.zeros((5, 0, 2)))
    with pytest.raises(ValueError, match="ragged"):
        LSTM(1, 2).forward([[1.0], [2.0, 3.0]])


def test_lists_of_one_feature_sequences_fit_whatever_their_lengths():
    rng = np.random.default_rng(0)
    model = SequenceModel(1, 3, 1, seed=0)
    for lengths in ([4, 4, 4], [4, 2, 3]):
        seqs = [rng.normal(size=n) for n in lengths]  # (T,) each: one feature per step
        history = fit(model, seqs, np.ones((3, 1)), epochs=1, progress=False)
        assert len(history.loss) == 1


def test_stream_states_given_as_columns_with_a_projection():
    lstm = LSTM(2, 3, seed=0, proj_size=1)
    state = lstm.initial_state(np.zeros((1, 1)), np.zeros((3, 1)))  # (1, 1) is the column of P = 1
    h = lstm.step(np.ones((2, 1)), state)
    out, h_ref, _ = lstm.forward(np.ones((1, 2)), np.zeros((1, 1)), np.zeros((3, 1)))
    assert h.shape == h_ref.shape == (1, 1)
    np.testing.assert_allclose(h, h_ref, atol=1e-12)


def test_sequence_model_backward_names_the_expected_gradient_shape():
    model = SequenceModel(2, 3, 4, seed=0)
    pred, _, tape = model.forward_train(np.zeros((5, 6, 2)))
    with pytest.raises(ValueError, match=r"d_prediction must have the prediction's shape \(5, 4\); got \(4, 5\)"):
        model.backward(tape, np.zeros((4, 5)))


def test_dropout_on_a_single_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="does nothing with num_layers=1"):
        StackedLSTM(2, 3, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StackedLSTM(2, 3, num_layers=2, dropout=0.5)
