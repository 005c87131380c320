"""The losses (issue 19): hand-derived values, torch.nn.functional parity (values and autograd gradients), weights, user losses."""

import math

import numpy as np
import pytest

from nplstm.losses import (
    LOSSES,
    MAE,
    MSE,
    BinaryCrossEntropy,
    CrossEntropy,
    Huber,
    UserLoss,
    binary_cross_entropy,
    cross_entropy,
    get_loss,
    huber,
    mae,
    mse,
    softmax_cross_entropy,
)

from gradcheck import numeric_gradient, rel_error


# ------------------------------------------------------------ by hand
def test_mae_by_hand():
    value, grad = mae(np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[1.0, 0.0], [3.0, 2.0]]))
    assert value == pytest.approx((0 + 2 + 0 + 3) / 4)
    np.testing.assert_allclose(grad, [[0, 0.25], [0, 0.25]])  # sign(diff)/4, 0 where equal (as torch)


def test_huber_by_hand():
    # diffs 0.5, -2, 1, 3 with delta 1: 0.125, 1·(2 - 0.5), 0.5 (|d| = delta is quadratic), 1·(3 - 0.5)
    value, grad = huber(np.array([0.5, -2.0, 1.0, 3.0]), np.zeros(4))
    assert value == pytest.approx((0.125 + 1.5 + 0.5 + 2.5) / 4)
    np.testing.assert_allclose(grad, np.array([0.5, -1.0, 1.0, 1.0]) / 4)
    value, _ = huber(np.array([3.0]), np.zeros(1), delta=2.0)
    assert value == pytest.approx(2 * (3 - 1))
    with pytest.raises(ValueError, match="delta must be a positive finite number; got 0"):
        Huber(0)


def test_binary_cross_entropy_by_hand_and_stable():
    value, grad = binary_cross_entropy(np.array([0.0]), np.array([1.0]))
    assert value == pytest.approx(math.log(2)) and grad[0] == pytest.approx(-0.5)  # sigmoid(0) - 1
    value, grad = binary_cross_entropy(np.array([1000.0, -1000.0]), np.array([0.0, 0.0]))
    assert value == pytest.approx(1000 / 2) and np.isfinite(grad).all()  # log(1 + e^1000) = 1000, log(1 + e^-1000) = 0
    np.testing.assert_allclose(grad, [0.5, 0.0])
    value, _ = binary_cross_entropy(np.array([math.log(3)]), np.array([0.25]))  # p = 3/4
    assert value == pytest.approx(-(0.25 * math.log(0.75) + 0.75 * math.log(0.25)))
    with pytest.raises(ValueError, match=r"targets in \[0, 1\]; got values from 0.0 to 2.0"):
        binary_cross_entropy(np.zeros(2), np.array([0.0, 2.0]))


def test_label_smoothing_by_hand():
    # two equal logits: p = (1/2, 1/2), so -Σ q log p = log 2 for any q; the gradient p - q with q = (0.9, 0.1)
    value, grad = cross_entropy(np.zeros((1, 2)), np.array([0]), label_smoothing=0.2)
    assert value == pytest.approx(math.log(2))
    np.testing.assert_allclose(grad, [[-0.4, 0.4]])
    # p = (1/4, 3/4), label 1, ε = 0.5: q = (0.25, 0.75), loss -(0.25 log 1/4 + 0.75 log 3/4), gradient 0
    value, grad = cross_entropy(np.array([[0.0, math.log(3)]]), np.array([1]), label_smoothing=0.5)
    assert value == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    np.testing.assert_allclose(grad, 0, atol=1e-15)


def test_class_weights_by_hand():
    logits = np.array([[0.0, math.log(3)], [0.0, 0.0]])  # p = (1/4, 3/4) and (1/2, 1/2)
    labels = np.array([0, 1])  # -log p: log 4 and log 2
    value, _ = cross_entropy(logits, labels, weight=[1.0, 3.0])
    assert value == pytest.approx((1 * math.log(4) + 3 * math.log(2)) / (1 + 3))  # torch's weighted mean
    assert cross_entropy(logits, labels, weight={1: 3.0})[0] == pytest.approx(value)  # a mapping: others weigh 1


