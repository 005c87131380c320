"""Training safeguards everywhere (issue 17, items 3-6 and 16).

truncated_bptt shares fit's data checks, divergence test and restore; after
TrainingDivergedError the model is never worse than before training; History
says which epoch's weights the model holds; masked arrays are refused at every
entry point; data errors name the argument.  Losses are measured independently
with evaluate(), and restored weights compared with snapshots taken by the test.
"""

import numpy as np
import pytest
from training_support import assert_weights_equal, snapshot

from nplstm import LSTM, SGD, Adam, SequenceModel, StackedLSTM, fit
from nplstm.model import pad_sequences
from nplstm.training import TrainingDivergedError, evaluate, truncated_bptt


# ------------------------------------------------------- 3. truncated_bptt
@pytest.fixture
def long_sequences():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 200, 2))
    return x, np.sin(np.cumsum(x, axis=1))


def test_truncated_bptt_refuses_nan_in_x_and_leaves_the_weights(long_sequences):
    x, y = (a.copy() for a in long_sequences)
    x[2, 57, 1] = np.nan  # before: losses [nan, ...] and every weight NaN
    model = SequenceModel(2, 8, 2, many_to_many=True, seed=0)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"^x holds NaN or inf, first at index \(2, 57, 1\)"):
        truncated_bptt(model, x, y, window=10)
    y[1, 3, 0] = np.inf
    with pytest.raises(ValueError, match=r"^y holds NaN or inf, first at index \(1, 3, 0\)"):
        truncated_bptt(model, long_sequences[0], y, window=10)
    assert_weights_equal(model, before)


def test_truncated_bptt_divergence_raises_and_restores_the_weights_before_the_call(long_sequences):
    x, y = long_sequences
    model = SequenceModel(2, 8, 2, many_to_many=True, seed=0)
    before = snapshot(model)
    with pytest.raises(TrainingDivergedError, match=r"diverged in window \d+ .*restored to the weights before training"):
        truncated_bptt(model, x, y, window=10, optimizer=SGD(model.parameters(), lr=1e4))  # before: losses to 3e7
    assert_weights_equal(model, before)


@pytest.mark.parametrize(
    "change, exc, message",
    [
        (lambda x, y: (x, y.astype(complex)), TypeError, r"^y must hold real numbers \(int or float\); got dtype complex128"),
        (lambda x, y: (x, y[:, :, :1]), ValueError, r"^y must have shape \(N, T, O\) = \(4, 200, 2\) .*; got \(4, 200, 1\)"),
        (lambda x, y: (np.ma.masked_array(x), y), TypeError, r"^x is a masked array"),
        (lambda x, y: (x, np.ma.masked_array(y)), TypeError, r"^y is a masked array"),
        (lambda x, y: (x[:, :, :1], y), ValueError, r"^x must be \(N, T, 2\) sequences"),
    ],
)
def test_truncated_bptt_checks_its_data_like_fit(long_sequences, change, exc, message):
    model = SequenceModel(2, 8, 2, many_to_many=True, seed=0)
    with pytest.raises(exc, match=message):
        truncated_bptt(model, *change(*long_sequences), window=10)


# ------------------------------------------- 4. restore only sane weights
def regression_data(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5, 2))
    return X, X.sum(axis=(1, 2))[:, None] * 0.3


@pytest.mark.parametrize("n, early_stopping", [(200, 1), (64, None)])
def test_divergence_never_restores_weights_worse_than_before_training(n, early_stopping):
    """SGD(lr=3), validation_split=0.2: before, the 'restored' weights scored 3.3e6 (early stopping:
    the best epoch's) or 9.6e4 (the last batch's) on validation, against 0.81 / 0.70 before fit."""
    X, Y = regression_data(n, 0)
    n_val = int(round(n * 0.2))
    Xv, Yv = X[-n_val:], Y[-n_val:]
    model = SequenceModel(2, 4, 1, seed=0)
    before = snapshot(model)
    pre_fit = evaluate(model, Xv, Yv)
    with pytest.raises(TrainingDivergedError) as info:
        fit(model, X, Y, epochs=30, batch_size=32, optimizer=SGD(model.parameters(), lr=3), validation_split=0.2,
            early_stopping=early_stopping, clip_norm=None, seed=0, progress=False)
    history = info.value.history
    restored = evaluate(model, Xv, Yv)
    assert restored <= pre_fit
    if history.weights_epoch is None:
        assert_weights_equal(model, before)
        assert "restored to the weights before training" in str(info.value)
    else:
        assert restored == pytest.approx(history.val_loss[history.weights_epoch], rel=1e-12)


