"""Callbacks: code that :func:`nplstm.fit` runs at fixed points of training.

A callback subclasses :class:`Callback` and overrides the hooks it needs,
with Keras' names and order::

    on_train_begin(logs)
        on_epoch_begin(epoch, logs)
            on_batch_end(batch, logs)      # after each optimizer step
        on_epoch_end(epoch, logs)          # logs: loss, val_loss, metrics
    on_train_end(logs)

``logs`` is a dict of floats.  Before the first hook runs, ``fit`` sets
``callback.model`` (the model being trained), ``callback.optimizer`` and
``callback.history``.  Setting ``callback.stop_training = True`` ends
training after the current epoch.  Learning-rate schedules
(:mod:`nplstm.schedules`) are callbacks too.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint"]


class Callback:
    """Base class of training callbacks; every hook does nothing by default."""

    model: Any = None
    optimizer: Any = None
    history: Any = None
    stop_training: bool = False

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Called once, before the first epoch."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called at the start of each epoch (numbered from 0)."""

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Called after each optimizer step; ``logs["loss"]`` is that batch's loss."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called after each epoch with its training loss, validation loss and metrics."""

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Called once when training ends (also after early stopping or an interrupt)."""


def _monitored(callback: Callback, monitor: str, logs: dict[str, float] | None) -> float:
    """``logs[monitor]``, or a clear error naming what the logs hold."""
    if not logs or monitor not in logs:
        held = sorted(logs or {})
        hint = " (val_* needs validation_split or validation_data)" if monitor.startswith("val_") else ""
        raise ValueError(f"{type(callback).__name__} monitors {monitor!r}, which the epoch's logs do not hold{hint}; they hold {held}")
    return float(logs[monitor])


def _check_mode(mode: str, monitor: str) -> str:
    """"min" or "max"; "auto" is max for accuracies, min otherwise (Keras' rule)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max'; got {mode!r}")
    if mode == "auto":
        return "max" if "accuracy" in monitor else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras' ``EarlyStopping``).

    An epoch improves when its value beats the best so far by more than
    ``min_delta`` (below it for ``mode="min"``, above for ``"max"``; "auto"
    is "max" for accuracies).  With ``restore_best_weights`` the model ends
    training with the weights of the best epoch (also after an interrupt),
    and ``history.weights_epoch`` says so.

    Attributes
    ----------
    best : float
    best_epoch : int or None
    stopped_epoch : int or None
        The epoch after which training stopped (None: it did not stop early).
    """

    def __init__(
        self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0, restore_best_weights: bool = False,
        mode: str = "auto",
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0; got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float, np.integer, np.floating)) or not (
            math.isfinite(min_delta) and min_delta >= 0
        ):
            raise ValueError(f"min_delta must be a finite number >= 0; got {min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.restore_best_weights = bool(restore_best_weights)
        self.mode = _check_mode(mode, monitor)

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: dict[str, np.ndarray] | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0

    def _improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = _monitored(self, self.monitor, logs)
        self.wait += 1
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                params = self.model.parameters()
                if self.best_weights is None:
                    self.best_weights = {k: v.copy() for k, v in params.items()}
                else:
                    for k, v in params.items():
                        np.copyto(self.best_weights[k], v)
            return
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.stop_training = True
            if self.history is not None:
                self.history.stopped_early = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            for k, v in self.model.parameters().items():
                np.copyto(v, self.best_weights[k])
            if self.history is not None:
                self.history.weights_epoch = self.best_epoch


class ModelCheckpoint(Callback):
    """Save the model with its own :meth:`~nplstm.SequenceModel.save` (atomically) at the end of epochs.

    Parameters
    ----------
    path : str or PathLike
        May hold ``{epoch}`` (numbered from 1, as Keras) and names from the
        logs, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``.
    monitor : str
        The logged value that decides which epoch is best.
    save_best_only : bool
        Save only when ``monitor`` improves on the best so far (strictly);
        otherwise save after every epoch.
    mode : {"auto", "min", "max"}

    Attributes
    ----------
    best : float
    best_epoch : int or None
    saved : list of str
        Every path written, in order (as the model's save wrote it).
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss", save_best_only: bool = True, mode: str = "auto") -> None:
        self.path, self.monitor, self.save_best_only = os.fspath(path), monitor, bool(save_best_only)
        self.mode = _check_mode(mode, monitor)

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.saved: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.save_best_only:
            value = _monitored(self, self.monitor, logs)
            if not (value < self.best if self.mode == "min" else value > self.best):
                return
            self.best, self.best_epoch = value, epoch
        path = self.path.format(epoch=epoch + 1, **(logs or {}))
        written = self.model.save(path)
        self.saved.append(os.fspath(written) if written is not None else path)
