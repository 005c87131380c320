"""A dense layer to put on top of the LSTM: ``y = h Wᵀ + b``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .params import as_generator, checked_array, model_dtype, positive_int
from .shapes import as_real_array


class Linear:
    """Affine map from ``in_features`` to ``out_features`` over the last axis.

    Weights start uniform(-1/√in, 1/√in) as in PyTorch, the bias at zero.
    ``W`` (out, in) and ``b`` (out,) are checked views: assigning copies in
    after a shape, dtype and finiteness check, so optimizers holding them
    stay attached.
    """

    def __init__(self, in_features: int, out_features: int, *, seed: Any = None, dtype: Any = np.float64) -> None:
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.dtype = model_dtype(dtype)
        bound = 1.0 / np.sqrt(self.in_features)
        rng = as_generator(seed)
        self._W = rng.uniform(-bound, bound, size=(self.out_features, self.in_features)).astype(self.dtype)
        self._b = np.zeros(self.out_features, dtype=self.dtype)

    @property
    def W(self) -> np.ndarray:
        return self._W

    @W.setter
    def W(self, value: Any) -> None:
        self._W[...] = checked_array(value, "W", self._W.shape, self.dtype)

    @property
    def b(self) -> np.ndarray:
        return self._b

    @b.setter
    def b(self, value: Any) -> None:
        self._b[...] = checked_array(value, "b", self._b.shape, self.dtype)

    def parameters(self) -> dict[str, np.ndarray]:
        return {"W": self._W, "b": self._b}

    def forward(self, h: Any) -> np.ndarray:
        """``h (..., in) -> (..., out)``."""
        h = as_real_array(h, "h", self.dtype)
        if h.shape[-1:] != (self.in_features,):
            raise ValueError(f"Linear expects (..., {self.in_features}); got {h.shape}")
        return h @ self._W.T + self._b

    __call__ = forward

    def backward(self, h: np.ndarray, dy: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``({"W": dW, "b": db}, dL/dh)`` for a forward on input ``h`` (the head's whole tape)."""
        h2 = h.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        return {"W": dy2.T @ h2, "b": dy2.sum(axis=0)}, dy @ self._W

    def __repr__(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype.name})"
