"""Whole models through ONNX: torch exports (embedding, LSTM, dense head) imported as a SequenceModel, and
SequenceModels exported whole.  Peers: onnxruntime on the original file and the torch module itself."""

import contextlib
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper  # noqa: E402

from nplstm import Dense, Embedding, SequenceModel, StackedLSTM  # noqa: E402
from nplstm.interop import InteropError  # noqa: E402
from nplstm.interop.onnx import from_onnx, to_onnx  # noqa: E402

ATOL = 1e-5  # float32 end to end
VOCAB, E, I, H = 13, 4, 4, 5

ACTIVATIONS = {
    "linear": None,
    "relu": torch.nn.ReLU,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "softmax": lambda: torch.nn.Softmax(dim=-1),
    "log_softmax": lambda: torch.nn.LogSoftmax(dim=-1),
}


class TorchModel(torch.nn.Module):
    """Embedding (optional) -> LSTM (batch_first) -> Linear layers with activations, read at ``read``."""

    def __init__(self, *, layers=1, bidirectional=False, embedding=False, read="h_n", head=(("linear", 3),)):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, E) if embedding else None
        self.lstm = torch.nn.LSTM(E if embedding else I, H, layers, batch_first=True, bidirectional=bidirectional)
        self.read, self.D = read, 2 if bidirectional else 1
        parts, width = [], self.D * H
        for activation, out in head:
            parts.append(torch.nn.Linear(width, out))
            if ACTIVATIONS[activation] is not None:
                parts.append(ACTIVATIONS[activation]())
            width = out
        self.head = torch.nn.Sequential(*parts)

    def forward(self, x):
        if self.emb is not None:
            x = self.emb(x)
        out, (h, _) = self.lstm(x)
        if self.read == "h_n":
            f = h[-1] if self.D == 1 else torch.cat((h[-2], h[-1]), dim=1)
        elif self.read == "last":
            f = out[:, -1]
        else:
            f = out
        return self.head(f)


def example(module, B=2, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (B, T), generator=g) if module.emb is not None else torch.randn(B, T, I, generator=g)


def export(module, x, path, *, dynamo, dynamic):
    kwargs = {}
    if dynamic:
        if dynamo:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("time")},)
        else:
            kwargs["dynamic_axes"] = {"x": {0: "batch", 1: "time"}}
    if dynamo:
        pytest.importorskip("onnxscript")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"], **kwargs)
    return path


