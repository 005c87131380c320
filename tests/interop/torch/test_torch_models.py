"""Whole torch models (nn.Embedding -> nn.LSTM -> Linear/activation head) in and out (issue 18).

The peer is always the torch module's own forward on the same input.
"""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nplstm.interop import InteropError, from_torch, to_torch_state_dict  # noqa: E402

ACTS = {"linear": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
        "softmax": lambda: nn.Softmax(dim=-1), "log_softmax": lambda: nn.LogSoftmax(dim=-1)}
I, H, VOCAB, B, T = 3, 4, 7, 3, 5


class Net(nn.Module):
    """A typical torch sequence model; its input is always batch-first, whatever the LSTM's layout."""

    def __init__(self, *, L=1, bi=False, proj=0, emb=None, acts=("linear",), output="h_n", batch_first=True,
                 dtype=torch.float64, bias=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.output, self.bi, self.batch_first = output, bi, batch_first
        self.emb = None if emb is None else nn.Embedding(VOCAB, I, padding_idx=emb)
        self.lstm = nn.LSTM(I, H, L, bidirectional=bi, proj_size=proj, batch_first=batch_first)
        width = (2 if bi else 1) * (proj or H)
        layers = []
        for k, act in enumerate(acts):
            out = 2 if k == len(acts) - 1 else 6
            layers += [nn.Linear(width, out, bias=bias or k > 0), ACTS[act]()]
            width = out
        self.head = nn.Sequential(*layers)
        self.to(dtype)
        with torch.no_grad():
            for p in self.lstm.parameters():
                p.uniform_(-0.7, 0.7)
        self.eval()

    def forward(self, x):
        if self.emb is not None:
            x = self.emb(x)
        out, (h, _) = self.lstm(x if self.batch_first else x.transpose(0, 1))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if self.output == "h_n":
            features = torch.cat([h[-2], h[-1]], dim=-1) if self.bi else h[-1]
        elif self.output == "last":
            features = out[:, -1]
        else:
            features = out
        return self.head(features)

    def head_names(self):
        """The state dict's head: each Linear by its prefix, each activation by name."""
        names = []
        for k, (linear, act) in enumerate(zip(self.head[::2], self.head[1::2])):
            names += [f"head.{2 * k}", next(n for n, f in ACTS.items() if isinstance(act, type(f())))]
        return names


def inputs(net, dtype):
    g = torch.Generator().manual_seed(4)
    if net.emb is not None:
        ids = torch.randint(0, VOCAB, (B, T), generator=g)
        if net.emb.padding_idx is not None:
            ids[0, -2:] = net.emb.padding_idx  # padding ids are ordinary lookups (of a zero row) at inference
        return ids
    return torch.randn(B, T, I, generator=g, dtype=dtype)


def check(model, net, dtype, tol):
    x = inputs(net, dtype)
    with torch.no_grad():
        expected = net(x).numpy()
    got = model.predict(x.numpy())
    assert got.dtype == (np.float64 if dtype == torch.float64 else np.float32)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


HEADS = [("linear",), ("relu", "tanh"), ("sigmoid",), ("tanh", "softmax"), ("log_softmax",), ("relu", "sigmoid"),
         ("softmax",), ("sigmoid", "log_softmax")]
EMBS = [None, None, "emb", 0]  # "emb": an Embedding without padding_idx; 0: padding_idx=0
GRID = [
    dict(L=L, bi=bi, output=output, proj=proj, emb=emb, acts=acts, batch_first=bf)
    for (L, bi, output), proj, emb, acts, bf in zip(
        itertools.product([1, 2], [False, True], ["h_n", "last", "sequence"]),
        itertools.cycle([0, 0, 2]), itertools.cycle(EMBS), itertools.cycle(HEADS), itertools.cycle([True, False, False]),
    )
]


def grid_id(c):
    return "L{L}-bi{bi:d}-{output}-p{proj}-emb{emb}-{acts}-bf{batch_first:d}".format(
        **{**c, "acts": "+".join(c["acts"])})


def build(cfg, dtype):
    emb = cfg["emb"]
    net = Net(**{**cfg, "emb": None if emb is None else (None if emb == "emb" else emb)}, dtype=dtype)
    if emb == "emb":  # an Embedding without padding_idx
        net.emb = nn.Embedding(VOCAB, I).to(dtype)
    return net


@pytest.mark.parametrize("cfg", GRID, ids=grid_id)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_whole_model_parity_grid(cfg, dtype, tol):
    net = build(cfg, dtype)
    emb_module = net.emb
    output = cfg["output"]
    # 1. the parts as modules
    by_modules = from_torch(lstm=net.lstm, head=list(net.head), embedding=emb_module, output=output)
    check(by_modules, net, dtype, tol)
    assert by_modules.output == output and by_modules.lstm.batch_first
    # 2. the model and its submodules' names (a Sequential is flattened)
    by_names = from_torch(net, lstm="lstm", head=["head"], embedding=None if emb_module is None else "emb",
                          output=output)
    check(by_names, net, dtype, tol)
    # 3. its state dict, prefixes named, activations by name (a state dict holds none)
    by_state = from_torch(net.state_dict(), batch_first=cfg["batch_first"], lstm="lstm", head=net.head_names(),
                          embedding=None if emb_module is None else "emb", output=output)
    check(by_state, net, dtype, tol)
    if emb_module is not None:
        assert by_modules.embedding.padding_idx == emb_module.padding_idx
    for a, b in [(by_modules, by_state), (by_modules, by_names)]:
        pa, pb = a.parameters(), b.parameters()
        assert pa.keys() == pb.keys()
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


@pytest.mark.parametrize("cfg", GRID[::5], ids=grid_id)  # h_n, sequence, last
def test_export_loads_into_the_torch_module_and_computes_the_same(cfg):
    net = build(cfg, torch.float64)
    model = from_torch(net, lstm="lstm", head="head", embedding=None if net.emb is None else "emb",
                       output=cfg["output"])
    with torch.no_grad():  # make the weights differ from the fresh module's
        for p in model.parameters().values():
            p += 0.01
    sd = to_torch_state_dict(model, head=[n for n in net.head_names() if n.startswith("head.")],
                             embedding="emb")
    fresh = build({**cfg}, torch.float64)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(sd, strict=True)  # exactly the module's keys, no more, no fewer
    check(model, fresh, torch.float64, 1e-10)


# --------------------------------------------- the issue's failures, by name
def test_issue18_prefixed_state_dict_is_told_how_to_name_its_parts():
    net = Net(L=2, emb=0, acts=("relu", "linear"))
    with pytest.raises(InteropError) as info:
        from_torch(net.state_dict(), batch_first=True)
    message = str(info.value)
    assert "prefixes ['emb', 'lstm', 'head.0', 'head.2']" in message
    assert "lstm='lstm'" in message and "output='h_n' | 'last' | 'sequence'" in message


def test_issue18_whole_module_error_points_at_the_named_submodule_call():
    net = Net(emb=0)
    with pytest.raises(TypeError) as info:
        from_torch(net)
    message = str(info.value)
    assert "got Net, a whole model" in message
    assert "from_torch(m, lstm='lstm', head=['head']" in message and "embedding='emb'" in message
    assert "from_torch(lstm=m.lstm, head=[...]" in message and "lstm (LSTM)" in message


def test_issue18_to_torch_state_dict_of_a_sequence_model_exports_its_stack_and_head():
    from nplstm import SequenceModel

    model = SequenceModel(3, 4, 2, num_layers=2, bidirectional=True, seed=1)  # was: no attribute 'cell'
    sd = to_torch_state_dict(model)
    assert "lstm.weight_ih_l1_reverse" in sd and "head.weight" in sd and "head.bias" in sd

    class Peer(nn.Module):  # the torch module nplstm's default names describe
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4, 2, bidirectional=True, batch_first=True, dtype=torch.float64)
            self.head = nn.Linear(8, 2, dtype=torch.float64)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(torch.cat([h[-2], h[-1]], dim=-1))

    peer = Peer()
    peer.load_state_dict(sd, strict=True)
    x = np.random.default_rng(0).normal(size=(3, 5, 3))
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), peer(torch.from_numpy(x)).numpy(), rtol=0, atol=1e-10)
    assert set(to_torch_state_dict(model, lstm="rnn", head=["fc"], as_numpy=True)) == {
        k.replace("lstm.", "rnn.").replace("head.", "fc.") for k in sd}


