"""The step (nplstm.cell), its activations registry and the loop's flip helper, against independent references.

``reference_step`` is the contract written as the equations read; ``step_``
must compute it in place, and ``step_backward_`` must be its derivative
(checked by central finite differences in float64), for every cell variant.
"""

from __future__ import annotations

import numpy as np
import pytest

from nplstm.activations import ACTIVATIONS, Activation, takes
from nplstm.cell import DEFAULT_CELL, CellOptions, halved_form, reference_step, step_, step_backward_
from nplstm.checks import dropout_rate, flag, positive_int, thread_count
from nplstm.loop import Packing, flip

H, B = 3, 2
CELLS = {
    "standard": DEFAULT_CELL,
    "general": CellOptions(gate_activation=Activation("HardSigmoid"), cell_activation=Activation("Elu"),
                           hidden_activation=Activation("Softsign"), clip=1.5),
    "peepholes, coupled": CellOptions(peepholes=True, input_forget=True),
    "scaled tanh": CellOptions(cell_activation=Activation("ScaledTanh", 0.7, 1.3), hidden_activation=Activation("Affine", 0.5, 0.1)),
}


def _forward(a, c_prev, cell, peepholes):
    """(h, c, activations, pre) of step_ on copies (float64)."""
    gates, c, h = a.copy(), c_prev.copy(), np.empty_like(c_prev)
    pre = np.zeros_like(a)
    step_(gates, c, h, np.empty_like(c_prev), cell, peepholes if cell.peepholes else None, pre)
    return h, c, gates, pre


def test_step_computes_the_reference_step():
    rng = np.random.default_rng(0)
    I = 4
    x, h, c = rng.normal(size=(B, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    W, b = rng.normal(size=(4 * H, H + I)), rng.normal(size=4 * H)
    ref_h, ref_c = reference_step(x, h, c, W, b)
    gates = np.concatenate([h, x], axis=1) @ W.T + b
    c_new, h_new = c.copy(), np.empty_like(h)
    step_(gates, c_new, h_new, np.empty_like(c))
    np.testing.assert_allclose(h_new, ref_h, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c_new, ref_c, rtol=0, atol=1e-14)
    # the same step with the recurrent weight halved once (how the loop runs the standard cell)
    W_hT, form = halved_form(np.ascontiguousarray(W[:, :H].T), DEFAULT_CELL)
    assert form is not None
    halved = (x @ W[:, H:].T + b) * form[0] + h @ W_hT
    c2, h2 = c.copy(), np.empty_like(h)
    step_(halved, c2, h2, np.empty_like(c), halved=form)
    np.testing.assert_allclose(h2, ref_h, rtol=0, atol=1e-14)
    assert halved_form(W_hT, CELLS["general"]) == (W_hT, None)


@pytest.mark.parametrize("name", list(CELLS))
def test_step_backward_is_the_derivative_of_step(name):
    cell = CELLS[name]
    rng = np.random.default_rng(1)
    a, c_prev = rng.normal(size=(B, 4 * H)) * 0.8, rng.normal(size=(B, H))
    peep = rng.normal(size=(3, H)) * 0.5
    w_h, w_c = rng.normal(size=(B, H)), rng.normal(size=(B, H))  # loss = sum(w_h h) + sum(w_c c)

    def loss(a_, c_, p_):
        h, c, _, _ = _forward(a_, c_, cell, p_)
        return float(np.sum(w_h * h) + np.sum(w_c * c))

    h, c, act, pre = _forward(a, c_prev, cell, peep)
    dc, da, dP = w_c.copy(), np.empty_like(a), np.zeros_like(peep)
    step_backward_(act, c, c_prev, w_h, dc, da, np.empty_like(c), cell, None if cell.is_default else pre,
                   peep if cell.peepholes else None, dP if cell.peepholes else None)
    eps = 1e-6
    for arr, grad in [(a, da), (c_prev, dc)] + ([(peep, dP)] if cell.peepholes else []):
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            saved = arr[idx]
            arr[idx] = saved + eps
            up = loss(a, c_prev, peep)
            arr[idx] = saved - eps
            down = loss(a, c_prev, peep)
            arr[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_registered_derivative_matches_finite_differences(name):
    act = Activation(name)
    kinks = {"ThresholdedRelu": [1.0], "HardSigmoid": [-2.5, 2.5]}.get(name, [0.0])  # where df jumps
    x = np.linspace(-3, 3, 61) + 0.013
    x = x[np.min(np.abs(x[:, None] - np.array(kinks)[None, :]), axis=1) > 0.05]
    eps = 1e-6
    numeric = (act(x + eps) - act(x - eps)) / (2 * eps)
    np.testing.assert_allclose(act.derivative(x), numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(act.derivative(x, act(x)), act.derivative(x))


def test_registry_is_the_one_list_onnx_reads():
    from nplstm.interop.onnx._constants import ACTIVATION_PARAMS

    assert ACTIVATION_PARAMS == {name: takes(name) for name in ACTIVATIONS}
    assert takes("Affine") == (True, True) and takes("Elu") == (True, False) and takes("Tanh") == (False, False)


def test_flip_reverses_each_sequence_within_its_length_and_is_its_own_inverse():
    T = 4
    seq = np.arange(T * 3, dtype=float).reshape(T, 3, 1)
    assert np.shares_memory(flip(seq), seq)
    np.testing.assert_array_equal(flip(seq)[:, :, 0], seq[::-1, :, 0])
    packing = Packing.of(np.array([4, 2, 3]), T)
    sorted_seq = seq[:, packing.order]
    flipped = flip(sorted_seq, packing)
    for b, n in enumerate(packing.lengths):
        np.testing.assert_array_equal(flipped[:n, b], sorted_seq[:n, b][::-1])
        np.testing.assert_array_equal(flipped[n:, b], sorted_seq[n:, b])  # padding stays in place
    np.testing.assert_array_equal(flip(flipped, packing), sorted_seq)


def test_checks_name_the_argument():
    assert positive_int(np.int64(3), "n") == 3 and thread_count(None) is None and dropout_rate(0) == 0.0
    with pytest.raises(ValueError, match="units must be an integer >= 1; got True"):
        positive_int(True, "units")
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\); got 1"):
        dropout_rate(1)
    with pytest.raises(ValueError, match="threads must be an integer >= 1 or None; got 0"):
        thread_count(0)
    with pytest.raises(TypeError, match="peepholes must be True or False; got 'no'"):
        flag("no", "peepholes")
