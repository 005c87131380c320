"""Optimizers and gradient clipping, step for step against torch.optim and by hand."""

from __future__ import annotations

import numpy as np
import pytest

from nplstm.optim import clip_grad_value

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