def test_issue18_whole_model_state_dict_loads_with_either_layout():
    for bf in (True, False):
        net = Net(bi=True, output="last", acts=("tanh", "linear"), batch_first=bf)
        model = from_torch(net.state_dict(), batch_first=bf, lstm="lstm", head=net.head_names(), output="last")
        check(model, net, torch.float64, 1e-10)
        # the stack alone out of the whole state dict: its layout is needed, the rest must be named
        with pytest.raises(InteropError, match="does not record its layout"):
            from_torch({k: v for k, v in net.state_dict().items() if k.startswith("lstm.")}, lstm="lstm")
        stack = from_torch(net.state_dict(), batch_first=bf, lstm="lstm")  # only the LSTM, in its own layout
        assert stack.batch_first == bf
        x = torch.randn(2, 4, I, dtype=torch.float64)
        with torch.no_grad():
            np.testing.assert_allclose(stack.forward(x.numpy())[0], net.lstm(x)[0].numpy(), rtol=0, atol=1e-10)


def test_padding_idx_is_kept_and_its_row_is_looked_up_as_torch_stores_it():
    net = Net(emb=2, acts=("relu", "linear"))
    with torch.no_grad():
        net.emb.weight[2] = 0.25  # torch looks up whatever the padding row holds
    for model in (from_torch(net, lstm="lstm", head="head", embedding="emb", output="h_n"),
                  from_torch(lstm=net.lstm, head=list(net.head), embedding=net.emb, output="h_n")):
        assert model.embedding.padding_idx == 2
        check(model, net, torch.float64, 1e-10)
    from_sd = from_torch(net.state_dict(), lstm="lstm", head=net.head_names(), embedding="emb", output="h_n")
    assert from_sd.embedding.padding_idx is None  # a state dict does not record it
    check(from_sd, net, torch.float64, 1e-10)


