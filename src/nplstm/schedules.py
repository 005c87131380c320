"""Learning-rate schedules: the rate of every optimizer step, as ``torch.optim.lr_scheduler`` gives it.

A schedule is built on an optimizer (:mod:`nplstm.optim`) and sets its
``lr``: at construction to the rate of the first step (as torch does), then
after each optimizer step.  Schedules are callbacks
(:class:`nplstm.callbacks.Callback`), so :func:`nplstm.fit` drives them::

    opt = AdamW(model.parameters(), lr=3e-3)
    fit(model, X, Y, optimizer=opt, callbacks=[CosineWarmup(opt, warmup=100, total=2000)])

or, in a loop of your own, call ``schedule.step()`` after each
``opt.step(grads)`` (:class:`ReduceLROnPlateau`: ``schedule.step(metric)``
once per epoch).

Each gives the same sequence of rates as its torch counterpart:

- :class:`Constant`: no scheduler (or ``ConstantLR(factor=1.0)``);
- :class:`StepLR`: ``StepLR(step_size, gamma)``;
- :class:`ExponentialLR`: ``ExponentialLR(gamma)``;
- :class:`CosineWarmup`: ``SequentialLR([LinearLR(start_factor, total_iters=warmup),
  CosineAnnealingLR(T_max=total - warmup, eta_min)], milestones=[warmup])``;
- :class:`OneCycleLR`: ``OneCycleLR`` (also cycling SGD's momentum or Adam's beta1);
- :class:`ReduceLROnPlateau`: ``ReduceLROnPlateau``, stepped with a metric once per epoch.

The per-step schedules compute each rate in closed form from the base
rate (torch updates most of them recursively; the two agree to rounding,
within 1e-12 relative over the tests' 200 steps), so a schedule owns the
optimizer's ``lr``: one schedule per optimizer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .callbacks import Callback
from .optim import Optimizer, _flag, _number

__all__ = ["Schedule", "Constant", "StepLR", "ExponentialLR", "CosineWarmup", "OneCycleLR", "ReduceLROnPlateau"]


def _count(name: str, value: object, low: int) -> int:
    """``value`` after checking it is an integer >= ``low``; refused by name otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


class _RateCallback(Callback):
    """What every schedule shares: the optimizer it drives, the current rate and the history of rates."""

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"a schedule drives an nplstm.optim.Optimizer; got {type(optimizer).__name__}")
        self._optimizer = optimizer
        self.rates: list[float] = []
        self.lr = optimizer.lr

    @property
    def optimizer(self) -> Optimizer:
        """The optimizer whose ``lr`` this schedule sets."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: Any) -> None:
        # fit sets every callback's optimizer: refuse one the schedule does not drive, or it would do nothing
        if value is not None and value is not self._optimizer:
            raise ValueError(
                f"this {type(self).__name__} drives another optimizer than the one training uses; "
                "build the schedule on the optimizer you pass to fit"
            )

    def _set(self, lr: float) -> None:
        self.lr = self._optimizer.lr = lr
        self.rates.append(lr)


class Schedule(_RateCallback):
    """Base class of the per-step schedules: ``rate(k)`` is the learning rate of optimizer step ``k`` (from 0).

    Construction sets ``optimizer.lr = rate(0)``; each :meth:`step` (or
    ``on_batch_end``, after an optimizer step during :func:`nplstm.fit`)
    sets the next rate.

    Attributes
    ----------
    base_lr : float
        The optimizer's ``lr`` when the schedule was built.
    steps : int
        Optimizer steps taken under the schedule.
    lr : float
        The current rate (``optimizer.lr``).
    rates : list of float
        Every rate set so far: ``rates[k]`` is the rate of step ``k``.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__(optimizer)
        self.base_lr = optimizer.lr
        self.steps = 0

    def _start(self) -> None:
        """Set the first rate; subclasses call it once their parameters are checked."""
        self._set(self.rate(0))

    def rate(self, k: int) -> float:
        """The learning rate of optimizer step ``k`` (0 is the first)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one optimizer step: set ``optimizer.lr`` to the next step's rate."""
        self.steps += 1
        self._set(self.rate(self.steps))

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Called by :func:`nplstm.fit` after each optimizer step: :meth:`step`."""
        self.step()


class Constant(Schedule):
    """The optimizer's rate at every step (the schedule of no scheduler).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer; its ``lr`` is kept.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def rate(self, k: int) -> float:
        """``base_lr``."""
        return self.base_lr