def run_ort(path_or_model, x):
    data = path_or_model.SerializeToString() if hasattr(path_or_model, "SerializeToString") else str(path_or_model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def check_against_peers(module, path, imported, xs):
    """predict == onnxruntime on the original file == the torch module, at every input."""
    for x in xs:
        got = imported.predict(x.numpy())
        np.testing.assert_allclose(got, run_ort(path, x.numpy()), atol=ATOL, rtol=1e-5, err_msg="vs onnxruntime")
        with torch.no_grad():
            np.testing.assert_allclose(got, module(x).numpy(), atol=ATOL, rtol=1e-5, err_msg="vs torch")


# ------------------------------------------------------------------ torch grid (legacy exporter)
HEADS = [
    (("relu", 6), ("softmax", 3)),
    (("linear", 3),),
    (("tanh", 4), ("log_softmax", 3)),
    (("sigmoid", 2),),
    (("softmax", 3),),
    (("log_softmax", 4),),
]
GRID = [
    dict(layers=1 + (k % 2), bidirectional=bi, embedding=emb, read=read, head=HEADS[k % len(HEADS)], dynamic=bool(k // 3 % 2))
    for k, (read, bi, emb) in enumerate((r, b, e) for r in ("h_n", "last", "sequence") for b in (False, True) for e in (False, True))
]


def grid_id(c):
    head = "+".join(a for a, _ in c["head"])
    return f"L{c['layers']}-{'bi' if c['bidirectional'] else 'uni'}-{'emb' if c['embedding'] else 'float'}-{c['read']}-{head}-" + (
        "dynamic" if c["dynamic"] else "static"
    )


@pytest.mark.parametrize("config", GRID, ids=grid_id)
def test_torch_legacy_export_imports_as_sequence_model(config, tmp_path):
    config = dict(config)
    dynamic = config.pop("dynamic")
    torch.manual_seed(len(tmp_path.name))
    module = TorchModel(**config).eval()
    path = export(module, example(module), tmp_path / "m.onnx", dynamo=False, dynamic=dynamic)
    imported = from_onnx(path)
    assert isinstance(imported, SequenceModel)
    assert imported.output == config["read"] and (imported.embedding is not None) == config["embedding"]
    assert [d.activation for d in imported.dense] == [a for a, _ in config["head"]]
    assert imported.lstm.num_layers == config["layers"] and imported.lstm.bidirectional == config["bidirectional"]
    xs = [example(module)] + ([example(module, B=3, T=11, seed=1), example(module, B=1, T=2, seed=2)] if dynamic else [])
    check_against_peers(module, path, imported, xs)


# ------------------------------------------------------------------ torch dynamo exporter (slow: a representative subset)
DYNAMO = [
    dict(layers=2, bidirectional=True, embedding=False, read="last", head=(("relu", 6), ("softmax", 3)), dynamic=True),
    dict(layers=1, bidirectional=False, embedding=True, read="h_n", head=(("tanh", 3),), dynamic=False),
    dict(layers=1, bidirectional=True, embedding=True, read="sequence", head=(("linear", 4), ("log_softmax", 3)), dynamic=True),
]


@pytest.mark.parametrize("config", DYNAMO, ids=grid_id)
def test_torch_dynamo_export_imports_as_sequence_model(config, tmp_path):
    config = dict(config)
    dynamic = config.pop("dynamic")
    torch.manual_seed(3)
    module = TorchModel(**config).eval()
    path = export(module, example(module), tmp_path / "m.onnx", dynamo=True, dynamic=dynamic)
    imported = from_onnx(path)
    assert isinstance(imported, SequenceModel) and imported.output == config["read"]
    # the dynamo exporter keeps the time axis static here (torch specialises it); batch follows dynamic
    xs = [example(module)] + ([example(module, B=4, seed=1)] if dynamic else [])
    check_against_peers(module, path, imported, xs)


def test_issue_18_lstm_plus_linear_legacy_export_imports_whole(tmp_path):
    """Issue 18: LSTM + Linear exported with dynamo=False failed with "node Gemm '/head/Gemm': operator Gemm is not plumbing"."""

    class LSTMLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(I, H, batch_first=True)
            self.head = torch.nn.Linear(H, 2)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1, :])

    torch.manual_seed(18)
    module = LSTMLinear().eval()
    x = torch.randn(3, 6, I)
    path = tmp_path / "issue18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False)
    assert any(n.op_type == "Gemm" and n.name == "/head/Gemm" for n in onnx.load(str(path)).graph.node)
    imported = from_onnx(path)
    assert isinstance(imported, SequenceModel) and imported.output == "last" and imported.head.activation == "linear"
    np.testing.assert_allclose(imported.head.W, module.head.weight.detach().numpy())
    check_against_peers(module, path, imported, [x])


def test_an_lstm_alone_still_imports_as_a_stack(tmp_path):
    module = torch.nn.LSTM(I, H, batch_first=True).eval()
    path = export(module, torch.randn(2, 5, I), tmp_path / "lstm.onnx", dynamo=False, dynamic=True)
    assert isinstance(from_onnx(path), StackedLSTM)


# ------------------------------------------------------------------ export of nplstm models
def nplstm_model(*, layers, bidirectional, embedding, output, head, seed=0):
    rng = np.random.default_rng(seed)
    stack = StackedLSTM(E if embedding else I, H, layers, bidirectional=bidirectional, batch_first=True, seed=seed, dtype=np.float32)
    dense, width = [], stack.output_size
    for k, (activation, out) in enumerate(head):
        layer = Dense(width, out, activation, seed=seed + k, dtype=np.float32)
        layer.b = rng.normal(size=out)
        dense.append(layer)
        width = out
    emb = Embedding(VOCAB, E, seed=seed, dtype=np.float32) if embedding else None
    return SequenceModel.from_parts(stack, dense, embedding=emb, output=output)


def model_input(model, B, T, seed):
    rng = np.random.default_rng(seed)
    if model.embedding is not None:
        return rng.integers(0, VOCAB, size=(B, T))
    return rng.normal(size=(B, T, I)).astype(np.float32)


EXPORT_GRID = [
    dict(layers=layers, bidirectional=bi, embedding=emb, output=output, head=HEADS[k % len(HEADS)])
    for k, (layers, bi, emb, output) in enumerate(
        (layers, bi, emb, output) for layers in (1, 2) for bi in (False, True) for emb in (False, True) for output in ("h_n", "last", "sequence")
    )
]


def export_id(c):
    return grid_id({**c, "read": c["output"], "dynamic": True}).replace("-dynamic", "")


@pytest.mark.parametrize("config", EXPORT_GRID, ids=export_id)
def test_exported_model_matches_predict_in_onnxruntime_and_round_trips(config, tmp_path):
    model = nplstm_model(**config, seed=len(export_id(config)))
    proto = to_onnx(model, tmp_path / "model.onnx")
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == ["B", "T"]  # dynamic batch and time
    back = from_onnx(tmp_path / "model.onnx")
    assert isinstance(back, SequenceModel) and back.output == model.output
    assert [d.activation for d in back.dense] == [d.activation for d in model.dense]
    for B, T, seed in ((2, 5, 0), (3, 9, 1), (1, 1, 2)):
        x = model_input(model, B, T, seed)
        want = model.predict(x)
        np.testing.assert_allclose(run_ort(proto, x), want, atol=ATOL, rtol=1e-5, err_msg="onnxruntime vs predict")
        np.testing.assert_allclose(back.predict(x), want, atol=ATOL, rtol=1e-5, err_msg="round trip")
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(back.parameters()[name], value, err_msg=name)


def test_exported_go_backwards_model_reads_reverse_and_round_trips():
    model = nplstm_model(layers=1, bidirectional=False, embedding=False, output="h_n", head=(("tanh", 3),))
    model = SequenceModel.from_parts(model.lstm, list(model.dense), output="h_n", go_backwards=True)
    proto = to_onnx(model)
    assert any(a.s == b"reverse" for n in proto.graph.node if n.op_type == "LSTM" for a in n.attribute if a.name == "direction")
    x = model_input(model, 3, 6, 0)
    np.testing.assert_allclose(run_ort(proto, x), model.predict(x), atol=ATOL, rtol=1e-5)
    back = from_onnx(proto)
    assert back.go_backwards
    np.testing.assert_allclose(back.predict(x), model.predict(x), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(mask_value=0.0), r"mask_value=0\.0: masking derives lengths"),
    (dict(go_backwards=True, output="last"), r"go_backwards with output='last'"),
])
def test_export_refuses_what_it_cannot_write(change, message):
    base = nplstm_model(layers=1, bidirectional=False, embedding=False, output="h_n", head=(("linear", 2),))
    kwargs = dict(output="h_n") | change
    model = SequenceModel.from_parts(base.lstm, list(base.dense), **kwargs)
    with pytest.raises(InteropError, match=message):
        to_onnx(model)