def test_linear_without_bias_gets_a_zero_bias():
    net = Net(acts=("relu", "linear"), bias=False)
    assert net.head[0].bias is None
    model = from_torch(net, lstm="lstm", head="head", output="h_n")
    np.testing.assert_array_equal(model.dense[0].b, 0)
    check(model, net, torch.float64, 1e-10)
    check(from_torch(net.state_dict(), lstm="lstm", head=net.head_names(), output="h_n"), net, torch.float64, 1e-10)


def test_dropout_and_identity_are_the_identity_and_activations_take_modules_or_names():
    net = Net(acts=("relu", "linear"))
    head = [nn.Dropout(0.5), net.head[0], nn.Dropout(0.3), nn.ReLU(), nn.Identity(), net.head[2]]
    check(from_torch(lstm=net.lstm, head=head, output="h_n"), net, torch.float64, 1e-10)
    check(from_torch(lstm=net.lstm, head=[net.head[0], "relu", net.head[2]], output="h_n"), net, torch.float64, 1e-10)


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("kwargs, message", [
    (dict(max_norm=1.0), r"max_norm=1.0 is not supported \(it renormalizes the rows"),
    (dict(scale_grad_by_freq=True), "scale_grad_by_freq=True is not supported"),
    (dict(sparse=True), "sparse=True is not supported"),
])
def test_embedding_options_that_change_things_are_refused_by_name(kwargs, message):
    net = Net()
    with pytest.raises(InteropError, match=message):
        from_torch(lstm=net.lstm, head=[net.head[0]], embedding=nn.Embedding(VOCAB, I, **kwargs), output="h_n")