class StepLR(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` steps: ``torch.optim.lr_scheduler.StepLR``.

    ``rate(k) = base_lr * gamma ** (k // step_size)``.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer; its ``lr`` is the base rate.
    step_size : int
        Steps between decays, >= 1.
    gamma : float, default 0.1
        The factor, > 0.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size = _count("step_size", step_size, 1)
        self.gamma = _number("gamma", gamma, 0.0, low_open=True)
        self._start()

    def rate(self, k: int) -> float:
        """``base_lr * gamma ** (k // step_size)``."""
        return self.base_lr * self.gamma ** (k // self.step_size)


class ExponentialLR(Schedule):
    """Multiply the rate by ``gamma`` every step: ``torch.optim.lr_scheduler.ExponentialLR``.

    ``rate(k) = base_lr * gamma ** k``.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer; its ``lr`` is the base rate.
    gamma : float
        The factor per step, > 0 (above 1 the rate grows, as in a learning-rate range test).
    """

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        super().__init__(optimizer)
        self.gamma = _number("gamma", gamma, 0.0, low_open=True)
        self._start()

    def rate(self, k: int) -> float:
        """``base_lr * gamma ** k``."""
        return self.base_lr * self.gamma**k


class CosineWarmup(Schedule):
    """Linear warm-up, then cosine annealing to ``eta_min`` at step ``total``.

    The rates of torch's standard composition ``SequentialLR(optimizer,
    [LinearLR(optimizer, start_factor, total_iters=warmup),
    CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min)],
    milestones=[warmup])`` (with ``warmup=0``, of ``CosineAnnealingLR(T_max=total)``
    alone)::

        rate(k) = base_lr * (start_factor + (1 - start_factor) * k / warmup)       k < warmup
        rate(k) = eta_min + (base_lr - eta_min) * (1 + cos(pi * (k - warmup) / (total - warmup))) / 2
                                                                                  warmup <= k <= total
        rate(k) = eta_min                                                         k > total

    Past ``total`` the rate stays at ``eta_min`` (as Keras' ``CosineDecay``
    does); torch's ``CosineAnnealingLR`` would instead climb back along the
    cosine.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer; its ``lr`` is the peak rate ``base_lr``, reached at step ``warmup``.
    warmup : int
        Steps of linear warm-up, >= 0.
    total : int
        The step at which the rate reaches ``eta_min``, > ``warmup``.
    start_factor : float, default 1/3
        The first step's rate as a fraction of ``base_lr``, in (0, 1]
        (torch's ``LinearLR`` default; pass e.g. 0.01 to start near zero).
    eta_min : float, default 0
        The final rate, in [0, base_lr].
    """

    def __init__(
        self, optimizer: Optimizer, warmup: int, total: int, start_factor: float = 1.0 / 3, eta_min: float = 0.0
    ) -> None:
        super().__init__(optimizer)
        self.warmup = _count("warmup", warmup, 0)
        self.total = _count("total", total, self.warmup + 1)
        self.start_factor = _number("start_factor", start_factor, 0.0, 1.0, low_open=True, high_open=False)
        self.eta_min = _number("eta_min", eta_min, 0.0, self.base_lr, high_open=False)
        self._start()

    def rate(self, k: int) -> float:
        """The rate of step ``k`` (see the class)."""
        if k < self.warmup:
            return self.base_lr * (self.start_factor + (1 - self.start_factor) * k / self.warmup)
        progress = min(k - self.warmup, self.total - self.warmup) / (self.total - self.warmup)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2


class OneCycleLR(Schedule):
    """The one-cycle policy (Smith & Topin, 2017): ``torch.optim.lr_scheduler.OneCycleLR``.

    The rate rises from ``max_lr / div_factor`` to ``max_lr`` over the
    first ``pct_start`` of ``total_steps``, then falls to ``max_lr /
    div_factor / final_div_factor`` (with ``three_phase``: back to the
    initial rate, then down to the final one), by cosine or linear
    annealing; the momentum (SGD's and RMSprop's ``momentum``, Adam's and
    AdamW's ``beta1``) moves the other way between ``max_momentum`` and
    ``base_momentum``.  The optimizer's ``lr`` is replaced by the initial
    rate, as torch does; with ``cycle_momentum`` an SGD built without
    momentum gets momentum, as in torch.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer.
    max_lr : float
        The peak rate, > 0.
    total_steps : int, optional
        Optimizer steps in the cycle, >= 2; stepping past it is refused.
    epochs, steps_per_epoch : int, optional
        When ``total_steps`` is not given, it is ``epochs * steps_per_epoch``
        (with :func:`nplstm.fit`, ``steps_per_epoch`` is the number of batches,
        ``ceil(N / batch_size)``).
    pct_start : float, default 0.3
        Fraction of the cycle spent rising, in [0, 1].
    anneal_strategy : {"cos", "linear"}, default "cos"
        How the rate moves between its end points.
    cycle_momentum : bool, default True
        Cycle the momentum (or ``beta1``) inversely to the rate.
    base_momentum, max_momentum : float, default 0.85, 0.95
        The momentum's end points, 0 <= base_momentum <= max_momentum < 1.
    div_factor : float, default 25
        ``initial rate = max_lr / div_factor``, > 0.
    final_div_factor : float, default 1e4
        ``final rate = initial rate / final_div_factor``, > 0.
    three_phase : bool, default False
        The original paper's three phases instead of fastai's two.

    Attributes
    ----------
    momenta : list of float
        With ``cycle_momentum``, the momentum (or ``beta1``) of every step so far.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ) -> None:
        super().__init__(optimizer)
        self.max_lr = _number("max_lr", max_lr, 0.0, low_open=True)
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR needs total_steps, or epochs and steps_per_epoch")
            total_steps = _count("epochs", epochs, 1) * _count("steps_per_epoch", steps_per_epoch, 1)
        self.total_steps = _count("total_steps", total_steps, 2)
        self.pct_start = _number("pct_start", pct_start, 0.0, 1.0, high_open=False)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear'; got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = _flag("cycle_momentum", cycle_momentum)
        self.max_momentum = _number("max_momentum", max_momentum, 0.0, 1.0)
        self.base_momentum = _number("base_momentum", base_momentum, 0.0, self.max_momentum, high_open=False)
        div = _number("div_factor", div_factor, 0.0, low_open=True)
        final_div = _number("final_div_factor", final_div_factor, 0.0, low_open=True)
        self.three_phase = _flag("three_phase", three_phase)
        self.initial_lr = self.max_lr / div
        self.min_lr = self.initial_lr / final_div
        self._momentum_attr = ""
        if self.cycle_momentum:
            self._momentum_attr = next((a for a in ("beta1", "momentum") if hasattr(optimizer, a)), "")
            if not self._momentum_attr:
                raise ValueError(
                    f"cycle_momentum needs an optimizer with momentum or beta1; {type(optimizer).__name__} has "
                    "neither (pass cycle_momentum=False)"
                )
        rise = float(self.pct_start * self.total_steps) - 1
        lr, m = (self.initial_lr, self.max_lr, self.min_lr), (self.max_momentum, self.base_momentum)
        # (end step, start rate, end rate, start momentum, end momentum), as torch's _schedule_phases
        self._phases: list[tuple[float, float, float, float, float]] = (
            [
                (rise, lr[0], lr[1], m[0], m[1]),
                (float(2 * self.pct_start * self.total_steps) - 2, lr[1], lr[0], m[1], m[0]),
                (self.total_steps - 1, lr[0], lr[2], m[0], m[0]),
            ]
            if self.three_phase
            else [(rise, lr[0], lr[1], m[0], m[1]), (self.total_steps - 1, lr[1], lr[2], m[1], m[0])]
        )
        ends = [p[0] for p in self._phases]
        if ends[0] == 0 or any(end <= start for start, end in zip(ends, ends[1:])):
            raise ValueError(
                f"pct_start={pct_start!r} with total_steps={total_steps!r} leaves a phase of the cycle without "
                "steps (torch divides by zero here); change pct_start"
            )
        self.momenta: list[float] = []
        self._start()

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _point(self, k: int) -> tuple[float, float]:
        """The rate and momentum of step ``k``."""
        if k > self.total_steps:
            raise ValueError(
                f"OneCycleLR was built for total_steps={self.total_steps} optimizer steps; step {k} is past its end "
                "(give total_steps = epochs x batches per epoch)"
            )
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
            if k <= end or i == len(self._phases) - 1:
                pct = (k - start) / (end - start)
                return self._anneal(lr0, lr1, pct), self._anneal(m0, m1, pct)
            start = end
        raise AssertionError("unreachable")  # pragma: no cover

    def rate(self, k: int) -> float:
        """The rate of step ``k``, 0 <= k <= total_steps."""
        return self._point(k)[0]

    def momentum(self, k: int) -> float:
        """The momentum (or ``beta1``) of step ``k``, 0 <= k <= total_steps."""
        return self._point(k)[1]

    def _set(self, lr: float) -> None:
        super()._set(lr)
        if self._momentum_attr:
            m = self.momentum(len(self.rates) - 1)
            setattr(self._optimizer, self._momentum_attr, m)
            self.momenta.append(m)


class ReduceLROnPlateau(_RateCallback):
    """Divide the rate when a metric stops improving: ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    Stepped once per epoch with the monitored metric: by :func:`nplstm.fit`
    at the end of each epoch with ``logs[monitor]``, or by hand with
    ``step(metric)``.  A metric improves when it beats the best so far by
    the threshold (``min``/``rel``: ``metric < best * (1 - threshold)``);
    after more than ``patience`` epochs without improvement the rate
    becomes ``max(lr * factor, min_lr)`` (unless that changes it by no more
    than ``eps``) and ``cooldown`` epochs follow in which bad epochs are not
    counted.  A NaN metric counts as an epoch without improvement, as in torch.
    The optimizer's rate is not changed at construction.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer.
    mode : {"min", "max"}, default "min"
        Whether the metric should fall (a loss) or rise (an accuracy).
    factor : float, default 0.1
        The factor of each reduction, in (0, 1).
    patience : int, default 10
        Epochs without improvement tolerated, >= 0.
    threshold : float, default 1e-4
        How much better counts as better, >= 0.
    threshold_mode : {"rel", "abs"}, default "rel"
        Whether the threshold is relative to the best value or absolute.
    cooldown : int, default 0
        Epochs after a reduction in which bad epochs are not counted, >= 0.
    min_lr : float, default 0
        The lowest rate, >= 0.
    eps : float, default 1e-8
        Reductions smaller than this are skipped, >= 0.
    monitor : str, default "val_loss"
        The key of the epoch's logs that :meth:`on_epoch_end` reads (fit's
        ``val_loss`` needs validation data; use ``monitor="loss"`` for the
        training loss).

    Attributes
    ----------
    best : float
        The best metric so far.
    num_bad_epochs : int
        Epochs since the last improvement (not counting cooldown).
    lr : float
        The current rate.
    rates : list of float
        The rate after each :meth:`step`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        monitor: str = "val_loss",
    ) -> None:
        super().__init__(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs'; got {threshold_mode!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged value (a str); got {monitor!r}")
        self.mode, self.threshold_mode, self.monitor = mode, threshold_mode, monitor
        self.factor = _number("factor", factor, 0.0, 1.0, low_open=True)
        self.patience = _count("patience", patience, 0)
        self.threshold = _number("threshold", threshold, 0.0)
        self.cooldown = _count("cooldown", cooldown, 0)
        self.min_lr = _number("min_lr", min_lr, 0.0)
        self.eps = _number("eps", eps, 0.0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _is_better(self, a: float) -> bool:
        best, t = self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - t) if self.threshold_mode == "rel" else best - t)
        return a > (best * (t + 1.0) if self.threshold_mode == "rel" else best + t)

    def step(self, metric: float) -> None:
        """Take one epoch's metric; reduce the optimizer's rate if it has stopped improving."""
        if isinstance(metric, bool) or not isinstance(metric, (int, float)) and not hasattr(metric, "__float__"):
            raise TypeError(f"metric must be a number; got {metric!r}")
        current = float(metric)
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        lr = self._optimizer.lr
        if self.num_bad_epochs > self.patience:
            new = max(lr * self.factor, self.min_lr)
            if lr - new > self.eps:
                lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._set(lr)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called by :func:`nplstm.fit` after each epoch: :meth:`step` with ``logs[monitor]``."""
        logs = logs or {}
        if self.monitor not in logs:
            hint = " (fit logs val_loss only with validation data; monitor='loss' reads the training loss)"
            raise ValueError(
                f"ReduceLROnPlateau monitors {self.monitor!r}, which the epoch's logs do not have; they have "
                f"{sorted(logs)}" + (hint if self.monitor == "val_loss" else "")
            )
        self.step(logs[self.monitor])
