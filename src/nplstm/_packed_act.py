"""One row of an LSTM step for the packed engine (:mod:`nplstm._packed`): activations, c in place, h.

The formulas of :mod:`nplstm.kernels` (Cody-Waite exp with Cephes' float32
polynomial / a degree-13 float64 series, Eigen's float32 tanh, the float64
tanh as 1 - 2/(1 + e^2x), the pre-activation clip of
:data:`nplstm.layout.PREACT_LIMIT`), each written as one scalar function
that LLVM vectorises inside the row loop (2^n through a bit cast
intrinsic, not a second pass through memory).  Imports numba.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ._packed_simd import as_float

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"nsz", "arcp", "contract", "afn"})
_INLINE: dict[str, Any] = dict(_JIT, inline="always")


_F32 = np.float32
_ONE32, _HALF32 = _F32(1.0), _F32(0.5)
_LOG2E_32, _LN2_HI_32, _LN2_LO_32 = _F32(1.44269504088896341), _F32(0.693359375), _F32(-2.12194440e-4)
_EP = tuple(_F32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_LOG2E_64, _LN2_HI_64, _LN2_LO_64 = 1.4426950408889634, 6.93145751953125e-1, 1.42860682030941723212e-6
_TANH_CLAMP_32, _NINE32 = _F32(7.90531110763549805), _F32(9.0)
_TA = tuple(_F32(v) for v in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                              1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_TB = tuple(_F32(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))


@numba.njit(**_INLINE)
def _exp32(x):  # pragma: no cover - compiled
    """e^x for float32 |x| <= 88."""
    n = np.floor(x * _LOG2E_32 + _HALF32)
    r = x - n * _LN2_HI_32
    r = r - n * _LN2_LO_32
    p = _EP[0]
    p = p * r + _EP[1]
    p = p * r + _EP[2]
    p = p * r + _EP[3]
    p = p * r + _EP[4]
    p = p * r + _EP[5]
    return (p * r * r + r + _ONE32) * as_float((np.int64(n) + 127) << 23, x)


@numba.njit(**_INLINE)
def _exp64(x):  # pragma: no cover - compiled
    """e^x for float64 |x| <= 708."""
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
    return (p * r + 1.0) * as_float((np.int64(n) + 1023) << 52, x)


@numba.njit(**_INLINE)
def _tanh32(x):  # pragma: no cover - compiled
    x = min(max(x, -_TANH_CLAMP_32), _TANH_CLAMP_32)
    x2 = x * x
    p = _TA[0]
    p = p * x2 + _TA[1]
    p = p * x2 + _TA[2]
    p = p * x2 + _TA[3]
    p = p * x2 + _TA[4]
    p = p * x2 + _TA[5]
    p = p * x2 + _TA[6]
    q = _TB[0]
    q = q * x2 + _TB[1]
    q = q * x2 + _TB[2]
    q = q * x2 + _TB[3]
    t = x * p / q
    return t  # noqa: RET504


@numba.njit(**_INLINE)
def _tanh_sat32(x):  # pragma: no cover - compiled
    """float32 tanh: the rational, and exactly ±1 from ±9 on (where the clamped rational stops 4 ulp short)."""
    return _ONE32 if x >= _NINE32 else (-_ONE32 if x <= -_NINE32 else _tanh32(x))


@numba.njit(**_INLINE)
def _tanh64(x, limit):  # pragma: no cover - compiled
    """float64 tanh(clip(x)) as 1 - 2/(1 + e^2x): absolute error ~2e-16."""
    return 1.0 - 2.0 / (1.0 + _exp64(2.0 * min(max(x, -limit), limit)))


@numba.njit(**_INLINE)
def _activate_row32(a, c, hf, H, limit, gates):  # pragma: no cover - compiled
    """float32 :func:`activate_row`."""
    one = _ONE32
    for j in range(H):
        f = one / (one + _exp32(-min(max(a[j], -limit), limit)))
        i = one / (one + _exp32(-min(max(a[H + j], -limit), limit)))
        o = one / (one + _exp32(-min(max(a[2 * H + j], -limit), limit)))
        g = _tanh_sat32(a[3 * H + j])
        cn = f * c[j] + i * g
        c[j] = cn
        hf[j] = o * _tanh_sat32(cn)
        gates[j] = f
        gates[H + j] = i
        gates[2 * H + j] = o
        gates[3 * H + j] = g


@numba.njit(**_INLINE)
def _activate_row64(a, c, hf, H, limit, gates):  # pragma: no cover - compiled
    """float64 :func:`activate_row`."""
    for j in range(H):
        f = 1.0 / (1.0 + _exp64(-min(max(a[j], -limit), limit)))
        i = 1.0 / (1.0 + _exp64(-min(max(a[H + j], -limit), limit)))
        o = 1.0 / (1.0 + _exp64(-min(max(a[2 * H + j], -limit), limit)))
        g = _tanh64(a[3 * H + j], limit)
        cn = f * c[j] + i * g
        c[j] = cn
        hf[j] = o * _tanh64(cn, limit)
        gates[j] = f
        gates[H + j] = i
        gates[2 * H + j] = o
        gates[3 * H + j] = g


def activate_row(a: Any, c: Any, hf: Any, H: Any, limit: Any, gates: Any) -> None:
    """One row of a step: pre-activations a (4H, gates f, i, o, g) -> c in place, hf = o ⊙ tanh(c).

    The activations f, i, o, g go to ``gates`` (a scratch row when nothing
    records them: a compiled-out store would need a second copy of the body).

    Compiled per dtype (only the matching body: a runtime dtype test would
    keep both in the loop and stop it vectorising).
    """
    raise NotImplementedError("compiled only")


@overload(activate_row, inline="always", jit_options=dict(fastmath=_JIT["fastmath"], error_model="numpy"))
def _activate_row_typed(a, c, hf, H, limit, gates):  # unannotated: numba compares names and annotations with the lambdas'
    if a.dtype == types.float32:
        return lambda a, c, hf, H, limit, gates: _activate_row32(a, c, hf, H, limit, gates)
    return lambda a, c, hf, H, limit, gates: _activate_row64(a, c, hf, H, limit, gates)


def tanh_of(x: Any, limit: Any) -> Any:
    """tanh(x) with the forward's formula for x's dtype (:func:`_tanh_sat32`, :func:`_tanh64`)."""
    raise NotImplementedError("compiled only")


@overload(tanh_of, inline="always", jit_options=dict(fastmath=_JIT["fastmath"], error_model="numpy"))
def _tanh_of_typed(x, limit):
    if x == types.float32:
        return lambda x, limit: _tanh_sat32(x)
    return lambda x, limit: _tanh64(x, limit)


@numba.njit(**_INLINE)
def backward_row(gates, c, c_prev, dh, dc, d_pre, H, limit, one):  # pragma: no cover - compiled
    """One row of a step backwards: activations f, i, o, g (``gates``), c_t, c_{t-1}, dL/dh_full -> d_pre, dc.

    ``d_pre`` (4H) receives dL/d(pre-activation); ``dc`` holds dL/dc_t on
    entry and dL/dc_{t-1} on exit.  tanh(c_t) is recomputed with the
    forward's formula.  ``one`` is 1 in the dtype (a Python 1.0 would turn
    a float32 row into float64 arithmetic).
    """
    for j in range(H):
        tc = tanh_of(c[j], limit)
        f, i, o, g = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        d_pre[2 * H + j] = dh[j] * tc * o * (one - o)
        dcj = dc[j] + dh[j] * o * (one - tc * tc)
        d_pre[j] = dcj * c_prev[j] * f * (one - f)
        d_pre[H + j] = dcj * g * i * (one - i)
        d_pre[3 * H + j] = dcj * i * (one - g * g)
        dc[j] = dcj * f
