"""Optional compiled kernels (numba) for where Python overhead dominates.

A NumPy step costs about fifteen ufunc calls whatever the size, which is
most of the time for small hidden sizes and for streaming one step at a
time.  When numba is installed (``pip install 'nplstm[fast]'``), small
problems run instead through :func:`sequence_kernel`, one compiled loop
over time, batch and gates.  It computes exactly what
:func:`nplstm.cell.cell_step_` computes, the same formulas in the same
order but for the summation order of the matrix product; the tests hold
the two paths to 1e-12 in float64.  Large problems stay on the NumPy path,
whose BLAS matrix products are faster there.

``set_backend("numpy" | "numba" | "auto")`` forces a path (for tests and
the benchmark); "auto" picks numba for problems below
:data:`NUMBA_MAX_WORK` multiply-adds per step.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from typing import Any, Callable

import numpy as np

# numba is an optional extra, and importing it takes a while: look, don't import.
_HAVE_NUMBA = importlib.util.find_spec("numba") is not None
_compiled: Callable[..., None] | None = None

#: Multiply-adds per step (B·4H·(P+I)) below which "auto" uses the numba kernel.
NUMBA_MAX_WORK = 400_000  # crossover measured with bench on 2 cores (AMD EPYC, AVX2)

_backend = "auto"


def available() -> bool:
    """Whether the compiled kernels can run here."""
    return _HAVE_NUMBA


def set_backend(name: str) -> None:
    """Choose the step loop: "numpy", "numba" (raises if missing) or "auto"."""
    global _backend
    if name not in ("numpy", "numba", "auto"):
        raise ValueError(f"backend must be 'numpy', 'numba' or 'auto'; got {name!r}")
    if name == "numba" and not _HAVE_NUMBA:
        raise RuntimeError("the numba backend needs numba: pip install 'nplstm[fast]'")
    _backend = name


def get_backend() -> str:
    return _backend


def _backend_from_environment() -> None:
    name = os.environ.get("NPLSTM_BACKEND")
    if name:
        try:
            set_backend(name)
        except (ValueError, RuntimeError) as exc:
            warnings.warn(f"ignoring NPLSTM_BACKEND={name!r}: {exc}", RuntimeWarning, stacklevel=2)


def use_kernel(T: int, B: int, H: int, P: int, I: int, dtype: Any, *, training: bool) -> bool:
    """Whether a run of this size should go through the compiled kernel (being rewritten: never, for now)."""
    return False


def _sequence_kernel(x, W_xT, W_hT, b, h, c, gates_buf, outputs, trace_gates, trace_c, limit):  # pragma: no cover - compiled
    """The step loop of :func:`nplstm.cell.run_sequence` for inference or training.

    x (T, B, I); W_xT (I, 4H); W_hT (H, 4H); b (4H,); h, c (B, H) updated in
    place; gates_buf (B, 4H) work space; outputs (T, B, H), trace_gates
    (T, B, 4H) and trace_c (T, B, H) written when their first dimension is T
    (pass empty (0, ·, ·) arrays to skip them).
    """
    T, B, I = x.shape
    P, H4 = W_hT.shape
    H = H4 // 4
    record = trace_gates.shape[0] == T and T > 0
    keep = outputs.shape[0] == T and T > 0
    for t in range(T):
        for r in range(B):
            gates = gates_buf[r]  # always contiguous, so the loops below vectorize
            # W z + b as column updates: the inner loops run over contiguous rows
            for j in range(H4):
                gates[j] = 0.0
            for k in range(P):
                hk = h[r, k]
                for j in range(H4):
                    gates[j] += hk * W_hT[k, j]
            for k in range(I):
                xk = x[t, r, k]
                for j in range(H4):
                    gates[j] += xk * W_xT[k, j]
            for j in range(H4):
                a = gates[j] + b[j]
                if a > limit:
                    a = limit
                elif a < -limit:
                    a = -limit
                if j >= 3 * H:  # candidate: tanh(a) = 2σ(2a) − 1, as in cell_step_
                    s = 1.0 / (math.exp(-(a * 2.0)) + 1.0)
                    gates[j] = s * 2.0 - 1.0
                else:
                    gates[j] = 1.0 / (math.exp(-a) + 1.0)
            for j in range(H):
                cj = c[r, j] * gates[j] + gates[H + j] * gates[3 * H + j]
                c[r, j] = cj
                h[r, j] = math.tanh(cj) * gates[2 * H + j]
            if keep:
                for j in range(H):
                    outputs[t, r, j] = h[r, j]
            if record:
                for j in range(H4):
                    trace_gates[t, r, j] = gates[j]
                for j in range(H):
                    trace_c[t, r, j] = c[r, j]


def sequence_kernel() -> Callable[..., None]:
    """The compiled :func:`_sequence_kernel` (numba is imported on first use)."""
    global _compiled
    if _compiled is None:
        import numba

        _compiled = numba.njit(cache=True, nogil=True)(_sequence_kernel)
    return _compiled


def run_kernel(
    x: np.ndarray,
    W_xT: np.ndarray,
    W_hT: np.ndarray,
    b: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    gates_buf: np.ndarray,
    outputs: np.ndarray | None,
    trace: Any,
    limit: float,
) -> None:
    """Call the compiled kernel, standing in empty arrays for what is not wanted."""
    T, B, _ = x.shape
    empty = np.empty((0, B, 0), dtype=h.dtype)
    if trace is not None and outputs is None:
        outputs = trace.h
    sequence_kernel()(
        x,
        W_xT,
        W_hT,
        b,
        h,
        c,
        gates_buf,
        outputs if outputs is not None else empty,
        trace.gates if trace is not None else empty,
        trace.c if trace is not None else empty,
        limit,
    )
    if trace is not None and outputs is not trace.h:
        trace.h[...] = outputs


_backend_from_environment()
