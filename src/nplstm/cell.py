"""The LSTM equations, written once.

With z = [h_{t-1}; x_t] (hidden state first, then input)::

    f = σ(Wf z + bf)        i = σ(Wi z + bi)
    g = tanh(Wc z + bc)     o = σ(Wo z + bo)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Everything that runs an LSTM in this package (single sequences, batches,
stacks, both directions, streaming, training) goes through
:func:`cell_step_` for these equations and :func:`run_sequence` for the
loop over time.  The callers only compute the pre-activations ``W z + b``.

Internally the four gates are fused into one weight in the order
:data:`GATE_ORDER` = f, i, o, g (the candidate last, as the one gate that
needs tanh).  For small problems where NumPy's per-call overhead dominates,
:mod:`nplstm.kernels` runs the same formulas as one compiled loop when numba
is installed; the tests hold both paths to 1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels

#: Gate order of the fused internal arrays (sigmoid gates first).
GATE_ORDER: tuple[str, ...] = ("f", "i", "o", "g")

#: Public attribute suffix of each gate: ``W<suffix>`` / ``b<suffix>``.
GATE_SUFFIX: dict[str, str] = {"f": "f", "i": "i", "g": "c", "o": "o"}

#: Steps whose input projection is computed in one GEMM.  Bounds the extra
#: memory of inference to O(chunk·B·H) while keeping the GEMM large.
PROJECTION_CHUNK = 16


#: Pre-activations are clipped to ±PREACT_LIMIT before exp.  exp(2·limit)
#: is still finite (the candidate gate doubles its argument), so nothing
#: overflows or warns; σ(±limit) differs from 0 / 1 by under 5e-18 (float32)
#: and 1e-152 (float64), far below each dtype's resolution.
PREACT_LIMIT = {np.dtype(np.float32): 40.0, np.dtype(np.float64): 350.0}


def cell_step_(gates: np.ndarray, c: np.ndarray, h: np.ndarray, scratch: np.ndarray) -> None:
    """Advance one LSTM step in place.

    Parameters
    ----------
    gates : (B, 4H) C-contiguous array
        On entry the pre-activations ``W z + b`` in :data:`GATE_ORDER`; on
        exit the activations f, i, o, g (kept for backward).
    c : (B, H) array
        ``c_{t-1}`` on entry, ``c_t`` on exit.
    h : (B, H) array
        Receives ``h_t``.  May not alias ``c``.
    scratch : (B, H) array
        Work space.
    """
    H = c.shape[-1]
    g = gates[:, 3 * H :]
    limit = PREACT_LIMIT[gates.dtype]
    # f, i, o = σ(a) and g = tanh(a) = 2σ(2a) − 1, all from one pass of
    # exp(-a) over the contiguous buffer (NumPy's tanh is slower than its exp).
    # Capping -a at the limit keeps exp finite; g is clipped on both sides
    # first because it is doubled.
    np.negative(gates, out=gates)
    np.minimum(gates, limit, out=gates)
    np.maximum(g, -limit, out=g)
    np.multiply(g, 2, out=g)
    np.exp(gates, out=gates)
    np.add(gates, 1, out=gates)
    np.reciprocal(gates, out=gates)
    np.multiply(g, 2, out=g)
    np.subtract(g, 1, out=g)
    f = gates[:, :H]
    i = gates[:, H : 2 * H]
    o = gates[:, 2 * H : 3 * H]
    # c_t = f ⊙ c_{t-1} + i ⊙ g
    np.multiply(c, f, out=c)
    np.multiply(i, g, out=scratch)
    np.add(c, scratch, out=c)
    # h_t = o ⊙ tanh(c_t)
    np.tanh(c, out=h)
    np.multiply(h, o, out=h)


@dataclass
class Trace:
    """What a forward pass records for backward and for gate inspection.

    All arrays are time-major: ``gates`` (T, B, 4H) activations in
    :data:`GATE_ORDER`, ``c`` (T, B, H) cell states after each step and
    ``h`` (T, B, H or P) the (projected) hidden state after each step.
    ``h_full`` (T, B, H) is ``o ⊙ tanh(c)`` before the projection, kept
    only when a projection is used.
    """

    gates: np.ndarray
    c: np.ndarray
    h: np.ndarray
    h_full: np.ndarray | None = None

    def reversed(self) -> Trace:
        """Views of the same buffers with time reversed (for a backwards run)."""
        return Trace(self.gates[::-1], self.c[::-1], self.h[::-1], None if self.h_full is None else self.h_full[::-1])


def named_activations(trace: Trace) -> dict[str, np.ndarray]:
    """Views ``{"f", "i", "g", "o", "c", "h"}`` of a trace, each (T, B, ·), time-major."""
    H = trace.c.shape[-1]
    named = {gate: trace.gates[..., k * H : (k + 1) * H] for k, gate in enumerate(GATE_ORDER)}
    return {"f": named["f"], "i": named["i"], "g": named["g"], "o": named["o"], "c": trace.c, "h": trace.h}


def run_sequence(
    x: np.ndarray,
    W_xT: np.ndarray,
    W_hT: np.ndarray,
    b: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    *,
    outputs: np.ndarray | None = None,
    trace: Trace | None = None,
    W_hr: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the LSTM over time-major ``x`` and return the final ``(h, c)``.

    Parameters
    ----------
    x : (T, B, I) array
        Inputs, already in the model's dtype.  Pass ``x[::-1]`` (and reversed
        views of ``outputs``/``trace``) to run backwards in time.
    W_xT : (I, 4H) array
        Input part of the fused weight, transposed.
    W_hT : (P, 4H) array
        Recurrent part of the fused weight, transposed (P = H without projection).
    b : (4H,) array
        Fused bias.
    h0 : (B, P) array
    c0 : (B, H) array
        Initial states; not modified.
    outputs : (T, B, P) array, optional
        Receives the hidden state of every step.
    trace : Trace, optional
        Receives what backward needs.
    W_hr : (P, H) array, optional
        LSTMP projection: ``h_t = W_hr (o ⊙ tanh(c_t))``.
    """
    T, B, _ = x.shape
    H4 = W_hT.shape[1]
    H = H4 // 4
    dtype = h0.dtype
    h = np.array(h0, dtype=dtype, order="C", copy=True)
    c = np.array(c0, dtype=dtype, order="C", copy=True)
    gates_buf = np.empty((B, H4), dtype=dtype)
    scratch = np.empty((B, H), dtype=dtype)
    if W_hr is None and kernels.use_kernel(B, H, W_hT.shape[0], x.shape[2]):
        kernels.run_kernel(x, W_xT, W_hT, b, h, c, gates_buf, outputs, trace, PREACT_LIMIT[dtype])
        return h, c
    h_full = np.empty((B, H), dtype=dtype) if W_hr is not None else h
    W_hrT = W_hr.T if W_hr is not None else None
    chunk = max(1, min(T, PROJECTION_CHUNK))
    proj = np.empty((chunk * B, H4), dtype=dtype)

    for start in range(0, T, chunk):
        stop = min(T, start + chunk)
        n = (stop - start) * B
        np.matmul(x[start:stop].reshape(n, -1), W_xT, out=proj[:n])
        proj[:n] += b
        for k, t in enumerate(range(start, stop)):
            gates = trace.gates[t] if trace is not None else gates_buf
            np.matmul(h, W_hT, out=gates)
            gates += proj[k * B : (k + 1) * B]
            cell_step_(gates, c, h_full, scratch)
            if W_hrT is not None:
                np.matmul(h_full, W_hrT, out=h)
            if outputs is not None:
                outputs[t] = h
            if trace is not None:
                trace.c[t] = c
                trace.h[t] = h
                if trace.h_full is not None:
                    trace.h_full[t] = h_full
    return h, c
