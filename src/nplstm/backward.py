"""Backpropagation through time for :func:`nplstm.cell.run_sequence`.

The derivative of the equations in :mod:`nplstm.cell`, step by step
backwards.  Only the recurrent product ``dh_{t-1} = da_t W_h`` must run per
step; the weight gradients and the input gradient are one GEMM each over all
steps at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cell import Trace


@dataclass
class FusedGradients:
    """Gradients in the fused layout of :meth:`nplstm.LSTM.fused`."""

    W_x: np.ndarray  # (4H, I)
    W_h: np.ndarray  # (4H, P)
    b: np.ndarray  # (4H,)
    W_hr: np.ndarray | None  # (P, H)
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, P)
    c0: np.ndarray  # (B, H)


def backward_sequence(
    x: np.ndarray,
    W_x: np.ndarray,
    W_h: np.ndarray,
    W_hr: np.ndarray | None,
    h0: np.ndarray,
    c0: np.ndarray,
    trace: Trace,
    d_outputs: np.ndarray | None,
    d_final_h: np.ndarray | None,
    d_final_c: np.ndarray | None,
) -> FusedGradients:
    """Gradients of a loss through one run of :func:`~nplstm.cell.run_sequence`.

    Arguments are time-major as in the forward pass (reversed views for a
    backwards-in-time run).  ``d_outputs`` (T, B, P) is dL/dh_t for every
    step, ``d_final_h``/``d_final_c`` (B, P)/(B, H) are dL/dh_T and dL/dc_T;
    any of them may be None (zero).
    """
    T, B, _ = x.shape
    H = W_h.shape[0] // 4
    dt = h0.dtype
    dh = np.zeros_like(h0) if d_final_h is None else np.array(d_final_h, dtype=dt, copy=True)
    dc = np.zeros_like(c0) if d_final_c is None else np.array(d_final_c, dtype=dt, copy=True)
    d_pre = np.empty_like(trace.gates)  # dL/d(W z + b) for every step
    dW_hr = np.zeros_like(W_hr) if W_hr is not None else None
    tanh_c = np.empty((B, H), dtype=dt)
    work = np.empty((B, H), dtype=dt)

    for t in range(T - 1, -1, -1):
        if d_outputs is not None:
            dh += d_outputs[t]
        if W_hr is not None:
            dW_hr += dh.T @ trace.h_full[t]
            dh_full = dh @ W_hr
        else:
            dh_full = dh
        act = trace.gates[t]
        f, i, o, g = act[:, :H], act[:, H : 2 * H], act[:, 2 * H : 3 * H], act[:, 3 * H :]
        c_prev = trace.c[t - 1] if t > 0 else c0
        np.tanh(trace.c[t], out=tanh_c)
        da = d_pre[t]
        d_f, d_i, d_o, d_g = da[:, :H], da[:, H : 2 * H], da[:, 2 * H : 3 * H], da[:, 3 * H :]
        # output gate: dL/do = dh ⊙ tanh(c), through σ' = o(1-o)
        np.multiply(dh_full, tanh_c, out=d_o)
        d_o *= o * (1 - o)
        # cell: dc += dh ⊙ o ⊙ (1 - tanh²c)
        np.multiply(tanh_c, tanh_c, out=work)
        np.subtract(1, work, out=work)
        work *= o
        work *= dh_full
        dc += work
        np.multiply(dc, c_prev, out=d_f)
        d_f *= f * (1 - f)
        np.multiply(dc, g, out=d_i)
        d_i *= i * (1 - i)
        np.multiply(dc, i, out=d_g)
        d_g *= 1 - g * g
        dc *= f  # now dL/dc_{t-1}
        dh = da @ W_h  # dL/dh_{t-1}

    flat = d_pre.reshape(T * B, 4 * H)
    h_prev = np.concatenate([h0[None], trace.h[:-1]], axis=0).reshape(T * B, -1) if T else h0[:0]
    return FusedGradients(
        W_x=flat.T @ x.reshape(T * B, -1),
        W_h=flat.T @ h_prev,
        b=flat.sum(axis=0),
        W_hr=dW_hr,
        x=(flat @ W_x).reshape(T, B, -1),
        h0=dh,
        c0=dc,
    )
