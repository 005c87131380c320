"""Learning-rate schedules: every rate equal to torch.optim.lr_scheduler's, the callbacks' hooks, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nplstm.callbacks import Callback
from nplstm.optim import SGD, Adam, AdamW, RMSprop
from nplstm.schedules import (
    Constant,
    CosineWarmup,
    ExponentialLR,
    OneCycleLR,
    ReduceLROnPlateau,
    Schedule,
    StepLR,
)

torch = pytest.importorskip("torch")
sched = torch.optim.lr_scheduler

STEPS = 200
LR = 0.05


def _ours(opt_cls=SGD, lr=LR, **options):
    return opt_cls({"w": np.zeros(3)}, lr=lr, **options)


def _torch_opt(name="SGD", lr=LR, **options):
    return getattr(torch.optim, name)([torch.zeros(3, requires_grad=True)], lr=lr, **options)


def _torch_sequence(opt, scheduler, steps=STEPS):
    """The rate (and momentum or beta1) of every optimizer step, the scheduler stepped after each."""
    group = opt.param_groups[0]

    def momentum():
        return group["betas"][0] if "betas" in group else group.get("momentum")

    rates, momenta = [scheduler.get_last_lr()[0]], [momentum()]
    for _ in range(steps):
        opt.step()
        scheduler.step()
        rates.append(group["lr"])
        momenta.append(momentum())
    return np.array(rates), np.array(momenta, dtype=float)


def _our_sequence(schedule, steps=STEPS):
    for _ in range(steps):
        schedule.step()
        assert schedule.optimizer.lr == schedule.lr == schedule.rates[-1]
    return np.array(schedule.rates)


def _cosine_warmup_torch(opt, warmup, total, start_factor, eta_min):
    if warmup == 0:
        return sched.CosineAnnealingLR(opt, T_max=total, eta_min=eta_min)
    return sched.SequentialLR(
        opt,
        [
            sched.LinearLR(opt, start_factor=start_factor, total_iters=warmup),
            sched.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=eta_min),
        ],
        milestones=[warmup],
    )


# --------------------------------------------------------------- rates against torch
PARITY = [
    ("constant", lambda o: Constant(o), lambda t: sched.ConstantLR(t, factor=1.0, total_iters=0)),
    ("step", lambda o: StepLR(o, step_size=30), lambda t: sched.StepLR(t, step_size=30)),
    ("step-gamma", lambda o: StepLR(o, 7, gamma=0.5), lambda t: sched.StepLR(t, 7, gamma=0.5)),
    ("step-1", lambda o: StepLR(o, 1, gamma=0.97), lambda t: sched.StepLR(t, 1, gamma=0.97)),
    ("exponential", lambda o: ExponentialLR(o, 0.98), lambda t: sched.ExponentialLR(t, 0.98)),
    ("exponential-up", lambda o: ExponentialLR(o, 1.01), lambda t: sched.ExponentialLR(t, 1.01)),
    (
        "cosine-warmup",
        lambda o: CosineWarmup(o, warmup=20, total=STEPS),
        lambda t: _cosine_warmup_torch(t, 20, STEPS, 1 / 3, 0.0),
    ),
    (
        "cosine-warmup-eta",
        lambda o: CosineWarmup(o, warmup=37, total=STEPS, start_factor=0.01, eta_min=1e-4),
        lambda t: _cosine_warmup_torch(t, 37, STEPS, 0.01, 1e-4),
    ),
    (
        "cosine-no-warmup",
        lambda o: CosineWarmup(o, warmup=0, total=STEPS, eta_min=1e-3),
        lambda t: _cosine_warmup_torch(t, 0, STEPS, 1.0, 1e-3),
    ),
    ("one-cycle", lambda o: OneCycleLR(o, max_lr=0.1, total_steps=STEPS), lambda t: sched.OneCycleLR(t, 0.1, STEPS)),
    (
        "one-cycle-linear-3",
        lambda o: OneCycleLR(o, 0.1, STEPS, pct_start=0.25, anneal_strategy="linear", three_phase=True),
        lambda t: sched.OneCycleLR(t, 0.1, STEPS, pct_start=0.25, anneal_strategy="linear", three_phase=True),
    ),
    (
        "one-cycle-options",
        lambda o: OneCycleLR(
            o, 0.3, STEPS, pct_start=0.4, base_momentum=0.8, max_momentum=0.9, div_factor=10.0, final_div_factor=100.0
        ),
        lambda t: sched.OneCycleLR(
            t, 0.3, STEPS, pct_start=0.4, base_momentum=0.8, max_momentum=0.9, div_factor=10.0, final_div_factor=100.0
        ),
    ),
    (
        "one-cycle-3",
        lambda o: OneCycleLR(o, 0.1, STEPS, three_phase=True, cycle_momentum=False),
        lambda t: sched.OneCycleLR(t, 0.1, STEPS, three_phase=True, cycle_momentum=False),
    ),
]


@pytest.mark.parametrize("kind, ours, theirs", PARITY, ids=[p[0] for p in PARITY])
def test_every_rate_equals_torchs(kind, ours, theirs):
    expected, momenta = _torch_sequence(t := _torch_opt(momentum=0.9), theirs(t))
    schedule = ours(opt := _ours(momentum=0.9))
    got = _our_sequence(schedule)
    assert len(got) == STEPS + 1
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert (expected.min() == expected.max()) == (kind == "constant")  # the schedule moved the rate
    if isinstance(schedule, OneCycleLR) and schedule.cycle_momentum:
        np.testing.assert_allclose(schedule.momenta, momenta, rtol=1e-12, atol=0)
        assert opt.momentum == schedule.momenta[-1]
    else:
        assert opt.momentum == 0.9  # untouched


def test_cosine_warmup_by_hand_and_after_its_end():
    opt = _ours(lr=1.0)
    s = CosineWarmup(opt, warmup=4, total=8, start_factor=0.2, eta_min=0.1)
    assert [s.rate(k) for k in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0], rel=1e-15)
    assert s.rate(6) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 2)) / 2, rel=1e-15)  # half-way: 0.55
    assert s.rate(8) == s.rate(9) == s.rate(10_000) == pytest.approx(0.1, rel=1e-15)  # held at eta_min past total
    assert opt.lr == 0.2 and s.rates == [0.2]  # construction sets the first step's rate


@pytest.mark.parametrize("opt_name, attr", [("SGD", "momentum"), ("Adam", "beta1"), ("AdamW", "beta1"), ("RMSprop", "momentum")])
def test_one_cycle_cycles_each_optimizers_momentum_like_torch(opt_name, attr):
    cls = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop}[opt_name]
    t = _torch_opt(opt_name)
    expected_rates, expected_momenta = _torch_sequence(t, sched.OneCycleLR(t, 0.01, STEPS, pct_start=0.2))
    opt = cls({"w": np.zeros(3)}, lr=1e-3)
    schedule = OneCycleLR(opt, 0.01, STEPS, pct_start=0.2)
    got = _our_sequence(schedule)
    np.testing.assert_allclose(got, expected_rates, rtol=1e-12, atol=0)
    np.testing.assert_allclose(schedule.momenta, expected_momenta, rtol=1e-12, atol=0)
    assert getattr(opt, attr) == schedule.momenta[-1]
    assert schedule.momenta[0] == 0.95 and min(schedule.momenta) == pytest.approx(0.85, abs=1e-4)


def test_one_cycle_counts_epochs_times_steps_per_epoch_like_torch():
    t = _torch_opt(momentum=0.9)
    expected, momenta = _torch_sequence(t, sched.OneCycleLR(t, 0.1, epochs=8, steps_per_epoch=25))
    schedule = OneCycleLR(_ours(momentum=0.9), 0.1, epochs=8, steps_per_epoch=25)
    assert schedule.total_steps == 200
    np.testing.assert_allclose(_our_sequence(schedule), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(schedule.momenta, momenta, rtol=1e-12, atol=0)


def test_one_cycle_end_points_by_hand_and_no_step_past_the_cycle():
    s = OneCycleLR(_ours(), max_lr=1.0, total_steps=11, pct_start=0.5, anneal_strategy="linear")
    # rise over steps 0..4.5 from 1/25 to 1, fall over 4.5..10 to 1/25/1e4
    assert s.rate(0) == pytest.approx(0.04, rel=1e-15) and s.momentum(0) == 0.95
    assert s.rate(10) == pytest.approx(0.04e-4, rel=1e-12) and s.momentum(10) == pytest.approx(0.95, rel=1e-15)
    assert s.rate(4) == pytest.approx(0.04 + 0.96 * 4 / 4.5, rel=1e-15)
    for _ in range(11):
        s.step()
    with pytest.raises(ValueError, match="built for total_steps=11 optimizer steps; step 12 is past its end"):
        s.step()


# --------------------------------------------------------------- reduce on plateau
METRICS = [1.0, 0.9, 0.8, 0.8, 0.79995, 0.81, 0.85, 0.7, 0.7, 0.7, 0.7, 0.7, 0.69, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7,
           float("nan"), 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
PLATEAU = [
    {},
    {"patience": 2},
    {"patience": 1, "cooldown": 2, "factor": 0.5},
    {"patience": 0, "threshold": 0.05, "threshold_mode": "abs", "min_lr": 1e-3},
    {"patience": 1, "mode": "max", "factor": 0.3},
    {"patience": 1, "mode": "max", "threshold_mode": "abs", "threshold": 0.01, "eps": 0.01},
    {"patience": 0, "factor": 0.5, "min_lr": 0.0123},
]


@pytest.mark.parametrize("options", PLATEAU, ids=[str(i) for i in range(len(PLATEAU))])
def test_reduce_on_plateau_equals_torch_on_a_scripted_metric(options):
    t = _torch_opt()
    twin = sched.ReduceLROnPlateau(t, **options)
    ours = ReduceLROnPlateau(opt := _ours(), **options)
    assert opt.lr == LR  # not changed at construction
    expected = []
    for metric in METRICS:
        twin.step(metric)
        expected.append(t.param_groups[0]["lr"])
        ours.step(metric)
        assert opt.lr == ours.lr and ours.best == twin.best or math.isnan(metric)
    np.testing.assert_allclose(ours.rates, expected, rtol=1e-12, atol=0)
    assert len(ours.rates) == len(METRICS)


def test_reduce_on_plateau_by_hand():
    s = ReduceLROnPlateau(opt := _ours(lr=1.0), patience=1, factor=0.5)
    for metric in (1.0, 1.0, 1.0, 0.5, 0.5, 0.5):  # bad epochs 1, 2 -> halve; then a new best; bad 1, 2 -> halve
        s.step(metric)
    assert s.rates == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25] and opt.lr == 0.25


def test_reduce_on_plateau_reads_the_monitored_log_at_each_epochs_end():
    s = ReduceLROnPlateau(opt := _ours(lr=1.0), patience=0, factor=0.5)
    s.on_batch_end(0, {"loss": 5.0})  # a per-epoch schedule ignores batches
    s.on_epoch_end(0, {"loss": 3.0, "val_loss": 2.0})
    s.on_epoch_end(1, {"loss": 1.0, "val_loss": 2.5})
    assert s.rates == [1.0, 0.5] and opt.lr == 0.5
    with pytest.raises(ValueError, match=r"monitors 'val_loss', which the epoch's logs do not have; they have \['loss'\] "
                                       r"\(fit logs val_loss only with validation data; monitor='loss'"):
        s.on_epoch_end(2, {"loss": 1.0})
    by_loss = ReduceLROnPlateau(_ours(lr=1.0), patience=0, factor=0.5, monitor="loss")
    by_loss.on_epoch_end(0, {"loss": 3.0})
    by_loss.on_epoch_end(1, {"loss": 4.0})
    assert by_loss.rates == [1.0, 0.5]
    with pytest.raises(ValueError, match=r"monitors 'accuracy', which the epoch's logs do not have; they have \[\]$"):
        ReduceLROnPlateau(_ours(), mode="max", monitor="accuracy").on_epoch_end(0, None)


# --------------------------------------------------------------- driving an optimizer
def _train_both(make_ours, make_theirs, opt_name, options, steps=50):
    rng = np.random.default_rng(3)
    init = {"a": rng.normal(size=(4, 5)), "b": rng.normal(size=(6,))}
    grads = [{k: rng.normal(size=v.shape) for k, v in init.items()} for _ in range(steps)]
    params = {k: v.copy() for k, v in init.items()}
    opt = {"Adam": Adam, "AdamW": AdamW, "SGD": SGD}[opt_name](params, **options)
    schedule = make_ours(opt)
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in init.values()]
    topt = getattr(torch.optim, opt_name)(tensors, foreach=False, **options)
    tsched = make_theirs(topt)
    for g in grads:
        opt.step(g)
        schedule.on_batch_end(0, {"loss": 0.0})  # as fit calls it after each optimizer step
        for t, v in zip(tensors, g.values()):
            t.grad = torch.from_numpy(v.copy())
        topt.step()
        tsched.step()
    for k, t in zip(params, tensors):
        np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert not np.allclose(params["a"], init["a"], atol=1e-3)


def test_a_schedule_driving_adam_gives_torchs_parameters():
    _train_both(
        lambda o: CosineWarmup(o, warmup=10, total=50, start_factor=0.1),
        lambda t: _cosine_warmup_torch(t, 10, 50, 0.1, 0.0),
        "Adam", {"lr": 1e-2, "weight_decay": 0.01},
    )


def test_one_cycle_driving_adamw_gives_torchs_parameters_with_beta1_cycled():
    _train_both(lambda o: OneCycleLR(o, 0.05, 50), lambda t: sched.OneCycleLR(t, 0.05, 50), "AdamW", {"lr": 1e-3})


def test_one_cycle_driving_sgd_without_momentum_gives_it_momentum_like_torch():
    _train_both(lambda o: OneCycleLR(o, 0.05, 50), lambda t: sched.OneCycleLR(t, 0.05, 50), "SGD", {"lr": 1e-3})


def test_step_schedule_driving_nesterov_sgd_gives_torchs_parameters():
    _train_both(
        lambda o: StepLR(o, 7, gamma=0.5), lambda t: sched.StepLR(t, 7, gamma=0.5),
        "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    )


# --------------------------------------------------------------- callbacks and refusals
def test_schedules_are_callbacks_that_refuse_another_optimizer():
    opt = _ours()
    s = ExponentialLR(opt, 0.5)
    assert isinstance(s, Callback) and isinstance(s, Schedule)
    s.optimizer = opt  # what fit does: the same optimizer is fine
    s.optimizer = None
    assert s.optimizer is opt
    with pytest.raises(ValueError, match="this ExponentialLR drives another optimizer than the one training uses"):
        s.optimizer = _ours()
    for batch in range(3):
        s.on_batch_end(batch, {"loss": 1.0})
    s.on_epoch_end(0, {"loss": 1.0})  # a per-step schedule ignores epochs
    assert s.rates == [LR, LR / 2, LR / 4, LR / 8] and s.steps == 3


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda o: StepLR(o, 0), ValueError, "step_size must be an integer >= 1; got 0"),
        (lambda o: StepLR(o, 2.0), ValueError, "step_size must be an integer >= 1; got 2.0"),
        (lambda o: StepLR(o, 3, gamma=0), ValueError, r"gamma must be a finite number in \(0, inf\); got 0"),
        (lambda o: ExponentialLR(o, float("nan")), ValueError, r"gamma must be a finite number in \(0, inf\); got nan"),
        (lambda o: CosineWarmup(o, warmup=-1, total=10), ValueError, "warmup must be an integer >= 0; got -1"),
        (lambda o: CosineWarmup(o, warmup=10, total=10), ValueError, "total must be an integer >= 11; got 10"),
        (lambda o: CosineWarmup(o, 1, 10, start_factor=0), ValueError, r"start_factor must be a finite number in \(0, 1\]"),
        (lambda o: CosineWarmup(o, 1, 10, eta_min=0.1), ValueError, r"eta_min must be a finite number in \[0, 0.05\]; got 0.1"),
        (lambda o: OneCycleLR(o, 0, 10), ValueError, r"max_lr must be a finite number in \(0, inf\); got 0"),
        (lambda o: OneCycleLR(o, 0.1, 1), ValueError, "total_steps must be an integer >= 2; got 1"),
        (lambda o: OneCycleLR(o, 0.1), ValueError, "OneCycleLR needs total_steps, or epochs and steps_per_epoch"),
        (lambda o: OneCycleLR(o, 0.1, epochs=3), ValueError, "needs total_steps, or epochs and steps_per_epoch"),
        (lambda o: OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=4), ValueError, "epochs must be an integer >= 1; got 0"),
        (lambda o: OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=1.5), ValueError, "steps_per_epoch must be an integer"),
        (lambda o: OneCycleLR(o, 0.1, 10, pct_start=1.5), ValueError, r"pct_start must be a finite number in \[0, 1\]"),
        (lambda o: OneCycleLR(o, 0.1, 10, pct_start=0.1), ValueError, "pct_start=0.1 with total_steps=10 leaves a phase"),
        (lambda o: OneCycleLR(o, 0.1, 10, pct_start=0.6, three_phase=True), ValueError, "leaves a phase of the cycle"),
        (lambda o: OneCycleLR(o, 0.1, 10, anneal_strategy="exp"), ValueError, "anneal_strategy must be 'cos' or 'linear'"),
        (lambda o: OneCycleLR(o, 0.1, 10, base_momentum=0.99), ValueError, r"base_momentum must be .* in \[0, 0.95\]; got"),
        (lambda o: OneCycleLR(o, 0.1, 10, max_momentum=1.0), ValueError, r"max_momentum must be a finite number in \[0, 1\)"),
        (lambda o: OneCycleLR(o, 0.1, 10, div_factor=0), ValueError, r"div_factor must be a finite number in \(0, inf\)"),
        (lambda o: OneCycleLR(o, 0.1, 10, final_div_factor=-1), ValueError, "final_div_factor must be"),
        (lambda o: ReduceLROnPlateau(o, mode="minimum"), ValueError, "mode must be 'min' or 'max'; got 'minimum'"),
        (lambda o: ReduceLROnPlateau(o, factor=1.0), ValueError, r"factor must be a finite number in \(0, 1\); got 1.0"),
        (lambda o: ReduceLROnPlateau(o, patience=-1), ValueError, "patience must be an integer >= 0; got -1"),
        (lambda o: ReduceLROnPlateau(o, threshold_mode="relative"), ValueError, "threshold_mode must be 'rel' or 'abs'"),
        (lambda o: ReduceLROnPlateau(o, cooldown=1.5), ValueError, "cooldown must be an integer >= 0; got 1.5"),
        (lambda o: ReduceLROnPlateau(o, min_lr=-1e-6), ValueError, r"min_lr must be a finite number in \[0, inf\)"),
        (lambda o: ReduceLROnPlateau(o, monitor=3), TypeError, "monitor must be the name of a logged value"),
        (lambda o: ReduceLROnPlateau(o).step("0.5"), TypeError, "metric must be a number; got '0.5'"),
        (lambda o: Constant("sgd"), TypeError, "a schedule drives an nplstm.optim.Optimizer; got str"),
    ],
)
def test_bad_arguments_are_refused_by_name(make, error, message):
    with pytest.raises(error, match=message):
        make(_ours())


def test_one_cycle_needs_an_optimizer_with_momentum():
    from nplstm.optim import Optimizer

    class Plain(Optimizer):
        def _update(self, name, param, grad, lr):
            param -= lr * grad

    with pytest.raises(ValueError, match="cycle_momentum needs an optimizer with momentum or beta1; Plain has neither"):
        OneCycleLR(Plain({"w": np.zeros(2)}, lr=0.1), 0.1, 10)
    OneCycleLR(p := Plain({"w": np.zeros(2)}, lr=0.1), 0.1, 10, cycle_momentum=False).step()
    assert p.lr == pytest.approx(OneCycleLR(Plain({"w": np.zeros(2)}, 0.1), 0.1, 10, cycle_momentum=False).rate(1))
