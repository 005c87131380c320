"""Losses with their gradients: ``loss(prediction, target) -> (value, d_prediction)``."""

from __future__ import annotations

import numpy as np

__all__ = ["mse", "softmax_cross_entropy", "LOSSES"]


def mse(prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over every element, and its gradient."""
    target = np.asarray(target, dtype=prediction.dtype)
    if target.shape != prediction.shape:
        raise ValueError(f"target must have the prediction's shape {prediction.shape}; got {target.shape}")
    diff = prediction - target
    return float(np.mean(diff * diff)), (2.0 / max(diff.size, 1)) * diff


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of integer ``labels`` under ``softmax(logits)`` over the last axis.

    ``logits`` (..., K), ``labels`` (...) ints in [0, K).  Computed from
    log-softmax (max subtracted), so large logits neither overflow nor give NaN.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers; got dtype {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must have shape {logits.shape[:-1]}; got {labels.shape}")
    K = logits.shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels must lie in [0, {K}); got values from {labels.min()} to {labels.max()}")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    index = labels[..., None]
    n = max(labels.size, 1)
    grad = np.exp(log_prob)  # softmax; its gradient is softmax - one_hot(label)
    np.put_along_axis(grad, index, np.take_along_axis(grad, index, axis=-1) - 1, axis=-1)
    return float(-np.take_along_axis(log_prob, index, axis=-1).sum() / n), grad / n


LOSSES = {"mse": mse, "cross_entropy": softmax_cross_entropy}
