"""The NumPy step loop's two ways of meeting its inputs (nplstm.loop).

``_StackedInputs`` puts x_t and a 1 under h_{t-1} so one product per step
gives the pre-activations, bias included; ``_ProjectedInputs`` projects
the inputs of many steps ahead and adds them to each step's recurrent
product.  Both must give the equations' numbers on every path through the
loop: every batch size 1..9, H not a multiple of 16, more steps than one
chunk, lengths, a projection, float32 and float64.
"""

import numpy as np
import pytest

from nplstm import LSTM, kernels, loop

from reference import load_into, random_weights, reference_lstm


def record_input_forms(monkeypatch) -> list[str]:
    """The names of the input forms run_sequence builds from now on, in order."""
    chosen: list[str] = []
    for name in ("_StackedInputs", "_ProjectedInputs"):
        kind = getattr(loop, name)

        def __init__(self, *args, _kind=kind, _name=name):
            chosen.append(_name)
            _kind.__init__(self, *args)

        monkeypatch.setattr(loop, name, type(name, (kind,), {"__init__": __init__}))
    return chosen


@pytest.fixture(params=["stacked", "projected"])
def input_form(request, monkeypatch):
    """Force one input form at every size (run_sequence would choose by H and I)."""
    monkeypatch.setattr(kernels, "_backend", "numpy")
    monkeypatch.setattr(loop, "STACKED_MAX_GATES", 1 << 30 if request.param == "stacked" else 0)
    chosen = record_input_forms(monkeypatch)
    yield request.param
    assert set(chosen) == {f"_{request.param.capitalize()}Inputs"}, "the forced form ran"


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("B", range(1, 10))
def test_each_input_form_gives_the_reference_over_lengths(input_form, rng, B, dtype, tol):
    T, I, H = 37, 5, 13  # three chunks of PROJECTION_CHUNK steps; H not a multiple of 16
    weights = random_weights(rng, I, H)
    lstm = load_into(LSTM(I, H, dtype=dtype), weights)
    x = rng.normal(size=(T, B, I))
    h0, c0 = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    outputs, h_n, c_n = lstm.forward(x, h0, c0, lengths=lengths)
    for row, n in enumerate(lengths):
        hs, h_ref, c_ref = reference_lstm(x[:n, row], weights, h0[row], c0[row])
        np.testing.assert_allclose(outputs[:n, row], hs, rtol=tol, atol=tol)
        np.testing.assert_array_equal(outputs[n:, row], 0)
        np.testing.assert_allclose(h_n[row], h_ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(c_n[row], c_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("B", [1, 4, 9])
def test_each_input_form_gives_the_same_projected_layer_and_gradients(rng, B, monkeypatch):
    """With a projection (and on the tape backward reads) the two forms agree to rounding."""
    T, I, H, P = 21, 6, 11, 5
    lstm = LSTM(I, H, proj_size=P, dtype=np.float64)
    for name in ("Wf", "Wi", "Wc", "Wo", "bf", "bi", "bc", "bo"):  # (H, P + I) gates, non-zero biases
        setattr(lstm, name, rng.normal(scale=0.5, size=getattr(lstm, name).shape))
    x = rng.normal(size=(T, B, I))
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    monkeypatch.setattr(kernels, "_backend", "numpy")
    runs = []
    for widest in (1 << 30, 0):
        monkeypatch.setattr(loop, "STACKED_MAX_GATES", widest)
        outputs, h_n, c_n = lstm.forward(x, lengths=lengths, train=True)
        grads = lstm.backward(np.cos(np.arange(outputs.size)).reshape(outputs.shape))
        runs.append((outputs, h_n, c_n, grads))
    (o1, h1, c1, g1), (o2, h2, c2, g2) = runs
    assert o1.shape == (T, B, P)
    np.testing.assert_allclose(o1, o2, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h1, h2, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c1, c2, rtol=1e-12, atol=1e-13)
    for name in g1:
        np.testing.assert_allclose(g1[name], g2[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("I, H, proj_size, expected", [
    (1, 32, 0, "_StackedInputs"),      # the serving model: 4H = 128, x narrower than h
    (64, 64, 0, "_StackedInputs"),     # 4H = 256, I = P
    (65, 64, 0, "_ProjectedInputs"),   # x wider than h: a per-step product would grow by more than h's
    (16, 65, 0, "_ProjectedInputs"),   # 4H = 260: the product's flops, not its calls, cost most
    (8, 32, 4, "_ProjectedInputs"),    # I = 8 > P = 4
])
def test_the_step_stacks_its_inputs_only_where_it_measured_faster(rng, monkeypatch, I, H, proj_size, expected):
    monkeypatch.setattr(kernels, "_backend", "numpy")
    chosen = record_input_forms(monkeypatch)
    LSTM(I, H, proj_size=proj_size).forward(rng.normal(size=(3, 2, I)))
    assert chosen == [expected]
