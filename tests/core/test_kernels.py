"""The compiled engine (nplstm.kernels) against independent references.

References: a float64 NumPy transcription of the equations written here (with
variable lengths and the LSTMP projection), the NumPy step of
:func:`nplstm.cell.step_`, and torch (nn.LSTM with packed sequences,
autograd for the backward pass).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nplstm import kernels
from nplstm.cell import step_

needs_numba = pytest.mark.skipif(not kernels.available(), reason="numba/scipy are not installed")


# ----------------------------------------------------------------- references
def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_forward(proj, W_hT, h0, c0, W_hrT=None, batch_sizes=None, limit=350.0):
    """float64 forward, time-major; returns outputs, tape, h, c."""
    proj, W_hT = proj.astype(np.float64), W_hT.astype(np.float64)
    W_hrT = None if W_hrT is None else W_hrT.astype(np.float64)
    h, c = h0.astype(np.float64).copy(), c0.astype(np.float64).copy()
    T, B, H4 = proj.shape
    H, P = H4 // 4, W_hT.shape[0]
    out = np.zeros((T, B, P))
    tape = SimpleNamespace(gates=np.zeros((T, B, H4)), c=np.zeros((T, B, H)), h=np.zeros((T, B, P)), h_full=np.zeros((T, B, H)))
    for t in range(T):
        n = B if batch_sizes is None else int(batch_sizes[t])
        a = np.clip(proj[t, :n] + h[:n] @ W_hT, -limit, limit)
        f, i, o, g = _sigmoid(a[:, :H]), _sigmoid(a[:, H : 2 * H]), _sigmoid(a[:, 2 * H : 3 * H]), np.tanh(a[:, 3 * H :])
        c[:n] = f * c[:n] + i * g
        h_full = o * np.tanh(c[:n])
        h[:n] = h_full if W_hrT is None else h_full @ W_hrT
        out[t, :n] = h[:n]
        tape.gates[t, :n] = np.concatenate([f, i, o, g], axis=1)
        tape.c[t, :n], tape.h[t, :n], tape.h_full[t, :n] = c[:n], h[:n], h_full
    return out, tape, h, c


def reference_backward(tape, W_h, W_hr, c0, d_outputs, dh, dc, batch_sizes=None):
    """float64 BPTT of :func:`reference_forward`; returns d_pre, dh0, dc0, dW_hr."""
    T, B, H4 = tape.gates.shape
    H = H4 // 4
    dh, dc = dh.astype(np.float64).copy(), dc.astype(np.float64).copy()
    d_pre = np.zeros((T, B, H4))
    dW_hr = None if W_hr is None else np.zeros(W_hr.shape)
    for t in range(T - 1, -1, -1):
        n = B if batch_sizes is None else int(batch_sizes[t])
        if d_outputs is not None:
            dh[:n] += d_outputs[t, :n]
        if W_hr is not None:
            dW_hr += dh[:n].T @ tape.h_full[t, :n]
            dh_full = dh[:n] @ W_hr
        else:
            dh_full = dh[:n]
        act = tape.gates[t, :n]
        f, i, o, g = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        tanh_c = np.tanh(tape.c[t, :n])
        c_prev = c0[:n] if t == 0 else tape.c[t - 1, :n]
        dc_t = dc[:n] + dh_full * o * (1 - tanh_c**2)
        da = np.concatenate([dc_t * c_prev * f * (1 - f), dc_t * g * i * (1 - i), dh_full * tanh_c * o * (1 - o), dc_t * i * (1 - g * g)], axis=1)
        d_pre[t, :n] = da
        dc[:n] = dc_t * f
        dh[:n] = da @ W_h
    return d_pre, dh, dc, dW_hr


# ------------------------------------------------------------------- helpers
def problem(rng, T, B, H, P, dtype, lengths=False, scale=0.5):
    proj = rng.normal(size=(T, B, 4 * H)).astype(dtype)
    W_hT = (rng.normal(size=(P, 4 * H)) * scale).astype(dtype)
    W_hrT = None if P == H else (rng.normal(size=(H, P)) * scale).astype(dtype)
    h0, c0 = rng.normal(size=(B, P)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)
    batch_sizes = None
    if lengths:
        steps = np.sort(rng.integers(0, T + 1, size=B))[::-1]
        steps[0] = T
        batch_sizes = (steps[None, :] > np.arange(T)[:, None]).sum(axis=1).astype(np.int64)
    return proj, W_hT, W_hrT, h0, c0, batch_sizes


def as_inputs(proj):
    """Inputs x, fused weights W_xᵀ and bias whose projection x W_xᵀ + b is exactly ``proj``.

    x is proj itself and W_xᵀ the identity, split so that no product rounds:
    every pre-activation is one input times 1 plus zeros, in any summation order.
    """
    H4 = proj.shape[2]
    return proj, np.eye(H4, dtype=proj.dtype), np.zeros(H4, proj.dtype)


def new_tape(T, B, H, P, dtype, projection):
    return SimpleNamespace(
        gates=np.full((T, B, 4 * H), np.nan, dtype),
        c=np.full((T, B, H), np.nan, dtype),
        h=np.full((T, B, P), np.nan, dtype),
        h_full=np.full((T, B, H), np.nan, dtype) if projection else None,
    )


def run_fast(proj, W_hT, W_hrT, h0, c0, batch_sizes, *, tape=True, mode="proj"):
    """The engine on these pre-activation inputs: given as projections ("proj"), or as inputs x ("x": B >= 2 folds them into the step)."""
    T, B, H4 = proj.shape
    H, P, dt = H4 // 4, W_hT.shape[0], proj.dtype
    h, c = h0.copy(), c0.copy()
    out = np.full((T, B, P), np.nan, dt)
    tp = new_tape(T, B, H, P, dt, W_hrT is not None) if tape else None
    W_hr = None if W_hrT is None else np.ascontiguousarray(W_hrT.T)
    if mode == "proj":
        kernels.forward(W_hT, np.zeros(H4, dt), W_hr, None, h, c, proj=proj.copy(), outputs=out, tape=tp, batch_sizes=batch_sizes)
    else:
        x, W_xT, b = as_inputs(proj)
        kernels.forward(np.concatenate([W_hT, W_xT]), b, W_hr, x, h, c, outputs=out, tape=tp, batch_sizes=batch_sizes)
    return out, tp, h, c


def run_fast_backward(tape, W_hT, W_hrT, c0, d_out, dh_T, dc_T, batch_sizes):
    T, B, H4 = tape.gates.shape
    dt = tape.gates.dtype
    dh, dc = dh_T.copy(), dc_T.copy()
    d_pre = np.full((T, B, H4), np.nan, dt)
    W_hr = None if W_hrT is None else np.ascontiguousarray(W_hrT.T)
    dW_hr = None if W_hr is None else np.zeros_like(W_hr)
    kernels.backward(tape, W_hT, W_hr, c0, d_out, dh, dc, d_pre, dW_hr=dW_hr, batch_sizes=batch_sizes)
    return d_pre, dh, dc, dW_hr


def rel_err(a, ref):
    """Largest error relative to the reference's scale (values are O(1) by construction)."""
    if np.size(ref) == 0:
        return 0.0
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(1.0, float(np.max(np.abs(ref)))))


