"""Parity with torch.nn.LSTM, the field's reference implementation.

The mapping is written out here by hand (torch packs gates i, f, g, o and
splits input and hidden weights) so this test does not lean on nplstm's own
interop code.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nplstm import LSTM  # noqa: E402


def torch_to_nplstm(module: "torch.nn.LSTM", dtype=np.float64) -> LSTM:
    H, I = module.hidden_size, module.input_size
    w_ih = module.weight_ih_l0.detach().double().numpy()
    w_hh = module.weight_hh_l0.detach().double().numpy()
    b = (module.bias_ih_l0 + module.bias_hh_l0).detach().double().numpy()
    lstm = LSTM(I, H, dtype=dtype)
    for k, name in enumerate(["i", "f", "c", "o"]):
        rows = slice(k * H, (k + 1) * H)
        setattr(lstm, f"W{name}", np.hstack([w_hh[rows], w_ih[rows]]))  # hidden first
        setattr(lstm, f"b{name}", b[rows][:, None])
    return lstm


@pytest.mark.parametrize("T, B, I, H", [(1, 1, 1, 1), (3, 1, 1, 1), (12, 4, 3, 5), (30, 2, 7, 16)])
def test_float64_parity_with_torch(T, B, I, H):
    torch.manual_seed(T * 1000 + H)
    module = torch.nn.LSTM(I, H).double()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.8, 0.8)  # biases non-zero too
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(1, B, H, dtype=torch.float64)
    c0 = torch.randn(1, B, H, dtype=torch.float64)
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = module(x, (h0, c0))
    outputs, h, c = torch_to_nplstm(module).forward(x.numpy(), h0[0].numpy(), c0[0].numpy())
    np.testing.assert_allclose(outputs, ref_out.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h, ref_h[0].numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(c, ref_c[0].numpy(), rtol=0, atol=1e-10)


def test_float32_parity_with_torch():
    torch.manual_seed(0)
    module = torch.nn.LSTM(6, 10)
    x = torch.randn(25, 3, 6)
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = module(x)
    outputs, h, c = torch_to_nplstm(module, np.float32).forward(x.numpy())
    assert outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, ref_out.numpy(), atol=1e-5)
    np.testing.assert_allclose(c, ref_c[0].numpy(), atol=1e-5)
