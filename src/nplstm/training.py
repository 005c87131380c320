"""Training loops: :func:`fit` for mini-batches of sequences, :func:`truncated_bptt` for long ones.

Both run on one machinery (the data checks, losses, metrics, callbacks,
gradient clipping and the divergence test are the same code) and use explicit tapes (:meth:`SequenceModel.forward_train` /
:meth:`SequenceModel.backward`), so the model holds no training state:
``predict`` may run from another thread while ``fit`` trains.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NoReturn, Sequence

import numpy as np

from ._training_data import _as_dataset, _Dataset
from .callbacks import Callback, EarlyStopping
from .losses import CrossEntropy, Loss, get_loss
from .metrics import Metric, get_metric
from .model import SequenceModel
from .optim import Adam, Optimizer, clip_grad_norm, clip_grad_value
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
        Each epoch's training loss: the (weighted) mean over the epoch's
        batches of the loss they had when the weights were updated.
    val_loss : list of float
        The validation loss at the end of each epoch (empty without validation).
    metrics : dict of str to list of float
        Each metric per epoch, on the training data (accumulated over the
        epoch's batches, as the loss) under its name (``"mae"``) and on the
        validation data under ``"val_"`` + its name (``"val_mae"``).
    best_epoch : int or None
        The epoch with the lowest validation loss (lowest training loss
        without validation); None until an epoch ends.  The model holds its
        weights at the end only when ``weights_epoch == best_epoch``.
    weights_epoch : int or None
        The epoch at whose end the model's final weights were taken; None
        means the weights the model had before training.  It is the last
        epoch when training runs to the end, the best one of an
        :class:`~nplstm.callbacks.EarlyStopping` with
        ``restore_best_weights`` (so with ``early_stopping=``), the last
        finished epoch (or None) after a KeyboardInterrupt without it, and
        the restored one after :class:`TrainingDivergedError`.
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
    metrics: dict[str, list[float]] = field(default_factory=dict)

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras' ``History.history``: ``{"loss": ..., "val_loss": ..., "mae": ..., "val_mae": ...}``."""
        out = {"loss": self.loss}
        if self.val_loss:
            out["val_loss"] = self.val_loss
        out.update(self.metrics)
        return out


class _Report:
    """What ``verbose`` shows: Keras' meaning.

    0: nothing.  1: a tqdm bar on stderr when it is a terminal (and tqdm is
    installed), else one line per epoch.  2: one line per epoch.  Lines go
    to stdout (as Keras), flushed, so CI logs and notebooks show them.
    """

    def __init__(self, total: int, epochs: int, verbose: int) -> None:
        self.bar = None
        self.epochs = epochs
        self.lines = verbose == 2
        if verbose == 1:
            if sys.stderr.isatty():
                try:
                    from tqdm.auto import tqdm
                except ImportError:
                    tqdm = None
                if tqdm is not None:
                    self.bar = tqdm(total=total, unit="batch", leave=True)
            self.lines = self.bar is None
        self.started = time.perf_counter()

    def update(self, epoch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch + 1}")
            self.bar.set_postfix(loss=f"{loss:.4g}")
            self.bar.update(1)

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None and len(logs) > 1:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
        if self.lines:
            now = time.perf_counter()
            values = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
            print(f"epoch {epoch + 1}/{self.epochs} - {values} - {now - self.started:.1f}s", flush=True)
            self.started = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _verbosity(verbose: Any, progress: Any) -> int:
    """0, 1 or 2 from ``verbose`` ("auto" is 1) and the older ``progress`` (True is 1, False is 0)."""
    if progress is not None:
        if verbose != "auto":
            raise ValueError("give verbose or progress (its older name), not both")
        if not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be true or false; got {progress!r}")
        return int(bool(progress))
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, np.bool_)) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto'; got {verbose!r}")
    return int(verbose)


def _mask_generator(seed: Any) -> np.random.Generator | None:
    """Dropout masks for :func:`fit` with a seed: a stream of their own, so the shuffling order does not depend on them.

    Without a seed the model's own generator draws them (``forward_train``'s default).
    """
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _scores_before_activation(model: SequenceModel, loss: Loss) -> bool:
    """A loss of logits on a softmax or sigmoid output reads the scores before it (exact, no log of 0)."""
    return loss.reads_logits and model.head.activation in ("softmax", "sigmoid")


