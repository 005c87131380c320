"""The packed engine backwards: one layer and direction back over its steps, the per-step products on packed tiles.

The per-step work of backpropagation through time is the gate derivatives
of each row (:func:`nplstm._packed_act.backward_row`) and one product,
``dL/dh_{t-1} = d_pre_t W_h`` (K = 4H, N = P), plus with a projection
``dL/dh_full = dh W_hr`` (K = P, N = H) and the rank-n update of
``dL/dW_hr``.  Both products run on the register tiles of
:mod:`nplstm._packed` over weights packed once, cached and checked bit for
bit like the forward's (:func:`packed_matrix`).  The weight and input
gradients are one GEMM each over all steps, after the loop (the caller's).
Imports numba.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ._packed import _JIT, _bits, _contiguous, _gemm, _root, _same_bits, pack_panels, panel_width
from ._packed_act import backward_row
from ._packed_simd import data, lanes
from .layout import PREACT_LIMIT

__all__ = ["PackedMatrix", "packed_matrix", "backward"]


@dataclass
class PackedMatrix:
    """A (K, N) right-hand side in panels (``Npad`` columns), with the bits of the array it was packed from."""

    panels: np.ndarray
    K: int
    N: int
    Npad: int
    bits: np.ndarray

    @classmethod
    def of(cls, A: np.ndarray, transpose: bool) -> PackedMatrix:
        W = A.T if transpose else A
        panels, Npad = pack_panels(W, panel_width(A.dtype))
        return cls(panels, W.shape[0], W.shape[1], Npad, _bits(A).copy())

    def matches(self, A: np.ndarray) -> bool:
        """Whether this was packed from exactly A's values (bit for bit)."""
        empty = self.bits[:0]
        return _bits(A).size == self.bits.size and bool(_same_bits(_bits(A), empty, empty, self.bits))


#: (id(storage), address, shape, transpose) -> (weak reference to the storage, packing).
_cache: dict[tuple[Any, ...], tuple[weakref.ref[Any], PackedMatrix]] = {}
_cache_lock = threading.Lock()


def packed_matrix(A: np.ndarray, *, transpose: bool = False) -> PackedMatrix:
    """``A`` (or ``A.T``) packed: cached per weight storage and repacked when a value changed (as :func:`nplstm._packed.packed`)."""
    A = _contiguous(A)
    root = _root(A)
    key = (id(root), A.ctypes.data, A.shape, A.dtype.char, transpose)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None and found[0]() is root and found[1].matches(A):
            return found[1]
        entry = PackedMatrix.of(A, transpose)
        if found is None:
            weakref.finalize(root, _cache.pop, key, None)
        _cache[key] = (weakref.ref(root), entry)
    return entry


@numba.njit(**_JIT)
def _run_backward(gates_t, c_t, hfull_t, c0, d_outputs, dh, dc, d_pre, dW_hr, batch_sizes,
                  wh, hr, zero, dhp, dhf, H, Ppad, Hpad, limit, one):  # pragma: no cover - compiled
    """Steps T-1 .. 0 backwards for all rows; see :func:`backward`.

    dhp (B, Ppad) receives each step's dL/dh_{t-1} before it is copied into
    dh (B, P); dhf (B, Hpad) holds dL/dh_full with a projection (hr not None).
    """
    T = d_pre.shape[0]
    B, P = dh.shape
    H4 = 4 * H
    NR = 2 * lanes(data(dhp))
    for t in range(T - 1, -1, -1):
        n = B if batch_sizes is None else min(B, batch_sizes[t])
        if d_outputs is not None:
            for r in range(n):
                for j in range(P):
                    dh[r, j] += d_outputs[t, r, j]
        dhfull = dh
        if hr is not None:
            for r in range(n):  # dW_hr += dhᵀ h_full, row by row
                hfr = hfull_t[t, r]
                for p in range(P):
                    v = dh[r, p]
                    row = dW_hr[p]
                    for j in range(H):
                        row[j] += v * hfr[j]
            _gemm(n, P, Hpad, data(dh), P, data(hr), P * NR, data(dhf), Hpad, data(zero), 0)
            dhfull = dhf
        d_pre_t = d_pre[t]
        for r in range(n):
            c_prev = c0[r] if t == 0 else c_t[t - 1, r]
            backward_row(gates_t[t, r], c_t[t, r], c_prev, dhfull[r], dc[r], d_pre_t[r], H, limit, one)
        d_pre_t[n:] = 0
        _gemm(n, H4, Ppad, data(d_pre_t), H4, data(wh), H4 * NR, data(dhp), Ppad, data(zero), 0)
        for r in range(n):
            for j in range(P):
                dh[r, j] = dhp[r, j]


def backward(tape: Any, W_hT: np.ndarray, W_hr: np.ndarray | None, c0: np.ndarray, d_outputs: np.ndarray | None,
             dh: np.ndarray, dc: np.ndarray, d_pre: np.ndarray, dW_hr: np.ndarray | None, batch_sizes: np.ndarray | None) -> None:
    """Backpropagate through one run of :func:`nplstm._packed.forward`, in place: :func:`nplstm.kernels.backward`.

    ``dh``, ``dc`` and ``d_pre`` must be C-contiguous; ``dW_hr`` is required with a projection.
    """
    dt = d_pre.dtype
    B, P = dh.shape
    H = d_pre.shape[2] // 4
    wh = packed_matrix(W_hT, transpose=True)  # (4H, P)
    hr = packed_matrix(W_hr) if W_hr is not None else None  # (P, H)
    Hpad = hr.Npad if hr is not None else 0
    zero = np.zeros(max(wh.Npad, Hpad), dtype=dt)
    dhp = np.empty((B, wh.Npad), dtype=dt)
    dhf = np.empty((B, Hpad), dtype=dt)
    if batch_sizes is not None:
        batch_sizes = np.ascontiguousarray(batch_sizes, dtype=np.int64)
    if hr is not None and dW_hr is None:
        raise ValueError("backward with a projection needs dW_hr (P, H) to accumulate into")
    _run_backward(tape.gates, tape.c, tape.h_full if hr is not None else None, c0, d_outputs, dh, dc, d_pre,
                  dW_hr if hr is not None else None, batch_sizes, wh.panels, None if hr is None else hr.panels,
                  zero, dhp, dhf, H, wh.Npad, Hpad, dt.type(PREACT_LIMIT[dt]), dt.type(1))
