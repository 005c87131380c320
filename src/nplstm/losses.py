"""Losses with their gradients: ``loss(prediction, target) -> (value, d_prediction)``.

Each loss is an object (:class:`MSE`, :class:`MAE`, :class:`Huber`,
:class:`BinaryCrossEntropy`, :class:`CrossEntropy`) and a function of the
same name in lower case; :func:`nplstm.fit` takes either, or its name
(``loss="huber"``), or any function of ``(prediction, target)`` returning
``(loss, d loss / d prediction)`` (a *user loss*, checked on every call by
:class:`UserLoss`).

Every loss is a mean, equal to ``torch.nn.functional``'s of the same name
with ``reduction="mean"``.  Weights (``sample_weight`` per row of the
prediction, and cross-entropy's per-class ``weight``) make it a **weighted
mean**: ``sum_i w_i l_i / sum_i w_i``, where ``l_i`` is row ``i``'s loss
summed over its elements and the denominator counts each row's elements
(so equal weights give the plain mean).  That is torch's convention for
``cross_entropy(..., weight=)`` (the normaliser is the sum of the weights of
the rows' labels, label smoothing included exactly as torch computes it);
Keras divides a weighted sum by the number of rows instead.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

__all__ = [
    "Loss", "MSE", "MAE", "Huber", "BinaryCrossEntropy", "CrossEntropy", "UserLoss",
    "mse", "mae", "huber", "binary_cross_entropy", "cross_entropy", "softmax_cross_entropy",
    "get_loss", "LOSSES",
]


def _weights_like(weight: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-row ``weight`` (its shape a prefix of ``values``'), with trailing axes of 1 to broadcast against ``values``."""
    return weight.reshape(weight.shape + (1,) * (values.ndim - weight.ndim))


