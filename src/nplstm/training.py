"""Training loops: :func:`fit` for mini-batches of sequences, :func:`truncated_bptt` for long ones.

Both use explicit tapes (:meth:`SequenceModel.forward_train` /
:meth:`SequenceModel.backward`), so the model holds no training state:
``predict`` may run from another thread while ``fit`` trains.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NoReturn

import numpy as np

from ._training_data import _as_dataset, _Dataset
from .losses import LOSSES
from .model import SequenceModel
from .optim import Adam, Optimizer, clip_grad_norm
from .params import positive_int

__all__ = ["fit", "truncated_bptt", "evaluate", "History", "TrainingDivergedError", "DIVERGENCE_FACTOR"]

#: A loss counts as diverged when it is NaN or inf or exceeds this multiple of its yardstick: the first
#: batch's loss (before any update), floored at the loss of predicting zeros or uniform classes.
DIVERGENCE_FACTOR = 1e6


class TrainingDivergedError(FloatingPointError):
    """The loss or a gradient became NaN or inf, or a loss failed the divergence test.

    Before this is raised the model is restored to the saner of two sets of
    weights: those it had before training and those at the end of the best
    epoch so far (only epochs whose losses passed the divergence test count).
    They are compared by their loss measured with :func:`evaluate` on the
    validation data (on the training data without validation), so the
    restored weights are never worse than the weights training started from.
    ``history.weights_epoch`` says which was restored (None: the weights
    before training); ``history`` also holds the epochs done.
    """

    def __init__(self, message: str, history: History) -> None:
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """What :func:`fit` did, epoch by epoch (epochs are numbered from 0).

    Attributes
    ----------
    loss : list of float
        Each epoch's mean training loss (over its batches, while the weights changed).
    val_loss : list of float
        The validation loss at the end of each epoch (empty without validation).
    best_epoch : int or None
        The epoch with the lowest validation loss (lowest training loss
        without validation); None until an epoch ends.  The model holds its
        weights at the end only when ``weights_epoch == best_epoch``.
    weights_epoch : int or None
        The epoch at whose end the model's final weights were taken; None
        means the weights the model had before training.  It is the last
        epoch when training runs to the end, ``best_epoch`` with early
        stopping, the last finished epoch (or None) after a KeyboardInterrupt
        without early stopping, and the restored one after
        :class:`TrainingDivergedError`.
    stopped_early : bool
        Early stopping ended training.
    interrupted : bool
        Training stopped on KeyboardInterrupt; the history so far is returned.
    """

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    weights_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False


class _Progress:
    """tqdm when it is installed and stderr is a terminal; silent otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="batch", leave=True)

    def update(self, epoch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch + 1}")
            self.bar.set_postfix(loss=f"{loss:.4g}")
            self.bar.update(1)

    def note(self, **values: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _scores_before_softmax(model: SequenceModel, loss: str) -> bool:
    """Cross-entropy on a softmax output is computed from the scores before it (exact, no log of 0)."""
    return loss == "cross_entropy" and model.head.activation == "softmax"


def _loss(model: SequenceModel, loss: str, prediction: np.ndarray, batch: _Dataset) -> tuple[float, np.ndarray]:
    """The loss and dL/dprediction; per-step losses count only each sequence's valid steps.

    For cross-entropy, ``prediction`` holds class scores: logits, or
    log-probabilities (softmax of log-probabilities is the same softmax).
    """
    loss_fn = LOSSES[loss]
    if not model.many_to_many or batch.lengths is None:
        return loss_fn(prediction, batch.Y)
    valid = np.arange(prediction.shape[1])[None, :] < batch.lengths[:, None]
    value, d_valid = loss_fn(prediction[valid], np.asarray(batch.Y)[valid])
    grad = np.zeros_like(prediction)
    grad[valid] = d_valid
    return value, grad


def _loss_scale(loss: str, data: _Dataset) -> float:
    """The loss of a know-nothing model (predicting 0, or uniform classes): a floor for the divergence yardstick."""
    if loss == "mse":
        return float(np.mean(np.square(data.Y, dtype=np.float64))) + 1e-12
    return float(np.log(max(int(np.max(data.Y, initial=0)) + 1, 2)))


def _mean_loss(model: SequenceModel, loss: str, data: _Dataset, batch_size: int = 256) -> float:
    """Mean loss of ``model`` on checked ``data`` (weighted by batch size)."""
    total, count = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):  # a blown-up model's loss is reported, not warned about
        for idx in _batches(len(data), batch_size, None):
            batch = data.take(idx)
            scores = (model.logits if _scores_before_softmax(model, loss) else model.predict)(batch.X, lengths=batch.lengths)
            value, _ = _loss(model, loss, scores, batch)
            total += value * len(idx)
            count += len(idx)
    return total / max(count, 1)


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")