@pytest.fixture
def threads(monkeypatch):
    """Set the engine's thread count; with several, split even these small batches (min 2 rows, no minimum work)."""
    before = kernels._threads
    monkeypatch.setattr(kernels, "MIN_ROWS_PER_THREAD", 2)
    monkeypatch.setattr(kernels, "MIN_WORK_PER_THREAD", 1.0)
    monkeypatch.setattr(kernels, "SLICE_MAX_WEIGHTS", float("inf"))
    yield kernels.set_threads
    kernels.set_threads(before)


def test_rows_are_split_over_threads_by_their_active_steps(threads):
    threads(2)
    assert kernels._slices(10, 4, 4, 4, None) == [(0, 2), (2, 4)]
    assert kernels._slices(10, 3, 4, 4, None) == [(0, 3)]  # under 2 rows each
    # rows 0-1 run 10 steps, rows 2-9 one step: 28 row-steps, split 20 | 8
    sizes = np.array([10] + [2] * 9, np.int64)
    assert kernels._slices(10, 10, 4, 4, sizes) == [(0, 2), (2, 10)]
    threads(1)
    assert kernels._slices(10, 10, 4, 4, sizes) == [(0, 10)]


@pytest.fixture(params=["proj", "x"])
def mode(request):
    """Both ways into the engine: precomputed input projections, or the inputs (one row: projected up front; more: folded)."""
    return request.param


@pytest.fixture
def backend():
    before = kernels.get_backend()
    yield kernels.set_backend
    kernels.set_backend(before)


# Shapes: one row, the register tiles' rows and remainders, B >= 4 split over 2 threads by the fixture.
SHAPES = [(1, 1, 1, 1), (5, 3, 4, 4), (7, 9, 5, 5), (6, 20, 8, 3), (9, 33, 16, 16), (4, 2, 6, 2)]


