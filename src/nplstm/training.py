"""Training loops: :func:`fit` for mini-batches of sequences, :func:`truncated_bptt` for long ones."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .losses import LOSSES
from .model import SequenceModel
from .optim import Adam, Optimizer, clip_grad_norm


@dataclass
class History:
    """Per-epoch mean losses; ``best_epoch`` is the one whose weights the model ends with."""

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False


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


def evaluate(model: SequenceModel, X: np.ndarray, Y: np.ndarray, loss: str = "mse", batch_size: int = 256) -> float:
    """Mean loss of ``model`` on ``(X, Y)`` (weighted by batch size)."""
    loss_fn = LOSSES[loss]
    total, count = 0.0, 0
    for idx in _batches(len(X), batch_size, None):
        value, _ = loss_fn(model.predict(X[idx]), Y[idx])
        total += value * len(idx)
        count += len(idx)
    return total / max(count, 1)


def fit(
    model: SequenceModel,
    X: Any,
    Y: Any,
    *,
    loss: str = "mse",
    optimizer: Optimizer | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    validation_split: float = 0.0,
    validation_data: tuple[Any, Any] | None = None,
    early_stopping: int | None = None,
    clip_norm: float | None = 1.0,
    shuffle: bool = True,
    seed: Any = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, History], bool | None] | None = None,
) -> History:
    """Train ``model`` on sequences ``X`` (N, T, I) and targets ``Y`` in mini-batches.

    Parameters
    ----------
    loss : "mse" or "cross_entropy"
        For cross-entropy the targets are integer class labels.
    optimizer : Optimizer, optional
        Defaults to ``Adam(model.parameters(), lr=1e-2)``.
    validation_split : float
        Fraction of (X, Y), taken from the end, held out for validation.
    early_stopping : int, optional
        Stop after this many epochs without a better validation loss and
        restore the best weights.
    clip_norm : float, optional
        Clip gradients to this global L2 norm (None: no clipping).
    progress : bool
        Show a tqdm bar with the running loss (only on a terminal).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, history)``; returning True stops training.

    Returns
    -------
    History
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")
    X = np.asarray(X)
    Y = np.asarray(Y)
    if len(X) != len(Y):
        raise ValueError(f"X and Y must hold the same number of sequences; got {len(X)} and {len(Y)}")
    if not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split}")
    if validation_data is None and validation_split > 0:
        n_val = max(1, int(round(len(X) * validation_split)))
        X, Y, validation_data = X[:-n_val], Y[:-n_val], (X[-n_val:], Y[-n_val:])
    if len(X) == 0:
        raise ValueError("no training sequences left")
    if early_stopping is not None and validation_data is None:
        raise ValueError("early_stopping needs validation_split or validation_data")
    loss_fn = LOSSES[loss]
    optimizer = optimizer or Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(seed) if shuffle else None
    history = History()
    best, best_weights, waited = np.inf, None, 0
    n_batches = -(-len(X) // batch_size)
    bar = _Progress(epochs * n_batches, progress)
    try:
        for epoch in range(epochs):
            running, seen = 0.0, 0
            for idx in _batches(len(X), batch_size, rng):
                prediction, _ = model.forward(X[idx], train=True)
                value, d_prediction = loss_fn(prediction, Y[idx])
                grads = model.backward(d_prediction)
                if clip_norm is not None:
                    clip_grad_norm({k: grads[k] for k in optimizer.params}, clip_norm)
                optimizer.step(grads)
                running += value * len(idx)
                seen += len(idx)
                bar.update(epoch, running / seen)
            history.loss.append(running / seen)
            score = history.loss[-1]
            if validation_data is not None:
                history.val_loss.append(evaluate(model, *validation_data, loss=loss))
                score = history.val_loss[-1]
                bar.note(loss=history.loss[-1], val_loss=score)
            if score < best:
                best, waited, history.best_epoch = score, 0, epoch
                if early_stopping is not None:
                    best_weights = {k: v.copy() for k, v in model.parameters().items()}
            else:
                waited += 1
            if on_epoch_end is not None and on_epoch_end(epoch, history):
                break
            if early_stopping is not None and waited >= early_stopping:
                history.stopped_early = True
                break
    finally:
        bar.close()
    if best_weights is not None:
        for name, value in model.parameters().items():
            value[...] = best_weights[name]
    return history


def truncated_bptt(
    model: SequenceModel,
    x: np.ndarray,
    y: np.ndarray,
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
    """
    if not model.many_to_many:
        raise ValueError("truncated_bptt needs a many_to_many model (a target for every step)")
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    loss_fn = LOSSES[loss]
    optimizer = optimizer or Adam(model.parameters(), lr=1e-2)
    state = None
    losses = []
    for start in range(0, x.shape[1], window):
        stop = start + window
        prediction, state = model.forward(x[:, start:stop], state, train=True)
        value, d_prediction = loss_fn(prediction, y[:, start:stop])
        grads = model.backward(d_prediction)
        if clip_norm is not None:
            clip_grad_norm({k: grads[k] for k in optimizer.params}, clip_norm)
        optimizer.step(grads)
        losses.append(value)
    return losses
