"""Where each gate sits in the fused arrays: the layout shared by the NumPy step and the compiled kernels.

Internally the four gates are fused into one weight in the order
:data:`GATE_ORDER` = f, i, o, g (the candidate last, as the one gate that
needs tanh); :func:`split_gates` is the one helper that slices them.  This
module depends on NumPy alone, so the NumPy step (:mod:`nplstm.cell`) and
the compiled engine (:mod:`nplstm._packed`, :mod:`nplstm._packed_grad`) both read it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GATE_ORDER", "GATE_SUFFIX", "PEEPHOLE_GATES", "PREACT_LIMIT", "split_gates"]

#: Gate order of the fused internal arrays (sigmoid gates first).
GATE_ORDER: tuple[str, ...] = ("f", "i", "o", "g")

#: Public attribute suffix of each gate: ``W<suffix>`` / ``b<suffix>``.
GATE_SUFFIX: dict[str, str] = {"f": "f", "i": "i", "g": "c", "o": "o"}

#: Gates with a peephole weight, in the order of the stored (3, H) peepholes.
PEEPHOLE_GATES: tuple[str, ...] = ("i", "f", "o")

#: Where an exp-based sigmoid (the general path's, the compiled kernels')
#: clips its argument: exp(2·limit) is still finite, so nothing overflows or
#: warns, and σ(±limit) differs from 0 / 1 by under 5e-18 (float32) and
#: 1e-152 (float64), far below each dtype's resolution.
PREACT_LIMIT = {np.dtype(np.float32): 40.0, np.dtype(np.float64): 350.0}


def split_gates(a: np.ndarray, H: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Views ``(f, i, o, g)`` of a fused (..., 4H) array, in :data:`GATE_ORDER`.

    The one place that knows where each gate sits; plain basic slicing, so
    compiled kernels can call it too.
    """
    return a[..., 0:H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H : 4 * H]