def test_divergence_restores_a_genuinely_better_epoch():
    """Three sane epochs, then the learning rate is made absurd: the best sane epoch comes back."""
    X, Y = regression_data(64, 1)
    Xv, Yv = X[-16:], Y[-16:]
    model = SequenceModel(2, 4, 1, seed=0)
    pre_fit = evaluate(model, Xv, Yv)
    optimizer = Adam(model.parameters(), lr=0.02)
    snapshots = []

    def blow_up_after_three(epoch, history):
        snapshots.append(snapshot(model))
        if epoch == 2:
            optimizer.lr = 1e8

    with pytest.raises(TrainingDivergedError, match="restored to the end of epoch") as info:
        fit(model, X, Y, epochs=10, optimizer=optimizer, validation_split=0.25, clip_norm=None, seed=0,
            on_epoch_end=blow_up_after_three, progress=False)
    history = info.value.history
    best = int(np.argmin(history.val_loss[:3]))
    assert history.weights_epoch == history.best_epoch == best
    assert_weights_equal(model, snapshots[best])
    assert evaluate(model, Xv, Yv) == pytest.approx(history.val_loss[best], rel=1e-12) and history.val_loss[best] < pre_fit


def test_divergence_without_validation_compares_on_the_training_data():
    X, Y = regression_data(64, 0)
    model = SequenceModel(2, 4, 1, seed=0)
    pre_fit = evaluate(model, X, Y)
    with pytest.raises(TrainingDivergedError, match="training loss"):
        fit(model, X, Y, epochs=30, batch_size=32, optimizer=SGD(model.parameters(), lr=3), clip_norm=None,
            seed=0, progress=False)
    assert evaluate(model, X, Y) <= pre_fit


# -------------------------------------------- 5. which weights the model holds
@pytest.fixture
def small_data():
    return regression_data(32, 0)


def test_without_early_stopping_the_model_holds_the_last_epoch_not_the_best(small_data):
    X, Y = small_data
    model = SequenceModel(2, 4, 1, seed=0)
    snapshots = []
    history = fit(model, X, Y, epochs=6, optimizer=SGD(model.parameters(), lr=3), clip_norm=1.0, validation_split=0.2, seed=0,
                  on_epoch_end=lambda epoch, h: snapshots.append(snapshot(model)), progress=False)
    assert history.best_epoch == int(np.argmin(history.val_loss)) != 5  # the case the old docstring got wrong
    assert history.weights_epoch == 5
    assert_weights_equal(model, snapshots[5])
    assert evaluate(model, X[-6:], Y[-6:]) == pytest.approx(history.val_loss[5], rel=1e-12)


def test_with_early_stopping_the_model_holds_the_best_epoch(small_data):
    X, Y = small_data
    model = SequenceModel(2, 4, 1, seed=0)
    snapshots = []
    history = fit(model, X, Y, epochs=6, optimizer=SGD(model.parameters(), lr=3), clip_norm=1.0, validation_split=0.2, seed=0,
                  early_stopping=3, on_epoch_end=lambda epoch, h: snapshots.append(snapshot(model)), progress=False)
    assert history.weights_epoch == history.best_epoch == int(np.argmin(history.val_loss))
    assert_weights_equal(model, snapshots[history.best_epoch])


class InterruptingSGD(SGD):
    """Raises KeyboardInterrupt (as Ctrl-C would) at its n-th step."""

    def __init__(self, params, lr, n):
        super().__init__(params, lr=lr)
        self.left = n

    def step(self, grads):
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt
        super().step(grads)


@pytest.mark.parametrize("steps, expected_epoch", [(3, None), (10, 1)])  # 4 batches an epoch
def test_ctrl_c_mid_epoch_goes_back_to_the_end_of_the_last_whole_epoch(small_data, steps, expected_epoch):
    X, Y = small_data
    model = SequenceModel(2, 4, 1, seed=0)
    snapshots = [snapshot(model)]  # before: the model kept half an epoch's updates
    history = fit(model, X, Y, epochs=5, batch_size=8, optimizer=InterruptingSGD(model.parameters(), 0.1, steps),
                  on_epoch_end=lambda epoch, h: snapshots.append(snapshot(model)), progress=False)
    assert history.interrupted and history.weights_epoch == expected_epoch
    assert_weights_equal(model, snapshots[0 if expected_epoch is None else expected_epoch + 1])


# ------------------------------------------------- 6. masked arrays refused
def masked(a):
    return np.ma.masked_array(a, mask=np.zeros(np.shape(a), dtype=bool))


def test_streaming_step_refuses_masked_inputs():
    lstm = LSTM(2, 3, seed=0)
    state = lstm.initial_state(batch=2)
    with pytest.raises(TypeError, match=r"^x_t is a masked array"):  # before: the mask was ignored
        lstm.step(masked(np.ones((2, 2))), state)
    with pytest.raises(TypeError, match=r"^initial_hidden_state is a masked array"):
        lstm.initial_state(masked(np.zeros((2, 3))))


