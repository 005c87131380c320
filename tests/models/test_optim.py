"""Optimizers and gradient clipping, step for step against torch.optim and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nplstm.optim import SGD, Adam, AdamW, RMSprop, clip_grad_value

torch = pytest.importorskip("torch")


# -------------------------------------------------------------- clipping
def test_clip_grad_value_clamps_each_element_in_place_like_torch():
    g = {"a": np.array([-3.0, -0.5, 0.0, 0.25, 2.0]), "b": np.array([[1.5, -1.0], [0.75, np.nan]])}
    views = {k: v for k, v in g.items()}
    expected = {k: torch.from_numpy(v.copy()) for k, v in g.items()}
    for t in expected.values():
        t.grad = t.clone()
    torch.nn.utils.clip_grad_value_(list(expected.values()), 1.0)
    assert clip_grad_value(g, 1.0) is None
    for k in g:
        assert g[k] is views[k]  # in place
        np.testing.assert_array_equal(g[k], expected[k].grad.numpy())
    np.testing.assert_array_equal(g["a"], [-1.0, -0.5, 0.0, 0.25, 1.0])  # by hand
    assert np.isnan(g["b"][1, 1])


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "1", None])
def test_clip_grad_value_refuses_a_bad_value(bad):
    with pytest.raises(ValueError, match="clip_value must be a positive finite number; got"):
        clip_grad_value({"a": np.ones(2)}, bad)


# -------------------------------------------------------------- parity with torch.optim
SHAPES = [(7,), (4, 5), (2, 3, 4)]

#: (ours, torch's name, options): every option of every optimizer, alone and combined.
CASES = [
    (SGD, "SGD", {"lr": 0.1}),
    (SGD, "SGD", {"lr": 0.05, "momentum": 0.9}),
    (SGD, "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}),
    (SGD, "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (SGD, "SGD", {"lr": 0.05, "weight_decay": 0.1}),
    (SGD, "SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    (SGD, "SGD", {}),
    (Adam, "Adam", {}),
    (Adam, "Adam", {"lr": 1e-2, "weight_decay": 0.1}),
    (Adam, "Adam", {"lr": 1e-2, "amsgrad": True}),
    (Adam, "Adam", {"lr": 1e-2, "betas": (0.5, 0.9), "eps": 1e-3, "amsgrad": True, "weight_decay": 0.05}),
    (Adam, "Adam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (AdamW, "AdamW", {}),
    (AdamW, "AdamW", {"lr": 1e-2, "weight_decay": 0.1}),
    (AdamW, "AdamW", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.3, "amsgrad": True}),
    (RMSprop, "RMSprop", {}),
    (RMSprop, "RMSprop", {"momentum": 0.9}),
    (RMSprop, "RMSprop", {"centered": True}),
    (RMSprop, "RMSprop", {"weight_decay": 0.1, "alpha": 0.9, "eps": 1e-4}),
    (RMSprop, "RMSprop", {"lr": 1e-3, "centered": True, "momentum": 0.5, "weight_decay": 0.1}),
]


def _problem(dtype, steps=50, seed=0):
    """Initial parameters of several shapes and a gradient sequence whose scale varies over four decades."""
    rng = np.random.default_rng(seed)
    init = {f"p{i}": rng.normal(size=s).astype(dtype) for i, s in enumerate(SHAPES)}
    grads = [
        {k: (rng.normal(size=v.shape) * 10.0 ** rng.uniform(-3, 1)).astype(dtype) for k, v in init.items()}
        for _ in range(steps)
    ]
    return init, grads


def _torch_twin(init, name, options):
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in init.values()]
    return tensors, getattr(torch.optim, name)(tensors, foreach=False, **options)


def _torch_step(tensors, opt, grads):
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.from_numpy(g.copy())
    opt.step()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("ours, name, options", CASES, ids=[f"{n}-{i}" for i, (_, n, _) in enumerate(CASES)])
def test_each_step_equals_torch(ours, name, options, dtype, tol):
    init, grads = _problem(dtype)
    params = {k: v.copy() for k, v in init.items()}
    views = dict(params)
    opt = ours(params, **options)
    tensors, twin = _torch_twin(init, name, options)
    for g in grads:
        given = {k: v.copy() for k, v in g.items()}
        opt.step(g)
        _torch_step(tensors, twin, g)
        for k, t in zip(params, tensors):
            assert params[k] is views[k] and params[k].dtype == dtype  # in place, dtype kept
            np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=tol, atol=tol)
            np.testing.assert_array_equal(g[k], given[k])  # the gradients are not changed
    assert not np.allclose(params["p1"], init["p1"], rtol=0, atol=10 * tol)  # the test moved the parameters


def test_changing_lr_between_steps_equals_torch_changing_its_group_lr():
    init, grads = _problem(np.float64, steps=20)
    params = {k: v.copy() for k, v in init.items()}
    opt = AdamW(params, lr=1e-2, weight_decay=0.1)
    tensors, twin = _torch_twin(init, "AdamW", {"lr": 1e-2, "weight_decay": 0.1})
    for i, g in enumerate(grads):
        opt.lr = twin.param_groups[0]["lr"] = 1e-2 / (1 + i)
        opt.step(g)
        _torch_step(tensors, twin, g)
    for k, t in zip(params, tensors):
        np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------- by hand
def test_sgd_nesterov_by_hand():
    p = {"w": np.array([1.0, -1.0])}
    opt = SGD(p, lr=0.1, momentum=0.9, nesterov=True)
    g = np.array([1.0, 2.0])
    opt.step({"w": g})  # buffer b = g; step g + 0.9 b = 1.9 g
    np.testing.assert_allclose(p["w"], [1 - 0.19, -1 - 0.38], rtol=1e-15)
    opt.step({"w": g})  # b = 0.9 g + g = 1.9 g; step g + 0.9 * 1.9 g = 2.71 g
    np.testing.assert_allclose(p["w"], [0.81 - 0.271, -1.38 - 0.542], rtol=1e-15)


def test_sgd_dampening_spares_the_first_step_like_torch():
    p = {"w": np.array([0.0])}
    opt = SGD(p, lr=1.0, momentum=0.9, dampening=0.5)
    opt.step({"w": np.array([1.0])})  # buffer = g at the first step, not (1 - dampening) g
    assert p["w"][0] == pytest.approx(-1.0, rel=1e-15)
    opt.step({"w": np.array([1.0])})  # buffer = 0.9 * 1 + 0.5 * 1
    assert p["w"][0] == pytest.approx(-1.0 - 1.4, rel=1e-15)


def test_adamw_decays_the_weights_apart_from_the_moments_by_hand():
    p = {"w": np.array([1.0])}
    opt = AdamW(p, lr=0.1, weight_decay=0.5, eps=0.0)
    opt.step({"w": np.array([2.0])})  # w = 1 * (1 - 0.1 * 0.5) = 0.95, then the first Adam step is lr * sign(g)
    assert p["w"][0] == pytest.approx(0.95 - 0.1, rel=1e-15)
    opt.step({"w": np.array([0.0])})  # m = 0.9 * 0.2, v = 0.999 * 0.004
    m_hat, v_hat = 0.18 / (1 - 0.9**2), 0.003996 / (1 - 0.999**2)
    assert p["w"][0] == pytest.approx(0.85 * 0.95 - 0.1 * m_hat / math.sqrt(v_hat), rel=1e-14)
    l2 = {"w": np.array([1.0])}
    Adam(l2, lr=0.1, weight_decay=0.5, eps=0.0).step({"w": np.array([2.0])})  # the L2 form: g = 2 + 0.5 * 1
    assert l2["w"][0] == pytest.approx(0.9, rel=1e-15)


def test_rmsprop_first_step_by_hand():
    p = {"w": np.array([0.0, 0.0])}
    RMSprop(p, lr=0.01, alpha=0.9, eps=0.0).step({"w": np.array([3.0, -0.5])})  # s = 0.1 g², step lr·g/sqrt(0.1 g²)
    np.testing.assert_allclose(p["w"], [-0.01 / math.sqrt(0.1), 0.01 / math.sqrt(0.1)], rtol=1e-15)


def test_the_defaults_are_torchs():
    p = {"w": np.zeros(2)}
    for ours, name in ((SGD, "SGD"), (Adam, "Adam"), (AdamW, "AdamW"), (RMSprop, "RMSprop")):
        theirs = getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)]).defaults
        opt = ours(p)
        for key, value in theirs.items():
            if key == "betas":
                assert (opt.beta1, opt.beta2) == value
            elif hasattr(opt, key):
                assert getattr(opt, key) == value, (name, key)
        assert opt.lr == theirs["lr"]


# -------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: SGD(p, momentum=1.0), r"momentum must be a finite number in \[0, 1\); got 1.0"),
        (lambda p: SGD(p, momentum=-0.1), r"momentum must be a finite number in \[0, 1\); got -0.1"),
        (lambda p: SGD(p, momentum=True), r"momentum must be a finite number in \[0, 1\); got True"),
        (lambda p: SGD(p, dampening=1.5), r"dampening must be a finite number in \[0, 1\]; got 1.5"),
        (lambda p: SGD(p, weight_decay=-1e-4), r"weight_decay must be a finite number in \[0, inf\); got -0.0001"),
        (lambda p: SGD(p, weight_decay=float("nan")), r"weight_decay must be a finite number in \[0, inf\); got nan"),
        (lambda p: SGD(p, nesterov=True), "Nesterov momentum needs momentum > 0 and dampening 0; got momentum=0.0"),
        (lambda p: SGD(p, momentum=0.9, dampening=0.1, nesterov=True), "needs momentum > 0 and dampening 0; .*dampening=0.1"),
        (lambda p: SGD(p, momentum=0.9, nesterov=1), "nesterov must be True or False; got 1"),
        (lambda p: Adam(p, betas=(1.0, 0.999)), r"betas\[0\] must be a finite number in \[0, 1\); got 1.0"),
        (lambda p: Adam(p, betas=(0.9, -0.1)), r"betas\[1\] must be a finite number in \[0, 1\); got -0.1"),
        (lambda p: Adam(p, betas=0.9), r"betas must be a pair \(beta1, beta2\); got 0.9"),
        (lambda p: Adam(p, eps=-1e-8), r"eps must be a finite number in \[0, inf\); got -1e-08"),
        (lambda p: Adam(p, weight_decay="0.1"), r"weight_decay must be a finite number in \[0, inf\); got '0.1'"),
        (lambda p: Adam(p, amsgrad="yes"), "amsgrad must be True or False; got 'yes'"),
        (lambda p: AdamW(p, weight_decay=-0.01), r"weight_decay must be a finite number in \[0, inf\); got -0.01"),
        (lambda p: AdamW(p, lr=0), "lr must be a positive finite number; got 0"),
        (lambda p: RMSprop(p, alpha=1.0), r"alpha must be a finite number in \[0, 1\); got 1.0"),
        (lambda p: RMSprop(p, eps=float("inf")), r"eps must be a finite number in \[0, inf\); got inf"),
        (lambda p: RMSprop(p, momentum=2), r"momentum must be a finite number in \[0, 1\); got 2"),
        (lambda p: RMSprop(p, centered=None), "centered must be True or False; got None"),
    ],
)
def test_bad_hyper_parameters_are_refused_by_name(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make({"w": np.zeros(2)})


def test_a_step_refuses_an_lr_set_to_nonsense_and_checks_every_gradient_first():
    p = {"a": np.ones(2), "b": np.ones(3)}
    opt = Adam(p)
    opt.lr = float("nan")
    with pytest.raises(ValueError, match=r"lr must be a finite number in \[0, inf\); got nan"):
        opt.step({"a": np.ones(2), "b": np.ones(3)})
    opt.lr = 0.0  # a schedule may end at zero: the step then changes nothing
    opt.step({"a": np.ones(2), "b": np.ones(3)})
    np.testing.assert_array_equal(p["a"], 1.0)
    with pytest.raises(ValueError, match=r"gradient of b has shape \(2,\); expected \(3,\)"):
        SGD(p, lr=1.0).step({"a": np.ones(2), "b": np.ones(2)})
    np.testing.assert_array_equal(p["a"], 1.0)  # nothing moved before the bad gradient was found


def test_parameters_must_be_writeable_float_arrays():
    with pytest.raises(ValueError, match=r"the optimizer got no parameters \(params is empty\)"):
        Adam({})
    with pytest.raises(TypeError, match="parameter 'w' must be a writeable floating-point ndarray .*; got dtype int64"):
        SGD({"w": np.zeros(2, dtype=np.int64)})
    with pytest.raises(TypeError, match="parameter 'w' must be .*; got list"):
        RMSprop({"w": [0.0, 1.0]})
    frozen = np.zeros(2)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match="parameter 'w' must be .*; got a read-only float64 array"):
        AdamW({"w": frozen})
