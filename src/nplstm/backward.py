"""Backpropagation through time for :func:`nplstm.cell.run_sequence`.

The derivative of :func:`nplstm.cell.cell_step_`, step by step backwards.
Only the recurrent product ``dh_{t-1} = da_t W_h`` must run per step; the
weight gradients and the input gradient are one GEMM each over all steps at
the end.  With ``batch_sizes`` (variable lengths) only the active rows of a
step take part in it; the others carry their gradients through unchanged,
as their states were carried through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels
from .cell import DEFAULT_CELL, CellOptions, DirectionWeights, Trace, split_gates


@dataclass
class DirectionGradients:
    """Gradients of one layer and direction, in the fused layout."""

    W_x: np.ndarray  # (4H, I)
    W_h: np.ndarray  # (4H, P)
    b: np.ndarray  # (4H,)
    W_hr: np.ndarray | None  # (P, H)
    P: np.ndarray | None  # (3, H) peepholes
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, P)
    c0: np.ndarray  # (B, H)


def backward_sequence(
    x: np.ndarray,
    weights: DirectionWeights,
    h0: np.ndarray,
    c0: np.ndarray,
    trace: Trace,
    d_outputs: np.ndarray | None,
    d_h: np.ndarray | None,
    d_c: np.ndarray | None,
    *,
    batch_sizes: np.ndarray | None = None,
    options: CellOptions = DEFAULT_CELL,
) -> DirectionGradients:
    """Gradients of a loss through one run of :func:`~nplstm.cell.run_sequence`.

    Arguments are time-major as in the forward pass (reversed views for a
    backwards-in-time run).  ``d_outputs`` (T, B, P) is dL/dh_t for every
    step, ``d_h``/``d_c`` (B, P)/(B, H) are dL/d(final h) and dL/d(final c);
    any of them may be None (zero).
    """
    T, B, _ = x.shape
    W_xT, W_hT, _ = weights.fused()
    W_h, W_hr = W_hT.T, weights.W_hr
    peep = weights.peephole_rows() if options.peepholes else None
    H = W_h.shape[0] // 4
    dt = h0.dtype
    dh = np.zeros_like(h0) if d_h is None else np.array(d_h, dtype=dt, copy=True)
    dc = np.zeros_like(c0) if d_c is None else np.array(d_c, dtype=dt, copy=True)
    d_pre = (np.zeros if batch_sizes is not None else np.empty)(trace.gates.shape, dtype=dt)
    dW_hr = np.zeros_like(W_hr) if W_hr is not None else None
    dP = np.zeros((3, H), dtype=dt) if peep is not None else None
    default = options.is_default
    tanh_c = np.empty((B, H), dtype=dt)
    work = np.empty((B, H), dtype=dt)
    steps = range(T - 1, -1, -1)
    key = ("backward",) + kernels.variant(trace.gates, trace.c, trace.h_full, W_hr, d_outputs, batch_sizes)
    if default and kernels.use_kernel(T, B, H, W_h.shape[1], x.shape[2], dt, training=True, key=key):
        kernels.backward(trace, W_h, W_hr, c0, d_outputs, dh, dc, d_pre, dW_hr=dW_hr, batch_sizes=batch_sizes)
        steps = range(0)  # the compiled loop did every step

    for t in steps:
        n = B if batch_sizes is None else int(batch_sizes[t])
        dh_n, dc_n = dh[:n], dc[:n]
        if d_outputs is not None:
            dh_n += d_outputs[t, :n]
        if W_hr is not None and dW_hr is not None and trace.h_full is not None:
            dW_hr += dh_n.T @ trace.h_full[t, :n]
            dh_full = dh_n @ W_hr
        else:
            dh_full = dh_n
        c_prev = trace.c[t - 1, :n] if t > 0 else c0[:n]
        da = d_pre[t, :n]
        if default:
            _default_step_backward_(trace.gates[t, :n], trace.c[t, :n], c_prev, dh_full, dc_n, da, tanh_c[:n], work[:n])
        else:
            assert trace.pre is not None, "a non-default cell records its pre-activations"
            _general_step_backward_(trace.gates[t, :n], trace.pre[t, :n], trace.c[t, :n], c_prev,
                                    dh_full, dc_n, da, options, peep, dP)
        dh[:n] = da @ W_h  # dL/dh_{t-1}

    flat = d_pre.reshape(T * B, 4 * H)
    h_prev = np.concatenate([h0[None], trace.h[:-1]], axis=0).reshape(T * B, h0.shape[1]) if T else h0[:0]
    I = x.shape[2]  # explicit sizes: reshape(..., -1) cannot infer them when T·B = 0
    return DirectionGradients(
        W_x=flat.T @ x.reshape(T * B, I),
        W_h=flat.T @ h_prev,
        b=flat.sum(axis=0),
        W_hr=dW_hr,
        P=dP,
        x=(flat @ W_xT.T).reshape(T, B, I),
        h0=dh,
        c0=dc,
    )


def _default_step_backward_(
    act: np.ndarray, c: np.ndarray, c_prev: np.ndarray, dh: np.ndarray, dc: np.ndarray,
    da: np.ndarray, tanh_c: np.ndarray, work: np.ndarray,
) -> None:
    """One step back through the standard cell; ``dc`` becomes dL/dc_{t-1}, ``da`` dL/d(pre-activations)."""
    H = c.shape[-1]
    f, i, o, g = split_gates(act, H)
    d_f, d_i, d_o, d_g = split_gates(da, H)
    np.tanh(c, out=tanh_c)
    # output gate: dL/do = dh ⊙ tanh(c), through σ' = o(1-o)
    np.multiply(dh, tanh_c, out=d_o)
    d_o *= o * (1 - o)
    # cell: dc += dh ⊙ o ⊙ (1 - tanh²c)
    np.multiply(tanh_c, tanh_c, out=work)
    np.subtract(1, work, out=work)
    work *= o
    work *= dh
    dc += work
    np.multiply(dc, c_prev, out=d_f)
    d_f *= f * (1 - f)
    np.multiply(dc, g, out=d_i)
    d_i *= i * (1 - i)
    np.multiply(dc, i, out=d_g)
    d_g *= 1 - g * g
    dc *= f


def _general_step_backward_(
    act: np.ndarray, pre: np.ndarray, c: np.ndarray, c_prev: np.ndarray, dh: np.ndarray, dc: np.ndarray,
    da: np.ndarray, options: CellOptions, peep: np.ndarray | None, dP: np.ndarray | None,
) -> None:
    """One step back through any :class:`CellOptions` cell (see ``cell._general_step_``)."""
    H = c.shape[-1]
    f, i, o, g = split_gates(act, H)
    p_f, p_i, p_o, p_g = split_gates(pre, H)
    d_f, d_i, d_o, d_g = split_gates(da, H)
    gate, cell_act, hidden = options.gate_activation, options.cell_activation, options.hidden_activation

    def through(activation_input: np.ndarray, derivative: np.ndarray) -> np.ndarray:
        if options.clip is not None:  # nothing flows through a clipped pre-activation
            derivative = derivative * (np.abs(activation_input) < options.clip)
        return derivative

    d_o[...] = dh * hidden(c) * through(p_o, gate.derivative(p_o))
    dc += dh * o * hidden.derivative(c)
    if peep is not None and dP is not None:
        dc += d_o * peep[2]
        dP[2] += np.sum(d_o * c, axis=0)
    grad_f = dc * c_prev
    grad_i = dc * g
    if options.input_forget:  # f = 1 - i
        grad_i = grad_i - grad_f
        d_f[...] = 0
    else:
        d_f[...] = grad_f * through(p_f, gate.derivative(p_f))
    d_i[...] = grad_i * through(p_i, gate.derivative(p_i))
    d_g[...] = dc * i * through(p_g, cell_act.derivative(p_g))
    dc *= f
    if peep is not None and dP is not None:
        dc += d_i * peep[0] + d_f * peep[1]
        dP[0] += np.sum(d_i * c_prev, axis=0)
        dP[1] += np.sum(d_f * c_prev, axis=0)
