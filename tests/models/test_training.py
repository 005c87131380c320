"""Losses, optimizers, the dense head, the sequence model, fit and truncated BPTT."""

import math

import numpy as np
import pytest
from training_support import FakeTerminal

from nplstm.head import Linear
from nplstm.losses import mse, softmax_cross_entropy
from nplstm.model import SequenceModel
from nplstm.optim import SGD, Adam, Optimizer, clip_grad_norm
from nplstm.training import History, fit, truncated_bptt

from gradcheck import numeric_gradient, rel_error


# ------------------------------------------------------------------ losses
def test_mse_value_and_gradient():
    value, grad = mse(np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[1.0, 0.0], [3.0, 2.0]]))
    assert value == pytest.approx((0 + 4 + 0 + 9) / 4)
    np.testing.assert_allclose(grad, [[0, 1.0], [0, 1.5]])  # 2·diff/4
    with pytest.raises(ValueError, match=r"target must have the prediction's shape \(2,\); got \(3,\)"):
        mse(np.zeros(2), np.zeros(3))


def test_cross_entropy_by_hand_and_finite_differences(rng):
    logits = np.array([[1.0, 2.0, 3.0]])
    value, grad = softmax_cross_entropy(logits, np.array([0]))
    p = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    assert value == pytest.approx(-math.log(p[0]))
    np.testing.assert_allclose(grad[0], p - [1, 0, 0])
    logits = rng.normal(size=(2, 3, 5))
    labels = rng.integers(0, 5, size=(2, 3))
    _, grad = softmax_cross_entropy(logits, labels)
    numeric = numeric_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    assert rel_error(grad, numeric) < 1e-7


def test_cross_entropy_is_stable_and_checks_labels():
    value, grad = softmax_cross_entropy(np.array([[1e300, -1e300, 0.0]]), np.array([0]))
    assert value == 0.0 and np.isfinite(grad).all()
    value, _ = softmax_cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))
    assert value == pytest.approx(1000.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\); got values from 0 to 3"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="labels must be integers"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


# -------------------------------------------------------------- optimizers
def test_sgd_with_momentum_by_hand():
    p = {"w": np.array([1.0, -1.0])}
    opt = SGD(p, lr=0.1, momentum=0.9)
    opt.step({"w": np.array([1.0, 2.0])})
    np.testing.assert_allclose(p["w"], [0.9, -1.2])
    opt.step({"w": np.array([1.0, 2.0])})  # v = 0.9·g + g = 1.9 g
    np.testing.assert_allclose(p["w"], [0.9 - 0.19, -1.2 - 0.38])


def test_adam_first_steps_by_hand():
    p = {"w": np.array([0.0, 0.0])}
    opt = Adam(p, lr=0.01, eps=0.0)
    opt.step({"w": np.array([3.0, -0.5])})
    np.testing.assert_allclose(p["w"], [-0.01, 0.01])  # the first bias-corrected step is lr·sign(g)
    opt.step({"w": np.array([1.0, -0.5])})
    m = 0.9 * 0.1 * 3 + 0.1 * 1
    v = 0.999 * 0.001 * 9 + 0.001 * 1
    step = 0.01 * (m / (1 - 0.81)) / math.sqrt(v / (1 - 0.999**2))
    assert p["w"][0] == pytest.approx(-0.01 - step)


def test_optimizer_checks():
    p = {"w": np.zeros(2)}
    for lr in (0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="lr must be a positive finite number"):
            SGD(p, lr=lr)
    with pytest.raises(ValueError, match=r"gradient of w has shape \(3,\); expected \(2,\)"):
        SGD(p).step({"w": np.zeros(3)})
    with pytest.raises(KeyError, match="no gradient for parameter 'w'"):
        Adam(p).step({})


def test_clip_grad_norm():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [0.6])
    np.testing.assert_allclose(grads["b"], [[0.8]])
    assert clip_grad_norm(grads, 10.0) == pytest.approx(1.0)
    np.testing.assert_allclose(grads["a"], [0.6])