def test_export_refuses_mask_zero_embedding():
    base = nplstm_model(layers=1, bidirectional=False, embedding=False, output="h_n", head=(("linear", 2),))
    emb = Embedding(VOCAB, I, mask_zero=True, seed=0, dtype=np.float32)
    with pytest.raises(InteropError, match=r"mask_zero=True"):
        to_onnx(SequenceModel.from_parts(base.lstm, list(base.dense), embedding=emb))


# ------------------------------------------------------------------ refusals on import
def exported(config, tmp_path):
    torch.manual_seed(0)
    module = TorchModel(**config).eval()
    path = export(module, example(module), tmp_path / "m.onnx", dynamo=False, dynamic=True)
    return onnx.load(str(path))


def test_an_unsupported_operator_after_the_lstm_is_refused_by_name(tmp_path):
    model = exported(dict(head=(("relu", 3),)), tmp_path)
    node = next(n for n in model.graph.node if n.op_type == "Relu")
    node.op_type = "Elu"
    with pytest.raises(InteropError, match=rf"node Elu '{node.name}': operator Elu after the LSTM is not supported; .*Gemm, MatMul"):
        from_onnx(model)


def test_a_conv_after_the_lstm_is_refused_by_name(tmp_path):
    model = exported(dict(read="sequence", head=(("linear", 3),)), tmp_path)
    last = model.graph.node[-1]
    w = onnx.numpy_helper.from_array(np.ones((3, 3, 1), np.float32), "conv_w")
    model.graph.initializer.append(w)
    conv = helper.make_node("Conv", [last.output[0], "conv_w"], ["conv_y"], name="the_conv")
    model.graph.node.append(conv)
    model.graph.output[0].name = "conv_y"
    with pytest.raises(InteropError, match=r"node Conv 'the_conv': operator Conv after the LSTM is not supported"):
        from_onnx(model)


def test_softmax_over_another_axis_is_refused(tmp_path):
    model = exported(dict(read="sequence", head=(("softmax", 3),)), tmp_path)
    node = next(n for n in model.graph.node if n.op_type == "Softmax")
    for a in node.attribute:
        if a.name == "axis":
            a.i = 1
    with pytest.raises(InteropError, match=r"Softmax over axis 1 of a rank-3 value; nplstm's Softmax runs over the last axis"):
        from_onnx(model)


def test_an_activation_without_a_dense_layer_before_it_is_refused(tmp_path):
    class TanhFirst(TorchModel):
        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(torch.tanh(out[:, -1]))

    torch.manual_seed(0)
    module = TanhFirst().eval()
    path = export(module, example(module), tmp_path / "m.onnx", dynamo=False, dynamic=True)
    with pytest.raises(InteropError, match=r"node Tanh .*: activation Tanh with no dense layer before it"):
        from_onnx(path)


