"""PyTorch interop: parity grid, export, .pt files, refusing mismatched weights."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nplstm.interop import InteropError, from_torch, load_torch, to_torch_state_dict  # noqa: E402
from nplstm.interop.torch import torch_module  # noqa: E402
from nplstm.stack import StackedLSTM  # noqa: E402

GRID = [
    dict(num_layers=L, bidirectional=bi, batch_first=bf, proj_size=proj, input_size=I, hidden_size=H)
    for (L, bi, bf, proj), (I, H) in zip(
        itertools.product([1, 2, 3], [False, True], [False, True], [0, 2]),
        itertools.cycle([(3, 5), (1, 7), (4, 3), (6, 4)]),
    )
]


def random_torch_lstm(cfg, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    module = torch.nn.LSTM(**cfg, dtype=dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    return module


def inputs_for(cfg, dtype, T=7, B=3):
    D = 2 if cfg["bidirectional"] else 1
    P = cfg["proj_size"] or cfg["hidden_size"]
    g = torch.Generator().manual_seed(1)
    shape = (B, T, cfg["input_size"]) if cfg["batch_first"] else (T, B, cfg["input_size"])
    x = torch.randn(*shape, generator=g, dtype=dtype)
    h0 = torch.randn(cfg["num_layers"] * D, B, P, generator=g, dtype=dtype)
    c0 = torch.randn(cfg["num_layers"] * D, B, cfg["hidden_size"], generator=g, dtype=dtype)
    return x, h0, c0


@pytest.mark.parametrize("cfg", GRID, ids=lambda c: "L{num_layers}-bi{bidirectional:d}-bf{batch_first:d}-p{proj_size}-I{input_size}H{hidden_size}".format(**c))
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_parity_grid(cfg, dtype, tol):
    module = random_torch_lstm(cfg, dtype)
    x, h0, c0 = inputs_for(cfg, dtype)
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = module(x, (h0, c0))
    stack = from_torch(module)
    assert stack.dtype == (np.float64 if dtype == torch.float64 else np.float32)
    out, (h, c) = stack.forward(x.numpy(), (h0.numpy(), c0.numpy()))
    assert out.shape == tuple(ref_out.shape) and h.shape == tuple(ref_h.shape) and c.shape == tuple(ref_c.shape)
    np.testing.assert_allclose(out, ref_out.numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(h, ref_h.numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(c, ref_c.numpy(), rtol=0, atol=tol)


def test_unbatched_and_bias_free_parity():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=False, proj_size=0)
    torch.manual_seed(0)
    module = torch.nn.LSTM(**cfg, bias=False, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = module(x)
    stack = from_torch(module.state_dict(), batch_first=False)
    assert not stack.bias
    out, (h, c) = stack.forward(x.numpy())
    np.testing.assert_allclose(out, ref_out.numpy(), atol=1e-12)
    np.testing.assert_allclose(h, ref_h.numpy(), atol=1e-12)


def test_export_round_trip_into_torch():
    stack = StackedLSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=3)
    for p in stack.parameters().values():
        p += 0.1  # non-zero biases
    module = torch_module(stack)
    x = np.random.default_rng(0).normal(size=(6, 2, 3))
    with torch.no_grad():
        ref_out, (ref_h, _) = module(torch.from_numpy(x))
    out, (h, _) = stack.forward(x)
    np.testing.assert_allclose(out, ref_out.numpy(), atol=1e-12)
    sd = to_torch_state_dict(stack)
    np.testing.assert_array_equal(sd["bias_hh_l1_reverse"].numpy(), 0)
    again = from_torch(sd, batch_first=False)
    for name, value in stack.parameters().items():
        np.testing.assert_array_equal(again.parameters()[name], value, err_msg=name)


def test_stack_gradients_equal_torch_autograd():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True, proj_size=3)
    module = random_torch_lstm(cfg)
    x, h0, c0 = inputs_for(cfg, torch.float64, T=5, B=2)
    for t in (x, h0, c0):
        t.requires_grad_(True)
    out, (h, c) = module(x, (h0, c0))
    g = torch.Generator().manual_seed(5)
    w = [torch.randn(*a.shape, generator=g, dtype=torch.float64) for a in (out, h, c)]
    sum((a * b).sum() for a, b in zip((out, h, c), w)).backward()
    stack = from_torch(module)
    _, _, tape = stack.forward_train(x.detach().numpy(), (h0.detach().numpy(), c0.detach().numpy()))
    grads = stack.backward(tape, *(t.numpy() for t in w))
    torch_grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    expected = from_torch(torch_grads, batch_first=True).parameters()  # same mapping, applied to gradients
    # bias gradients: torch's bias_ih and bias_hh gradients are equal; from_torch summed them
    for name, value in expected.items():
        if ".b" in name:
            value = value / 2
        np.testing.assert_allclose(grads[name], value, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(grads["x"], x.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose(grads["h_0"], h0.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose(grads["c_0"], c0.grad.numpy(), atol=1e-9)


def test_pt_file_is_read_with_weights_only(tmp_path):
    module = random_torch_lstm(dict(input_size=2, hidden_size=3, num_layers=2, bidirectional=False, batch_first=False, proj_size=0))
    path = tmp_path / "lstm.pt"
    torch.save(module.state_dict(), path)
    stack = load_torch(path, batch_first=False)
    x = torch.randn(4, 1, 2, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(stack.forward(x.numpy())[0], module(x)[0].numpy(), atol=1e-12)


class NotATensor:
    pass


def test_pt_file_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight_ih_l0": NotATensor()}, path)
    with pytest.raises(InteropError, match="not a loadable weights-only torch file"):
        load_torch(path)
    path.write_bytes(b"garbage")
    with pytest.raises(InteropError):
        load_torch(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("weight_hh_l1"), r"missing tensor 'weight_hh_l1' \(expected shape \(20, 5\)\)"),
        (lambda sd: sd.update(weight_ih_l1=torch.zeros(20, 4)), r"'weight_ih_l1' has shape \(20, 4\); expected \(20, 5\)"),
        (lambda sd: sd.update(bias_hh_l0=torch.zeros(19)), r"'bias_hh_l0' has shape \(19,\); expected \(20,\)"),
        (lambda sd: sd.update(weight_hh_l0=torch.full((20, 5), float("nan"))), r"'weight_hh_l0' holds NaN"),
        (lambda sd: sd.update(extra=torch.zeros(1)), r"unexpected tensor\(s\) \['extra'\]"),
        (lambda sd: sd.update(weight_ih_l0_reverse=torch.zeros(20, 3)), r"missing tensor 'weight_hh_l0_reverse'"),
    ],
)
def test_mismatched_state_dicts_are_refused(edit, message):
    sd = dict(torch.nn.LSTM(3, 5, num_layers=2).state_dict())
    edit(sd)
    with pytest.raises(InteropError, match=message):
        from_torch(sd, batch_first=False)


def test_a_cell_variant_is_not_exported_as_a_plain_lstm():
    from nplstm.cell import CellOptions
    from nplstm.interop import InteropError

    stack = StackedLSTM(2, 3, cell=CellOptions(peepholes=True, clip=0.5), seed=0)
    with pytest.raises(InteropError, match="only the standard cell"):
        to_torch_state_dict(stack)
    with pytest.raises(InteropError, match="only the standard cell"):
        torch_module(stack)


def test_exporting_dropout_torch_cannot_hold_warns_by_name_and_keeps_what_it_can(recwarn):
    stack = StackedLSTM(2, 3, num_layers=2, dropout=0.25, recurrent_dropout=0.5, seed=0)
    with pytest.warns(UserWarning, match=r"torch.nn.LSTM has no recurrent_dropout: .*\{'recurrent_dropout': 0.5\}"):
        module = torch_module(stack)
    assert module.dropout == 0.25
    x = np.random.default_rng(1).normal(size=(4, 2, 2))
    with torch.no_grad():
        ref = module.eval()(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(stack.forward(x)[0], ref, atol=1e-12)  # inference is the same
    stack.input_dropout = 0.1
    with pytest.warns(UserWarning, match="no input_dropout or recurrent_dropout"):
        torch_module(stack)
    stack.input_dropout = stack.recurrent_dropout = 0.0
    recwarn.clear()
    torch_module(stack)
    assert not [w for w in recwarn if "torch.nn.LSTM has no" in str(w.message)]


# ------------------------------------------- issue 18 item 1: a state dict has no layout
def batch_first_module_and_input():
    module = random_torch_lstm(dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
                                    batch_first=True, proj_size=0))
    x = torch.randn(4, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))  # (B, T, I)
    with torch.no_grad():
        expected = module(x)[0].numpy()
    return module, x, expected


def test_issue18_batch_first_state_dict_is_not_loaded_as_time_major():
    # issue 18: the state dict of a batch_first module loaded as batch_first=False and a (B, T, I)
    # batch then ran without error, off by 1.58; now the layout must be named
    module, x, expected = batch_first_module_and_input()
    with pytest.raises(ValueError, match=r"does not record its layout: pass batch_first=True .*or batch_first=False"):
        from_torch(module.state_dict())
    stack = from_torch(module.state_dict(), batch_first=True)
    np.testing.assert_allclose(stack.forward(x.numpy())[0], expected, rtol=0, atol=1e-10)
    time_major = from_torch(module.state_dict(), batch_first=False)  # the same weights, said to be (T, B, I)
    np.testing.assert_allclose(time_major.forward(x.numpy().transpose(1, 0, 2))[0].transpose(1, 0, 2), expected, atol=1e-10)


def test_issue18_a_module_still_carries_its_layout_and_the_keyword_overrides_it():
    module, x, expected = batch_first_module_and_input()
    assert from_torch(module).batch_first
    np.testing.assert_allclose(from_torch(module).forward(x.numpy())[0], expected, rtol=0, atol=1e-10)
    assert not from_torch(module, batch_first=False).batch_first


def test_issue18_pt_file_of_a_state_dict_needs_batch_first(tmp_path):
    module, x, expected = batch_first_module_and_input()
    path = tmp_path / "bf.pt"
    torch.save(module.state_dict(), path)
    with pytest.raises(InteropError, match=r"bf.pt: a state dict does not record its layout: pass batch_first=True"):
        load_torch(path)
    np.testing.assert_allclose(load_torch(path, batch_first=True).forward(x.numpy())[0], expected, rtol=0, atol=1e-10)


def test_issue18_a_broken_state_dict_names_its_fault_before_asking_for_the_layout():
    sd = dict(torch.nn.LSTM(3, 5, num_layers=2).state_dict())
    sd.pop("weight_hh_l1")
    with pytest.raises(InteropError, match="missing tensor 'weight_hh_l1'"):
        from_torch(sd)
