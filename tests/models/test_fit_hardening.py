"""fit and the training API under bad data, bad arguments and interruption (issue 12), and multi-layer fit (issue 9)."""

import threading

import numpy as np
import pytest

from nplstm import LSTM, SGD, Adam, SequenceModel, fit
from nplstm.training import TrainingDivergedError, evaluate


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 5, 2))
    return X, X.sum(axis=(1, 2))[:, None] * 0.1


@pytest.mark.parametrize("where, message", [("X", r"X holds NaN or inf, first at index \(3, 1, 0\)"),
                                            ("Y", r"^Y holds NaN or inf, first at index \(7, 0\)")])
def test_non_finite_data_is_refused_up_front(data, where, message):
    X, Y = (a.copy() for a in data)
    if where == "X":
        X[3, 1, 0] = np.inf
    else:
        Y[7, 0] = np.nan
    model = SequenceModel(2, 4, 1, seed=0)
    before = {k: v.copy() for k, v in model.parameters().items()}
    with pytest.raises(ValueError, match=message):
        fit(model, X, Y, epochs=2, progress=False)
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(value, before[name])


def test_divergence_stops_with_an_error_and_finite_weights(data):
    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    with pytest.raises(TrainingDivergedError, match=r"diverged in epoch \d+: batch loss") as info:
        fit(model, X, Y * 1e6, epochs=50, optimizer=SGD(model.parameters(), lr=1e6), clip_norm=None, progress=False)
    assert len(info.value.history.loss) < 50
    assert all(np.isfinite(p).all() for p in model.parameters().values())
    # the restored weights are the last ones whose loss was sane, not the blown-up ones
    assert evaluate(model, X, Y * 1e6, batch_size=32) < 1e3 * info.value.history.loss[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"epochs": -1}, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"clip_norm": -1.0}, "clip_norm must be a positive finite number"),
        ({"clip_norm": 0}, "clip_norm must be a positive finite number"),
        ({"clip_norm": float("nan")}, "clip_norm must be a positive finite number"),
        ({"early_stopping": 0, "validation_split": 0.2}, "early_stopping must be an integer >= 1"),
        ({"validation_split": 1.0}, r"validation_split must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_are_refused(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(SequenceModel(2, 4, 1, seed=0), *data, progress=False, **kwargs)


def test_an_optimizer_of_another_model_is_refused(data):
    model, other = SequenceModel(2, 4, 1, seed=0), SequenceModel(2, 4, 1, seed=1)
    with pytest.raises(ValueError, match="does not hold this model's parameters"):
        fit(model, *data, optimizer=Adam(other.parameters()), progress=False)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        Adam(model.parameters(), lr=float("inf"))


def test_keyboard_interrupt_returns_the_history_with_best_weights(data):
    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    snapshots = []

    def stop_in_epoch_three(epoch, history):
        snapshots.append({k: v.copy() for k, v in model.parameters().items()})
        if epoch == 2:
            raise KeyboardInterrupt

    history = fit(model, X, Y, epochs=10, validation_split=0.25, early_stopping=5,
                  on_epoch_end=stop_in_epoch_three, progress=False)
    assert history.interrupted and len(history.loss) == 3 and len(history.val_loss) == 3
    best = int(np.argmin(history.val_loss))
    assert history.best_epoch == best
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(value, snapshots[best][name])


def test_head_parameters_are_checked_views_that_stay_attached():
    model = SequenceModel(2, 3, 2, seed=0)
    opt = Adam(model.parameters())
    model.head.W = np.ones((2, 3))  # assignment copies into the same array the optimizer holds
    assert np.shares_memory(opt.params["head.W"], model.head.W)
    np.testing.assert_array_equal(opt.params["head.W"], 1.0)
    for bad, exc, message in [
        (np.ones((3, 2)), ValueError, r"W must have shape \(2, 3\); got \(3, 2\)"),
        (np.ones((2, 3)) * 1j, TypeError, "real numbers"),
        (np.full((2, 3), np.nan), ValueError, "NaN or inf"),
    ]:
        with pytest.raises(exc, match=message):
            model.head.W = bad
    model.head.b = [0.5, -0.5]  # lists are fine when the shape is right
    np.testing.assert_array_equal(model.head.b, [0.5, -0.5])


def test_weight_assignment_refuses_non_finite_unless_asked():
    lstm = LSTM(2, 3, seed=0)
    with pytest.raises(ValueError, match="Wf holds NaN or inf"):
        lstm.Wf = np.full((3, 5), np.inf)
    with pytest.raises(ValueError, match="bo holds NaN or inf"):
        lstm.bo = [np.nan, 0, 0]
    lstm.weights.set_parameter("bo", [np.nan, 0, 0], check_finite=False)  # the documented way round
    assert np.isnan(lstm.bo[0, 0])


def test_masked_arrays_and_bool_steps_are_refused():
    lstm = LSTM(2, 3, seed=0)
    x = np.ma.masked_array(np.ones((4, 2)), mask=[[0, 0], [0, 0], [1, 1], [1, 1]])
    with pytest.raises(TypeError, match="masked array.*lengths="):
        lstm.forward(x)
    state = lstm.initial_state()
    with pytest.raises(TypeError, match="real numbers"):
        lstm.step(np.array([True, False]), state)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        LSTM(1, 1, seed=-1)


def test_predict_from_another_thread_during_fit(data):
    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    errors, done = [], threading.Event()

    def keep_predicting():
        while not done.is_set():
            try:
                assert model.predict(X[:4]).shape == (4, 1)
            except Exception as exc:  # pragma: no cover - what the test looks for
                errors.append(exc)
                return

    worker = threading.Thread(target=keep_predicting)
    worker.start()
    try:
        fit(model, X, Y, epochs=5, batch_size=4, progress=False)
    finally:
        done.set()
        worker.join()
    assert errors == []


def future_context_task(n, T, seed):
    """Tag every step with the NEXT input: a unidirectional model cannot know it, a bidirectional one can."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T + 1, 1))
    return X[:, :T], X[:, 1:]


def test_two_layer_bidirectional_model_beats_one_layer_forward_model():
    X, Y = future_context_task(256, 8, seed=0)
    Xv, Yv = future_context_task(128, 8, seed=1)
    scores = {}
    for name, options in {"uni": {}, "bi2": {"num_layers": 2, "bidirectional": True}}.items():
        model = SequenceModel(1, 8, 1, many_to_many=True, seed=0, **options)
        fit(model, X, Y, epochs=12, batch_size=32, optimizer=Adam(model.parameters(), lr=2e-2), seed=0, progress=False)
        scores[name] = evaluate(model, Xv, Yv)
    # the target has variance 1; the forward model can only guess the mean for it
    assert scores["uni"] > 0.8
    assert scores["bi2"] < 0.25 * scores["uni"], scores