@pytest.mark.parametrize("make", [
    lambda: LSTM(2, 3, seed=0),
    lambda: StackedLSTM(2, 3, num_layers=2, seed=0),
    lambda: SequenceModel(2, 3, 1, seed=0),
])
def test_forward_refuses_masked_lengths(make):
    model = make()
    x = np.ones((4, 2, 2)) if isinstance(model, SequenceModel) else np.ones((4, 2, 2)).transpose(1, 0, 2)
    lengths = np.ma.masked_array([4, 2], mask=[False, True])
    with pytest.raises(TypeError, match=r"^lengths is a masked array"):  # before: read as [4, 2]
        model.forward(x, lengths=lengths)


@pytest.mark.parametrize("where, message", [
    ("X", r"^X is a masked array"),
    ("Y", r"^Y is a masked array"),
    ("lengths", r"^lengths is a masked array"),
    ("validation_data[0]", r"^validation_data\[0\] is a masked array"),
    ("validation_data[1]", r"^validation_data\[1\] is a masked array"),
    ("validation_data[2]", r"^validation_data\[2\] is a masked array"),
    ("X[1]", r"^X\[1\] is a masked array"),
])
def test_fit_refuses_masked_arrays_wherever_they_come_in(small_data, where, message):
    X, Y = small_data
    lengths = np.full(32, 5)
    args = {"X": X, "Y": Y, "lengths": lengths}
    val = [X[:4], Y[:4], lengths[:4]]
    if where.startswith("validation_data"):
        k = int(where[-2])
        val[k] = masked(val[k])
    elif where == "X[1]":
        args["X"], args["lengths"] = [X[0], masked(X[1])], None
        args["Y"] = Y[:2]
    else:
        args[where] = masked(args[where])
    model = SequenceModel(2, 3, 1, seed=0)
    before = snapshot(model)
    with pytest.raises(TypeError, match=message):
        fit(model, args["X"], args["Y"], lengths=args["lengths"], validation_data=tuple(val), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"^sequences\[0\] is a masked array"):
        pad_sequences([masked(X[0])])
    assert_weights_equal(model, before)


# ------------------------------------------- 16. errors name the argument
@pytest.mark.parametrize("Y, exc, message", [
    (np.array([[object()]] * 32, dtype=object), TypeError, r"^Y must hold real numbers \(int or float\); got dtype object"),
    (np.array([["a"]] * 32), TypeError, r"^Y must hold real numbers \(int or float\); got dtype <U1"),
    (np.ones((32, 1), dtype=complex), TypeError, r"^Y must hold real numbers \(int or float\); got dtype complex128"),
    (np.ones((32, 2)), ValueError, r"^Y must have shape \(N, O\) = \(32, 1\) for this many-to-one model and mse; got \(32, 2\)"),
    (np.ones((31, 1)), ValueError, r"^X and Y must hold the same number of sequences; got 32 and 31"),
])
def test_fit_names_bad_targets(small_data, Y, exc, message):
    with pytest.raises(exc, match=message):  # before: "UFuncTypeError: Cannot cast ufunc 'square'", naming nothing
        fit(SequenceModel(2, 3, 1, seed=0), small_data[0], Y, epochs=1, progress=False)


def test_fit_names_the_validation_set_and_the_labels(small_data):
    X, Y = small_data
    model = SequenceModel(2, 3, 1, seed=0)
    Y_val = Y[:4].copy()
    Y_val[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"^validation_data\[1\] holds NaN or inf, first at index \(2, 0\)"):
        fit(model, X, Y, validation_data=(X[:4], Y_val), epochs=1, progress=False)
    X_val = X[:4].copy()
    X_val[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"^validation_data\[0\] holds NaN or inf, first at index \(1, 2, 0\)"):
        fit(model, X, Y, validation_data=(X_val, Y[:4]), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"^validation_data\[2\] must lie in \[1, T=5\]"):
        fit(model, X, Y, validation_data=(X[:4], Y[:4], [5, 5, 6, 5]), epochs=1, progress=False)
    classifier = SequenceModel(2, 3, 4, seed=0)
    with pytest.raises(TypeError, match=r"^Y must hold integer class labels for cross_entropy; got dtype float64"):
        fit(classifier, X, np.zeros(32), loss="cross_entropy", epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"^validation_data\[1\] must hold class labels in \[0, 4\); got values from 0 to 4"):
        fit(classifier, X, np.zeros(32, dtype=int), validation_data=(X[:2], np.array([0, 4])), loss="cross_entropy",
            epochs=1, progress=False)