# ------------------------------------------------------------------- forward
@needs_numba
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("T,B,H,P", SHAPES)
def test_forward_matches_float64_reference(T, B, H, P, lengths, n_threads, threads, mode):
    threads(n_threads)
    rng = np.random.default_rng(T * 1000 + B * 10 + H)
    args = problem(rng, T, B, H, P, np.float64, lengths)
    proj, W_hT, W_hrT, h0, c0, bs = args
    ref_out, ref_tape, ref_h, ref_c = reference_forward(proj, W_hT, h0, c0, W_hrT, bs)
    out, tape, h, c = run_fast(proj, W_hT, W_hrT, h0, c0, bs, mode=mode)
    for got, ref in [(out, ref_out), (h, ref_h), (c, ref_c)]:
        assert rel_err(got, ref) <= 1e-12
    active = np.ones((T, B), bool) if bs is None else np.arange(B)[None, :] < bs[:, None]
    assert np.all(out[~active] == 0.0)  # inactive rows: exactly 0
    for name in ("gates", "c", "h") + (("h_full",) if W_hrT is not None else ()):
        assert rel_err(getattr(tape, name)[active], getattr(ref_tape, name)[active]) <= 1e-12, name


@needs_numba
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("T,B,H,P", [(1, 3, 4, 4), (2, 20, 8, 3), (3, 9, 16, 16)])
def test_float32_within_1e6_of_reference_over_few_steps(T, B, H, P, lengths):
    rng = np.random.default_rng(7)
    proj, W_hT, W_hrT, h0, c0, bs = problem(rng, T, B, H, P, np.float32, lengths)
    ref_out, _, ref_h, ref_c = reference_forward(proj, W_hT, h0, c0, W_hrT, bs, limit=40.0)
    out, _, h, c = run_fast(proj, W_hT, W_hrT, h0, c0, bs, tape=False)
    assert out.dtype == np.float32
    for got, ref in [(out, ref_out), (h, ref_h), (c, ref_c)]:
        assert rel_err(got, ref) <= 1e-6


