"""Callbacks in fit and truncated_bptt (issue 19): hook order and logs, stop_training, EarlyStopping, ModelCheckpoint."""

import os

import numpy as np
import pytest
from training_support import assert_weights_equal, snapshot

from nplstm import SGD, Adam, SequenceModel, fit
from nplstm.callbacks import Callback, EarlyStopping, ModelCheckpoint
from nplstm.training import evaluate, truncated_bptt


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5, 2))
    return X, X.sum(axis=(1, 2))[:, None] * 0.3


class Snapshots(Callback):
    """The model's weights at the end of each epoch."""

    def __init__(self):
        self.taken = []

    def on_epoch_end(self, epoch, logs=None):
        self.taken.append(snapshot(self.model))


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.model, self.optimizer, self.history))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, logs["loss"], self.optimizer.steps))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


class CountingSGD(SGD):
    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.steps = 0

    def step(self, grads):
        self.steps += 1
        super().step(grads)


def test_hooks_run_in_keras_order_with_the_logs(data):
    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    opt = CountingSGD(model.parameters(), 0.05)
    rec = Recorder()
    history = fit(model, X, Y, epochs=2, batch_size=16, optimizer=opt, validation_split=0.25, metrics=["mae"],
                  callbacks=[rec], shuffle=False, verbose=0)
    kinds = [c[0] for c in rec.calls]
    # 30 training sequences in batches of 16: 2 optimizer steps an epoch
    assert kinds == ["train_begin", "epoch_begin", "batch_end", "batch_end", "epoch_end"] * 1 + [
        "epoch_begin", "batch_end", "batch_end", "epoch_end", "train_end"]
    assert rec.calls[0][1:] == (model, opt, history)  # set before on_train_begin
    assert [c[3] for c in rec.calls if c[0] == "batch_end"] == [1, 2, 3, 4]  # after every optimizer step
    epoch_ends = [c[2] for c in rec.calls if c[0] == "epoch_end"]
    assert [sorted(logs) for logs in epoch_ends] == [["loss", "mae", "val_loss", "val_mae"]] * 2
    assert [logs["val_loss"] for logs in epoch_ends] == history.val_loss
    assert [logs["mae"] for logs in epoch_ends] == history.metrics["mae"]
    # a batch's logged loss is that batch's loss before its update: the first one is measurable now
    fresh = SequenceModel(2, 4, 1, seed=0)
    assert rec.calls[2][2] == pytest.approx(evaluate(fresh, X[:16], Y[:16]), rel=1e-12)


def test_a_callback_stops_training_after_the_epoch(data):
    class StopAtTwo(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.stop_training = epoch == 1

    stopper = StopAtTwo()
    history = fit(SequenceModel(2, 4, 1, seed=0), *data, epochs=10, callbacks=[stopper], verbose=0)
    assert len(history.loss) == 2 and not history.stopped_early
    history = fit(SequenceModel(2, 4, 1, seed=0), *data, epochs=3, callbacks=stopper, verbose=0)  # reset for a new fit
    assert len(history.loss) == 2


def test_early_stopping_by_hand():
    stop = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.02)
    stop.on_train_begin()
    # 1.0 is the first best; 0.9 beats it by more than 0.02; 0.95 and 0.89 (0.01 better) do not: stop after epoch 3
    for epoch, value in enumerate([1.0, 0.9, 0.95, 0.89]):
        assert not stop.stop_training
        stop.on_epoch_end(epoch, {"val_loss": value})
    assert stop.stop_training and stop.stopped_epoch == 3 and stop.best_epoch == 1 and stop.best == 0.9
    acc = EarlyStopping(monitor="val_accuracy", patience=1)  # mode "auto" is "max" for accuracies
    acc.on_train_begin()
    acc.on_epoch_end(0, {"val_accuracy": 0.5})
    acc.on_epoch_end(1, {"val_accuracy": 0.6})
    assert not acc.stop_training
    acc.on_epoch_end(2, {"val_accuracy": 0.55})
    assert acc.stop_training and acc.best_epoch == 1
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        EarlyStopping(patience=-1)


def test_early_stopping_argument_is_the_callback(data):
    X, Y = data
    runs = []
    for kwargs in ({"early_stopping": 2}, {"callbacks": [EarlyStopping(patience=2, restore_best_weights=True)]}):
        model = SequenceModel(2, 4, 1, seed=0)
        history = fit(model, X, Y, epochs=40, optimizer=SGD(model.parameters(), lr=1), validation_split=0.2, seed=0,
                      verbose=0, **kwargs)
        runs.append((history, snapshot(model)))
    (first, weights), (second, _) = runs
    assert first.val_loss == second.val_loss and first.stopped_early and second.stopped_early
    assert first.weights_epoch == second.weights_epoch == first.best_epoch == int(np.argmin(first.val_loss))
    assert len(first.val_loss) == first.best_epoch + 1 + 2
    assert_weights_equal(model, weights)


def test_restore_best_weights_on_another_monitor(data):
    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    snapshots = Snapshots()
    stop = EarlyStopping(monitor="val_mae", patience=100, restore_best_weights=True)
    history = fit(model, X, Y, epochs=6, optimizer=SGD(model.parameters(), lr=1), validation_split=0.2, seed=0,
                  metrics=["mae"], callbacks=[snapshots, stop], verbose=0)
    best = int(np.argmin(history.metrics["val_mae"]))
    assert stop.best_epoch == best and history.weights_epoch == best and not history.stopped_early
    assert_weights_equal(model, snapshots.taken[best])