class Loss:
    """A loss and its gradient: ``loss(prediction, target, sample_weight=None) -> (value, d_prediction)``.

    A subclass defines :meth:`_elements`: the loss of each element (or, for
    class scores, of each row) and its gradient.  :meth:`totals` and
    ``__call__`` reduce them the one way described in the module.

    Attributes
    ----------
    name : str
    targets : {"real", "binary", "labels"}
        What the targets are: real values of the prediction's shape, 0/1
        (or probabilities) of its shape, or integer class labels with one
        label per row of class scores.
    reads_logits : bool
        The loss reads class scores before a softmax or sigmoid output
        (``fit`` then gives it the output layer's pre-activation).
    """

    name = "loss"
    targets = "real"
    reads_logits = False

    def _elements(self, prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(loss per element or row, d prediction, denominator per row or None: each element counts 1)``."""
        raise NotImplementedError

    def check_target(self, prediction: np.ndarray, target: Any) -> np.ndarray:
        """``target`` as an array checked against ``prediction`` (dtype, shape, values)."""
        target = np.asarray(target, dtype=prediction.dtype)
        if target.shape != prediction.shape:
            raise ValueError(f"target must have the prediction's shape {prediction.shape}; got {target.shape}")
        return target

    def totals(
        self, prediction: Any, target: Any, sample_weight: Any = None
    ) -> tuple[float, float, np.ndarray]:
        """``(weighted sum of losses, sum of weights, gradient of that sum)``: the loss is their ratio.

        Sums over batches give the exact loss of the whole data.
        ``sample_weight`` has the shape of the prediction's leading axes
        (one weight per row; ``(N,)`` weights every step of a sequence alike
        for ``(N, T, O)``).
        """
        prediction = np.asarray(prediction)
        if prediction.dtype.kind != "f":
            prediction = prediction.astype(np.float64)
        target = self.check_target(prediction, target)
        weight = None
        if sample_weight is not None:
            weight = np.asarray(sample_weight, dtype=prediction.dtype)
            if weight.ndim >= prediction.ndim or weight.shape != prediction.shape[: weight.ndim]:
                raise ValueError(f"sample_weight must have the shape of the prediction's leading axes "
                                 f"{prediction.shape[:-1]} (one weight per row); got {weight.shape}")
            if not (np.isfinite(weight).all() and np.all(weight >= 0)):
                raise ValueError("sample_weight must be finite and >= 0")
        values, grads, denominators = self._elements(prediction, target)
        if weight is None:
            count = values.size if denominators is None else np.sum(denominators)
            return float(np.sum(values)), float(count), grads
        w = _weights_like(weight, values)
        counts = np.ones_like(values) if denominators is None else denominators
        return float(np.sum(w * values)), float(np.sum(w * counts)), _weights_like(weight, grads) * grads

    def __call__(self, prediction: Any, target: Any, sample_weight: Any = None) -> tuple[float, np.ndarray]:
        """The (weighted) mean loss and its gradient with respect to ``prediction``."""
        numerator, denominator, grad = self.totals(prediction, target, sample_weight)
        if denominator == 0:  # nothing to average (no rows, or every weight 0): no loss, no gradient
            return 0.0, np.zeros_like(grad)
        return numerator / denominator, grad / denominator

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MSE(Loss):
    """Mean squared error, ``mean((prediction - target)**2)`` (``torch.nn.functional.mse_loss``)."""

    name = "mse"

    def _elements(self, prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        diff = prediction - target
        return diff * diff, 2.0 * diff, None


class MAE(Loss):
    """Mean absolute error, ``mean(|prediction - target|)`` (``l1_loss``; gradient 0 where they are equal, as torch)."""

    name = "mae"

    def _elements(self, prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        diff = prediction - target
        return np.abs(diff), np.sign(diff), None


class Huber(Loss):
    """Huber loss (``torch.nn.functional.huber_loss``): ``d²/2`` for ``|d| <= delta``, else ``delta·(|d| - delta/2)``."""

    name = "huber"

    def __init__(self, delta: float = 1.0) -> None:
        if isinstance(delta, bool) or not isinstance(delta, (int, float, np.integer, np.floating)) or not (
            np.isfinite(delta) and delta > 0
        ):
            raise ValueError(f"delta must be a positive finite number; got {delta!r}")
        self.delta = float(delta)

    def _elements(self, prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        diff = prediction - target
        small = np.abs(diff) <= self.delta
        values = np.where(small, 0.5 * diff * diff, self.delta * (np.abs(diff) - 0.5 * self.delta))
        return values, np.where(small, diff, self.delta * np.sign(diff)), None

    def __repr__(self) -> str:
        return f"Huber(delta={self.delta!r})"


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy of targets in [0, 1] under ``sigmoid(logits)`` (``binary_cross_entropy_with_logits``).

    Computed from the logits as ``max(z, 0) - z·y + log(1 + exp(-|z|))``:
    no overflow, no log of 0.  The gradient is ``sigmoid(z) - y``.
    """

    name = "binary_cross_entropy"
    targets = "binary"
    reads_logits = True

    def check_target(self, prediction: np.ndarray, target: Any) -> np.ndarray:
        target = super().check_target(prediction, target)
        if target.size and not (np.all(target >= 0) and np.all(target <= 1)):
            raise ValueError(f"binary_cross_entropy needs targets in [0, 1]; got values from {target.min()} to {target.max()}")
        return target

    def _elements(self, logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        values = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
        e = np.exp(-np.abs(logits))  # sigmoid without overflow: 1/(1+e) for z >= 0, e/(1+e) below
        sigmoid = np.where(logits >= 0, 1.0, e) / (1.0 + e)
        return values, sigmoid - target, None


class CrossEntropy(Loss):
    """Cross-entropy of integer labels under ``softmax(logits)`` over the last axis (``torch.nn.functional.cross_entropy``).

    ``logits`` (..., K), ``labels`` (...) ints in [0, K).  Computed from
    log-softmax (max subtracted), so large logits neither overflow nor give NaN.

    Parameters
    ----------
    label_smoothing : float in [0, 1)
        torch's definition: the target is ``(1 - ε)·one_hot(label) + ε/K``.
    weight : (K,) array or mapping {class: weight}, optional
        Per-class weights (a mapping leaves unnamed classes at 1).  The mean
        is weighted as torch's: ``sum_i l_i / sum_i weight[label_i]`` where
        ``l_i = (1 - ε)·weight[y_i]·(-log p_i[y_i]) + ε/K·sum_c weight[c]·(-log p_i[c])``.
    """

    name = "cross_entropy"
    targets = "labels"
    reads_logits = True

    def __init__(self, label_smoothing: float = 0.0, weight: Any = None) -> None:
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.integer, np.floating)) or not (
            0 <= label_smoothing < 1
        ):
            raise ValueError(f"label_smoothing must be a number in [0, 1); got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.weight = weight if weight is None or isinstance(weight, Mapping) else _class_weights(weight, None)

    def class_weights(self, K: int) -> np.ndarray | None:
        """The (K,) class weights, or None without weights."""
        return None if self.weight is None else _class_weights(self.weight, K)

    def check_target(self, logits: np.ndarray, labels: Any) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers; got dtype {labels.dtype}")
        if labels.shape != logits.shape[:-1]:
            raise ValueError(f"labels must have shape {logits.shape[:-1]}; got {labels.shape}")
        K = logits.shape[-1]
        if labels.size and (labels.min() < 0 or labels.max() >= K):
            raise ValueError(f"labels must lie in [0, {K}); got values from {labels.min()} to {labels.max()}")
        return labels

    def _elements(self, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        K = logits.shape[-1]
        eps = self.label_smoothing
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_prob = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        prob = np.exp(log_prob)
        index = labels[..., None]
        nll = -np.take_along_axis(log_prob, index, axis=-1)[..., 0]
        w = self.class_weights(K)
        if w is None:  # target distribution q = (1 - ε)·one_hot + ε/K; loss -Σ q log p, gradient p - q
            values = (1 - eps) * nll - (eps / K) * log_prob.sum(axis=-1) if eps else nll
            grad = prob - eps / K if eps else prob
            np.put_along_axis(grad, index, np.take_along_axis(grad, index, axis=-1) - (1 - eps), axis=-1)
            return values, grad, None
        w = w.astype(logits.dtype)
        w_label = w[labels]
        values = (1 - eps) * w_label * nll - (eps / K) * (log_prob @ w)
        # d/dz of w_y·(-log p_y) is w_y·(p - e_y); of Σ_c w_c·(-log p_c) it is (Σw)·p - w
        grad = ((1 - eps) * w_label + (eps / K) * w.sum())[..., None] * prob - (eps / K) * w
        np.put_along_axis(grad, index, np.take_along_axis(grad, index, axis=-1) - ((1 - eps) * w_label)[..., None], axis=-1)
        return values, grad, w_label

    def __repr__(self) -> str:
        return f"CrossEntropy(label_smoothing={self.label_smoothing!r}, weight={self.weight!r})"


def _class_weights(weight: Any, K: int | None) -> np.ndarray:
    """Class weights as a (K,) float array: from an array, or a mapping {class: weight} (others 1)."""
    if isinstance(weight, Mapping):
        if K is None:
            raise ValueError("class weights given as a mapping need the number of classes")
        out = np.ones(K)
        for c, value in weight.items():
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < K:
                raise ValueError(f"class_weight keys must be class labels in [0, {K}); got {c!r}")
            out[int(c)] = value
    else:
        out = np.asarray(weight, dtype=np.float64)
        if out.ndim != 1 or (K is not None and out.shape != (K,)):
            raise ValueError(f"class weights must be a ({'K' if K is None else K},) array, one weight per class; got shape {out.shape}")
    if not (np.isfinite(out).all() and np.all(out >= 0)):
        raise ValueError(f"class weights must be finite and >= 0; got {out.tolist()}")
    return out


class UserLoss(Loss):
    """A user's function ``fn(prediction, target) -> (loss, d loss / d prediction)``, checked on every call.

    The loss must be a finite real number and the gradient a finite real
    array of the prediction's shape; anything else raises naming the
    function and what it returned.  The targets are given as they are
    (checked by ``fit`` as real targets of the prediction's shape).  A user
    loss takes no ``sample_weight``: fold weights into the function.
    """

    targets = "real"

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]) -> None:
        if not callable(fn):
            raise TypeError(f"a user loss must be callable; got {type(fn).__name__}")
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def totals(self, prediction: Any, target: Any, sample_weight: Any = None) -> tuple[float, float, np.ndarray]:
        if sample_weight is not None:
            raise ValueError(f"the user loss {self.name!r} takes no sample_weight; fold weights into the function")
        prediction = np.asarray(prediction)
        out = self.fn(prediction, target)
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"the user loss {self.name!r} must return (loss, gradient w.r.t. the prediction); "
                            f"got {type(out).__name__}")
        value, grad = out
        if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0 or not np.isrealobj(value):
            raise TypeError(f"the user loss {self.name!r} must return a real scalar loss; got {value!r}")
        try:
            grad = np.asarray(grad, dtype=prediction.dtype)
        except (TypeError, ValueError):
            raise TypeError(f"the user loss {self.name!r} must return its gradient as a real array; got {type(grad).__name__}") from None
        if grad.shape != prediction.shape:
            raise ValueError(f"the user loss {self.name!r} returned a gradient of shape {grad.shape}; "
                             f"it must have the prediction's shape {prediction.shape}")
        value = float(value)
        if not (np.isfinite(value) and np.isfinite(grad).all()):
            raise FloatingPointError(f"the user loss {self.name!r} returned a non-finite loss or gradient (loss {value!r})")
        rows = float(prediction.shape[0]) if prediction.ndim else 1.0  # its mean counts as one per row
        return value * rows, rows, grad * rows

    def __repr__(self) -> str:
        return f"UserLoss({self.name})"


