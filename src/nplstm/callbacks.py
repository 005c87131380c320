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

from typing import Any

__all__ = ["Callback"]


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
