"""Training loops: :func:`fit` for mini-batches of sequences, :func:`truncated_bptt` for long ones.

Both use explicit tapes (:meth:`SequenceModel.forward_train` /
:meth:`SequenceModel.backward`), so the model holds no training state:
``predict`` may run from another thread while ``fit`` trains.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .losses import LOSSES
from .model import SequenceModel, pad_sequences
from .optim import Adam, Optimizer, clip_grad_norm
from .params import positive_int
from .shapes import as_real_array, check_lengths

#: A batch whose loss exceeds this multiple of the first batch's (before any update; at least the loss of
#: predicting zeros or uniform classes) counts as diverged.
DIVERGENCE_FACTOR = 1e6


class TrainingDivergedError(FloatingPointError):
    """The loss or a gradient became NaN or inf.

    The model's weights are those of the end of the last finite epoch (or the
    best epoch with early stopping); ``history`` holds the epochs done.
    """

    def __init__(self, message: str, history: History) -> None:
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """Per-epoch mean losses; ``best_epoch`` is the one whose weights the model ends with.

    ``interrupted`` is True when training stopped on KeyboardInterrupt (the
    history so far is returned, best weights restored).
    """

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int | None = None
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


# ----------------------------------------------------------------- data
@dataclass
class Dataset:
    """Checked training data: padded ``X`` (N, T, I), targets ``Y``, optional ``lengths`` (N,)."""

    X: np.ndarray
    Y: np.ndarray
    lengths: np.ndarray | None

    def __len__(self) -> int:
        return len(self.X)

    def take(self, idx: Any) -> Dataset:
        return Dataset(self.X[idx], self.Y[idx], None if self.lengths is None else self.lengths[idx])


def _first_bad(arr: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])


def as_dataset(model: SequenceModel, X: Any, Y: Any, lengths: Any = None, name: str = "X") -> Dataset:
    """Check (and pad, for a list of different-length sequences) training data.

    Refuses non-finite values naming the array and the first bad index.
    """
    if isinstance(X, (list, tuple)) and X and all(np.ndim(s) in (1, 2) for s in X):
        # a list of sequences (each (T_k, I), or (T_k,) for one feature): pad them
        if lengths is not None:
            raise ValueError(f"give either a list of sequences or padded {name} with lengths, not both")
        X, padded_lengths = pad_sequences(X, dtype=model.dtype)
        lengths = padded_lengths
        if model.many_to_many and isinstance(Y, (list, tuple)):
            for k, (y, n) in enumerate(zip(Y, padded_lengths)):
                if len(y) != n:
                    raise ValueError(f"sequence {k} has {n} steps but its targets have {len(y)}; give one target per step")
            Y = _pad_targets(Y, X.shape[1])
    for label, value in ((name, X), ("Y" if name == "X" else "Y_val", Y)):
        if isinstance(value, np.ma.MaskedArray):
            raise TypeError(f"{label} is a masked array; give a plain array and lengths= for padded sequences")
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 3:
        raise ValueError(f"{name} must be (N, T, I) sequences (or a list of (T, I) arrays); got shape {X.shape}")
    if X.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {X.dtype}")
    if len(X) != len(Y):
        raise ValueError(f"{name} and its targets must hold the same number of sequences; got {len(X)} and {len(Y)}")
    for label, arr in ((name, X), ("targets", Y)):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{label} holds NaN or inf, first at index {_first_bad(arr)}; clean the data before fit")
    if lengths is not None:
        lengths = check_lengths(lengths, len(X), X.shape[1])
    X = as_real_array(X, name, model.dtype)  # refuses values a float32 model would turn into inf
    if Y.dtype.kind == "f":
        as_real_array(Y, "targets", model.dtype)
    return Dataset(X, Y, lengths)


def _pad_targets(Y: Any, T: int) -> np.ndarray:
    arrays = [np.asarray(y) for y in Y]
    out = np.zeros((len(arrays), T) + arrays[0].shape[1:], dtype=np.result_type(*arrays))
    for k, a in enumerate(arrays):
        out[k, : len(a)] = a
    return out


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _loss(model: SequenceModel, loss: str, prediction: np.ndarray, batch: Dataset) -> tuple[float, np.ndarray]:
    """The loss and dL/dprediction; per-step losses count only each sequence's valid steps."""
    loss_fn = LOSSES[loss]
    if not model.many_to_many or batch.lengths is None:
        return loss_fn(prediction, batch.Y)
    valid = np.arange(prediction.shape[1])[None, :] < batch.lengths[:, None]
    value, d_valid = loss_fn(prediction[valid], np.asarray(batch.Y)[valid])
    grad = np.zeros_like(prediction)
    grad[valid] = d_valid
    return value, grad