def evaluate(model: SequenceModel, X: Any, Y: Any, loss: str = "mse", batch_size: int = 256, *, lengths: Any = None) -> float:
    """Mean loss of ``model`` on ``(X, Y)`` (weighted by batch size); data checked as for :func:`fit`."""
    _check_loss(loss)
    batch_size = positive_int(batch_size, "batch_size")
    return _mean_loss(model, loss, _as_dataset(model, X, Y, lengths, loss=loss), batch_size)


def _check_optimizer(optimizer: Optimizer, model: SequenceModel) -> None:
    """Refuse an optimizer that does not hold exactly this model's parameter arrays."""
    params = model.parameters()
    missing = [n for n, p in params.items() if n not in optimizer.params or not np.shares_memory(optimizer.params[n], p)]
    if missing or set(optimizer.params) - set(params):
        raise ValueError(
            f"the optimizer does not hold this model's parameters (e.g. {(missing or sorted(set(optimizer.params) - set(params)))[:3]}); "
            f"make it with Adam(model.parameters()) or SGD(model.parameters())"
        )


def _check_clip_norm(clip_norm: Any) -> None:
    if clip_norm is not None and (isinstance(clip_norm, bool) or not np.isfinite(clip_norm) or clip_norm <= 0):
        raise ValueError(f"clip_norm must be a positive finite number or None; got {clip_norm!r}")


# -------------------------------------------------------------- the trainer
def _diverged(value: float, yardstick: float) -> bool:
    """The divergence test, the one used for every batch loss and validation loss."""
    return not np.isfinite(value) or value > DIVERGENCE_FACTOR * yardstick


def _copy_weights(model: SequenceModel, into: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A snapshot of the model's weights (written into ``into``'s arrays when given, to reuse them)."""
    if into is None:
        return {k: v.copy() for k, v in model.parameters().items()}
    for name, value in model.parameters().items():
        np.copyto(into[name], value)
    return into


def _restore(model: SequenceModel, weights: dict[str, np.ndarray]) -> None:
    for name, value in model.parameters().items():
        np.copyto(value, weights[name])


class _Trainer:
    """The one training machinery that :func:`fit` and :func:`truncated_bptt` share.

    :meth:`step` takes one optimizer step on a batch and applies the
    divergence test to its loss and gradient norm; :meth:`end_epoch` checks
    the weights and the validation loss and keeps the best sane epoch's
    weights; :meth:`diverge` restores the saner of those and the weights
    before training and raises :class:`TrainingDivergedError`;
    :meth:`finish` decides which weights the model ends with otherwise.
    """

    def __init__(
        self, model: SequenceModel, loss: str, optimizer: Optimizer, clip_norm: float | None,
        data: _Dataset, val: _Dataset | None, history: History,
    ) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.clip_norm = np.inf if clip_norm is None else clip_norm
        self.data, self.val, self.history = data, val, history
        self.initial = _copy_weights(model)  # the fallback when no epoch beats it
        self.best: dict[str, np.ndarray] | None = None  # weights at the end of history.best_epoch
        self.best_score = np.inf
        self.last: dict[str, np.ndarray] | None = None  # weights at the end of the last finished epoch
        self.last_epoch: int | None = None
        self.floor = _loss_scale(loss, data)
        self.val_floor = _loss_scale(loss, val) if val is not None else 0.0
        self.yardstick: float | None = None  # the first batch's loss, floored

    def step(self, batch: _Dataset, state: Any = None, where: str = "") -> tuple[float, Any]:
        """Forward, loss, backward, clip, divergence test, update; returns ``(loss, final state)``."""
        model = self.model
        prediction, state, tape = model.forward_train(batch.X, state, lengths=batch.lengths)
        before_softmax = _scores_before_softmax(model, self.loss)
        scores = tape.pre_activation if before_softmax else prediction
        assert scores is not None
        value, d_scores = _loss(model, self.loss, scores, batch)
        grads = model.backward(tape, d_scores, of_pre_activation=before_softmax)
        trained = {k: grads[k] for k in self.optimizer.params}
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported below, not warned about
            norm = clip_grad_norm(trained, self.clip_norm)
        if self.yardstick is None:  # before any update: the yardstick for divergence
            self.yardstick = max(float(value), self.floor) if np.isfinite(value) else self.floor
        if _diverged(value, self.yardstick) or not np.isfinite(norm):
            self.diverge(f"{where}: batch loss {value:.3g} (first batch {self.yardstick:.3g}), gradient norm {norm:.3g}")
        self.optimizer.step(trained)
        return value, state

    def check_weights(self, where: str) -> None:
        if not all(np.isfinite(p).all() for p in self.model.parameters().values()):
            self.diverge(f"{where}: the weights overflowed to inf or NaN")

    def end_epoch(self, epoch: int, train_loss: float) -> bool:
        """Record a finished epoch; True when it is the best so far.  Diverges if it fails the test."""
        history = self.history
        history.loss.append(train_loss)
        self.check_weights(f"in epoch {epoch + 1}")
        score = train_loss
        if self.val is not None:
            score = _mean_loss(self.model, self.loss, self.val)
            history.val_loss.append(score)
            yardstick = max(self.yardstick or 0.0, self.val_floor)
            if _diverged(score, yardstick):
                self.diverge(f"in epoch {epoch + 1}: validation loss {score:.3g} (yardstick {yardstick:.3g})")
        self.last, self.last_epoch = _copy_weights(self.model, self.last), epoch
        if score < self.best_score:
            self.best_score, history.best_epoch = score, epoch
            self.best = _copy_weights(self.model, self.best)
            return True
        return False

    def diverge(self, what: str) -> NoReturn:
        """Restore the saner of the weights before training and the best epoch's, then raise."""
        candidates: list[tuple[int | None, dict[str, np.ndarray], float | None]] = [(None, self.initial, None)]
        if self.best is not None:
            # a validation score is a measurement of those very weights; a training mean is not
            known = self.best_score if self.val is not None else None
            candidates.append((self.history.best_epoch, self.best, known))
        measured = []
        for epoch, weights, score in candidates:
            if score is None and len(candidates) > 1:
                _restore(self.model, weights)
                score = _mean_loss(self.model, self.loss, self.val if self.val is not None else self.data)
            measured.append((score if score is not None and np.isfinite(score) else np.inf, epoch, weights))
        score, epoch, weights = min(measured, key=lambda m: m[0])
        _restore(self.model, weights)
        self.history.weights_epoch = epoch
        restored = "the weights before training" if epoch is None else f"the end of epoch {epoch + 1}"
        if len(candidates) > 1:
            on = "validation" if self.val is not None else "training"
            restored += f" ({on} loss {score:.4g}, the lower of the weights before training and the best epoch)"
        raise TrainingDivergedError(
            f"training diverged {what}; weights restored to {restored} (try a smaller learning rate or clip_norm)",
            self.history,
        )

    def finish(self, restore_best: bool) -> None:
        """Set the weights the model ends with: the best epoch's, or else the last finished epoch's."""
        if restore_best and self.best is not None:
            _restore(self.model, self.best)
            self.history.weights_epoch = self.history.best_epoch
            return
        if self.history.interrupted:  # Ctrl-C may have come mid-epoch: go back to the end of the last whole one
            _restore(self.model, self.last if self.last is not None else self.initial)
        self.history.weights_epoch = self.last_epoch