def _valid_items(model: SequenceModel, scores: np.ndarray, batch: _Dataset) -> tuple[Any, np.ndarray, np.ndarray, Any]:
    """``(mask of valid steps or None, scores, targets, weights)`` of the steps the loss reads.

    Per-step losses count only each sequence's valid steps; a sequence's
    weight weights each of them.
    """
    if not model.many_to_many or batch.lengths is None:
        return None, scores, batch.Y, batch.W
    valid = np.arange(scores.shape[1])[None, :] < batch.lengths[:, None]
    W = None if batch.W is None else np.broadcast_to(batch.W[:, None], valid.shape)[valid]
    return valid, scores[valid], np.asarray(batch.Y)[valid], W


def _totals(model: SequenceModel, loss: Loss, scores: np.ndarray, batch: _Dataset) -> tuple[float, float, np.ndarray]:
    """``(weighted sum of losses, sum of weights, gradient of the sum w.r.t. scores)`` over the valid steps."""
    valid, read, target, weight = _valid_items(model, scores, batch)
    numerator, denominator, grad = loss.totals(read, target, weight)
    if valid is None:
        return numerator, denominator, grad
    full = np.zeros_like(scores)
    full[valid] = grad
    return numerator, denominator, full


def _loss(model: SequenceModel, loss: Any, scores: np.ndarray, batch: _Dataset) -> tuple[float, np.ndarray]:
    """The (weighted mean) loss of a batch and its gradient w.r.t. ``scores``; per-step losses count valid steps only.

    For a loss of logits, ``scores`` are those (or log-probabilities:
    softmax of log-probabilities is the same softmax).
    """
    numerator, denominator, grad = _totals(model, get_loss(loss), scores, batch)
    if denominator == 0:
        return 0.0, np.zeros_like(grad)
    return numerator / denominator, grad / denominator