def test_sample_weights_make_a_weighted_mean_by_hand():
    value, grad = mse(np.array([[1.0], [3.0]]), np.zeros((2, 1)), sample_weight=[1.0, 3.0])
    assert value == pytest.approx((1 * 1 + 3 * 9) / 4)
    np.testing.assert_allclose(grad, [[1 * 2 * 1 / 4], [3 * 2 * 3 / 4]])
    # per-row weights over (N, T, O): each of a row's T·O elements carries its weight
    value, _ = mse(np.array([[[1.0], [1.0]], [[2.0], [0.0]]]), np.zeros((2, 2, 1)), sample_weight=[3.0, 1.0])
    assert value == pytest.approx((3 * (1 + 1) + 1 * (4 + 0)) / (3 * 2 + 1 * 2))
    assert mse(np.ones((2, 1)), np.zeros((2, 1)), sample_weight=[0.0, 0.0]) == (0.0, pytest.approx(np.zeros((2, 1))))
    with pytest.raises(ValueError, match=r"sample_weight must have the shape of the prediction's leading axes \(2,\)"):
        mse(np.ones((2, 1)), np.zeros((2, 1)), sample_weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
        mse(np.ones((2, 1)), np.zeros((2, 1)), sample_weight=[1.0, -2.0])


def test_the_former_names_keep_working():
    assert set(LOSSES) >= {"mse", "cross_entropy"}
    logits, labels = np.array([[1.0, 2.0, 3.0]]), np.array([2])
    assert softmax_cross_entropy(logits, labels)[0] == LOSSES["cross_entropy"](logits, labels)[0] == cross_entropy(logits, labels)[0]
    assert get_loss("huber").delta == 1.0 and isinstance(get_loss(Huber(2)), Huber)
    with pytest.raises(ValueError, match=r"loss must be one of \['binary_cross_entropy', 'cross_entropy', 'huber', 'mae', 'mse'\]"):
        get_loss("hinge")


# ------------------------------------------------------- torch parity
torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_value_and_grad(fn, prediction, target, **kwargs):
    p = torch.tensor(prediction, requires_grad=True)
    value = fn(p, torch.tensor(target), **kwargs)
    value.backward()
    return value.item(), p.grad.numpy()


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (MSE(), F.mse_loss, {}),
    (MAE(), F.l1_loss, {}),
    (Huber(), F.huber_loss, {"delta": 1.0}),
    (Huber(0.3), F.huber_loss, {"delta": 0.3}),
])
def test_regression_losses_equal_torch(ours, theirs, kwargs, rng):
    prediction, target = rng.normal(size=(7, 3, 2)), rng.normal(size=(7, 3, 2))
    value, grad = ours(prediction, target)
    expected, expected_grad = _torch_value_and_grad(theirs, prediction, target, **kwargs)
    assert value == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)


def test_binary_cross_entropy_equals_torch(rng):
    logits = rng.normal(scale=5, size=(9, 3))
    target = rng.uniform(size=(9, 3))
    value, grad = BinaryCrossEntropy()(logits, target)
    expected, expected_grad = _torch_value_and_grad(F.binary_cross_entropy_with_logits, logits, target)
    assert value == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.6])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_equals_torch(smoothing, weighted, rng):
    logits = rng.normal(scale=3, size=(11, 5))
    labels = rng.integers(0, 5, size=11)
    weight = rng.uniform(0.2, 3.0, size=5) if weighted else None
    value, grad = CrossEntropy(smoothing, weight)(logits, labels)
    p = torch.tensor(logits, requires_grad=True)
    expected = F.cross_entropy(p, torch.tensor(labels), label_smoothing=smoothing,
                               weight=None if weight is None else torch.tensor(weight))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-13)
    np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-11, atol=1e-15)


def test_cross_entropy_over_steps_equals_torch_and_finite_differences(rng):
    logits = rng.normal(size=(3, 4, 6))  # (N, T, K): torch wants the classes on axis 1
    labels = rng.integers(0, 6, size=(3, 4))
    loss = CrossEntropy(0.2, rng.uniform(0.5, 2.0, size=6))
    value, grad = loss(logits, labels)
    p = torch.tensor(logits, requires_grad=True)
    expected = F.cross_entropy(p.permute(0, 2, 1), torch.tensor(labels), label_smoothing=0.2, weight=torch.tensor(loss.weight))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-13)
    np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-11, atol=1e-15)
    assert rel_error(grad, numeric_gradient(lambda: loss(logits, labels)[0], logits)) < 1e-8


def test_sample_weights_equal_torch_class_weights_on_the_labels(rng):
    """A sample weight w[y_i] per row is torch's class weight w: the same weighted mean."""
    logits, labels = rng.normal(size=(8, 3)), rng.integers(0, 3, size=8)
    w = np.array([0.5, 2.0, 1.5])
    value, grad = cross_entropy(logits, labels, sample_weight=w[labels])
    expected, expected_grad = _torch_value_and_grad(F.cross_entropy, logits, labels, weight=torch.tensor(w))
    assert value == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------- user losses
def test_a_user_loss_is_checked():
    def half_mse(p, y):
        return float(np.mean((p - y) ** 2)) / 2, (p - y) / p.size

    value, grad = UserLoss(half_mse)(np.array([[2.0]]), np.array([[0.0]]))
    assert value == 2.0 and grad.tolist() == [[2.0]]
    assert isinstance(get_loss(half_mse), UserLoss)
    p, y = np.ones((2, 3)), np.zeros((2, 3))
    def wrong_shape(p, y):
        return 1.0, np.ones(3)

    with pytest.raises(ValueError, match=r"'wrong_shape' returned a gradient of shape \(3,\); it must have the prediction's shape \(2, 3\)"):
        UserLoss(wrong_shape)(p, y)

    def not_finite(p, y):
        return float("nan"), np.zeros_like(p)

    with pytest.raises(FloatingPointError, match="'not_finite' returned a non-finite loss or gradient"):
        UserLoss(not_finite)(p, y)

    def only_a_value(p, y):
        return 1.0

    with pytest.raises(TypeError, match=r"'only_a_value' must return \(loss, gradient w.r.t. the prediction\); got float"):
        UserLoss(only_a_value)(p, y)

    def vector_loss(p, y):
        return np.ones(2), np.zeros_like(p)

    with pytest.raises(TypeError, match="'vector_loss' must return a real scalar loss"):
        UserLoss(vector_loss)(p, y)
    with pytest.raises(ValueError, match="takes no sample_weight"):
        UserLoss(half_mse)(p, y, sample_weight=[1.0, 1.0])
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss(3)
