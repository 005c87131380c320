"""The compiled engine's numba code: one direction of one layer over a chunk of steps, forward and backward.

Plain Python functions, readable and runnable uncompiled for debugging;
:func:`compile_engine` replaces each one marked ``@_jit`` by its
numba-compiled version in this module's namespace, which is where numba
resolves the calls between them.  Only :mod:`nplstm.kernels` (the engine's
interface and policy) imports this module, and only when the engine runs.
How it is built:

* Everything of a step but the recurrent product (adding the input
  projection, the clip, the four activations, ``c``, ``h``) is one compiled
  pass per row over contiguous memory, with no temporaries, instead of a
  dozen NumPy ufunc calls; the whole time loop of a chunk is one call.
* For batches of at most :data:`SMALL_BATCH` rows a compiled loop computes
  the recurrent product ``h_{t-1} W_hᵀ`` (it beats a BLAS call's fixed
  cost); larger ones go to BLAS through numba's ``np.dot`` (scipy's cython BLAS).
* NumPy's exp/tanh cost 1-4 ns per element; the hand-written float32
  versions below (Cody-Waite exp, Eigen's rational tanh) vectorise to
  0.3-0.5 ns.  They are within a few ulp; float64 uses an exp accurate to
  ~1 ulp, so the float64 engine matches the reference to 1e-12.
* A register-blocked numba microkernel for the per-step product was tried
  and reached at most half of OpenBLAS's rate (``python -m bench.microkernel``).

numba compiles with ``error_model="numpy"`` (no division checks) and
fastmath flags WITHOUT ``reassoc`` (reassociation could undo the exp's range
reduction) and without ``nnan``/``ninf`` (the float32-overflow case must
behave like the NumPy path), so its loops vectorise to AVX2/AVX-512.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from . import layout

__all__ = ["SMALL_BATCH", "compile_engine", "forward_loop", "backward_loop", "active_rows", "exp_work"]

#: Batches of at most this many active rows use a compiled loop for the
#: recurrent product instead of a BLAS call (measured: T=100, H=64, 1 thread,
#: B=4 0.58 ms looped against 0.45-1.0 ms with BLAS; B=4, H=256 8.4 ms against 20-35 ms).
SMALL_BATCH = 4

_compile_lock = threading.Lock()
_compiled = False

_JIT_NAMES: list[str] = []


def split_gates(a, H):
    """:func:`nplstm.layout.split_gates`; compile_engine() binds its compiled version here."""
    return layout.split_gates(a, H)


_INLINE_NAMES: set[str] = set()


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    _JIT_NAMES.append(fn.__name__)
    return fn


def _jit_inline(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Per-element helpers: inlined by numba, so the loops around them vectorise."""
    _INLINE_NAMES.add(fn.__name__)
    return _jit(fn)