def numpy_path_forward(proj, W_hT, h0, c0):
    """The NumPy step (cell.step_) in the input's precision."""
    T, B, H4 = proj.shape
    h, c = h0.copy(), c0.copy()
    out = np.empty((T, B, H4 // 4), proj.dtype)
    scratch = np.empty_like(c)
    for t in range(T):
        gates = h @ W_hT + proj[t]
        step_(gates, c, h, scratch)
        out[t] = h
    return out, h, c


@needs_numba
def test_float32_long_sequence_as_accurate_as_the_numpy_path():
    """Over 100 steps float32 rounding grows on both paths; the engine's error stays that of the NumPy path."""
    rng = np.random.default_rng(3)
    proj, W_hT, _, h0, c0, _ = problem(rng, 100, 16, 32, 32, np.float32, scale=0.3)
    ref_out, _, _, _ = reference_forward(proj, W_hT, h0, c0, limit=40.0)
    np_out, _, _ = numpy_path_forward(proj, W_hT, h0, c0)
    out, _, _, _ = run_fast(proj, W_hT, None, h0, c0, None, tape=False)
    assert rel_err(out, ref_out) <= max(2 * rel_err(np_out, ref_out), 1e-6)
    assert rel_err(out, np_out) <= 1e-5


@needs_numba
@settings(max_examples=25, deadline=None)
@given(T=st.integers(0, 5), B=st.integers(1, 12), H=st.integers(1, 9), proj_size=st.integers(0, 4), lengths=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_forward_and_backward_property_float64(T, B, H, proj_size, lengths, seed):
    P = H if proj_size == 0 or proj_size >= H else proj_size
    rng = np.random.default_rng(seed)
    proj, W_hT, W_hrT, h0, c0, bs = problem(rng, T, B, H, P, np.float64, lengths and T > 0, scale=1.5)
    ref_out, ref_tape, ref_h, ref_c = reference_forward(proj, W_hT, h0, c0, W_hrT, bs)
    out, tape, h, c = run_fast(proj, W_hT, W_hrT, h0, c0, bs)
    assert rel_err(out, ref_out) <= 1e-12 and rel_err(h, ref_h) <= 1e-12 and rel_err(c, ref_c) <= 1e-12
    d_out, dh_T, dc_T = rng.normal(size=(T, B, P)), rng.normal(size=(B, P)), rng.normal(size=(B, H))
    ref = reference_backward(tape, W_hT.T, None if W_hrT is None else W_hrT.T, c0, d_out, dh_T, dc_T, bs)
    got = run_fast_backward(tape, W_hT, W_hrT, c0, d_out, dh_T, dc_T, bs)
    for g, r in zip(got, ref):
        if r is not None:
            assert rel_err(g, r) <= 1e-12


# ------------------------------------------------------------------ backward
@needs_numba
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("T,B,H,P", SHAPES)
def test_backward_matches_float64_reference(T, B, H, P, lengths, n_threads, dtype, tol, threads, mode):
    threads(n_threads)
    rng = np.random.default_rng(T * 1000 + B * 10 + H + 1)
    proj, W_hT, W_hrT, h0, c0, bs = problem(rng, T, B, H, P, dtype, lengths)
    _, tape, _, _ = run_fast(proj, W_hT, W_hrT, h0, c0, bs, mode=mode)
    d_out = rng.normal(size=(T, B, P)).astype(dtype)
    dh_T, dc_T = rng.normal(size=(B, P)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)
    # the reference differentiates the engine's own (float64-cast) tape, so only the backward is compared
    tape64 = SimpleNamespace(**{k: None if v is None else v.astype(np.float64) for k, v in vars(tape).items()})
    ref = reference_backward(tape64, W_hT.T.astype(np.float64), None if W_hrT is None else W_hrT.T.astype(np.float64), c0.astype(np.float64), d_out, dh_T, dc_T, bs)
    got = run_fast_backward(tape, W_hT, W_hrT, c0, d_out, dh_T, dc_T, bs)
    names = ("d_pre", "dh0", "dc0", "dW_hr")
    for name, g, r in zip(names, got, ref):
        if r is not None:
            assert g.dtype == dtype
            assert rel_err(g, r) <= tol, name
    if bs is not None:
        inactive = ~(np.arange(B)[None, :] < bs[:, None])
        assert np.all(got[0][inactive] == 0.0)


class FusedWeights:
    """The parameters protocol of nplstm.loop.run_sequence / backward_sequence (loop.DirectionParams)."""

    def __init__(self, W_x, W_h, b, W_hr=None):
        self.W_x, self.W_h, self.b, self.W_hr = W_x, W_h, b, W_hr
        self.hidden_size = W_h.shape[0] // 4

    def fused(self):
        return np.ascontiguousarray(self.W_x.T), np.ascontiguousarray(self.W_h.T), self.b

    def peephole_rows(self):
        return None


@needs_numba
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("P", [4, 2])
def test_backward_agrees_with_the_numpy_backward_sequence(P, lengths):
    """loop.backward_sequence (the NumPy path) gives the same gradients from the same tape."""
    from nplstm.loop import backward_sequence

    rng = np.random.default_rng(11)
    T, B, I, H = 6, 5, 3, 4
    x = rng.normal(size=(T, B, I))
    W_x, W_h, b = rng.normal(size=(4 * H, I)) * 0.5, rng.normal(size=(4 * H, P)) * 0.5, rng.normal(size=4 * H) * 0.1
    W_hr = rng.normal(size=(P, H)) * 0.5 if P != H else None
    h0, c0 = rng.normal(size=(B, P)), rng.normal(size=(B, H))
    bs = np.array([5, 5, 4, 2, 2, 1]) if lengths else None
    W_hT, W_hrT = np.ascontiguousarray(W_h.T), None if W_hr is None else np.ascontiguousarray(W_hr.T)
    h, c = h0.copy(), c0.copy()
    tape = SimpleNamespace(gates=np.zeros((T, B, 4 * H)), c=np.zeros((T, B, H)), h=np.zeros((T, B, P)), h_full=None if W_hr is None else np.zeros((T, B, H)), pre=None)
    kernels.forward(np.concatenate([W_hT, W_x.T]), b, W_hr, x, h, c, tape=tape, batch_sizes=bs)
    d_out, dh_T, dc_T = rng.normal(size=(T, B, P)), rng.normal(size=(B, P)), rng.normal(size=(B, H))
    if bs is not None:
        d_out *= np.arange(B)[None, :, None] < bs[:, None, None]  # outputs of inactive steps are constant 0
    grads = backward_sequence(x, FusedWeights(W_x, W_h, b, W_hr), h0, c0, tape, d_out, dh_T, dc_T, batch_sizes=bs)
    d_pre, dh0, dc0, dW_hr = run_fast_backward(tape, W_hT, W_hrT, c0, d_out, dh_T, dc_T, bs)
    h_prev = np.concatenate([h0[None], tape.h[:-1]])
    np.testing.assert_allclose(dh0, grads.h0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dc0, grads.c0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("tbg,tbp->gp", d_pre, h_prev), grads.W_h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("tbg,tbi->gi", d_pre, x), grads.W_x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(d_pre.sum(axis=(0, 1)), grads.b, rtol=0, atol=1e-12)
    if W_hr is not None:
        np.testing.assert_allclose(dW_hr, grads.W_hr, rtol=0, atol=1e-12)


# --------------------------------------------------------------------- torch
def _torch_to_fused(module, suffix=""):
    """torch's (i, f, g, o) blocks -> the engine's (f, i, o, g)."""
    H = module.hidden_size
    order = np.concatenate([np.arange(H, 2 * H), np.arange(0, H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])
    get = lambda name: getattr(module, name + suffix).detach().numpy()  # noqa: E731
    return get("weight_ih_l0")[order], get("weight_hh_l0")[order], (get("bias_ih_l0") + get("bias_hh_l0"))[order], order


@needs_numba
@pytest.mark.parametrize("proj_size", [0, 3])
def test_packed_forward_and_backward_match_torch(proj_size):
    """torch.nn.LSTM over a PackedSequence, and its autograd gradients, in float64."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    T, B, I, H = 7, 5, 3, 6
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, proj_size=proj_size, dtype=torch.float64)
    lengths = np.array([7, 6, 6, 3, 1])
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    P = proj_size or H
    h0 = torch.randn(1, B, P, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, B, H, dtype=torch.float64, requires_grad=True)
    packed = pack_padded_sequence(x, torch.from_numpy(lengths), enforce_sorted=True)
    out_packed, (hT, cT) = module(packed, (h0, c0))
    out_t, _ = pad_packed_sequence(out_packed, total_length=T)
    w_out, w_h, w_c = torch.randn(T, B, P, dtype=torch.float64), torch.randn(1, B, P, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64)
    loss = (out_t * w_out).sum() + (hT * w_h).sum() + (cT * w_c).sum()
    loss.backward()

    W_x, W_h, b, order = _torch_to_fused(module)
    W_hr = module.weight_hr_l0.detach().numpy() if proj_size else None
    batch_sizes = (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1).astype(np.int64)
    xn = x.detach().numpy()
    proj = xn @ W_x.T + b
    out, tape, h, c = run_fast(proj, np.ascontiguousarray(W_h.T), None if W_hr is None else np.ascontiguousarray(W_hr.T), h0[0].detach().numpy(), c0[0].detach().numpy(), batch_sizes)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, hT[0].detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, cT[0].detach().numpy(), rtol=0, atol=1e-12)

    d_pre, dh0, dc0, dW_hr = run_fast_backward(
        tape, np.ascontiguousarray(W_h.T), None if W_hr is None else np.ascontiguousarray(W_hr.T), c0[0].detach().numpy(),
        w_out.numpy(), w_h[0].numpy(), w_c[0].numpy(), batch_sizes,
    )
    np.testing.assert_allclose(dh0, h0.grad[0].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dc0, c0.grad[0].numpy(), rtol=0, atol=1e-12)
    h_prev = np.concatenate([h0[0].detach().numpy()[None], tape.h[:-1]])
    active = (np.arange(B)[None, :] < batch_sizes[:, None])[..., None]
    h_prev = np.where(active, h_prev, 0.0)  # NaN-filled tape rows of inactive steps do not count
    inverse = np.argsort(order)
    np.testing.assert_allclose(np.einsum("tbg,tbp->gp", d_pre, h_prev)[inverse], module.weight_hh_l0.grad.numpy(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(np.einsum("tbg,tbi->gi", d_pre, xn)[inverse], module.weight_ih_l0.grad.numpy(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(d_pre.sum(axis=(0, 1))[inverse], module.bias_hh_l0.grad.numpy(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(np.einsum("tbg,gi->tbi", d_pre, W_x), x.grad.numpy(), rtol=0, atol=1e-12)
    if proj_size:
        np.testing.assert_allclose(dW_hr, module.weight_hr_l0.grad.numpy(), rtol=0, atol=1e-11)


# --------------------------------------------------------- hostile inputs
@needs_numba
@pytest.mark.parametrize("dtype,big", [(np.float64, 1e300), (np.float32, 1e30), (np.float32, np.inf)])
def test_extreme_pre_activations_saturate_without_warnings(dtype, big):
    """±1e300 (and W·z overflowing to ±inf in float32) saturate the gates exactly as the NumPy step does."""
    rng = np.random.default_rng(5)
    T, B, H = 3, 6, 4
    proj = (np.sign(rng.normal(size=(T, B, 4 * H))) * big).astype(dtype)
    W_hT = np.zeros((H, 4 * H), dtype)
    h0, c0 = np.zeros((B, H), dtype), rng.normal(size=(B, H)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, tape, h, c = run_fast(proj, W_hT, None, h0, c0, None)
        np_out, np_h, np_c = numpy_path_forward(proj, W_hT, h0, c0)
    assert np.isfinite(out).all() and np.isfinite(c).all() and np.isfinite(tape.gates).all()
    np.testing.assert_allclose(out, np_out, rtol=0, atol=1e-6)
    np.testing.assert_allclose(c, np_c, rtol=0, atol=1e-6)
    nearest = np.min(np.abs(tape.gates[..., None] - np.array([-1.0, 0.0, 1.0])), axis=-1)
    assert nearest.max() <= 5e-18  # σ(±limit) is 0 / 1 to within that, in both precisions


@needs_numba
@pytest.mark.parametrize("T", [1, 3])
def test_float32_recurrent_overflow_behaves_like_the_numpy_path(T):
    """h·W_h overflowing float32 (1e30·1e30) gives ±inf pre-activations on both paths, saturated alike.

    The first step is compared by value.  After it, weights of 1e30 amplify
    any difference below float32's resolution (σ(-40) = 4e-18 here, exactly 0
    in the NumPy path's ½ + ½·tanh form) to O(1e-5), so later steps are held
    to the same shape of result: finite where finite, NaN where NaN.
    """
    B, H = 3, 2
    W_hT = np.full((H, 4 * H), 1e30, np.float32)
    W_hT[:, 3 * H :] = -1e30
    h0 = np.full((B, H), 1e30, np.float32)
    h0[1] = -1e30
    h0[2, 0] = -1e30  # +inf + -inf: NaN pre-activations in row 2, on both paths
    c0 = np.ones((B, H), np.float32)
    proj = np.zeros((T, B, 4 * H), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # the input's own overflow, in numpy's matmul as in BLAS
        np_out, np_h, np_c = numpy_path_forward(proj, W_hT, h0, c0)
    out, _, h, c = run_fast(proj, W_hT, None, h0, c0, None)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(np_out))
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(np_out))
    np.testing.assert_allclose(out[0], np_out[0], rtol=0, atol=1e-6)
    if T == 1:
        np.testing.assert_allclose(c, np_c, rtol=0, atol=1e-6)


@needs_numba
def test_fast_exp_and_tanh_accuracy():
    """The engine's hand-written exp-based σ and tanh against numpy over their whole clipped range (one activation row)."""
    import numba

    from nplstm._packed_act import activate_row, tanh_of

    @numba.njit
    def gates_and_tanh(a, limit):
        H = a.size // 4
        c, hf, gates = np.zeros(H, a.dtype), np.empty(H, a.dtype), np.empty(4 * H, a.dtype)
        activate_row(a, c, hf, H, limit, gates)  # c = 0 + i·g, so hf = o·tanh(i·g)
        th = np.empty(a.size, a.dtype)
        for j in range(a.size):
            th[j] = tanh_of(a[j], limit)
        return gates, th

    for dtype, limit, tol in [(np.float32, 40.0, 2e-7), (np.float64, 350.0, 4e-16)]:
        x = np.concatenate([np.linspace(-limit, limit, 200_000), [0.0, 1e-30, -1e-30, 1e-8, -3e-5, -2e-7, 5.0, 9.5]]).astype(dtype)
        gates, th = gates_and_tanh(x, dtype(limit))
        x64 = x.astype(np.float64)
        H = x.size // 4
        sig = 1.0 / (1.0 + np.exp(-x64[: 3 * H]))
        assert np.max(np.abs(gates[: 3 * H] - sig) / sig) <= tol * 2
        assert np.max(np.abs(gates[3 * H :] - np.tanh(x64[3 * H :]))) <= tol * 2
        assert np.max(np.abs(th - np.tanh(x64))) <= tol * 2


# ------------------------------------------------------------- policy, setup
def test_use_kernel_policy(backend):
    f32 = np.dtype(np.float32)
    backend("numpy")
    assert not kernels.use_kernel(100, 64, 256, 256, 64, f32, training=False)
    backend("auto")
    # "auto" never compiles on a caller's time: a specialisation the loader has not run stays on NumPy, at any size
    assert not kernels.use_kernel(10_000, 64, 256, 256, 64, f32, training=True, key=("never loaded",))
    if kernels.available():
        backend("numba")
        assert kernels.use_kernel(3, 1, 1, 1, 1, np.dtype(np.float64), training=False, key=("never loaded",))


@needs_numba
def test_auto_runs_every_loaded_specialisation_compiled(backend, monkeypatch):
    import nplstm
    from nplstm import StackedLSTM

    assert nplstm.warmup() and kernels.engine_state() == "ready"
    backend("auto")
    calls = []
    original = kernels.forward
    monkeypatch.setattr(kernels, "forward", lambda *a, **k: (calls.append(1), original(*a, **k)))
    for dtype in (np.float32, np.float64):
        for options in ({}, {"bidirectional": True}, {"proj_size": 2}):
            stack = StackedLSTM(2, 3, seed=0, dtype=dtype, **options)
            before = len(calls)
            stack.forward(np.ones((3, 1, 2), dtype))  # the seed demo's size: compiled once loaded
            assert len(calls) > before, (dtype, options)


_SERVING = """
import sys, threading, numpy as np
from nplstm import kernels, StackedLSTM
kernels.LOAD_AFTER_SECONDS = {after}
main_calls = []
original = kernels.forward
def spy(*a, **k):
    if threading.current_thread() is threading.main_thread():
        main_calls.append(1)
    return original(*a, **k)
kernels.forward = spy
stack = StackedLSTM(1, 32, seed=0, dtype=np.float32)
x = np.ones((52, 1, 1), np.float32)
states = []
for _ in range({calls}):
    stack.forward(x)
    states.append(kernels.engine_state())
print(len(main_calls), states[0], states[-1], "numba" in sys.modules)
if {wait}:
    kernels.load_engine(timeout=900)
    stack.forward(x)
    print(len(main_calls), kernels.engine_state(), "nplstm._packed" in sys.modules)
"""


@needs_numba
def test_a_serving_process_ends_up_compiled_without_any_call_waiting():
    code = _SERVING.format(after=1e-3, calls=3, wait=True)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    first, then = proc.stdout.splitlines()
    # the first calls ran on the NumPy path (none entered the engine) while the loader started
    assert first.split()[0] == "0" and first.split()[2] in ("loading", "ready")
    assert then.split() == ["1", "ready", "True"]  # the call after loading ran the packed engine


def test_a_short_script_never_loads_numba():
    code = _SERVING.format(after=kernels.LOAD_AFTER_SECONDS, calls=20, wait=False)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "cold", "cold", "False"]


def test_backend_switch_errors():
    with pytest.raises(ValueError, match="backend must be"):
        kernels.set_backend("cuda")
    with pytest.raises(ValueError, match="threads must be"):
        kernels.set_threads(0)


def test_backend_from_environment():
    code = "from nplstm import kernels; print(kernels.get_backend())"
    env = dict(os.environ, NPLSTM_BACKEND="numpy")
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "numpy"
    env["NPLSTM_BACKEND"] = "gpu"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.stdout.strip() == "auto" and "ignoring NPLSTM_BACKEND='gpu'" in proc.stderr


def test_import_never_imports_numba():
    code = "import sys, nplstm, nplstm.kernels; print('numba' in sys.modules, 'scipy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


@needs_numba
def test_zero_steps_and_all_rows_finished():
    rng = np.random.default_rng(2)
    proj, W_hT, _, h0, c0, _ = problem(rng, 4, 3, 2, 2, np.float64)
    out, _, h, c = run_fast(proj[:0], W_hT, None, h0, c0, None)
    assert out.shape == (0, 3, 2) and np.array_equal(h, h0) and np.array_equal(c, c0)
    bs = np.array([2, 1, 0, 0], np.int64)  # steps with no active row at all
    ref_out, _, ref_h, ref_c = reference_forward(proj, W_hT, h0, c0, None, bs)
    out, _, h, c = run_fast(proj, W_hT, None, h0, c0, bs)
    assert rel_err(out, ref_out) <= 1e-12 and rel_err(h, ref_h) <= 1e-12 and rel_err(c, ref_c) <= 1e-12
    assert np.array_equal(h[2], h0[2]) and np.all(out[2:] == 0)


def test_threads_split_large_batches_with_weights_that_stay_in_cache():
    before = kernels._threads
    try:
        kernels.set_threads(2)
        assert kernels._slices(100, 64, 64, 64, None) == [(0, 32), (32, 64)]
        assert kernels._slices(100, 16, 256, 256, None) == [(0, 8), (8, 16)]
        assert kernels._slices(100, 16, 64, 64, None) == [(0, 16)]  # 26 Mflop per thread: too little to hand over
        assert kernels._slices(100, 256, 512, 512, None) == [(0, 256)]  # weights beyond L2: no gain measured
        assert kernels._slices(2, 64, 64, 64, None) == [(0, 64)]
        kernels.set_threads(1)
        assert kernels._slices(100, 256, 256, 256, None) == [(0, 256)]
    finally:
        kernels.set_threads(before)


def test_the_background_loader_paces_itself_only_once_every_wanted_configuration_is_loaded(monkeypatch):
    """Loading holds the GIL: the loader pauses between configurations nobody asked for, never before the asked-for ones."""
    import threading

    slept = []
    monkeypatch.setattr(kernels.time, "sleep", slept.append)
    monkeypatch.setattr(kernels, "_loader", threading.current_thread())  # as if this were the loader thread
    monkeypatch.setattr(kernels, "_pacing", 4.0)
    monkeypatch.setattr(kernels, "_loaded", set())
    monkeypatch.setattr(kernels, "_wanted", {("f", False, ("asked",))})
    kernels.exercised(lambda: None)
    assert slept == []  # the asked-for configuration is not loaded yet: full speed
    kernels._loaded.add(("f", False, ("asked",)))
    kernels.exercised(lambda: None)
    assert len(slept) == 1 and slept[0] >= 0.0
    monkeypatch.setattr(kernels, "_pacing", 0.0)  # someone waits in load_engine / warmup: no pauses
    kernels.exercised(lambda: None)
    assert len(slept) == 1


@pytest.mark.skipif(not kernels.available(), reason="needs numba")
@pytest.mark.parametrize("kind", ["many-to-one f32, 2 layers", "many-to-one f64", "many-to-many", "ragged many-to-one",
                                  "tokens, ragged many-to-many", "bidirectional, last step", "textbook layer"])
def test_once_loaded_the_common_calls_of_the_api_never_fall_back_to_numpy(kind, monkeypatch):
    """"auto" sends only loaded specialisations to the engine: every one the API's everyday calls need must be loaded.

    Found by the training benchmark: batch-first inputs reached the engine as a transposed
    view and a many-to-one backward had no per-step gradients, two specialisations the
    loader never loaded, so fit ran on the NumPy path forever.
    """
    from nplstm import LSTM, SequenceModel, fit

    assert kernels.load_engine(wait=True)
    monkeypatch.setattr(kernels, "_backend", "auto")
    missed = []
    use_kernel = kernels.use_kernel

    def spy(*args, **kwargs):
        used = use_kernel(*args, **kwargs)
        if not used:
            missed.append((args[5], kwargs.get("training"), kwargs.get("key")))
        return used

    monkeypatch.setattr(kernels, "use_kernel", spy)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 7, 3))
    Y = rng.normal(size=(20, 1))
    ragged = [rng.normal(size=(int(rng.integers(2, 8)), 3)) for _ in range(20)]
    ids = [rng.integers(1, 9, size=int(rng.integers(3, 8))) for _ in range(20)]
    if kind == "textbook layer":
        lstm = LSTM(3, 5, seed=0)
        lstm.forward(X[0], np.zeros((5, 1)), np.zeros((5, 1)))
        lstm.forward(X[:4].transpose(1, 0, 2), np.zeros((4, 5)), np.zeros((4, 5)), train=True)
        lstm.backward(np.ones((7, 4, 5)))
    else:
        model, x, y, loss = {
            "many-to-one f32, 2 layers": (SequenceModel(3, 8, 1, num_layers=2, dtype=np.float32), X.astype(np.float32), Y.astype(np.float32), "mse"),
            "many-to-one f64": (SequenceModel(3, 8, 1), X, Y, "mse"),
            "many-to-many": (SequenceModel(3, 8, 2, many_to_many=True), X, rng.normal(size=(20, 7, 2)), "mse"),
            "ragged many-to-one": (SequenceModel(3, 8, 1), ragged, Y, "mse"),
            "tokens, ragged many-to-many": (SequenceModel(4, 8, 9, num_embeddings=9, many_to_many=True, activation="softmax"),
                                            [s[:-1] for s in ids], [s[1:] for s in ids], "cross_entropy"),
            "bidirectional, last step": (SequenceModel(3, 8, 1, bidirectional=True, output="last"), X, Y, "mse"),
        }[kind]
        fit(model, x, y, loss=loss, epochs=1, batch_size=8, verbose=0)
        model.predict(x)
    assert not missed, sorted(set(map(str, missed)))