@pytest.mark.parametrize("head, message", [
    (lambda n: [n.head[0], nn.GELU()], r"head\[1\] \(GELU\): GELU cannot be mapped; supported: nn.Linear"),
    (lambda n: [n.head[0], nn.LayerNorm(2)], r"LayerNorm cannot be mapped"),
    (lambda n: [n.head[0], nn.Softmax(dim=0)], r"dim=0 is not the features axis .*dim=-1"),
    (lambda n: [n.head[0], nn.Softmax()], r"dim=None picks its axis"),
    (lambda n: [nn.ReLU(), n.head[0]], r"an activation before the first nn.Linear"),
    (lambda n: [n.head[0], nn.ReLU(), nn.Tanh()], r"a second activation after one nn.Linear \(relu then tanh\)"),
    (lambda n: [n.head[0], nn.Linear(5, 2, dtype=torch.float64)], r"an nn.Linear taking 5 features after the layer before \(2"),
    (lambda n: [nn.Linear(9, 2, dtype=torch.float64)], r"taking 9 features after the LSTM's output \(4 features\)"),
    (lambda n: [nn.Dropout(), "linear"], r"head= has no nn.Linear"),
    (lambda n: [n.head[0], "gelu"], r"'gelu' names a part"),
    (lambda n: [nn.Bilinear(2, 2, 2)], r"Bilinear cannot be mapped"),
    (lambda n: [n.head[0], type("Clipped", (nn.ReLU,), {"forward": lambda s, x: x.clamp(0, 1)})()],
     r"a Clipped \(a subclass of nn.ReLU, whose forward may differ\)"),
])
def test_unsupported_heads_are_refused_naming_the_module(head, message):
    net = Net()
    with pytest.raises((InteropError, TypeError), match=message):
        from_torch(lstm=net.lstm, head=head(net), output="h_n")


def test_a_state_dict_sequential_prefix_must_be_named_layer_by_layer():
    net = Net(acts=("relu", "linear"))
    with pytest.raises(InteropError, match=r"several layers \['head.0', 'head.2'\].* head=\['head.0', 'relu'"):
        from_torch(net.state_dict(), batch_first=True, lstm="lstm", head=["head"], output="h_n")


def test_weights_outside_the_named_parts_are_refused():
    net = Net()
    net.norm = nn.LayerNorm(4, dtype=torch.float64)  # used in some forward we cannot see
    with pytest.raises(InteropError, match=r"Net has weights outside the named parts: \['norm.weight', 'norm.bias'\]"):
        from_torch(net, lstm="lstm", head="head", output="h_n")
    with pytest.raises(InteropError, match=r"tensors no part names: \['norm.weight', 'norm.bias'\]"):
        from_torch(net.state_dict(), lstm="lstm", head=net.head_names(), output="h_n")


def test_output_and_parts_are_required_and_checked():
    net = Net()
    with pytest.raises(TypeError, match=r"output= is required .*'h_n' \(h_n\[-1\], or cat\(h_n\[-2\], h_n\[-1\]\)"):
        from_torch(lstm=net.lstm, head=[net.head[0]])
    with pytest.raises(ValueError, match="output must be one of"):
        from_torch(lstm=net.lstm, head=[net.head[0]], output="h")
    with pytest.raises(TypeError, match="needs head="):
        from_torch(lstm=net.lstm, output="h_n")
    with pytest.raises(TypeError, match="'fc' names a part: pass the model"):
        from_torch(lstm=net.lstm, head=["fc"], output="h_n")
    with pytest.raises(InteropError, match=r"Net has no submodule 'fc'; its submodules: \['lstm', 'head'"):
        from_torch(net, lstm="lstm", head=["fc"], output="h_n")
    with pytest.raises(InteropError, match="a Sequential, not a torch.nn.LSTM"):
        from_torch(net, lstm="head", head=["head"], output="h_n")
    with pytest.raises(InteropError, match=r"lstm='rnn': the state dict has no tensors named rnn\.\*"):
        from_torch(net.state_dict(), lstm="rnn", head=["head.0"], output="h_n")
    gru = nn.GRU(I, H)
    with pytest.raises(InteropError, match="torch.nn.GRU: nplstm maps torch.nn.LSTM only"):
        from_torch(lstm=gru, head=[net.head[0]], output="h_n")
    # an LSTM module as the first argument is the lstm part
    check(from_torch(net.lstm, head=list(net.head), output="h_n"), net, torch.float64, 1e-10)


def test_embedding_width_must_match_the_lstm_input():
    net = Net()
    with pytest.raises(InteropError, match=r"weight of shape \(7, 5\); the LSTM takes 3 features"):
        from_torch(lstm=net.lstm, head=[net.head[0]], embedding=nn.Embedding(VOCAB, 5), output="h_n")
