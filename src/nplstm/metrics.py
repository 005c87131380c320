"""Metrics that :func:`nplstm.fit` and :func:`nplstm.training.evaluate` report: ``mae``, ``rmse``, ``accuracy``, ``top_k_accuracy(k)``.

A metric is computed exactly over a whole epoch (or data set): each batch
adds its sums (:meth:`Metric.totals`) and the metric is computed once from
the totals (:meth:`Metric.result`), so ``rmse`` is the root of the mean
squared error over every element, not a mean of batch RMSEs.  Padded steps
of many-to-many sequences are left out (``fit`` passes only valid steps).
Metrics are unweighted (``sample_weight`` weights the loss only).

Training metrics are accumulated from each batch's predictions while the
weights change during the epoch (as Keras does); validation metrics are
measured at the end of the epoch.

Calling a metric on one batch gives its value there: ``mae(prediction, target)``.

``accuracy`` reads class scores:

* integer labels with one label per row of ``K > 1`` scores: the fraction
  of rows whose largest score is the label's (argmax; logits, log-
  probabilities and probabilities give the same answer);
* targets of the scores' shape (binary, 0/1): the fraction of elements
  where ``score > 0.5`` agrees with ``target > 0.5``; with ``logits=True``
  the threshold is 0 on the logits (probability 0.5).  ``fit`` passes
  logits, so thresholds at 0, when the loss reads logits
  (``binary_cross_entropy``), and the model's outputs otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Metric", "MAE", "RMSE", "Accuracy", "TopKAccuracy", "mae", "rmse", "accuracy", "top_k_accuracy", "get_metric", "METRICS"]


class Metric:
    """A metric computed from sums over batches.

    Subclasses define :meth:`totals` (the sums for one batch, as a float
    array) and :meth:`result` (the metric from the summed totals).
    ``targets`` names what the metric needs: ``"real"`` targets of the
    prediction's shape, ``"labels"`` (integer class labels), or ``"any"``.
    """

    name = "metric"
    targets = "any"

    def totals(self, prediction: np.ndarray, target: np.ndarray, *, logits: bool = False) -> np.ndarray:
        """The sums one batch adds (e.g. ``[sum of |p - y|, count]``); ``logits``: the scores are logits."""
        raise NotImplementedError

    def result(self, totals: np.ndarray) -> float:
        """The metric from its totals (NaN when they count nothing)."""
        total, count = totals
        return float(total / count) if count else float("nan")

    def __call__(self, prediction: Any, target: Any, *, logits: bool = False) -> float:
        """The metric on one batch."""
        return self.result(self.totals(np.asarray(prediction), np.asarray(target), logits=logits))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _same_shape(name: str, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    if target.shape != prediction.shape:
        raise ValueError(f"{name} compares predictions with targets of their shape {prediction.shape}; got {target.shape}")
    return np.asarray(target, dtype=np.float64)


class MAE(Metric):
    """Mean absolute error over every element: ``sum |p - y| / count``."""

    name = "mae"
    targets = "real"

    def totals(self, prediction: np.ndarray, target: np.ndarray, *, logits: bool = False) -> np.ndarray:
        target = _same_shape(self.name, prediction, target)
        return np.array([np.sum(np.abs(prediction - target), dtype=np.float64), prediction.size])


class RMSE(Metric):
    """Root mean squared error over every element: ``sqrt(sum (p - y)² / count)``."""

    name = "rmse"
    targets = "real"

    def totals(self, prediction: np.ndarray, target: np.ndarray, *, logits: bool = False) -> np.ndarray:
        target = _same_shape(self.name, prediction, target)
        diff = prediction - target
        return np.array([np.sum(diff * diff, dtype=np.float64), prediction.size])

    def result(self, totals: np.ndarray) -> float:
        return float(np.sqrt(super().result(totals)))


def _labels(name: str, scores: np.ndarray, target: np.ndarray) -> bool:
    """True for integer labels, one per row of scores; False for targets of the scores' shape; refuses the rest."""
    if target.dtype.kind in "iu" and target.shape == scores.shape[:-1]:
        return True
    if target.shape == scores.shape:
        return False
    raise ValueError(f"{name} needs integer labels of shape {scores.shape[:-1]} or 0/1 targets of the scores' shape "
                     f"{scores.shape}; got {target.dtype} {target.shape}")


class Accuracy(Metric):
    """The fraction of correct predictions: argmax for class labels, a threshold for binary targets (see the module)."""

    name = "accuracy"

    def totals(self, prediction: np.ndarray, target: np.ndarray, *, logits: bool = False) -> np.ndarray:
        if _labels(self.name, prediction, target):
            correct = np.argmax(prediction, axis=-1) == target
        else:
            correct = (prediction > (0.0 if logits else 0.5)) == (target > 0.5)
        return np.array([np.count_nonzero(correct), correct.size], dtype=np.float64)


class TopKAccuracy(Metric):
    """The fraction of rows whose label is among the ``k`` largest scores (ties broken by the lower class)."""

    targets = "labels"

    def __init__(self, k: int = 5) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1; got {k!r}")
        self.k = int(k)
        self.name = f"top_{self.k}_accuracy"

    def totals(self, prediction: np.ndarray, target: np.ndarray, *, logits: bool = False) -> np.ndarray:
        if not _labels(self.name, prediction, target):
            raise ValueError(f"{self.name} needs integer class labels of shape {prediction.shape[:-1]}; got {target.shape}")
        if target.size and (target.min() < 0 or target.max() >= prediction.shape[-1]):
            raise ValueError(f"{self.name}: labels must lie in [0, {prediction.shape[-1]})")
        mine = np.take_along_axis(prediction, target[..., None], axis=-1)
        # classes scoring above the label's, and equal ones of lower index, come before it
        classes = np.arange(prediction.shape[-1])
        ahead = (prediction > mine) | ((prediction == mine) & (classes < target[..., None]))
        correct = ahead.sum(axis=-1) < self.k
        return np.array([np.count_nonzero(correct), correct.size], dtype=np.float64)

    def __repr__(self) -> str:
        return f"TopKAccuracy(k={self.k})"


mae = MAE()
rmse = RMSE()
accuracy = Accuracy()


def top_k_accuracy(k: int = 5) -> TopKAccuracy:
    """The metric "label among the ``k`` highest scores", named ``top_{k}_accuracy``."""
    return TopKAccuracy(k)


#: Metrics known by name.
METRICS: dict[str, Metric] = {"mae": mae, "rmse": rmse, "accuracy": accuracy}


def get_metric(metric: Any) -> Metric:
    """A :class:`Metric` from a name in :data:`METRICS` or a Metric."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]
    raise ValueError(f"a metric must be one of {sorted(METRICS)}, top_k_accuracy(k), or a Metric; got {metric!r}")
