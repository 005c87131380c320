"""Metrics (issue 19): hand-derived values, exact over whole epochs (not means of batch values), masked steps left out."""

import math

import numpy as np
import pytest

from nplstm import SequenceModel, fit
from nplstm.metrics import METRICS, accuracy, get_metric, mae, rmse, top_k_accuracy
from nplstm.optim import Optimizer
from nplstm.training import evaluate


def test_mae_and_rmse_by_hand():
    p, y = np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[1.0, 0.0], [3.0, 2.0]])
    assert mae(p, y) == pytest.approx((0 + 2 + 0 + 3) / 4)
    assert rmse(p, y) == pytest.approx(math.sqrt((0 + 4 + 0 + 9) / 4))
    with pytest.raises(ValueError, match=r"mae compares predictions with targets of their shape \(2, 2\); got \(2,\)"):
        mae(p, np.zeros(2))


def test_accuracy_by_hand():
    scores = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.2, 0.3], [1.0, 1.0, 0.0]])
    labels = np.array([1, 0, 0, 1])  # argmax 1, 0, 2, 0 (a tie goes to the first): right, right, wrong, wrong
    assert accuracy(scores, labels) == 0.5
    probs, targets = np.array([[0.7], [0.4], [0.51], [0.2]]), np.array([[1.0], [1.0], [0.0], [0.0]])
    assert accuracy(probs, targets) == 0.5  # threshold 0.5: 1, 0, 1, 0 against 1, 1, 0, 0
    logits = np.array([[0.3], [0.1], [-0.2], [-2.0]])
    assert accuracy(logits, targets, logits=True) == 1.0  # threshold 0 on logits: 1, 1, 0, 0
    assert accuracy(logits, targets) == 0.5  # read as probabilities (threshold 0.5), all four say 0
    with pytest.raises(ValueError, match="accuracy needs integer labels of shape"):
        accuracy(scores, np.zeros((4, 2)))


def test_top_k_accuracy_by_hand():
    scores = np.array([[0.1, 0.5, 0.4, 0.0], [0.3, 0.3, 0.3, 0.1], [0.9, 0.05, 0.05, 0.05]])
    labels = np.array([2, 2, 3])
    # the label's rank: row 0, 2nd (after class 1); ties go to lower classes first, so row 1: 3rd; row 2: 4th
    assert top_k_accuracy(1)(scores, labels) == 0.0
    assert top_k_accuracy(2)(scores, labels) == pytest.approx(1 / 3)
    assert top_k_accuracy(3)(scores, labels) == pytest.approx(2 / 3)
    assert top_k_accuracy(4)(scores, labels) == 1.0
    assert top_k_accuracy(5).name == "top_5_accuracy"
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        top_k_accuracy(0)


def test_metrics_are_known_by_name():
    assert get_metric("rmse") is rmse and set(METRICS) == {"mae", "rmse", "accuracy"}
    with pytest.raises(ValueError, match="a metric must be one of"):
        get_metric("f1")


class Frozen(Optimizer):
    """Never changes the weights: a whole epoch sees one model."""

    def __init__(self, params):
        super().__init__(params, lr=1.0)

    def step(self, grads):
        pass


def test_epoch_metrics_are_exact_not_means_of_batch_values():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(10, 4, 2)), rng.normal(size=(10, 1))
    Xv, Yv = rng.normal(size=(7, 4, 2)), 3 * rng.normal(size=(7, 1))
    model = SequenceModel(2, 3, 1, seed=0)
    history = fit(model, X, Y, epochs=2, batch_size=3, optimizer=Frozen(model.parameters()), shuffle=False,
                  validation_data=(Xv, Yv), metrics=["mae", "rmse"], verbose=0)
    p, pv = model.predict(X), model.predict(Xv)
    whole = math.sqrt(np.mean((p - Y) ** 2))
    batch_means = np.mean([math.sqrt(np.mean((p[i:i + 3] - Y[i:i + 3]) ** 2)) for i in range(0, 10, 3)])
    assert abs(whole - batch_means) > 1e-3  # the two differ here: the test can tell them apart
    assert history.metrics["rmse"] == pytest.approx([whole] * 2, rel=1e-12)
    assert history.metrics["mae"] == pytest.approx([np.mean(np.abs(p - Y))] * 2, rel=1e-12)
    assert history.metrics["val_rmse"] == pytest.approx([math.sqrt(np.mean((pv - Yv) ** 2))] * 2, rel=1e-12)
    assert history.loss == pytest.approx([whole**2] * 2, rel=1e-12)  # the epoch's loss is exact too
    assert evaluate(model, Xv, Yv, metrics=["rmse"])["rmse"] == pytest.approx(history.metrics["val_rmse"][0], rel=1e-12)
    assert list(history.history) == ["loss", "val_loss", "mae", "rmse", "val_mae", "val_rmse"]


def test_masked_steps_are_left_out_of_metrics(rng):
    model = SequenceModel(2, 3, 1, many_to_many=True, seed=0)
    seqs = [rng.normal(size=(n, 2)) for n in (4, 2, 3)]
    targets = [rng.normal(size=(n, 1)) for n in (4, 2, 3)]
    alone = [model.predict(s[None])[0] for s in seqs]  # each sequence run by itself
    diffs = np.concatenate([(p - y).ravel() for p, y in zip(alone, targets)])
    got = evaluate(model, seqs, targets, metrics=["mae", "rmse"])
    assert got["mae"] == pytest.approx(np.mean(np.abs(diffs)), rel=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(np.mean(diffs**2)), rel=1e-12)
    assert got["loss"] == pytest.approx(np.mean(diffs**2), rel=1e-12)


def test_classification_metrics_in_fit(rng):
    X = rng.normal(size=(12, 3, 2))
    labels = rng.integers(0, 4, size=12)
    model = SequenceModel(2, 3, 4, activation="softmax", seed=0)
    history = fit(model, X, labels, loss="cross_entropy", epochs=1, batch_size=5, optimizer=Frozen(model.parameters()),
                  metrics=["accuracy", top_k_accuracy(2)], verbose=0)
    scores = model.predict(X)
    assert history.metrics["accuracy"] == [np.mean(scores.argmax(axis=1) == labels)]
    second = np.argsort(-scores, axis=1, kind="stable")[:, :2]
    assert history.metrics["top_2_accuracy"] == [np.mean((second == labels[:, None]).any(axis=1))]
    with pytest.raises(ValueError, match="the metric mae compares real predictions with targets; cross_entropy has class labels"):
        fit(model, X, labels, loss="cross_entropy", metrics=["mae"], verbose=0)


def test_binary_accuracy_in_fit_thresholds_logits_at_zero(rng):
    X = rng.normal(size=(16, 3, 2))
    Y = (rng.uniform(size=16) > 0.5).astype(float)
    model = SequenceModel(2, 3, 1, activation="sigmoid", seed=3)
    history = fit(model, X, Y, loss="binary_cross_entropy", epochs=1, batch_size=16, optimizer=Frozen(model.parameters()),
                  metrics=["accuracy"], verbose=0)
    probs = model.predict(X)[:, 0]
    assert history.metrics["accuracy"] == [np.mean((probs > 0.5) == (Y > 0.5))]
