"""Backpropagation through time: finite differences and torch autograd."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nplstm import LSTM

from gradcheck import numeric_gradient, rel_error
from reference import load_into, random_weights

pytestmark = pytest.mark.usefixtures("each_backend")  # both step-loop paths, see conftest


def loss_of(lstm, x, h0, c0, weights):
    """A scalar loss touching every output: Σ w_o·outputs + Σ w_h·h_T + Σ w_c·c_T."""
    outputs, h, c = lstm.forward(x, h0, c0)
    return float(np.sum(weights[0] * outputs) + np.sum(weights[1] * h) + np.sum(weights[2] * c))


def check_gradients(lstm, x, h0, c0, rng, tol=1e-6):
    outputs, h, c = lstm.forward(x, h0, c0, train=True)
    weights = (rng.normal(size=outputs.shape), rng.normal(size=h.shape), rng.normal(size=c.shape))
    grads = lstm.backward(*weights)
    f = lambda: loss_of(lstm, x, h0, c0, weights)  # noqa: E731
    for name in lstm.parameter_names():
        param = getattr(lstm, name)  # a view: editing it edits the model
        assert grads[name].shape == param.shape
        assert rel_error(grads[name], numeric_gradient(f, param)) < tol, name
    for name, array in (("x", x), ("h_0", h0), ("c_0", c0)):
        assert grads[name].shape == array.shape, name
        assert rel_error(grads[name], numeric_gradient(f, array)) < tol, name


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 5),
    B=st.integers(1, 3),
    I=st.integers(1, 3),
    H=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_gradients_match_finite_differences_batched(T, B, I, H, seed):
    rng = np.random.default_rng(seed)
    lstm = load_into(LSTM(I, H), random_weights(rng, I, H))
    check_gradients(lstm, rng.normal(size=(T, B, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H)), rng)


@pytest.mark.parametrize("convention", ["column", "vector", "scalar_steps", "batch_first"])
def test_gradients_for_every_shape_convention(convention, rng):
    T, I, H, B = 4, 2, 3, 2
    if convention == "scalar_steps":
        I = 1
    lstm = load_into(LSTM(I, H, batch_first=convention == "batch_first"), random_weights(rng, I, H))
    if convention == "column":
        x, h0, c0 = rng.normal(size=(T, I)), rng.normal(size=(H, 1)), rng.normal(size=(H, 1))
    elif convention == "vector":
        x, h0, c0 = rng.normal(size=(T, I)), rng.normal(size=H), rng.normal(size=H)
    elif convention == "scalar_steps":
        x, h0, c0 = rng.normal(size=T), rng.normal(size=H), rng.normal(size=H)
    else:
        x, h0, c0 = rng.normal(size=(B, T, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    check_gradients(lstm, x, h0, c0, rng)


def test_gradients_with_projection(rng):
    lstm = LSTM(2, 4, seed=1, proj_size=2)
    lstm.bf = rng.normal(size=4)
    check_gradients(lstm, rng.normal(size=(5, 2, 2)), rng.normal(size=(2, 2)), rng.normal(size=(2, 4)), rng)


def test_omitted_output_gradients_are_zero(rng):
    lstm = LSTM(2, 3, seed=0)
    x = rng.normal(size=(4, 2))
    _, h, _ = lstm.forward(x, train=True)
    only_h = lstm.backward(None, np.ones_like(h))
    outputs, _, _ = lstm.forward(x, train=True)
    d_out = np.zeros_like(outputs)
    d_out[-1] = 1.0  # the last output is final_h
    via_outputs = lstm.backward(d_out)
    for name in lstm.parameter_names() + ["x", "h_0", "c_0"]:
        np.testing.assert_allclose(only_h[name], via_outputs[name], rtol=1e-13, atol=1e-15)


def test_backward_errors():
    lstm = LSTM(2, 3, seed=0)
    with pytest.raises(RuntimeError, match=r"forward\(..., train=True\)"):
        lstm.backward(np.zeros((4, 3)))
    outputs, _, _ = lstm.forward(np.zeros((4, 2)), train=True)
    with pytest.raises(ValueError, match=r"d_outputs must have the shape forward returned, \(4, 3\); got \(4, 2\)"):
        lstm.backward(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"d_c_n .* \(3,\); got \(3, 1\)"):
        lstm.backward(None, None, np.zeros((3, 1)))


def test_inference_forward_never_disturbs_the_training_tape(rng):
    lstm = LSTM(2, 3, seed=0)
    x, w = rng.normal(size=(4, 2)), rng.normal(size=(4, 3))
    lstm.forward(x, train=True)
    expected = lstm.backward(w)
    lstm.forward(x, train=True)
    lstm.forward(rng.normal(size=(7, 2)))  # inference in between
    again = lstm.backward(w)
    for name, value in expected.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)


def test_two_tapes_give_each_their_own_gradients(rng):
    lstm = LSTM(2, 3, seed=0)
    xa, xb = rng.normal(size=(4, 2)), rng.normal(size=(6, 2))
    out_a, _, _, tape_a = lstm.forward_train(xa)
    out_b, _, _, tape_b = lstm.forward_train(xb)
    ga = lstm.backward(np.ones_like(out_a), tape=tape_a)
    gb = lstm.backward(np.ones_like(out_b), tape=tape_b)
    lstm.forward(xa, train=True)
    alone_a = lstm.backward(np.ones_like(out_a))
    for name in alone_a:
        np.testing.assert_array_equal(ga[name], alone_a[name], err_msg=name)
    assert ga["x"].shape == (4, 2) and gb["x"].shape == (6, 2)
    assert not np.allclose(ga["Wf"], gb["Wf"])
    with pytest.raises(ValueError, match="not recorded by this LSTM"):
        LSTM(2, 3, seed=0).backward(np.ones_like(out_a), tape=tape_a)


def test_gradients_equal_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    T, B, I, H = 9, 3, 4, 5
    torch.manual_seed(3)
    module = torch.nn.LSTM(I, H).double()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.7, 0.7)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, B, H, dtype=torch.float64, requires_grad=True)
    w_out, w_h, w_c = (torch.randn(T, B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    out, (hT, cT) = module(x, (h0, c0))
    ((out * w_out).sum() + (hT[0] * w_h).sum() + (cT[0] * w_c).sum()).backward()

    lstm = LSTM(I, H)
    w_ih, w_hh = module.weight_ih_l0.detach().numpy(), module.weight_hh_l0.detach().numpy()
    bias = (module.bias_ih_l0 + module.bias_hh_l0).detach().numpy()
    gi, gh, gb = module.weight_ih_l0.grad.numpy(), module.weight_hh_l0.grad.numpy(), module.bias_ih_l0.grad.numpy()
    expected = {}
    for k, name in enumerate("ifco"):  # torch's gate order i, f, g, o
        rows = slice(k * H, (k + 1) * H)
        setattr(lstm, f"W{name}", np.hstack([w_hh[rows], w_ih[rows]]))
        setattr(lstm, f"b{name}", bias[rows][:, None])
        expected[f"W{name}"] = np.hstack([gh[rows], gi[rows]])
        expected[f"b{name}"] = gb[rows][:, None]
    lstm.forward(x.detach().numpy(), h0[0].detach().numpy(), c0[0].detach().numpy(), train=True)
    grads = lstm.backward(w_out.numpy(), w_h.numpy(), w_c.numpy())
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(grads["x"], x.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose(grads["h_0"], h0.grad[0].numpy(), atol=1e-9)
    np.testing.assert_allclose(grads["c_0"], c0.grad[0].numpy(), atol=1e-9)