class _Tally:
    """Sums over batches of the loss and each metric, from which their exact means come."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = metrics
        self.numerator = self.denominator = 0.0
        self.sums: list[Any] = [0.0] * len(metrics)

    def add(self, model: SequenceModel, loss: Loss, scores: np.ndarray, prediction: np.ndarray, batch: _Dataset,
            totals: tuple[float, float] | None = None) -> None:
        numerator, denominator = totals if totals is not None else _totals(model, loss, scores, batch)[:2]
        self.numerator += numerator
        self.denominator += denominator
        if self.metrics:
            # metrics read what the loss reads: logits for a loss of logits, the model's outputs otherwise
            _, read, target, _ = _valid_items(model, scores if loss.reads_logits else prediction, batch)
            for k, metric in enumerate(self.metrics):
                self.sums[k] = self.sums[k] + metric.totals(read, target, logits=loss.reads_logits)

    def loss(self) -> float:
        return self.numerator / self.denominator if self.denominator else 0.0

    def results(self, prefix: str = "") -> dict[str, float]:
        return {prefix + m.name: m.result(np.asarray(t)) for m, t in zip(self.metrics, self.sums)}


def _measure(model: SequenceModel, loss: Loss, data: _Dataset, metrics: Sequence[Metric] = (), batch_size: int = 256,
             zeros: bool = False) -> _Tally:
    """The loss and metrics of ``model`` on checked ``data``, exact over all of it (``zeros``: of predicting 0)."""
    tally = _Tally(metrics)
    before = _scores_before_activation(model, loss)
    with np.errstate(over="ignore", invalid="ignore"):  # a blown-up model's loss is reported, not warned about
        for idx in _batches(len(data), batch_size, None):
            batch = data.take(idx)
            if zeros:
                T = batch.X.shape[1]
                shape = (len(idx), T, model.output_size) if model.many_to_many else (len(idx), model.output_size)
                scores = np.zeros(shape, dtype=model.dtype)
            else:
                scores = (model.logits if before else model.predict)(batch.X, lengths=batch.lengths)
            tally.add(model, loss, scores, scores, batch)  # with scores before the activation metrics read those
    return tally


def _mean_loss(model: SequenceModel, loss: Any, data: _Dataset, batch_size: int = 256) -> float:
    """The loss of ``model`` on checked ``data``: exact over all of it (not a mean of batch means)."""
    return _measure(model, get_loss(loss), data, (), batch_size).loss()


def _loss_scale(loss: Loss, data: _Dataset, model: SequenceModel) -> float:
    """The loss of a know-nothing model (predicting zeros: 0, or uniform classes): a floor for the divergence yardstick."""
    try:
        value = _measure(model, loss, data, zeros=True).loss()
    except FloatingPointError:  # a user loss that cannot take zeros
        value = 1.0
    return value + 1e-12 if np.isfinite(value) else 1.0


def _resolve_loss(loss: Any, class_weight: Any, model: SequenceModel) -> Loss:
    """The Loss object for ``loss`` (a name, a Loss, or a user function), with ``class_weight`` for cross-entropy."""
    resolved = get_loss(loss)
    if class_weight is None:
        return resolved
    if not isinstance(resolved, CrossEntropy):
        raise ValueError(f"class_weight weighs the classes of cross_entropy; the loss is {resolved.name!r} "
                         f"(give sample_weight to weigh sequences)")
    if resolved.weight is not None:
        raise ValueError("give class weights once: as class_weight or as the CrossEntropy loss's weight, not both")
    weighted = CrossEntropy(resolved.label_smoothing, class_weight)
    weighted.class_weights(model.output_size)  # checked now: its length and values
    return weighted


def _resolve_metrics(metrics: Any, loss: Loss) -> list[Metric]:
    if metrics is None:
        return []
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    resolved = [get_metric(m) for m in metrics]
    names = [m.name for m in resolved]
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(f"metric names must be distinct and not 'loss'; got {names}")
    for m in resolved:
        if m.targets == "real" and loss.targets == "labels":
            raise ValueError(f"the metric {m.name} compares real predictions with targets; {loss.name} has class labels")
        if m.targets == "labels" and loss.targets != "labels":
            raise ValueError(f"the metric {m.name} reads class labels; {loss.name} has targets of the prediction's shape")
    return resolved


def evaluate(
    model: SequenceModel, X: Any, Y: Any, loss: Any = "mse", batch_size: int = 256, *, lengths: Any = None,
    metrics: Any = None, sample_weight: Any = None,
) -> Any:
    """The loss of ``model`` on ``(X, Y)``; data checked as for :func:`fit`.

    The loss is exact over all the data (its weighted mean over every
    sequence, or every valid step; not a mean of batch means).  Without
    ``metrics`` it is returned as a float; with them, a dict
    ``{"loss": ..., "mae": ...}``.  ``X`` may be a list of sequences of
    different lengths (as for :func:`fit`).
    """
    resolved = get_loss(loss)
    batch_size = positive_int(batch_size, "batch_size")
    chosen = _resolve_metrics(metrics, resolved)
    data = _as_dataset(model, X, Y, lengths, loss=resolved, sample_weight=sample_weight)
    tally = _measure(model, resolved, data, chosen, batch_size)
    if metrics is None:
        return tally.loss()
    return {"loss": tally.loss(), **tally.results()}


def _check_optimizer(optimizer: Optimizer, model: SequenceModel) -> None:
    """Refuse an optimizer that does not hold exactly this model's parameter arrays."""
    params = model.parameters()
    missing = [n for n, p in params.items() if n not in optimizer.params or not np.shares_memory(optimizer.params[n], p)]
    if missing or set(optimizer.params) - set(params):
        raise ValueError(
            f"the optimizer does not hold this model's parameters (e.g. {(missing or sorted(set(optimizer.params) - set(params)))[:3]}); "
            f"make it with Adam(model.parameters()) or SGD(model.parameters())"
        )


def _check_clip(value: Any, name: str) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number or None; got {value!r}")