# ----------------------------------------------------------- head + model
def test_linear_gradients(rng):
    head = Linear(4, 3, seed=0)
    head.b[:] = rng.normal(size=3)
    h = rng.normal(size=(2, 5, 4))
    w = rng.normal(size=(2, 5, 3))
    f = lambda: float(np.sum(w * head.forward(h)))  # noqa: E731
    grads, dh = head.backward(h, w)
    assert rel_error(grads["W"], numeric_gradient(f, head.W)) < 1e-8
    assert rel_error(grads["b"], numeric_gradient(f, head.b)) < 1e-8
    assert rel_error(dh, numeric_gradient(f, h)) < 1e-8


@pytest.mark.parametrize("many_to_many", [False, True])
@pytest.mark.parametrize("stack", [{}, {"num_layers": 2, "bidirectional": True, "proj_size": 2}])
def test_sequence_model_gradients(many_to_many, stack, rng):
    model = SequenceModel(2, 3, 2, many_to_many=many_to_many, seed=1, **stack)
    for p in model.parameters().values():  # gradients well above finite-difference noise
        p[...] = rng.normal(scale=0.8, size=p.shape)
    x = rng.normal(size=(2, 4, 2))
    pred, _, tape = model.forward_train(x)
    target = rng.normal(size=pred.shape)
    _, d_pred = mse(pred, target)
    grads = model.backward(tape, d_pred)
    assert list(grads) == list(model.parameters()) + ["x", "h_0", "c_0"]
    f = lambda: mse(model.predict(x), target)[0]  # noqa: E731
    for name, param in model.parameters().items():
        assert rel_error(grads[name], numeric_gradient(f, param)) < 1e-6, name


def test_fit_reduces_loss_and_reports_history(capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6, 2))
    Y = X.sum(axis=(1, 2))[:, None] * 0.1  # a learnable linear target
    model = SequenceModel(2, 8, 1, seed=0)
    history = fit(model, X, Y, epochs=25, batch_size=16, validation_split=0.25, seed=0,
                  optimizer=Adam(model.parameters(), lr=1e-2), clip_norm=1.0)  # fit's defaults before issue 19
    assert isinstance(history, History)
    assert len(history.loss) == len(history.val_loss) == 25
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert capsys.readouterr().err == ""  # not a terminal: no progress bar


def test_early_stopping_restores_best_weights():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 5, 1)), rng.normal(size=(40, 1))  # pure noise: validation soon worsens
    Xv, Yv = rng.normal(size=(20, 5, 1)), rng.normal(size=(20, 1))
    model = SequenceModel(1, 16, 1, seed=0)
    history = fit(model, X, Y, epochs=200, batch_size=8, validation_data=(Xv, Yv), early_stopping=3,
                  optimizer=Adam(model.parameters(), lr=0.05), progress=False)
    assert history.stopped_early and len(history.val_loss) < 200
    assert len(history.val_loss) == history.best_epoch + 1 + 3
    from nplstm.training import evaluate
    assert evaluate(model, Xv, Yv) == pytest.approx(min(history.val_loss), rel=1e-12)


