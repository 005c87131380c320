"""Training data, checked once for every entry point of training (:func:`~nplstm.training.fit`, ``evaluate``, ``truncated_bptt``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .losses import Loss, get_loss
from .model import SequenceModel
from .shapes import as_real_array, check_lengths, refuse_masked

#: The output activations each kind of target's loss can read (class-score losses read logits).
_ACTIVATIONS = {
    "labels": (("linear", "softmax", "log_softmax"), "linear (logits), softmax or log_softmax"),
    "binary": (("linear", "sigmoid"), "linear (logits) or sigmoid"),
}


@dataclass
class _Dataset:
    """Checked training data: padded ``X`` (N, T, I), targets ``Y``, optional ``lengths`` (N,) and weights ``W`` (N,)."""

    X: np.ndarray
    Y: np.ndarray
    lengths: np.ndarray | None
    W: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.X)

    def take(self, idx: Any) -> _Dataset:
        return _Dataset(self.X[idx], self.Y[idx], None if self.lengths is None else self.lengths[idx],
                        None if self.W is None else self.W[idx])


def _first_bad(arr: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])


def _refuse_non_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf, first at index {_first_bad(arr)}; clean the data before training")


def _as_dataset(
    model: SequenceModel, X: Any, Y: Any, lengths: Any = None, *, loss: Any = "mse",
    names: tuple[str, str, str] = ("X", "Y", "lengths"), sample_weight: Any = None,
) -> _Dataset:
    """Check (and pad, for a list of different-length sequences) training data.

    Every entry point of training data (:func:`fit`'s data and validation
    data, :func:`evaluate`, :func:`truncated_bptt`) comes through here.
    ``names`` are the arguments named in errors (sequences, targets,
    lengths).  Refuses masked arrays, non-real or non-finite values (naming
    the first bad index), and targets whose dtype or shape does not fit the
    model and ``loss``.  Targets ``(N,)`` (``(N, T)`` many-to-many) are
    read as ``(N, 1)`` (``(N, T, 1)``) for a model with one output, and
    labels ``(N, 1)`` (``(N, T, 1)``) as ``(N,)`` (``(N, T)``).
    ``sample_weight`` (N,) must be finite and >= 0.
    """
    loss = get_loss(loss)
    x_name, y_name, lengths_name = names
    ids = model.embedding is not None
    padded = model._pad_list(X, lengths, x_name)  # a list of sequences of different lengths
    if padded is not None:
        X, lengths = padded
        if model.many_to_many and isinstance(Y, (list, tuple)):
            for k, (y, n) in enumerate(zip(Y, lengths)):
                if len(y) != n:
                    raise ValueError(f"sequence {k} has {n} steps but its targets have {len(y)}; give one target per step")
            Y = _pad_targets(Y, X.shape[1], y_name)
    if ids:
        X = model.embedding.check_ids(X, x_name)  # type: ignore[union-attr]
        if X.ndim != 2:
            raise ValueError(f"{x_name} must be (N, T) token ids for this model's embedding (or a list of (T,) arrays); "
                             f"got shape {X.shape}")
    else:
        X = as_real_array(X, x_name, model.dtype)  # refuses masked, non-real, and values a float32 model makes inf
        I = model.lstm.input_size
        if X.ndim != 3 or X.shape[2] != I:
            raise ValueError(f"{x_name} must be (N, T, {I}) sequences (or a list of (T, {I}) arrays); got shape {X.shape}")
        _refuse_non_finite(X, x_name)
    Y = _as_targets(model, Y, loss, y_name, X.shape[:2], x_name)
    if lengths is not None:
        lengths = check_lengths(lengths, len(X), X.shape[1], lengths_name)
    masked = model.mask_lengths(X)  # padding the model reads from its inputs (Keras masks) also limits the loss
    if masked is not None:
        if lengths is not None and not np.array_equal(lengths, masked):
            raise ValueError(f"{lengths_name} disagree with the padding the model's mask reads from {x_name}")
        lengths = masked
    if loss.targets in _ACTIVATIONS:
        allowed, said = _ACTIVATIONS[loss.targets]
        if model.head.activation not in allowed:
            raise ValueError(f"{loss.name} reads class scores: the output layer's activation must be {said}; "
                             f"got {model.head.activation!r}")
    if loss.targets == "labels":
        _check_labels(model, Y, lengths, y_name)
    W = None if sample_weight is None else _as_sample_weight(sample_weight, len(X), model.dtype)
    return _Dataset(X, Y, lengths, W)


def _as_sample_weight(weight: Any, N: int, dtype: np.dtype) -> np.ndarray:
    W = as_real_array(weight, "sample_weight", dtype)
    if W.shape != (N,):
        raise ValueError(f"sample_weight must have shape (N,) = ({N},), one weight per sequence; got {W.shape}")
    if not (np.isfinite(W).all() and np.all(W >= 0)):
        raise ValueError("sample_weight must be finite and >= 0")
    if N and not np.any(W > 0):
        raise ValueError("sample_weight is 0 for every sequence: nothing to train on")
    return W


def _as_targets(model: SequenceModel, Y: Any, loss: Loss, name: str, NT: tuple[int, ...], x_name: str) -> np.ndarray:
    """Targets checked against the model's predictions: their dtype and shape, named in every error."""
    N, T = NT
    O = model.head.out_features
    expected: tuple[int, ...]
    if loss.targets != "labels":
        arr = as_real_array(Y, name, model.dtype)  # TypeError naming Y and the dtype given
        expected, what = ((N, T, O), "(N, T, O)") if model.many_to_many else ((N, O), "(N, O)")
        if O == 1 and arr.shape == expected[:-1]:  # one output: (N,) or (N, T) targets are that output's
            arr = arr[..., None]
        _refuse_non_finite(arr, name)
        if loss.targets == "binary" and arr.size and not (np.all(arr >= 0) and np.all(arr <= 1)):
            raise ValueError(f"{name} must hold targets in [0, 1] for {loss.name}; got values from {arr.min()} to {arr.max()}")
    else:
        refuse_masked(Y, name)
        arr = np.asarray(Y)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer class labels for {loss.name}; got dtype {arr.dtype}")
        expected, what = ((N, T), "(N, T)") if model.many_to_many else ((N,), "(N,)")
        if arr.shape == expected + (1,):  # a column of labels
            arr = arr[..., 0]
    if arr.ndim and len(arr) != N:
        raise ValueError(f"{x_name} and {name} must hold the same number of sequences; got {N} and {len(arr)}")
    if arr.shape != expected:
        kind = "many-to-many" if model.many_to_many else "many-to-one"
        raise ValueError(f"{name} must have shape {what} = {expected} for this {kind} model and {loss.name}; got {arr.shape}")
    return arr


def _check_labels(model: SequenceModel, Y: np.ndarray, lengths: np.ndarray | None, name: str) -> None:
    """Class labels must lie in [0, K) at every step the loss reads."""
    K = model.head.out_features
    read = Y
    if model.many_to_many and lengths is not None:
        read = Y[np.arange(Y.shape[1])[None, :] < lengths[:, None]]
    if read.size and (read.min() < 0 or read.max() >= K):
        raise ValueError(f"{name} must hold class labels in [0, {K}); got values from {read.min()} to {read.max()}")


def _pad_targets(Y: Any, T: int, name: str) -> np.ndarray:
    for k, y in enumerate(Y):
        refuse_masked(y, f"{name}[{k}]")
    arrays = [np.asarray(y) for y in Y]
    out = np.zeros((len(arrays), T) + arrays[0].shape[1:], dtype=np.result_type(*arrays))
    for k, a in enumerate(arrays):
        out[k, : len(a)] = a
    return out