class _EpochFunction(Callback):
    """The older ``on_epoch_end=fn`` argument as a callback: ``fn(epoch, history)`` returning True stops training."""

    def __init__(self, fn: Callable[[int, History], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"on_epoch_end must be callable; got {type(fn).__name__}")
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.fn(epoch, self.history):
            self.stop_training = True


def _check_callbacks(callbacks: Any) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    callbacks = list(callbacks)
    bad = [type(c).__name__ for c in callbacks if not isinstance(c, Callback)]
    if bad:
        raise TypeError(f"callbacks must be nplstm.callbacks.Callback instances; got {bad}")
    return callbacks


def _check_monitors(callbacks: Sequence[Callback], keys: list[str]) -> None:
    """Refuse, before training, a callback that monitors a value the epoch's logs will not hold."""
    for c in callbacks:
        monitor = getattr(c, "monitor", None)
        if isinstance(monitor, str) and monitor not in keys:
            hint = " (val_* needs validation_split or validation_data)" if monitor.startswith("val_") else ""
            raise ValueError(f"{type(c).__name__} monitors {monitor!r}, which fit will not log{hint}; it logs {keys}")


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

    :meth:`begin` hands the callbacks the model, optimizer and history;
    :meth:`step` takes one optimizer step on a batch (loss, metrics,
    backward, clipping by value then by norm, the divergence test on the
    loss and gradient norm, the update, ``on_batch_end``);
    :meth:`end_epoch` checks the weights, measures validation loss and
    metrics, keeps the best sane epoch's weights and runs ``on_epoch_end``;
    :meth:`diverge` restores the saner of those and the weights before
    training and raises :class:`TrainingDivergedError`; :meth:`finish`
    decides which weights the model ends with otherwise and runs ``on_train_end``.
    """

    def __init__(
        self, model: SequenceModel, loss: Loss, optimizer: Optimizer, clip_norm: float | None, clip_value: float | None,
        data: _Dataset, val: _Dataset | None, history: History, metrics: Sequence[Metric] = (),
        callbacks: Sequence[Callback] = (), masks: np.random.Generator | None = None,
    ) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.masks = masks  # draws the dropout masks (None: the model's own generator)
        self.clip_norm = np.inf if clip_norm is None else clip_norm
        self.clip_value = clip_value
        self.data, self.val, self.history = data, val, history
        self.metrics, self.callbacks = list(metrics), list(callbacks)
        self.initial = _copy_weights(model)  # the fallback when no epoch beats it
        self.best: dict[str, np.ndarray] | None = None  # weights at the end of history.best_epoch
        self.best_score = np.inf
        self.last: dict[str, np.ndarray] | None = None  # weights at the end of the last finished epoch
        self.last_epoch: int | None = None
        self.floor = _loss_scale(loss, data, model)
        self.val_floor = _loss_scale(loss, val, model) if val is not None else 0.0
        self.yardstick: float | None = None  # the first batch's loss, floored
        self.tally = _Tally(self.metrics)
        self.batch = 0  # optimizer steps in this epoch
        self.held: tuple[dict[str, np.ndarray], float, float] | None = None  # accumulated gradient sums, loss sums
        self.logs: dict[str, float] = {}

    def log_keys(self) -> list[str]:
        """The names the epoch's logs hold."""
        names = ["loss"] + [m.name for m in self.metrics]
        return names + (["val_" + n for n in names] if self.val is not None else [])

    def begin(self) -> None:
        _check_monitors(self.callbacks, self.log_keys())
        for c in self.callbacks:
            c.model, c.optimizer, c.history, c.stop_training = self.model, self.optimizer, self.history, False
        for c in self.callbacks:
            c.on_train_begin({})

    def begin_epoch(self, epoch: int) -> None:
        self.tally, self.batch = _Tally(self.metrics), 0
        for c in self.callbacks:
            c.on_epoch_begin(epoch, {})

    def step(self, batch: _Dataset, state: Any = None, where: str = "", *, update: bool = True) -> tuple[float, Any]:
        """Forward, loss, backward, clip, divergence test, update, ``on_batch_end``; returns ``(loss, final state)``.

        With ``update=False`` the batch's gradient is held and the update
        waits for a later batch (gradient accumulation): that update is the
        one of a single batch holding them all, under its mean loss (each
        batch's mean gradient weighted by its share of the weights).
        """
        model, loss = self.model, self.loss
        prediction, state, tape = model.forward_train(batch.X, state, lengths=batch.lengths, rng=self.masks)
        before = _scores_before_activation(model, loss)
        scores = tape.pre_activation if before else prediction
        assert scores is not None
        numerator, denominator, d_scores = _totals(model, loss, scores, batch)
        if denominator:
            d_scores = d_scores / denominator
        self.tally.add(model, loss, scores, prediction, batch, (numerator, denominator))
        grads = model.backward(tape, d_scores, of_pre_activation=before)
        trained = {k: grads[k] for k in self.optimizer.params}
        if self.held is not None or not update:
            if self.held is None:
                self.held = ({k: g * denominator for k, g in trained.items()}, 0.0, 0.0)
            else:
                for k, g in trained.items():
                    self.held[0][k] += g * denominator
            sums, numerator, denominator = self.held[0], self.held[1] + numerator, self.held[2] + denominator
            self.held = (sums, numerator, denominator)
            if not update:
                return numerator / denominator if denominator else 0.0, state
            self.held = None
            trained = {k: g / denominator for k, g in sums.items()} if denominator else sums
        value = numerator / denominator if denominator else 0.0
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported below, not warned about
            if self.clip_value is not None:
                clip_grad_value(trained, self.clip_value)
            norm = clip_grad_norm(trained, self.clip_norm)
        if self.yardstick is None:  # before any update: the yardstick for divergence
            self.yardstick = max(float(value), self.floor) if np.isfinite(value) else self.floor
        if _diverged(value, self.yardstick) or not np.isfinite(norm):
            self.diverge(f"{where}: batch loss {value:.3g} (first batch {self.yardstick:.3g}), gradient norm {norm:.3g}")
        self.optimizer.step(trained)
        for c in self.callbacks:
            c.on_batch_end(self.batch, {"loss": float(value)})
        self.batch += 1
        return value, state

    def check_weights(self, where: str) -> None:
        if not all(np.isfinite(p).all() for p in self.model.parameters().values()):
            self.diverge(f"{where}: the weights overflowed to inf or NaN")

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Record a finished epoch and return its logs.  Diverges if it fails the test.

        Call :meth:`run_epoch_end` next (after any report): it runs the
        callbacks' ``on_epoch_end`` and says whether one stops training.
        """
        history = self.history
        train_loss = self.tally.loss()
        logs = {"loss": train_loss, **self.tally.results()}
        history.loss.append(train_loss)
        self.check_weights(f"in epoch {epoch + 1}")
        score = train_loss
        if self.val is not None:
            measured = _measure(self.model, self.loss, self.val, self.metrics)
            score = measured.loss()
            history.val_loss.append(score)
            logs.update(val_loss=score, **measured.results("val_"))
            yardstick = max(self.yardstick or 0.0, self.val_floor)
            if _diverged(score, yardstick):
                self.diverge(f"in epoch {epoch + 1}: validation loss {score:.3g} (yardstick {yardstick:.3g})")
        for name, value in logs.items():
            if name not in ("loss", "val_loss"):
                history.metrics.setdefault(name, []).append(value)
        self.last, self.last_epoch = _copy_weights(self.model, self.last), epoch
        if score < self.best_score:
            self.best_score, history.best_epoch = score, epoch
            self.best = _copy_weights(self.model, self.best)
        self.logs = logs
        return logs

    def run_epoch_end(self, epoch: int) -> bool:
        """The callbacks' ``on_epoch_end`` with the epoch's logs; True when one of them stops training."""
        for c in self.callbacks:
            c.on_epoch_end(epoch, dict(self.logs))
        return any(c.stop_training for c in self.callbacks)

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
            f"training diverged {what}; weights restored to {restored} (try a smaller learning rate, clip_norm or clip_value)",
            self.history,
        )

    def finish(self) -> None:
        """Set the weights the model ends with (the last finished epoch's), then run ``on_train_end``.

        After Ctrl-C mid-epoch the weights go back to the end of the last
        whole epoch (those before training if none finished).  A callback
        may then change them (EarlyStopping's ``restore_best_weights``).
        """
        if self.history.interrupted:
            _restore(self.model, self.last if self.last is not None else self.initial)
        self.history.weights_epoch = self.last_epoch
        for c in self.callbacks:
            c.on_train_end(dict(self.logs))


# ------------------------------------------------------------------ loops
def fit(
    model: SequenceModel,
    X: Any,
    Y: Any,
    *,
    lengths: Any = None,
    loss: Any = "mse",
    optimizer: Optimizer | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    validation_split: float = 0.0,
    validation_data: tuple[Any, ...] | None = None,
    early_stopping: int | None = None,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    shuffle: bool = True,
    seed: Any = None,
    accumulate: int = 1,
    callbacks: Sequence[Callback] | None = None,
    metrics: Sequence[Any] | None = None,
    sample_weight: Any = None,
    class_weight: Any = None,
    verbose: Any = "auto",
    progress: bool | None = None,
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
        For ``mse``, ``mae``, ``huber`` and user losses, real targets (N, O),
        or (N, T, O) for a many-to-many model; ``(N,)`` (``(N, T)``) for a
        model with one output.  For ``binary_cross_entropy``, the same
        shapes holding values in [0, 1].  For ``cross_entropy``, integer
        class labels (N,) or (N, T), or a column (N, 1) or (N, T, 1).
    lengths : (N,) ints, optional
        Lengths of padded ``X``.
    loss : str, Loss or callable
        A name (``"mse"``, ``"mae"``, ``"huber"``, ``"binary_cross_entropy"``,
        ``"cross_entropy"``), a :class:`~nplstm.losses.Loss` such as
        ``Huber(delta=2)`` or ``CrossEntropy(label_smoothing=0.1)``, or a
        function ``fn(prediction, target) -> (loss, d loss / d prediction)``
        (checked on every call; see :mod:`nplstm.losses`).  Losses of
        logits read a softmax or sigmoid output's pre-activation.
    optimizer : Optimizer, optional
        Defaults to ``Adam(model.parameters(), lr=1e-3)``, the default of
        torch and Keras; it must hold this model's parameters.
    validation_split : float
        Fraction of (X, Y), taken from the end, held out for validation
        (its sample weights, if any, weight the validation loss).
    validation_data : (X_val, Y_val) or (X_val, Y_val, lengths_val), optional
    early_stopping : int, optional
        Stop after this many epochs without a better validation loss; the
        model then ends with the weights of the best epoch
        (``history.best_epoch``).  The same as
        ``callbacks=[EarlyStopping("val_loss", patience=early_stopping, restore_best_weights=True)]``.
    clip_norm, clip_value : float, optional
        Clip gradients to this global L2 norm, and each gradient element to
        ``[-clip_value, clip_value]`` (value first when both are given).
        No clipping by default (torch's and Keras' default).
    shuffle, seed
        Shuffle the training data each epoch, with this seed; it also seeds the
        dropout masks (a stream of their own: the shuffling order is the same
        with or without dropout).
    accumulate : int
        Batches per optimizer step (gradient accumulation): each update is
        exactly that of one batch ``accumulate`` times as large under the
        mean loss (the last group of an epoch may be smaller).
    callbacks : list of Callback, optional
        See :mod:`nplstm.callbacks`: ``on_batch_end`` runs after every
        optimizer step with ``{"loss": batch loss}``; ``on_epoch_end`` with
        ``loss``, ``val_loss`` (with validation) and the metrics.
    metrics : list, optional
        Names (``"mae"``, ``"rmse"``, ``"accuracy"``) or
        :class:`~nplstm.metrics.Metric` objects (``top_k_accuracy(5)``),
        logged per epoch in ``history.metrics`` as ``"mae"`` and ``"val_mae"``.
    sample_weight : (N,) array, optional
        A weight per sequence (for a per-step loss, of each of its valid
        steps); the loss is the weighted mean ``sum w_i l_i / sum w_i``
        (see :mod:`nplstm.losses`).
    class_weight : dict or (K,) array, optional
        Per-class weights of ``cross_entropy``, torch's ``weight=``: the
        loss is ``sum w[y_i] l_i / sum w[y_i]``.  A dict leaves unnamed
        classes at 1.  The weights are part of the loss, so they weight the
        validation loss too.
    verbose : 0, 1, 2 or "auto"
        Keras' meaning: 0 silent; 1 ("auto") a progress bar when stderr is
        a terminal (and tqdm is installed), else one line per epoch; 2 one
        line per epoch.  Lines go to stdout.
    progress : bool, optional
        The older name: True is ``verbose=1``, False is ``verbose=0``.
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
    resolved = _resolve_loss(loss, class_weight, model)
    chosen = _resolve_metrics(metrics, resolved)
    level = _verbosity(verbose, progress)
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    accumulate = positive_int(accumulate, "accumulate")
    if early_stopping is not None:
        early_stopping = positive_int(early_stopping, "early_stopping")
    _check_clip(clip_norm, "clip_norm")
    _check_clip(clip_value, "clip_value")
    if isinstance(validation_split, bool) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split!r}")
    data = _as_dataset(model, X, Y, lengths, loss=resolved, sample_weight=sample_weight)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be (X_val, Y_val) or (X_val, Y_val, lengths_val)")
        val = _as_dataset(
            model, validation_data[0], validation_data[1], validation_data[2] if len(validation_data) == 3 else None,
            loss=resolved, names=("validation_data[0]", "validation_data[1]", "validation_data[2]"),
        )
    elif validation_split > 0:
        n_val = max(1, int(round(len(data) * validation_split)))
        val, data = data.take(slice(len(data) - n_val, None)), data.take(slice(0, len(data) - n_val))
    if len(data) == 0:
        raise ValueError("no training sequences left")
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping needs validation_split or validation_data")
    given = _check_callbacks(callbacks)
    internal: list[Callback] = []
    if early_stopping is not None:
        internal.append(EarlyStopping("val_loss", patience=early_stopping, restore_best_weights=True))
    if on_epoch_end is not None:
        internal.append(_EpochFunction(on_epoch_end))
    if optimizer is None:
        optimizer = Adam(model.parameters(), lr=1e-3)
    _check_optimizer(optimizer, model)
    rng = np.random.default_rng(seed) if shuffle else None
    history = History()
    trainer = _Trainer(model, resolved, optimizer, clip_norm, clip_value, data, val, history, chosen, internal + given,
                       masks=_mask_generator(seed))
    per_epoch = -(-len(data) // batch_size)
    report = _Report(epochs * per_epoch, epochs, level)
    trainer.begin()
    try:
        for epoch in range(epochs):
            trainer.begin_epoch(epoch)
            for k, idx in enumerate(_batches(len(data), batch_size, rng)):
                update = (k + 1) % accumulate == 0 or k + 1 == per_epoch
                trainer.step(data.take(idx), where=f"in epoch {epoch + 1}", update=update)
                report.update(epoch, trainer.tally.loss())
            report.epoch_end(epoch, trainer.end_epoch(epoch))
            if trainer.run_epoch_end(epoch):
                break
    except KeyboardInterrupt:
        history.interrupted = True
    finally:
        report.close()
    trainer.finish()
    return history


def truncated_bptt(
    model: SequenceModel,
    x: Any,
    y: Any,
    window: int,
    *,
    loss: Any = "mse",
    optimizer: Optimizer | None = None,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    sample_weight: Any = None,
    class_weight: Any = None,
    callbacks: Sequence[Callback] | None = None,
) -> list[float]:
    """One pass of truncated BPTT over long sequences ``x`` (B, T, I).

    The sequence is cut into windows of ``window`` steps; each window is run
    from the state the previous one ended in (carried forward, but treated
    as a constant: gradients stop at the window edge), and the parameters
    are updated after each window.  ``model`` must be ``many_to_many`` with
    ``y`` (B, T, O) or labels (B, T).  Returns the loss of each window.

    Everything else is :func:`fit`'s (the same code): the data checks, the
    losses, weights, clipping (none by default) and default optimizer
    (``Adam(lr=1e-3)``), the divergence test and restore (on divergence the
    weights before the call are restored and :class:`TrainingDivergedError`
    is raised), and the callbacks: the pass is one epoch (``on_epoch_end``
    gets the mean window loss) and each window one batch (``on_batch_end``
    after its optimizer step, so per-step schedules apply).
    """
    if not model.many_to_many:
        raise ValueError("truncated_bptt needs a many_to_many model (a target for every step)")
    resolved = _resolve_loss(loss, class_weight, model)
    window = positive_int(window, "window")
    _check_clip(clip_norm, "clip_norm")
    _check_clip(clip_value, "clip_value")
    data = _as_dataset(model, x, y, loss=resolved, names=("x", "y", "lengths"), sample_weight=sample_weight)
    if data.lengths is not None:
        raise ValueError("truncated_bptt needs sequences of one length; give x as an array (B, T, I)")
    optimizer = optimizer or Adam(model.parameters(), lr=1e-3)
    _check_optimizer(optimizer, model)
    trainer = _Trainer(model, resolved, optimizer, clip_norm, clip_value, data, None, History(),
                       callbacks=_check_callbacks(callbacks))
    trainer.begin()
    trainer.begin_epoch(0)
    state = None
    losses = []
    T = data.X.shape[1]
    for k, start in enumerate(range(0, T, window)):
        stop = min(start + window, T)
        where = f"in window {k + 1} (steps {start} to {stop - 1})"
        value, state = trainer.step(_Dataset(data.X[:, start:stop], data.Y[:, start:stop], None, data.W), state, where)
        losses.append(value)
    trainer.check_weights("after the last window")
    trainer.end_epoch(0)
    trainer.run_epoch_end(0)
    trainer.finish()
    return losses
