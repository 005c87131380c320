"""A dense layer to put on top of the LSTM: ``y = h Wᵀ + b``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .shapes import as_real_array


class Linear:
    """Affine map from ``in_features`` to ``out_features`` over the last axis.

    Weights start uniform(-1/√in, 1/√in) as in PyTorch, the bias at zero.
    """

    def __init__(self, in_features: int, out_features: int, seed: Any = None, dtype: Any = np.float64) -> None:
        from .layer import as_generator, model_dtype

        self.in_features, self.out_features = int(in_features), int(out_features)
        self.dtype = model_dtype(dtype)
        bound = 1.0 / np.sqrt(in_features)
        rng = as_generator(seed)
        self.W = rng.uniform(-bound, bound, size=(out_features, in_features)).astype(self.dtype)
        self.b = np.zeros(out_features, dtype=self.dtype)
        self._input: np.ndarray | None = None

    def parameters(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "b": self.b}

    def forward(self, h: Any, train: bool = False) -> np.ndarray:
        h = as_real_array(h, "h", self.dtype)
        if h.shape[-1] != self.in_features:
            raise ValueError(f"Linear expects (..., {self.in_features}); got {h.shape}")
        self._input = h if train else None
        return h @ self.W.T + self.b

    def backward(self, dy: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Return ``({"W": dW, "b": db}, dL/dh)`` for the last training forward."""
        if self._input is None:
            raise RuntimeError("Linear.backward needs a preceding forward(..., train=True)")
        h2 = self._input.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        return {"W": dy2.T @ h2, "b": dy2.sum(axis=0)}, dy @ self.W