def test_a_time_major_model_is_refused(tmp_path):
    class TimeMajor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(I, H)
            self.head = torch.nn.Linear(H, 2)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[-1])

    module = TimeMajor().eval()
    path = export(module, torch.randn(6, 2, I), tmp_path / "m.onnx", dynamo=False, dynamic=False)
    with pytest.raises(InteropError, match=r"graph input 'x' is time-major"):
        from_onnx(path)


def test_initial_states_as_inputs_are_refused_for_a_whole_model(tmp_path):
    class WithStates(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(I, H, batch_first=True)
            self.head = torch.nn.Linear(H, 2)

        def forward(self, x, h0, c0):
            _, (h, _) = self.lstm(x, (h0, c0))
            return self.head(h[-1])

    module = WithStates().eval()
    args = (torch.randn(2, 5, I), torch.zeros(1, 2, H), torch.zeros(1, 2, H))
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=["x", "h0", "c0"])
    with pytest.raises(InteropError, match=r"a whole model takes one graph input .*\['x', 'h0', 'c0'\]"):
        from_onnx(path)


def test_a_head_reading_the_first_layer_is_refused(tmp_path):
    class FirstLayer(TorchModel):
        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(h[0])

    torch.manual_seed(0)
    module = FirstLayer(layers=2).eval()
    path = export(module, example(module), tmp_path / "m.onnx", dynamo=False, dynamic=True)
    with pytest.raises(InteropError, match=r"node Gemm .* reads .*which is not the last LSTM node's h_n"):
        from_onnx(path)


# ------------------------------------------------------------------ tf2onnx-style graphs (written by hand)
def tf2onnx_style(read, rng):
    """int32 ids -> Cast int64 -> Gather(table) -> Transpose -> LSTM -> Squeeze(Y_h) or Slice(Y, -1:) -> MatMul + Add -> Softmax."""
    from onnx import TensorProto, numpy_helper

    W = rng.normal(size=(1, 4 * H, E)).astype(np.float32) * 0.5
    R = rng.normal(size=(1, 4 * H, H)).astype(np.float32) * 0.5
    B = rng.normal(size=(1, 8 * H)).astype(np.float32) * 0.1
    inits = dict(table=rng.normal(size=(VOCAB, E)).astype(np.float32), W=W, R=R, B=B,
                 kernel=rng.normal(size=(H, 3)).astype(np.float32), bias=rng.normal(size=(3,)).astype(np.float32),
                 axes0=np.array([0], np.int64), start=np.array([-1], np.int64), end=np.array([2**31 - 1], np.int64))
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64, name="cast_ids"),
        helper.make_node("Gather", ["table", "ids64"], ["emb"], axis=0, name="embedding_lookup"),
        helper.make_node("Transpose", ["emb"], ["emb_t"], perm=[1, 0, 2], name="to_time_major"),
        helper.make_node("LSTM", ["emb_t", "W", "R", "B"], ["Y", "Y_h"], hidden_size=H, name="lstm"),
    ]
    if read == "h_n":
        nodes.append(helper.make_node("Squeeze", ["Y_h", "axes0"], ["features"], name="squeeze_h"))
    else:
        nodes += [
            helper.make_node("Slice", ["Y", "start", "end", "axes0"], ["y_last"], name="last_step"),
            helper.make_node("Squeeze", ["y_last", "axes0"], ["y_last2"], name="squeeze_t"),
            helper.make_node("Squeeze", ["y_last2", "axes0"], ["features"], name="squeeze_d"),
        ]
    nodes += [
        helper.make_node("MatMul", ["features", "kernel"], ["logits0"], name="dense/MatMul"),
        helper.make_node("Add", ["logits0", "bias"], ["logits"], name="dense/BiasAdd"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="dense/Softmax"),
    ]
    graph = helper.make_graph(
        nodes, "tf2onnx", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["unk__1", "unk__2"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["unk__1", 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("read", ["h_n", "last"])
def test_tf2onnx_style_graph_imports_as_sequence_model(read, rng):
    model = tf2onnx_style(read, rng)
    imported = from_onnx(model)
    assert isinstance(imported, SequenceModel) and imported.output == read and imported.head.activation == "softmax"
    for B, T in ((2, 5), (4, 9)):
        ids = rng.integers(0, VOCAB, size=(B, T)).astype(np.int32)
        np.testing.assert_allclose(imported.predict(ids.astype(np.int64)), run_ort(model, ids), atol=ATOL, rtol=1e-5)