# ------------------------------------------------------------------ loops
def fit(
    model: SequenceModel,
    X: Any,
    Y: Any,
    *,
    lengths: Any = None,
    loss: str = "mse",
    optimizer: Optimizer | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    validation_split: float = 0.0,
    validation_data: tuple[Any, ...] | None = None,
    early_stopping: int | None = None,
    clip_norm: float | None = 1.0,
    shuffle: bool = True,
    seed: Any = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, History], bool | None] | None = None,
) -> History:
    """Train ``model`` on sequences ``X`` and targets ``Y`` in mini-batches.

    Parameters
    ----------
    X : (N, T, I) array, or a list of (T_k, I) arrays of different lengths
        A list is padded with trailing zeros and its lengths used for
        masking (many-to-one reads each sequence's last valid step; a
        many-to-many loss counts only valid steps, with ``Y`` a list too).
    Y : array
        For ``mse``, real targets (N, O), or (N, T, O) for a many-to-many
        model; for ``cross_entropy``, integer class labels (N,) or (N, T).
    lengths : (N,) ints, optional
        Lengths of padded ``X``.
    loss : "mse" or "cross_entropy"
    optimizer : Optimizer, optional
        Defaults to ``Adam(model.parameters(), lr=1e-2)``; must hold this
        model's parameters.
    validation_split : float
        Fraction of (X, Y), taken from the end, held out for validation.
    validation_data : (X_val, Y_val) or (X_val, Y_val, lengths_val), optional
    early_stopping : int, optional
        Stop after this many epochs without a better validation loss; the
        model then ends with the weights of the best epoch
        (``history.best_epoch``), as Keras' ``restore_best_weights=True``.
    clip_norm : float, optional
        Clip gradients to this global L2 norm (None: no clipping).
    progress : bool
        Show a tqdm bar with the running loss (only on a terminal).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, history)``; returning True stops training.

    Returns
    -------
    History
        ``history.weights_epoch`` is the epoch whose end-of-epoch weights the
        model holds: the last epoch, or the best one with early stopping.  On
        KeyboardInterrupt the history so far (``interrupted=True``), with the
        best epoch's weights under early stopping, else those at the end of
        the last finished epoch (the weights before training if none finished).

    Raises
    ------
    ValueError, TypeError
        Bad data (naming the argument, e.g. ``Y`` or ``validation_data[1]``,
        with the dtype or shape expected and given, or the first non-finite
        index), bad arguments, or an optimizer that does not hold the
        model's parameters.
    TrainingDivergedError
        A batch loss, validation loss or gradient became NaN or inf, a loss
        exceeded :data:`DIVERGENCE_FACTOR` times the first batch's, or the
        weights overflowed; the model is first restored to the lower-loss of
        its weights before training and those of the best epoch so far.
    """
    _check_loss(loss)
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    if early_stopping is not None:
        early_stopping = positive_int(early_stopping, "early_stopping")
    _check_clip_norm(clip_norm)
    if isinstance(validation_split, bool) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split!r}")
    data = _as_dataset(model, X, Y, lengths, loss=loss)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be (X_val, Y_val) or (X_val, Y_val, lengths_val)")
        val = _as_dataset(
            model, validation_data[0], validation_data[1], validation_data[2] if len(validation_data) == 3 else None,
            loss=loss, names=("validation_data[0]", "validation_data[1]", "validation_data[2]"),
        )
    elif validation_split > 0:
        n_val = max(1, int(round(len(data) * validation_split)))
        val, data = data.take(slice(len(data) - n_val, None)), data.take(slice(0, len(data) - n_val))
    if len(data) == 0:
        raise ValueError("no training sequences left")
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping needs validation_split or validation_data")
    if optimizer is None:
        optimizer = Adam(model.parameters(), lr=1e-2)
    _check_optimizer(optimizer, model)
    rng = np.random.default_rng(seed) if shuffle else None
    history = History()
    trainer = _Trainer(model, loss, optimizer, clip_norm, data, val, history)
    waited = 0
    bar = _Progress(epochs * -(-len(data) // batch_size), progress)
    try:
        for epoch in range(epochs):
            running, seen = 0.0, 0
            for idx in _batches(len(data), batch_size, rng):
                value, _ = trainer.step(data.take(idx), where=f"in epoch {epoch + 1}")
                running += value * len(idx)
                seen += len(idx)
                bar.update(epoch, running / seen)
            improved = trainer.end_epoch(epoch, running / seen)
            if val is not None:
                bar.note(loss=history.loss[-1], val_loss=history.val_loss[-1])
            waited = 0 if improved else waited + 1
            if on_epoch_end is not None and on_epoch_end(epoch, history):
                break
            if early_stopping is not None and waited >= early_stopping:
                history.stopped_early = True
                break
    except KeyboardInterrupt:
        history.interrupted = True
    finally:
        bar.close()
    trainer.finish(restore_best=early_stopping is not None)
    return history


def truncated_bptt(
    model: SequenceModel,
    x: Any,
    y: Any,
    window: int,
    *,
    loss: str = "mse",
    optimizer: Optimizer | None = None,
    clip_norm: float | None = 1.0,
) -> list[float]:
    """One pass of truncated BPTT over long sequences ``x`` (B, T, I).

    The sequence is cut into windows of ``window`` steps; each window is run
    from the state the previous one ended in (carried forward, but treated
    as a constant: gradients stop at the window edge), and the parameters
    are updated after each window.  ``model`` must be ``many_to_many`` with
    ``y`` (B, T, O) or labels (B, T).  Returns the loss of each window.

    The data checks, the divergence test and the restore are :func:`fit`'s
    (the same code): on divergence the weights before the call are restored
    and :class:`TrainingDivergedError` is raised.
    """
    if not model.many_to_many:
        raise ValueError("truncated_bptt needs a many_to_many model (a target for every step)")
    _check_loss(loss)
    window = positive_int(window, "window")
    _check_clip_norm(clip_norm)
    data = _as_dataset(model, x, y, loss=loss, names=("x", "y", "lengths"))
    if data.lengths is not None:
        raise ValueError("truncated_bptt needs sequences of one length; give x as an array (B, T, I)")
    optimizer = optimizer or Adam(model.parameters(), lr=1e-2)
    _check_optimizer(optimizer, model)
    trainer = _Trainer(model, loss, optimizer, clip_norm, data, None, History())
    state = None
    losses = []
    T = data.X.shape[1]
    for k, start in enumerate(range(0, T, window)):
        stop = min(start + window, T)
        where = f"in window {k + 1} (steps {start} to {stop - 1})"
        value, state = trainer.step(_Dataset(data.X[:, start:stop], data.Y[:, start:stop], None), state, where)
        losses.append(value)
    trainer.check_weights("after the last window")
    return losses
