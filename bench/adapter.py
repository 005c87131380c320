"""A single LSTM layer run straight through the engine's two paths, below the public API.

For measuring before the public API runs :mod:`nplstm.kernels` for both
passes: the work of one layer's training step (the forward of
:func:`nplstm.cell.run_sequence`, then BPTT and the weight gradients as GEMMs
over all steps) on the compiled engine (:func:`nplstm.kernels.backward`) or
on the NumPy reference (:func:`nplstm.loop.backward_sequence`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nplstm import kernels
from nplstm.loop import Trace, backward_sequence, run_sequence


def torch_order(H: int) -> np.ndarray:
    """Row permutation from torch's gate blocks (i, f, g, o) to the engine's (f, i, o, g)."""
    return np.concatenate([np.arange(H, 2 * H), np.arange(0, H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])


class Layer:
    """One unidirectional layer with a torch module's weights, in the fused (f, i, o, g) layout."""

    def __init__(self, module: Any, dtype: str) -> None:
        H = module.hidden_size
        order = torch_order(H)

        def get(name: str) -> np.ndarray:
            return getattr(module, name).detach().cpu().numpy().astype(dtype)[order]

        self.dtype = np.dtype(dtype)
        self.H = H
        self.W_x = np.ascontiguousarray(get("weight_ih_l0"))  # (4H, I)
        self.W_h = np.ascontiguousarray(get("weight_hh_l0"))  # (4H, H)
        self.b = get("bias_ih_l0") + get("bias_hh_l0")
        self.W_xT = np.ascontiguousarray(self.W_x.T)
        self.W_hT = np.ascontiguousarray(self.W_h.T)

    # the weights protocol of nplstm.loop.run_sequence / backward_sequence (cell.DirectionWeights)
    W_hr = None

    @property
    def hidden_size(self) -> int:
        return self.H

    def fused(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.W_xT, self.W_hT, self.b

    def peephole_rows(self) -> None:
        return None

    def _fast(self, x: np.ndarray, training: bool) -> bool:
        T, B, I = x.shape
        return kernels.use_kernel(T, B, self.H, self.H, I, self.dtype, training=training)

    def forward(self, x: np.ndarray, trace: Trace | None = None) -> np.ndarray:
        """Outputs (T, B, H) from zero initial states, on the path the backend policy picks (cell.run_sequence)."""
        T, B, _ = x.shape
        out = np.empty((T, B, self.H), self.dtype)
        h = np.zeros((B, self.H), self.dtype)
        c = np.zeros((B, self.H), self.dtype)
        run_sequence(x, self, h, c, outputs=out, trace=trace)
        return out

    def train_step(self, x: np.ndarray, d_out: np.ndarray) -> dict[str, np.ndarray]:
        """Forward with a tape, then the gradients of sum(outputs · d_out) for W_x, W_h, b and x."""
        T, B, _ = x.shape
        H = self.H
        trace = Trace(np.empty((T, B, 4 * H), self.dtype), np.empty((T, B, H), self.dtype), np.empty((T, B, H), self.dtype))
        self.forward(x, trace)
        zeros = np.zeros((B, H), self.dtype)
        if not self._fast(x, True):
            g = backward_sequence(x, self, zeros, zeros, trace, d_out, None, None)
            return {"W_x": g.W_x, "W_h": g.W_h, "b": g.b, "x": g.x}
        dh, dc = zeros.copy(), zeros.copy()
        d_pre = np.empty((T, B, 4 * H), self.dtype)
        kernels.backward(trace, self.W_hT, None, zeros, d_out, dh, dc, d_pre)
        flat = d_pre.reshape(T * B, 4 * H)
        h_prev = np.concatenate([zeros[None], trace.h[:-1]]).reshape(T * B, H)
        return {
            "W_x": flat.T @ x.reshape(T * B, -1),
            "W_h": flat.T @ h_prev,
            "b": flat.sum(axis=0),
            "x": (flat @ self.W_x).reshape(T, B, -1),
        }
