"""The activations of the ONNX ``LSTM`` operator: one registry, used by the cell, backward, ONNX and Keras.

:data:`ACTIVATIONS` maps each ONNX name to ``(f, df, defaults)``:

* ``f(x, alpha, beta)`` the activation (a new array of x's dtype, finite for finite x);
* ``df(x, y, alpha, beta)`` its derivative at ``x``, given ``y = f(x)`` too
  (σ' = y(1 - y) and tanh' = 1 - y² need only y, so the standard cell keeps
  no pre-activations for backward);
* ``defaults = (alpha, beta)``: ONNX's default of each coefficient the
  activation takes, None for one it does not take.

Adding an activation is one entry here; :class:`Activation` (what a
:class:`~nplstm.cell.CellOptions` holds), the backward step, the ONNX
exporter and importer and the Keras mapping all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .checks import is_real_number
from .layout import PREACT_LIMIT

__all__ = ["ACTIVATIONS", "Activation", "sigmoid", "takes"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), its argument clipped to :data:`~nplstm.layout.PREACT_LIMIT` (nothing overflows or warns)."""
    limit = PREACT_LIMIT[x.dtype] if x.dtype in PREACT_LIMIT else 350.0
    return 1.0 / (1.0 + np.exp(-np.clip(x, -limit, limit)))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x).astype(x.dtype, copy=False)


_F = Callable[[np.ndarray, float, float], np.ndarray]
_DF = Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]

#: ONNX name -> (f(x, alpha, beta), df(x, y, alpha, beta), (default alpha, default beta)).
ACTIVATIONS: dict[str, tuple[_F, _DF, tuple[float | None, float | None]]] = {
    "Sigmoid": (lambda x, a, b: sigmoid(x), lambda x, y, a, b: y * (1 - y), (None, None)),
    "Tanh": (lambda x, a, b: np.tanh(x), lambda x, y, a, b: 1 - y * y, (None, None)),
    "Relu": (lambda x, a, b: np.maximum(x, 0), lambda x, y, a, b: (x > 0).astype(x.dtype), (None, None)),
    "Affine": (lambda x, a, b: a * x + b, lambda x, y, a, b: np.full_like(x, a), (1.0, 0.0)),
    "LeakyRelu": (lambda x, a, b: np.where(x >= 0, x, a * x), lambda x, y, a, b: np.where(x >= 0, 1, a), (0.01, None)),
    "ThresholdedRelu": (lambda x, a, b: np.where(x > a, x, 0), lambda x, y, a, b: (x > a).astype(x.dtype), (1.0, None)),
    "ScaledTanh": (lambda x, a, b: a * np.tanh(b * x), lambda x, y, a, b: a * b * (1 - np.tanh(b * x) ** 2), (1.0, 1.0)),
    "HardSigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1),
                    lambda x, y, a, b: np.where((a * x + b > 0) & (a * x + b < 1), a, 0), (0.2, 0.5)),
    "Elu": (lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))),
            lambda x, y, a, b: np.where(x >= 0, 1, a * np.exp(np.minimum(x, 0))), (1.0, None)),
    "Softsign": (lambda x, a, b: x / (1 + np.abs(x)), lambda x, y, a, b: 1 / (1 + np.abs(x)) ** 2, (None, None)),
    "Softplus": (lambda x, a, b: _softplus(x), lambda x, y, a, b: sigmoid(x), (None, None)),
}


def takes(name: str) -> tuple[bool, bool]:
    """Whether activation ``name`` takes an alpha and a beta."""
    alpha, beta = ACTIVATIONS[name][2]
    return alpha is not None, beta is not None


@dataclass(frozen=True)
class Activation:
    """One of the activations of the ONNX ``LSTM`` operator, with its alpha and beta.

    ``name`` is ONNX's (a key of :data:`ACTIVATIONS`: Sigmoid, Tanh, Relu,
    Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu,
    Softsign, Softplus); alpha and beta default to ONNX's defaults.
    """

    name: str
    alpha: float | None = None
    beta: float | None = None

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {self.name!r}")
        for attr, default in zip(("alpha", "beta"), ACTIVATIONS[self.name][2]):
            value = getattr(self, attr)
            if value is None:
                object.__setattr__(self, attr, default)
            elif default is None:
                raise ValueError(f"activation {self.name} takes no {attr}; got {value!r}")
            elif not is_real_number(value):
                raise TypeError(f"activation {self.name}: {attr} must be a finite number; got {value!r}")
            elif not np.isfinite(value):
                raise ValueError(f"activation {self.name}: {attr} must be finite; got {value!r}")
            else:
                object.__setattr__(self, attr, float(value))

    @property
    def coefficients(self) -> tuple[float, float]:
        """``(alpha, beta)`` with 0 for those this activation does not take."""
        return (self.alpha if self.alpha is not None else 0.0, self.beta if self.beta is not None else 0.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The activation of ``x`` (a new array, same dtype; finite for finite x)."""
        with np.errstate(over="ignore", under="ignore"):
            y = ACTIVATIONS[self.name][0](x, *self.coefficients)
        return np.asarray(y, dtype=x.dtype)

    def derivative(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """d activation / dx at ``x``; ``y``, if given, must be ``self(x)`` (saves recomputing it)."""
        if y is None:
            y = self(x)
        with np.errstate(over="ignore", under="ignore"):
            d = ACTIVATIONS[self.name][1](x, y, *self.coefficients)
        return np.asarray(d, dtype=x.dtype)

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in (("alpha", self.alpha), ("beta", self.beta)) if v is not None)
        return f"Activation({self.name!r}{params})"