def _loss_scale(loss: str, data: Dataset) -> float:
    """The loss of a know-nothing model (predicting 0, or uniform classes): a floor for the divergence yardstick."""
    if loss == "mse":
        return float(np.mean(np.square(data.Y, dtype=np.float64))) + 1e-12
    return float(np.log(max(int(np.max(data.Y, initial=0)) + 1, 2)))


def evaluate(model: SequenceModel, X: Any, Y: Any, loss: str = "mse", batch_size: int = 256, *, lengths: Any = None) -> float:
    """Mean loss of ``model`` on ``(X, Y)`` (weighted by batch size)."""
    data = as_dataset(model, X, Y, lengths)
    total, count = 0.0, 0
    for idx in _batches(len(data), positive_int(batch_size, "batch_size"), None):
        batch = data.take(idx)
        value, _ = _loss(model, loss, model.predict(batch.X, lengths=batch.lengths), batch)
        total += value * len(idx)
        count += len(idx)
    return total / max(count, 1)


def check_optimizer(optimizer: Optimizer, model: SequenceModel) -> None:
    """Refuse an optimizer that does not hold exactly this model's parameter arrays."""
    params = model.parameters()
    missing = [n for n, p in params.items() if n not in optimizer.params or not np.shares_memory(optimizer.params[n], p)]
    if missing or set(optimizer.params) - set(params):
        raise ValueError(
            f"the optimizer does not hold this model's parameters (e.g. {(missing or sorted(set(optimizer.params) - set(params)))[:3]}); "
            f"make it with Adam(model.parameters()) or SGD(model.parameters())"
        )


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
    lengths : (N,) ints, optional
        Lengths of padded ``X``.
    loss : "mse" or "cross_entropy"
        For cross-entropy the targets are integer class labels.
    optimizer : Optimizer, optional
        Defaults to ``Adam(model.parameters(), lr=1e-2)``; must hold this
        model's parameters.
    validation_split : float
        Fraction of (X, Y), taken from the end, held out for validation.
    validation_data : (X_val, Y_val) or (X_val, Y_val, lengths_val), optional
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
        On KeyboardInterrupt, the history so far (``interrupted=True``), with
        the best weights restored when early stopping tracked them.

    Raises
    ------
    ValueError
        Non-finite data (naming the array and first bad index), bad arguments,
        or an optimizer that does not hold the model's parameters.
    TrainingDivergedError
        The loss or gradients became NaN or inf, or a batch's loss
        exceeded :data:`DIVERGENCE_FACTOR` times the first batch's; the
        weights of the last good epoch (or the best one) are restored first.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    if early_stopping is not None:
        early_stopping = positive_int(early_stopping, "early_stopping")
    if clip_norm is not None and (isinstance(clip_norm, bool) or not np.isfinite(clip_norm) or clip_norm <= 0):
        raise ValueError(f"clip_norm must be a positive finite number or None; got {clip_norm!r}")
    if isinstance(validation_split, bool) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split!r}")
    data = as_dataset(model, X, Y, lengths)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be (X_val, Y_val) or (X_val, Y_val, lengths_val)")
        X_val, Y_val = validation_data[0], validation_data[1]
        val = as_dataset(model, X_val, Y_val, validation_data[2] if len(validation_data) == 3 else None, name="X_val")
    elif validation_split > 0:
        n_val = max(1, int(round(len(data) * validation_split)))
        val, data = data.take(slice(len(data) - n_val, None)), data.take(slice(0, len(data) - n_val))
    if len(data) == 0:
        raise ValueError("no training sequences left")
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping needs validation_split or validation_data")
    if optimizer is None:
        optimizer = Adam(model.parameters(), lr=1e-2)
    check_optimizer(optimizer, model)
    rng = np.random.default_rng(seed) if shuffle else None
    history = History()
    best, best_weights, waited = np.inf, None, 0
    last_good = {k: v.copy() for k, v in model.parameters().items()}
    first_loss: float | None = None
    data_scale = _loss_scale(loss, data)
    bar = _Progress(epochs * -(-len(data) // batch_size), progress)

    def restore(weights: dict[str, np.ndarray]) -> None:
        for name, value in model.parameters().items():
            value[...] = weights[name]

    try:
        for epoch in range(epochs):
            running, seen = 0.0, 0
            for idx in _batches(len(data), batch_size, rng):
                batch = data.take(idx)
                prediction, _, tape = model.forward_train(batch.X, lengths=batch.lengths)
                value, d_prediction = _loss(model, loss, prediction, batch)
                grads = model.backward(tape, d_prediction)
                trained = {k: grads[k] for k in optimizer.params}
                with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported below, not warned about
                    norm = clip_grad_norm(trained, clip_norm if clip_norm is not None else np.inf)
                if first_loss is None:  # before any update: the yardstick for divergence
                    first_loss = max(float(value), data_scale)
                exploded = value > DIVERGENCE_FACTOR * first_loss
                if exploded or not (np.isfinite(value) and np.isfinite(norm)):
                    restore(best_weights if best_weights is not None else last_good)
                    raise TrainingDivergedError(
                        f"training diverged in epoch {epoch + 1}: batch loss {value:.3g} (first batch "
                        f"{first_loss:.3g}), gradient norm {norm:.3g}; weights restored to the "
                        f"{'best epoch' if best_weights is not None else 'last batch with a sane loss'} "
                        f"(try a smaller learning rate or clip_norm)", history)
                for name, value_now in model.parameters().items():  # these weights gave a sane loss
                    np.copyto(last_good[name], value_now)
                optimizer.step(trained)
                running += value * len(idx)
                seen += len(idx)
                bar.update(epoch, running / seen)
            history.loss.append(running / seen)
            if not all(np.isfinite(p).all() for p in model.parameters().values()):
                restore(best_weights if best_weights is not None else last_good)
                raise TrainingDivergedError(
                    f"training diverged in epoch {epoch + 1}: the weights overflowed to inf or NaN; "
                    f"weights restored (try a smaller learning rate)", history)
            score = history.loss[-1]
            if val is not None:
                history.val_loss.append(evaluate(model, val.X, val.Y, loss=loss, lengths=val.lengths))
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
    except KeyboardInterrupt:
        history.interrupted = True
    finally:
        bar.close()
    if best_weights is not None:
        restore(best_weights)
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
    window = positive_int(window, "window")
    loss_fn = LOSSES[loss]
    optimizer = optimizer or Adam(model.parameters(), lr=1e-2)
    check_optimizer(optimizer, model)
    state = None
    losses = []
    for start in range(0, x.shape[1], window):
        stop = start + window
        prediction, state, tape = model.forward_train(x[:, start:stop], state)
        value, d_prediction = loss_fn(prediction, y[:, start:stop])
        grads = model.backward(tape, d_prediction)
        trained = {k: grads[k] for k in optimizer.params}
        if clip_norm is not None:
            clip_grad_norm(trained, clip_norm)
        optimizer.step(trained)
        losses.append(value)
    return losses
