"""Optimizers that update parameter arrays in place, and gradient clipping.

Parameters are the views returned by ``model.parameters()``, so updating
them in place updates the model.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm", "clip_grad_value"]


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping.
    """
    if isinstance(max_norm, bool) or not max_norm > 0:
        raise ValueError(f"max_norm must be > 0; got {max_norm!r}")
    total = float(np.sqrt(sum(float(np.sum(g * g)) for g in grads.values())))
    if np.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads.values():
            g *= scale
    return total


def clip_grad_value(grads: Mapping[str, np.ndarray], clip_value: float) -> None:
    """Clip every gradient element in place to ``[-clip_value, clip_value]``.

    Like ``torch.nn.utils.clip_grad_value_``: each element is clamped on
    its own (the direction of the gradient may change; NaN stays NaN).

    Parameters
    ----------
    grads : mapping of str to ndarray
        The gradients, modified in place.
    clip_value : float
        The largest absolute value an element keeps; a positive finite number.

    Raises
    ------
    ValueError
        If ``clip_value`` is not a positive finite number.
    """
    if (
        isinstance(clip_value, bool)
        or not isinstance(clip_value, (int, float, np.integer, np.floating))
        or not (np.isfinite(clip_value) and clip_value > 0)
    ):
        raise ValueError(f"clip_value must be a positive finite number; got {clip_value!r}")
    for g in grads.values():
        np.clip(g, -clip_value, clip_value, out=g)


class Optimizer:
    """Base class: holds the parameters by name and checks gradients against them."""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float) -> None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number; got {lr!r}")
        self.params = dict(params)
        self.lr = float(lr)

    def _pairs(self, grads: Mapping[str, np.ndarray]):
        for name, param in self.params.items():
            if name not in grads:
                raise KeyError(f"no gradient for parameter {name!r}")
            grad = grads[name]
            if grad.shape != param.shape:
                raise ValueError(f"gradient of {name} has shape {grad.shape}; expected {param.shape}")
            yield name, param, grad

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum."""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 0.01, momentum: float = 0.0) -> None:
        super().__init__(params, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}")
        self.momentum = float(momentum)
        self.velocity = {name: np.zeros_like(p) for name, p in self.params.items()}

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        for name, param, grad in self._pairs(grads):
            v = self.velocity[name]
            v *= self.momentum
            v += grad
            param -= self.lr * v


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction."""

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"betas must lie in [0, 1); got {betas}")
        self.eps = float(eps)
        self.t = 0
        self.m = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.v = {name: np.zeros_like(p) for name, p in self.params.items()}

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        self.t += 1
        c1 = 1 - self.beta1**self.t
        c2 = 1 - self.beta2**self.t
        for name, param, grad in self._pairs(grads):
            m, v = self.m[name], self.v[name]
            m *= self.beta1
            m += (1 - self.beta1) * grad
            v *= self.beta2
            v += (1 - self.beta2) * grad * grad
            param -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
