"""Optimizers that update parameter arrays in place, and gradient clipping.

Parameters are the views returned by ``model.parameters()``, so updating
them in place updates the model.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "clip_grad_norm", "clip_grad_value"]


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


def _number(
    name: str, value: object, low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = True
) -> float:
    """``value`` as a float after checking it is a real finite number in the interval; refuse it by name otherwise."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        raise ValueError(f"{name} must be a finite number in {interval}; got {value!r}")
    return v


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


class Optimizer:
    """Base class: holds the parameters by name, checks gradients against them and steps.

    Parameters
    ----------
    params : mapping of str to ndarray
        The arrays to train, normally ``model.parameters()``: views into the
        model, updated in place.
    lr : float
        The learning rate, a positive finite number.  It is the attribute
        ``lr``, read at every step, so a schedule (:mod:`nplstm.schedules`)
        or the user may change it between steps (to any finite value >= 0).

    Notes
    -----
    A subclass implements ``_update(name, param, grad, lr)``, which changes
    ``param`` in place and never ``grad``; :meth:`step` checks every
    gradient before any parameter changes.
    """

    def __init__(self, params: Mapping[str, np.ndarray], lr: float) -> None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number; got {lr!r}")
        self.params = dict(params)
        if not self.params:
            raise ValueError("the optimizer got no parameters (params is empty)")
        for name, p in self.params.items():
            if isinstance(p, np.ndarray) and p.dtype.kind == "f" and p.flags.writeable:
                continue
            if not isinstance(p, np.ndarray):
                got = type(p).__name__
            else:
                got = f"dtype {p.dtype}" if p.dtype.kind != "f" else f"a read-only {p.dtype} array"
            raise TypeError(f"parameter {name!r} must be a writeable floating-point ndarray (updated in place); got {got}")
        self.lr = float(lr)

    def _pairs(self, grads: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
        pairs = []
        for name, param in self.params.items():
            if name not in grads:
                raise KeyError(f"no gradient for parameter {name!r}")
            grad = grads[name]
            if grad.shape != param.shape:
                raise ValueError(f"gradient of {name} has shape {grad.shape}; expected {param.shape}")
            pairs.append((name, param, grad))
        return pairs

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Take one optimization step with these gradients (keyed like ``params``; not modified).

        Raises
        ------
        KeyError
            If a parameter has no gradient.
        ValueError
            If a gradient's shape is not its parameter's, or ``lr`` is no
            longer a finite number >= 0.
        """
        pairs = self._pairs(grads)
        lr = _number("lr", self.lr, 0.0)
        self._begin_step()
        for name, param, grad in pairs:
            self._update(name, param, grad, lr)

    def _begin_step(self) -> None:
        """Advance per-step state (a step counter) once per :meth:`step`, before the updates."""

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay.

    ``torch.optim.SGD``'s algorithm and defaults, step for step: with
    weight decay ``g = grad + weight_decay * param``; with momentum the
    buffer is ``g`` at the first step and ``b = momentum * b + (1 -
    dampening) * g`` after; the step is ``param -= lr * d`` with ``d = g +
    momentum * b`` (Nesterov) or ``d = b``.

    Parameters
    ----------
    params : mapping of str to ndarray
        The arrays to train, updated in place.
    lr : float, default 1e-3
        Learning rate (torch's default; it was 0.01 before nplstm 0.3).
    momentum : float, default 0
        Momentum factor, in [0, 1).
    dampening : float, default 0
        Dampening of the momentum, in [0, 1].
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float, default 0
        L2 penalty added to the gradient, >= 0.

    Attributes
    ----------
    momentum_buffer : dict of str to ndarray or None
        The momentum buffers, created at the first step taken with momentum.
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = _number("momentum", momentum, 0.0, 1.0)
        self.dampening = _number("dampening", dampening, 0.0, 1.0, high_open=False)
        self.nesterov = _flag("nesterov", nesterov)
        self.weight_decay = _number("weight_decay", weight_decay, 0.0)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                f"Nesterov momentum needs momentum > 0 and dampening 0; got momentum={momentum!r}, "
                f"dampening={dampening!r}"
            )
        self.momentum_buffer: dict[str, np.ndarray | None] = {name: None for name in self.params}

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        g = grad + self.weight_decay * param if self.weight_decay != 0 else grad
        if self.momentum != 0:
            buf = self.momentum_buffer[name]
            if buf is None:
                buf = self.momentum_buffer[name] = g.astype(param.dtype, copy=True)
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g if self.dampening else g
            g = g + self.momentum * buf if self.nesterov else buf
        param -= lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction, L2 weight decay and AMSGrad.

    ``torch.optim.Adam``'s algorithm and defaults, step for step.  Weight
    decay is L2: ``weight_decay * param`` is added to the gradient before
    the moments (for the decoupled form use :class:`AdamW`).

    Parameters
    ----------
    params : mapping of str to ndarray
        The arrays to train, updated in place.
    lr : float, default 1e-3
        Learning rate.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment, each in [0, 1).  They
        are the attributes ``beta1`` and ``beta2`` (a one-cycle schedule
        changes ``beta1``).
    eps : float, default 1e-8
        Added to the root of the second moment, >= 0.
    weight_decay : float, default 0
        L2 penalty, >= 0.
    amsgrad : bool, default False
        Normalize by the running maximum of the second moment (Reddi et al., 2018).
    decoupled_weight_decay : bool, default False
        Decay the parameters directly (``param *= 1 - lr * weight_decay``),
        as :class:`AdamW` does.

    Attributes
    ----------
    t : int
        Steps taken.
    m, v : dict of str to ndarray
        First and second moments.
    v_max : dict of str to ndarray
        Running maximum of ``v`` (AMSGrad only; empty otherwise).
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        decoupled_weight_decay: bool = False,
    ) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        self.beta1 = _number("betas[0]", betas[0], 0.0, 1.0)
        self.beta2 = _number("betas[1]", betas[1], 0.0, 1.0)
        self.eps = _number("eps", eps, 0.0)
        self.weight_decay = _number("weight_decay", weight_decay, 0.0)
        self.amsgrad = _flag("amsgrad", amsgrad)
        self.decoupled_weight_decay = _flag("decoupled_weight_decay", decoupled_weight_decay)
        self.t = 0
        self.m = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.v = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.v_max = {name: np.zeros_like(p) for name, p in self.params.items()} if self.amsgrad else {}

    def _begin_step(self) -> None:
        self.t += 1

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        g = grad
        if self.weight_decay != 0:
            if self.decoupled_weight_decay:
                param *= 1 - lr * self.weight_decay
            else:
                g = grad + self.weight_decay * param
        m, v = self.m[name], self.v[name]
        m += (1 - self.beta1) * (g - m)  # torch's lerp
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        step_size = lr / (1 - self.beta1**self.t)
        root_c2 = (1 - self.beta2**self.t) ** 0.5
        if self.amsgrad:
            np.maximum(self.v_max[name], v, out=self.v_max[name])
            v = self.v_max[name]
        param -= step_size * (m / (np.sqrt(v) / root_c2 + self.eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``torch.optim.AdamW``.

    Each step first shrinks the parameters, ``param *= 1 - lr *
    weight_decay``, then takes Adam's step on the unchanged gradient.
    ``AdamW(params, ...)`` is ``Adam(params, ..., decoupled_weight_decay=True)``
    with torch's AdamW default ``weight_decay=1e-2``; the other parameters
    (``lr``, ``betas``, ``eps``, ``amsgrad``) are :class:`Adam`'s, with its
    defaults and checks.
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012) with momentum, centering and weight decay: ``torch.optim.RMSprop``.

    ``s = alpha * s + (1 - alpha) * g**2``; centered, ``a = alpha * a + (1 -
    alpha) * g`` and the scale is ``sqrt(s - a**2) + eps``, else ``sqrt(s) +
    eps``; the step is ``lr * g / scale``, or with momentum ``b = momentum *
    b + g / scale`` (``b`` starts at zero) and ``param -= lr * b``.

    Parameters
    ----------
    params : mapping of str to ndarray
        The arrays to train, updated in place.
    lr : float, default 1e-2
        Learning rate (torch's default).
    alpha : float, default 0.99
        Smoothing constant, in [0, 1).
    eps : float, default 1e-8
        Added to the scale, >= 0.
    weight_decay : float, default 0
        L2 penalty added to the gradient, >= 0.
    momentum : float, default 0
        Momentum factor, in [0, 1).
    centered : bool, default False
        Normalize by the estimated variance of the gradient instead of its second moment.
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.alpha = _number("alpha", alpha, 0.0, 1.0)
        self.eps = _number("eps", eps, 0.0)
        self.weight_decay = _number("weight_decay", weight_decay, 0.0)
        self.momentum = _number("momentum", momentum, 0.0, 1.0)
        self.centered = _flag("centered", centered)
        self.square_avg = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.grad_avg = {name: np.zeros_like(p) for name, p in self.params.items()} if self.centered else {}
        self.momentum_buffer: dict[str, np.ndarray] = {}

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        g = grad + self.weight_decay * param if self.weight_decay != 0 else grad
        s = self.square_avg[name]
        s *= self.alpha
        s += (1 - self.alpha) * g * g
        if self.centered:
            a = self.grad_avg[name]
            a += (1 - self.alpha) * (g - a)
            scale = np.sqrt(s - a * a)
        else:
            scale = np.sqrt(s)
        scale += self.eps
        if self.momentum > 0:
            buf = self.momentum_buffer.setdefault(name, np.zeros_like(param))
            buf *= self.momentum
            buf += g / scale
            param -= lr * buf
        else:
            param -= lr * (g / scale)