def test_a_monitor_the_logs_will_not_hold_is_refused_before_training(data):
    model = SequenceModel(2, 4, 1, seed=0)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"EarlyStopping monitors 'val_loss', which fit will not log \(val_\* needs validation"):
        fit(model, *data, callbacks=[EarlyStopping()], verbose=0)
    with pytest.raises(ValueError, match="ModelCheckpoint monitors 'val_rmse'"):
        fit(model, *data, validation_split=0.2, callbacks=[ModelCheckpoint("x.npz", monitor="val_rmse")], verbose=0)
    with pytest.raises(TypeError, match=r"callbacks must be nplstm.callbacks.Callback instances; got \['function'\]"):
        fit(model, *data, callbacks=[lambda: None], verbose=0)
    assert_weights_equal(model, before)


def test_model_checkpoint_saves_the_best_epochs_atomically(data, tmp_path):
    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    snapshots = Snapshots()
    best = ModelCheckpoint(tmp_path / "best.npz")
    every = ModelCheckpoint(str(tmp_path / "epoch-{epoch:02d}-{val_loss:.3f}.npz"), save_best_only=False)
    history = fit(model, X, Y, epochs=8, optimizer=SGD(model.parameters(), lr=1), validation_split=0.2, seed=0,
                  callbacks=[snapshots, best, every], verbose=0)
    improved = [e for e, v in enumerate(history.val_loss) if v < min(history.val_loss[:e], default=np.inf)]
    assert [os.path.basename(p) for p in best.saved] == ["best.npz"] * len(improved)
    assert best.best_epoch == history.best_epoch == improved[-1] and len(improved) < 8
    assert_weights_equal(SequenceModel.load(tmp_path / "best.npz"), snapshots.taken[history.best_epoch])
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(["best.npz"] + [f"epoch-{e + 1:02d}-{v:.3f}.npz" for e, v in enumerate(history.val_loss)])
    assert_weights_equal(SequenceModel.load(tmp_path / every.saved[3]), snapshots.taken[3])  # no temporary files left


def test_the_on_epoch_end_argument_is_a_callback_among_others(data):
    seen = []

    class Mark(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(("callback", epoch))

    def fn(epoch, history):
        seen.append(("fn", epoch, len(history.loss)))
        return epoch == 1

    fit(SequenceModel(2, 4, 1, seed=0), *data, epochs=5, on_epoch_end=fn, callbacks=[Mark()], verbose=0)
    assert seen == [("fn", 0, 1), ("callback", 0), ("fn", 1, 2), ("callback", 1)]


def test_truncated_bptt_runs_the_callbacks_once_per_window(rng):
    model = SequenceModel(2, 3, 2, many_to_many=True, seed=4)
    x, y = rng.normal(size=(2, 12, 2)), rng.normal(size=(2, 12, 2))
    rec = Recorder()
    opt = CountingSGD(model.parameters(), 0.01)
    losses = truncated_bptt(model, x, y, window=5, optimizer=opt, callbacks=[rec])
    assert [c[0] for c in rec.calls] == ["train_begin", "epoch_begin"] + ["batch_end"] * 3 + ["epoch_end", "train_end"]
    assert [c[2] for c in rec.calls if c[0] == "batch_end"] == losses and opt.steps == 3
    windows = [5, 5, 2]  # the epoch's loss weighs each window by its steps: the exact mean over the pass
    assert rec.calls[-2][2]["loss"] == pytest.approx(np.dot(losses, windows) / 12, rel=1e-12)


def test_a_learning_rate_callback_acts_on_every_step(data):
    X, Y = data

    class Halve(Callback):
        def on_batch_end(self, batch, logs=None):
            self.optimizer.lr /= 2

    model = SequenceModel(2, 4, 1, seed=0)
    opt = Adam(model.parameters(), lr=1.0)
    fit(model, X, Y, epochs=2, batch_size=10, optimizer=opt, callbacks=[Halve()], verbose=0)
    assert opt.lr == 0.5**8  # 4 steps an epoch


def test_schedules_step_with_every_optimizer_step_and_every_epoch(data):
    from nplstm.schedules import ReduceLROnPlateau, StepLR

    X, Y = data
    model = SequenceModel(2, 4, 1, seed=0)
    opt = Adam(model.parameters(), lr=1e-2)
    rates = []

    class Spy(Callback):  # the rate each optimizer step used
        def on_batch_end(self, batch, logs=None):
            rates.append(self.optimizer.lr)

    step = StepLR(opt, step_size=3, gamma=0.5)
    fit(model, X, Y, epochs=2, batch_size=10, accumulate=2, optimizer=opt, callbacks=[Spy(), step], verbose=0)
    # 4 batches an epoch, 2 per step: 4 optimizer steps, the 4th at half the rate (torch's StepLR)
    assert rates == [1e-2, 1e-2, 1e-2, 5e-3] and step.steps == 4
    model = SequenceModel(2, 4, 1, seed=0)
    opt = SGD(model.parameters(), lr=1.0)  # the validation loss worsens after epoch 1 (see the checkpoint test)
    plateau = ReduceLROnPlateau(opt, factor=0.5, patience=0)
    history = fit(model, X, Y, epochs=4, optimizer=opt, validation_split=0.2, seed=0, callbacks=[plateau], verbose=0)
    worse = sum(v >= min(history.val_loss[:e]) * (1 - 1e-4) for e, v in enumerate(history.val_loss) if e)  # torch: rel 1e-4
    assert worse >= 1 and opt.lr == 0.5**worse