_MSE, _MAE, _BCE, _CE = MSE(), MAE(), BinaryCrossEntropy(), CrossEntropy()


def mse(prediction: Any, target: Any, sample_weight: Any = None) -> tuple[float, np.ndarray]:
    """Mean squared error over every element, and its gradient (see :class:`MSE`)."""
    return _MSE(prediction, target, sample_weight)


def mae(prediction: Any, target: Any, sample_weight: Any = None) -> tuple[float, np.ndarray]:
    """Mean absolute error over every element, and its gradient (see :class:`MAE`)."""
    return _MAE(prediction, target, sample_weight)


def huber(prediction: Any, target: Any, delta: float = 1.0, sample_weight: Any = None) -> tuple[float, np.ndarray]:
    """Mean Huber loss over every element, and its gradient (see :class:`Huber`)."""
    return Huber(delta)(prediction, target, sample_weight)


def binary_cross_entropy(logits: Any, target: Any, sample_weight: Any = None) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy from logits, and its gradient (see :class:`BinaryCrossEntropy`)."""
    return _BCE(logits, target, sample_weight)


def cross_entropy(
    logits: Any, labels: Any, label_smoothing: float = 0.0, weight: Any = None, sample_weight: Any = None
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of integer ``labels`` under ``softmax(logits)``, and its gradient (see :class:`CrossEntropy`)."""
    loss = _CE if not label_smoothing and weight is None else CrossEntropy(label_smoothing, weight)
    return loss(logits, labels, sample_weight)


def softmax_cross_entropy(logits: Any, labels: Any) -> tuple[float, np.ndarray]:
    """:func:`cross_entropy` without smoothing or weights (its former name, kept)."""
    return _CE(logits, labels)


#: The losses ``fit`` knows by name (each an object callable as ``loss(prediction, target)``).
LOSSES: dict[str, Loss] = {"mse": _MSE, "mae": _MAE, "huber": Huber(), "binary_cross_entropy": _BCE, "cross_entropy": _CE}


def get_loss(loss: Any) -> Loss:
    """A :class:`Loss` from a name in :data:`LOSSES`, a :class:`Loss`, or a user function (wrapped in :class:`UserLoss`)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, a Loss, or a function returning (loss, gradient); got {loss!r}")
        return LOSSES[loss]
    if callable(loss):
        return UserLoss(loss)
    raise ValueError(f"loss must be one of {sorted(LOSSES)}, a Loss, or a function returning (loss, gradient); got {loss!r}")