def test_fit_argument_errors():
    model = SequenceModel(1, 2, 1, seed=0)
    with pytest.raises(ValueError, match="same number of sequences; got 3 and 2"):
        fit(model, np.zeros((3, 2, 1)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="loss must be one of"):
        fit(model, np.zeros((3, 2, 1)), np.zeros((3, 1)), loss="hinge")
    with pytest.raises(ValueError, match="early_stopping needs validation"):
        fit(model, np.zeros((3, 2, 1)), np.zeros((3, 1)), early_stopping=2)
    with pytest.raises(ValueError, match=r"x must be a batch \(B, T, I\) with I = 1; got shape \(2, 1\)"):
        model.forward(np.zeros((2, 1)))


class RecordingOptimizer(Optimizer):
    """Keeps the gradients it is given and changes nothing."""

    def __init__(self, params):
        super().__init__(params, lr=1.0)
        self.seen = []

    def step(self, grads):
        self.seen.append({k: grads[k].copy() for k in self.params})


def test_truncated_bptt_stops_gradients_at_the_window_edge(rng):
    model = SequenceModel(2, 3, 2, many_to_many=True, seed=4)
    x, y = rng.normal(size=(2, 8, 2)), rng.normal(size=(2, 8, 2))
    opt = RecordingOptimizer(model.parameters())
    losses = truncated_bptt(model, x, y, window=5, optimizer=opt, clip_norm=None)
    assert len(losses) == 2 and len(opt.seen) == 2  # windows of 5 and 3 steps
    _, state = model.forward(x[:, :5])
    carried = tuple(s.copy() for s in state)  # the second window starts here, as a constant

    def second_window_loss():
        return mse(model.forward(x[:, 5:], carried)[0], y[:, 5:])[0]

    assert losses[1] == pytest.approx(second_window_loss(), rel=1e-12)
    for name, param in model.parameters().items():
        assert rel_error(opt.seen[1][name], numeric_gradient(second_window_loss, param)) < 1e-6, name


def test_truncated_bptt_with_a_full_window_is_full_bptt(rng):
    model = SequenceModel(2, 3, 2, many_to_many=True, seed=4)
    x, y = rng.normal(size=(2, 6, 2)), rng.normal(size=(2, 6, 2))
    opt = RecordingOptimizer(model.parameters())
    truncated_bptt(model, x, y, window=6, optimizer=opt, clip_norm=None)
    full = lambda: mse(model.predict(x), y)[0]  # noqa: E731
    for name, param in model.parameters().items():
        assert rel_error(opt.seen[0][name], numeric_gradient(full, param)) < 1e-6, name


def test_progress_bar_on_a_terminal_only(monkeypatch):
    pytest.importorskip("tqdm")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 4, 1)), rng.normal(size=(20, 1))
    fake = FakeTerminal()
    monkeypatch.setattr("sys.stderr", fake)
    fit(SequenceModel(1, 3, 1, seed=0), X, Y, epochs=2, batch_size=10, progress=True)
    shown = "".join(fake.text)
    assert "epoch 2" in shown and "loss=" in shown and "4/4" in shown
    fake.text.clear()
    fit(SequenceModel(1, 3, 1, seed=0), X, Y, epochs=2, batch_size=10, progress=False)
    assert "".join(fake.text) == ""


def test_many_to_many_loss_counts_only_valid_steps(rng):
    """A per-step loss on padded sequences: equal to the loss over each sequence's own steps, by hand."""
    from nplstm.training import _as_dataset, _loss

    model = SequenceModel(2, 3, 1, many_to_many=True, seed=0)
    seqs = [rng.normal(size=(n, 2)) for n in (4, 2, 3)]
    targets = [rng.normal(size=(n, 1)) for n in (4, 2, 3)]
    data = _as_dataset(model, seqs, targets)
    assert data.X.shape == (3, 4, 2) and data.lengths.tolist() == [4, 2, 3]
    prediction = model.predict(data.X, lengths=data.lengths)
    value, grad = _loss(model, "mse", prediction, data)
    alone = [model.predict(s[None])[0] for s in seqs]  # each sequence run by itself
    diffs = np.concatenate([(p - y).ravel() for p, y in zip(alone, targets)])
    assert value == pytest.approx(np.mean(diffs**2), rel=1e-12)
    assert np.all(grad[1, 2:] == 0) and np.all(grad[2, 3:] == 0)
    history = fit(model, seqs, targets, epochs=2, batch_size=2, progress=False)
    assert len(history.loss) == 2 and np.isfinite(history.loss).all()