# The constants are typed per precision: a Python float in a float32 loop
# would promote the whole loop to float64 (half the vector width, plus conversions).
#
# exp: Cody-Waite reduction x = n·ln2 + r, |r| <= ln2/2 (ln2 split in a part
# exact in few bits and a correction), a polynomial for e^r, and 2^n built
# from its bit pattern.  float32: Cephes' degree-5 minimax polynomial (about
# 1 ulp).  float64: Taylor's series to degree 13 (remainder < 4e-18 relative).
_F32 = np.float32
_ONE32, _HALF32, _TWO32 = _F32(1.0), _F32(0.5), _F32(2.0)
_LOG2E_32, _LN2_HI_32, _LN2_LO_32 = _F32(1.44269504088896341), _F32(0.693359375), _F32(-2.12194440e-4)
_EP0, _EP1, _EP2, _EP3, _EP4, _EP5 = (_F32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_LOG2E_64, _LN2_HI_64, _LN2_LO_64 = 1.4426950408889634, 6.93145751953125e-1, 1.42860682030941723212e-6
# Eigen's rational tanh for float32 (odd p(x)/q(x), a few ulp); beyond ±7.905 tanh is ±1 to float32 precision.
_TANH_CLAMP_32, _NINE32 = _F32(7.90531110763549805), _F32(9.0)
_TA13, _TA11, _TA9, _TA7, _TA5, _TA3, _TA1 = (_F32(v) for v in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_TB6, _TB4, _TB2, _TB0 = (_F32(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))


@_jit_inline
def _exp32_parts(x, mantissa, bits, j):  # pragma: no cover - compiled
    """float32 e^x (x clipped to ±88) as mantissa[j] · 2^n, with 2^n's bit pattern in bits[j].

    Split in two so that both halves are plain arithmetic that vectorises;
    the caller reads 2^n back through a float view of ``bits``.
    """
    n = np.floor(x * _LOG2E_32 + _HALF32)
    r = x - n * _LN2_HI_32
    r = r - n * _LN2_LO_32
    p = _EP0
    p = p * r + _EP1
    p = p * r + _EP2
    p = p * r + _EP3
    p = p * r + _EP4
    p = p * r + _EP5
    mantissa[j] = p * r * r + r + _ONE32
    bits[j] = (np.int32(n) + np.int32(127)) << np.int32(23)


@_jit_inline
def _exp64_parts(x, mantissa, bits, j):  # pragma: no cover - compiled
    """float64 e^x (x clipped to ±708) as mantissa[j] · 2^n, like :func:`_exp32_parts`."""
    n = np.floor(x * _LOG2E_64 + 0.5)
    r = x - n * _LN2_HI_64
    r = r - n * _LN2_LO_64
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    mantissa[j] = p * r + 1.0
    bits[j] = (np.int64(n) + 1023) << 52


@_jit_inline
def _tanh32(x):  # pragma: no cover - compiled
    """Eigen's float32 tanh: odd rational approximation on the clamped input.

    Beyond ±9, where float32 tanh rounds to exactly ±1, it returns ±1 (the
    clamped rational stops 4 ulp short), as the NumPy path does when saturated.
    """
    if x >= _NINE32:
        return _ONE32
    if x <= -_NINE32:
        return -_ONE32
    x = min(max(x, -_TANH_CLAMP_32), _TANH_CLAMP_32)
    x2 = x * x
    p = _TA13
    p = p * x2 + _TA11
    p = p * x2 + _TA9
    p = p * x2 + _TA7
    p = p * x2 + _TA5
    p = p * x2 + _TA3
    p = p * x2 + _TA1
    q = _TB6
    q = q * x2 + _TB4
    q = q * x2 + _TB2
    q = q * x2 + _TB0
    return x * p / q


@_jit_inline
def _sigmoid_(a, n, limit, mantissa, bits, scale):  # pragma: no cover - compiled
    """a[:n] = σ(clip(a[:n])) in place, as 1 / (1 + e^-a): accurate in relative terms near 0 and near 1."""
    if a.itemsize == 4:
        for j in range(n):
            _exp32_parts(-min(max(a[j], -limit), limit), mantissa, bits, j)
        for j in range(n):
            a[j] = _ONE32 / (_ONE32 + mantissa[j] * scale[j])
    else:
        for j in range(n):
            _exp64_parts(-min(max(a[j], -limit), limit), mantissa, bits, j)
        for j in range(n):
            a[j] = 1.0 / (1.0 + mantissa[j] * scale[j])


@_jit_inline
def _tanh_(a, n, limit, mantissa, bits, scale):  # pragma: no cover - compiled
    """a[:n] = tanh(clip(a[:n])) in place (one array, so LLVM vectorises without alias checks).

    float32: Eigen's rational form.  float64: 1 - 2/(1 + e^{2x}), whose
    absolute error (~2e-16) is what the 1e-12 contract needs.
    """
    if a.itemsize == 4:
        for j in range(n):
            a[j] = _tanh32(a[j])
    else:
        for j in range(n):
            _exp64_parts(2.0 * min(max(a[j], -limit), limit), mantissa, bits, j)
        for j in range(n):
            a[j] = 1.0 - 2.0 / (1.0 + mantissa[j] * scale[j])


@_jit
def _recurrent_product(h, W_T, out, n):  # pragma: no cover - compiled
    """out[:n] = h[:n] @ W_T: BLAS, or for a few rows a loop over rows of W_T.

    For a handful of rows the BLAS call's fixed cost dominates.  The loop
    adds four rows of W_T at a time into each output row, so every load and
    store of ``out`` carries four multiply-adds, all over contiguous memory.
    """
    if n > SMALL_BATCH:
        np.dot(h[:n], W_T, out[:n])
        return
    K, N = W_T.shape
    for r in range(n):
        out[r, :] = 0.0
    k = 0
    while k + 4 <= K:
        w0 = W_T[k]
        w1 = W_T[k + 1]
        w2 = W_T[k + 2]
        w3 = W_T[k + 3]
        for r in range(n):
            h0 = h[r, k]
            h1 = h[r, k + 1]
            h2 = h[r, k + 2]
            h3 = h[r, k + 3]
            o = out[r]
            for j in range(N):
                o[j] += h0 * w0[j] + h1 * w1[j] + h2 * w2[j] + h3 * w3[j]
        k += 4
    for k in range(k, K):
        w = W_T[k]
        for r in range(n):
            hk = h[r, k]
            o = out[r]
            for j in range(N):
                o[j] += hk * w[j]


@_jit
def _active(batch_sizes, t, row0, row1):  # pragma: no cover - compiled
    """Active rows at step t among rows [row0, row1), counted from row0."""
    if batch_sizes is None:
        return row1 - row0
    return min(row1, max(row0, batch_sizes[t])) - row0


@_jit
def forward_loop(proj, W_hT, h_all, c_all, outputs, gates_t, c_t, h_t, hfull_t, W_hrT, batch_sizes, limit, row0, row1, t_begin, t_end, product_given, act, hfull, work, bits):  # pragma: no cover - compiled
    """Steps [t_begin, t_end) of :func:`nplstm.kernels.forward` for rows [row0, row1) (one thread's slice).

    Rows are addressed by slicing inside (not by the caller) so that every
    slice stays C-contiguous for BLAS.  act (rows, 4H) holds pre-activations
    then activations; with ``product_given`` the caller has already put the
    first step's recurrent product h @ W_hT there.  hfull (rows, H) is
    scratch for the projection, work (2, 4H) for the exp, bits an integer
    view of work[1].
    """
    H4 = proj.shape[2]
    H = H4 // 4
    h = h_all[row0:row1]
    c = c_all[row0:row1]
    mantissa = work[0]  # the exp's mantissas and 2^n (bits is an integer view of scale) for one row
    scale = work[1]
    hf = h if W_hrT is None else hfull  # no projection: o ⊙ tanh(c) is h itself
    for t in range(t_begin, t_end):
        n = _active(batch_sizes, t, row0, row1)
        if not (product_given and t == t_begin):
            _recurrent_product(h, W_hT, act, n)
        proj_t = proj[t, row0:row1]
        for r in range(n):
            ar = act[r]
            pr = proj_t[r]
            for j in range(H4):
                ar[j] += pr[j]
            # f, i, o = σ(a), g = tanh(a) (gate order f, i, o, g)
            _sigmoid_(ar, 3 * H, limit, mantissa, bits, scale)
            g_pre = ar[3 * H :]
            _tanh_(g_pre, H, limit, mantissa, bits, scale)
            f, i, o, g = split_gates(ar, H)
            cr = c[r]
            for j in range(H):
                cr[j] = f[j] * cr[j] + i[j] * g[j]
            hr = hf[r]
            hr[:] = cr
            _tanh_(hr, H, limit, mantissa, bits, scale)
            for j in range(H):
                hr[j] *= o[j]
        if W_hrT is not None:
            np.dot(hfull[:n], W_hrT, h[:n])
        if outputs is not None:
            out_t = outputs[t, row0:row1]
            out_t[:n] = h[:n]
            out_t[n:] = 0.0
        if gates_t is not None:
            gates_t[t, row0 : row0 + n] = act[:n]
            c_t[t, row0 : row0 + n] = c[:n]
            h_t[t, row0 : row0 + n] = h[:n]
            if hfull_t is not None:
                hfull_t[t, row0 : row0 + n] = hfull[:n]


@_jit
def backward_loop(gates_t, c_t, hfull_t, W_h, W_hr, c0, d_outputs, dh_all, dc_all, d_pre, dW_hr, batch_sizes, limit, row0, row1, t_begin, t_end, product_left, dhf, tanh_c, work, bits):  # pragma: no cover - compiled
    """Steps t_end-1 down to t_begin of :func:`nplstm.kernels.backward` for rows [row0, row1).

    dW_hr (P, H) is accumulated (the caller zeroes it).  With ``product_left``
    the last step's recurrent product dh = d_pre[t_begin] @ W_h is left to the
    caller.  dhf (rows, H), tanh_c (H,), work (2, 4H) are scratch.
    """
    H4 = d_pre.shape[2]
    H = H4 // 4
    dh = dh_all[row0:row1]
    dc = dc_all[row0:row1]
    mantissa = work[0]
    scale = work[1]
    dhfull = dh if W_hr is None else dhf
    for t in range(t_end - 1, t_begin - 1, -1):
        n = _active(batch_sizes, t, row0, row1)
        if d_outputs is not None:
            dh[:n] += d_outputs[t, row0 : row0 + n]
        if W_hr is not None:
            # h = h_full W_hrᵀ: dW_hr += dhᵀ h_full, dL/dh_full = dh W_hr
            dW_hr += np.dot(dh[:n].T, hfull_t[t, row0 : row0 + n])
            np.dot(dh[:n], W_hr, dhf[:n])
        d_pre_t = d_pre[t, row0:row1]
        gates_tt = gates_t[t, row0:row1]
        c_tt = c_t[t, row0:row1]
        c_prev_t = c0[row0:row1] if t == 0 else c_t[t - 1, row0:row1]
        for r in range(n):
            f, i, o, g = split_gates(gates_tt[r], H)
            d_f, d_i, d_o, d_g = split_gates(d_pre_t[r], H)
            c_prev = c_prev_t[r]
            tanh_c[:] = c_tt[r]
            _tanh_(tanh_c, H, limit, mantissa, bits, scale)
            dhr = dhfull[r]
            dcr = dc[r]
            for j in range(H):
                tc = tanh_c[j]
                oj = o[j]
                d_o[j] = dhr[j] * tc * oj * (1.0 - oj)
                dcj = dcr[j] + dhr[j] * oj * (1.0 - tc * tc)
                fj = f[j]
                ij = i[j]
                gj = g[j]
                d_f[j] = dcj * c_prev[j] * fj * (1.0 - fj)
                d_i[j] = dcj * gj * ij * (1.0 - ij)
                d_g[j] = dcj * ij * (1.0 - gj * gj)
                dcr[j] = dcj * fj  # dL/dc_{t-1}
        d_pre_t[n:] = 0.0
        if not (product_left and t == t_begin):
            _recurrent_product(d_pre_t, W_h, dh, n)  # dL/dh_{t-1} for the active rows


def compile_engine() -> None:
    """Import numba and compile (or load from its cache) the kernels, once per process."""
    global _compiled
    if _compiled:
        return
    with _compile_lock:
        if _compiled:
            return
        import numba
        import scipy.linalg.cython_blas  # noqa: F401 - numba's np.dot calls BLAS through it; load it now so threadpoolctl sees it

        namespace = globals()
        # the project's one gate-slice helper (plain slicing, compiles as is)
        namespace["split_gates"] = numba.njit(inline="always")(layout.split_gates)
        flags = {"nsz", "arcp", "contract", "afn"}  # no reassoc, no nnan/ninf: see the module docstring
        for name in _JIT_NAMES:
            jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=flags, inline="always" if name in _INLINE_NAMES else "never")
            namespace[name] = jit(namespace[name])
        _compiled = True


#: The uncompiled :func:`_active`, for Python loops around the compiled calls (one definition of "active").
active_rows = _active


def exp_work(n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Scratch for the exp: (2, n) floats and an integer view of its second row."""
    work = np.empty((2, n), dtype=dtype)
    return work, work[1].view(np.int64 if dtype.itemsize == 8 else np.int32)
