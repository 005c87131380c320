"""from_onnx on graphs the way exporters write them, and on graphs it must refuse.

Every accepted graph is compared with onnxruntime running the same graph
(the peer); every refusal must name the node and the reason.
"""

import os
import tracemalloc

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nplstm.interop import InteropError, from_onnx, to_onnx  # noqa: E402
from nplstm.interop.onnx import OnnxLSTM, verify_import  # noqa: E402
from nplstm.stack import StackedLSTM  # noqa: E402

F32 = TensorProto.FLOAT


def run_ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def weights(rng, D, H, I, dtype=np.float32):
    return (
        rng.uniform(-0.5, 0.5, size=(D, 4 * H, I)).astype(dtype),
        rng.uniform(-0.5, 0.5, size=(D, 4 * H, H)).astype(dtype),
        rng.uniform(-0.5, 0.5, size=(D, 8 * H)).astype(dtype),
    )


def make_model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name + "_v"), name=name)


def vi(name, dims, elem=F32):
    return helper.make_tensor_value_info(name, elem, dims)


# ---------------------------------------------------------------- patterns that map


def test_own_batch_first_round_trip_keeps_layout_and_values(rng):
    """Issue 10: from_onnx(to_onnx(StackedLSTM(4, 5, batch_first=True))) came back time-major."""
    stack = StackedLSTM(4, 5, batch_first=True, seed=1, dtype=np.float32)
    again = from_onnx(to_onnx(stack))
    assert isinstance(again, StackedLSTM) and again.batch_first
    x = rng.normal(size=(3, 5, 4)).astype(np.float32)
    out, (h, c) = again.forward(x)
    want, (wh, wc) = stack.forward(x)
    assert h.shape == (1, 3, 5)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(h, wh)


def tf2onnx_style(rng, H=4, I=3):
    """X (B, T, I) -> Transpose -> LSTM -> Squeeze(D) -> Transpose -> (B, T, H); Y_h squeezed to (B, H)."""
    W, R, B = weights(rng, 1, H, I)
    nodes = [
        helper.make_node("Transpose", ["X"], ["xt"], perm=[1, 0, 2], name="in_t"),
        helper.make_node("LSTM", ["xt", "W", "R", "B"], ["y", "yh"], hidden_size=H, name="lstm"),
        const("ax1", np.array([1], dtype=np.int64)),
        helper.make_node("Squeeze", ["y", "ax1"], ["ys"], name="sq_y"),
        helper.make_node("Transpose", ["ys"], ["Y"], perm=[1, 0, 2], name="out_t"),
        const("ax0", np.array([0], dtype=np.int64)),
        helper.make_node("Squeeze", ["yh", "ax0"], ["Y_h"], name="sq_h"),
    ]
    return make_model(nodes, [vi("X", ["batch", "time", I])], [vi("Y", ["batch", "time", H]), vi("Y_h", ["batch", H])], dict(W=W, R=R, B=B))


def test_transpose_and_squeeze_wrapped_node_maps_to_batch_first(rng):
    model = tf2onnx_style(rng)
    imported = from_onnx(model)
    assert isinstance(imported, StackedLSTM) and imported.batch_first
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    Y, Y_h = run_ort(model, {"X": x})
    out, (h, _) = imported.forward(x)
    np.testing.assert_allclose(out, Y, atol=1e-5)
    np.testing.assert_allclose(h[0], Y_h, atol=1e-5)


def test_layout_1_node_and_unsqueeze_of_states(rng):
    """A layout=1 node reads (B, T, I) directly; its (B, D, H) Y_h is unsqueezed/reshaped by the graph."""
    H, I = 3, 2
    W, R, B = weights(rng, 2, H, I)
    nodes = [
        helper.make_node("LSTM", ["X", "W", "R", "B"], ["y", "yh"], hidden_size=H, layout=1, direction="bidirectional", name="lstm"),
        const("shape", np.array([0, 0, -1], dtype=np.int64)),
        helper.make_node("Reshape", ["y", "shape"], ["Y"], name="merge"),  # (B, T, D, H) -> (B, T, D·H)
        const("ax", np.array([0], dtype=np.int64)),
        helper.make_node("Unsqueeze", ["yh", "ax"], ["Y_h"], name="unsq"),
    ]
    model = make_model(nodes, [vi("X", ["B", "T", I])], [vi("Y", None), vi("Y_h", None)], dict(W=W, R=R, B=B))
    imported = from_onnx(model)
    assert imported.batch_first and imported.bidirectional
    x = rng.normal(size=(3, 4, I)).astype(np.float32)
    # onnxruntime refuses layout=1 (from_onnx's verify rewrites it); ONNX's reference evaluator runs it
    from onnx.reference import ReferenceEvaluator

    Y, Y_h = ReferenceEvaluator(model).run(None, {"X": x})
    out, (h, _) = imported.forward(x)
    np.testing.assert_allclose(out, Y, atol=1e-5)
    np.testing.assert_allclose(h, Y_h[0].transpose(1, 0, 2), atol=1e-5)


def test_zero_states_from_constant_of_shape_and_expand(rng):
    H, I = 3, 2
    W, R, B = weights(rng, 1, H, I)
    nodes = [
        helper.make_node("Shape", ["X"], ["shp"], name="shape"),
        const("one", np.array([1], dtype=np.int64)),
        const("idx", np.array([1], dtype=np.int64)),
        helper.make_node("Gather", ["shp", "idx"], ["b"], axis=0, name="batch"),
        const("h", np.array([H], dtype=np.int64)),
        helper.make_node("Concat", ["one", "b", "h"], ["sshape"], axis=0, name="state_shape"),
        helper.make_node("ConstantOfShape", ["sshape"], ["h0"], name="zeros_h"),
        const("zero", np.zeros((1, 1, 1), dtype=np.float32)),
        helper.make_node("Expand", ["zero", "sshape"], ["c0"], name="zeros_c"),
        helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=H, name="lstm"),
    ]
    model = make_model(nodes, [vi("X", ["T", "B", I])], [vi("Y", None), vi("Y_h", None), vi("Y_c", None)], dict(W=W, R=R, B=B))
    imported = from_onnx(model)
    assert isinstance(imported, StackedLSTM)
    x = rng.normal(size=(5, 2, I)).astype(np.float32)
    Y, Y_h, Y_c = run_ort(model, {"X": x})
    out, (h, c) = imported.forward(x)
    np.testing.assert_allclose(out, Y[:, 0], atol=1e-5)
    np.testing.assert_allclose(c, Y_c, atol=1e-5)


def test_nonzero_initializer_states_are_used(rng):
    """Issue 10: constant initial_h / initial_c were ignored (off by 0.29)."""
    H, I, Bn = 3, 2, 2
    W, R, B = weights(rng, 1, H, I)
    h0 = rng.normal(size=(1, Bn, H)).astype(np.float32)
    c0 = rng.normal(size=(1, Bn, H)).astype(np.float32)
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=H, name="lstm")
    model = make_model([node], [vi("X", ["T", Bn, I])], [vi("Y", None), vi("Y_h", None), vi("Y_c", None)], dict(W=W, R=R, B=B, h0=h0, c0=c0))
    imported = from_onnx(model)
    assert isinstance(imported, OnnxLSTM) and "initial_states" in repr(imported)
    x = rng.normal(size=(4, Bn, I)).astype(np.float32)
    Y, Y_h, Y_c = run_ort(model, {"X": x})
    out, (h, c) = imported.forward(x)
    np.testing.assert_allclose(out, Y[:, 0], atol=1e-5)
    np.testing.assert_allclose(h, Y_h, atol=1e-5)
    np.testing.assert_allclose(c, Y_c, atol=1e-5)
    # the zero-state stack differs: the constant states do matter
    assert np.abs(imported.stack.forward(x)[1][0] - Y_h).max() > 1e-2


def test_reverse_only_node_maps_to_onnx_lstm(rng):
    H, I = 3, 2
    W, R, B = weights(rng, 1, H, I)
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=H, direction="reverse", name="rev")
    model = make_model([node], [vi("X", ["T", "B", I])], [vi("Y", None), vi("Y_h", None)], dict(W=W, R=R, B=B))
    imported = from_onnx(model)
    assert isinstance(imported, OnnxLSTM) and imported.reverse
    x = rng.normal(size=(5, 2, I)).astype(np.float32)
    Y, Y_h = run_ort(model, {"X": x})
    out, (h, _) = imported.forward(x)
    np.testing.assert_allclose(out, Y[:, 0], atol=1e-5)
    np.testing.assert_allclose(h, Y_h, atol=1e-5)


def test_float16_biases_are_summed_after_the_cast(rng):
    """Issue 10: the two bias halves were summed in float16 first (off by up to 2.4e-4)."""
    H, I = 4, 2
    W, R, _ = weights(rng, 1, H, I, np.float16)
    Bias = rng.uniform(0.9, 1.0, size=(1, 8 * H)).astype(np.float16)
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=H, name="lstm")
    model = make_model([node], [vi("X", ["T", "B", I])], [vi("Y", None)], dict(W=W, R=R, B=Bias))
    imported = from_onnx(model, dtype=np.float64, verify=False)
    exact = Bias[0, :4 * H].astype(np.float64) + Bias[0, 4 * H:].astype(np.float64)
    in_half = (Bias[0, :4 * H] + Bias[0, 4 * H:]).astype(np.float64)
    assert np.abs(exact - in_half).max() > 1e-4  # the data really tells the two apart
    cell = imported.layers[0][0]
    H_ = slice(0, H)
    np.testing.assert_array_equal(cell.bi[:, 0], exact[H_])  # ONNX order i, o, f, c
    np.testing.assert_array_equal(cell.bc[:, 0], exact[3 * H : 4 * H])


def test_verify_names_the_output_that_differs(rng):
    model = tf2onnx_style(rng)
    imported = from_onnx(model)
    imported.layers[0][0].bo[:] += 0.5
    with pytest.raises(InteropError, match=r"graph output 'Y' differs from onnxruntime by up to [0-9.e-]+ at index"):
        verify_import(model, imported)


# ---------------------------------------------------------------- refusals


def two_layer(rng, between, H=3, I=2):
    """Two forward LSTM nodes with ``between`` (a list of nodes from 'y0' to 'x1') between them."""
    W0, R0, B0 = weights(rng, 1, H, I)
    W1, R1, B1 = weights(rng, 1, H, H)
    nodes = [helper.make_node("LSTM", ["X", "W0", "R0", "B0"], ["y0"], hidden_size=H, name="first")]
    nodes += between
    nodes.append(helper.make_node("LSTM", ["x1", "W1", "R1", "B1"], ["Y"], hidden_size=H, name="second"))
    return make_model(nodes, [vi("X", ["T", "B", I])], [vi("Y", None)], dict(W0=W0, R0=R0, B0=B0, W1=W1, R1=R1, B1=B1))


def test_stacked_nodes_through_squeeze_map(rng):
    model = two_layer(rng, [const("ax", np.array([1], dtype=np.int64)), helper.make_node("Squeeze", ["y0", "ax"], ["x1"], name="sq")])
    imported = from_onnx(model)
    assert imported.num_layers == 2


def test_an_activation_between_layers_is_refused_by_name(rng):
    model = two_layer(rng, [
        const("ax", np.array([1], dtype=np.int64)),
        helper.make_node("Squeeze", ["y0", "ax"], ["s"], name="sq"),
        helper.make_node("Relu", ["s"], ["x1"], name="mid_relu"),
    ])
    with pytest.raises(InteropError, match=r"node Relu 'mid_relu': operator Relu is not plumbing"):
        from_onnx(model)


def test_a_reshape_that_mixes_axes_between_layers_is_refused(rng):
    """(T, 1, B, H) reshaped to (T, H, B) -- a legal reshape that scrambles batch and features."""
    model = two_layer(rng, [
        const("shape", np.array([0, 3, -1], dtype=np.int64)),
        helper.make_node("Reshape", ["y0", "shape"], ["x1"], name="scramble"),
    ])
    with pytest.raises(InteropError, match=r"LSTM node 'second': its input X is not the previous LSTM's output.*Reshape 'scramble'"):
        from_onnx(model, verify=False)


def test_a_reshape_to_literal_sizes_is_refused_for_dynamic_inputs(rng):
    """Right at one size only: a Reshape to (5, 3, 3) looks fine when T=5, B=3."""
    model = two_layer(rng, [
        const("shape", np.array([5, 3, 3], dtype=np.int64)),
        helper.make_node("Reshape", ["y0", "shape"], ["x1"], name="fixed"),
    ])
    with pytest.raises(InteropError, match=r"node Reshape 'fixed'"):
        from_onnx(model, verify=False)


def test_features_not_last_are_refused(rng):
    H, I = 3, 2
    W, R, B = weights(rng, 1, H, I)
    nodes = [
        helper.make_node("Transpose", ["X"], ["xt"], perm=[2, 0, 1], name="odd"),
        helper.make_node("LSTM", ["xt", "W", "R", "B"], ["Y"], hidden_size=H, name="lstm"),
    ]
    model = make_model(nodes, [vi("X", [5, I, 4])], [vi("Y", None)], dict(W=W, R=R, B=B))
    with pytest.raises(InteropError, match=r"LSTM node 'lstm': input X is not graph input 'X' re-laid out with features last"):
        from_onnx(model, verify=False)


def test_a_head_reading_y_h_unflattened_is_refused(rng):
    H, I = 3, 2
    W, R, B = weights(rng, 1, H, I)
    nodes = [
        helper.make_node("LSTM", ["X", "W", "R", "B"], ["y", "yh"], hidden_size=H, name="lstm"),
        helper.make_node("MatMul", ["yh", "proj"], ["Y"], name="head"),
    ]
    model = make_model(nodes, [vi("X", ["T", "B", I])], [vi("Y", None)], dict(W=W, R=R, B=B, proj=np.ones((H, 1), np.float32)))
    # a whole model's head reads h_n laid out (B, D·H); this MatMul reads Y_h as (D, B, H)
    with pytest.raises(InteropError, match=r"node MatMul 'head' reads 'yh', which is not the last LSTM node's h_n"):
        from_onnx(model)


def test_no_lstm_node_names_the_file(tmp_path):
    model = make_model([helper.make_node("Identity", ["X"], ["Y"])], [vi("X", [2])], [vi("Y", [2])], {})
    path = tmp_path / "plain.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InteropError, match=r"plain\.onnx: the ONNX graph has no LSTM node"):
        from_onnx(path)


@pytest.mark.parametrize("attrs, message", [
    (dict(activations=["Sigmoid", "ThresholdedRelu", "Tanh"]), "ThresholdedRelu without activation_alpha"),
    (dict(activations=["HardSigmoid", "LeakyRelu", "Tanh"], activation_alpha=[0.2, 0.1, 0.3]), "activation_alpha has 3 values for 2"),
    (dict(activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"], direction="bidirectional"), "'activations' differs between the directions"),
    (dict(activations=["Sigmoid", "Gelu", "Tanh"]), "unknown activation 'Gelu'"),
    (dict(clip=-1.0), "clip must be a positive number"),
])
def test_attributes_that_cannot_map_are_refused(rng, attrs, message):
    D = 2 if attrs.get("direction") == "bidirectional" else 1
    W, R, B = weights(rng, D, 3, 2)
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=3, name="odd", **attrs)
    model = make_model([node], [vi("X", ["T", "B", 2])], [vi("Y", None)], dict(W=W, R=R, B=B))
    with pytest.raises(InteropError, match=message):
        from_onnx(model, verify=False)


def test_initial_h_without_initial_c_from_graph_inputs_is_refused(rng):
    W, R, B = weights(rng, 1, 3, 2)
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0"], ["Y"], hidden_size=3, name="lstm")
    model = make_model([node], [vi("X", ["T", "B", 2]), vi("h0", [1, "B", 3])], [vi("Y", None)], dict(W=W, R=R, B=B))
    with pytest.raises(InteropError, match="partly from graph inputs"):
        from_onnx(model, verify=False)


# ---------------------------------------------------------------- external data


def external_model(tmp_path, rng, location="weights.bin", write=True):
    stack = StackedLSTM(2, 3, seed=0, dtype=np.float32)
    model = to_onnx(stack, with_initial_states=False)
    w = next(t for t in model.graph.initializer if t.name == "W_0")
    data = numpy_helper.to_array(w).tobytes()
    if write:
        (tmp_path / location).write_bytes(data)
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path, stack


def test_external_data_in_the_folder_is_read_by_default_and_refused_on_request(tmp_path, rng):
    """Issue 17 item 13: read by default as onnxruntime does (it used to need allow_external_data=True)."""
    path, stack = external_model(tmp_path, rng)
    with pytest.raises(InteropError, match=r"model\.onnx: tensor 'W_0' keeps its data in the external file 'weights\.bin', and allow_external_data=False"):
        from_onnx(path, allow_external_data=False)
    again = from_onnx(path)
    for name, value in stack.parameters().items():
        np.testing.assert_array_equal(again.parameters()[name], value, err_msg=name)


def test_external_data_outside_the_folder_is_refused(tmp_path, rng):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 96)
    sub = tmp_path / "m"
    sub.mkdir()
    path, _ = external_model(sub, rng, location="../secret.bin", write=False)
    with pytest.raises(InteropError, match=r"outside the model's folder"):
        from_onnx(path, allow_external_data=True)


def _bounded(fn):
    """Run ``fn`` and return its peak traced memory (bytes) and wall time (s)."""
    import time

    tracemalloc.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, elapsed


@pytest.mark.parametrize(
    "location, message",
    [
        ("../secret.bin", r" names external file '\.\./secret\.bin' outside the model's folder"),
        ("/etc/hostname", r" names external file '/etc/hostname' outside the model's folder"),
        ("sub/../../secret.bin", r" names external file 'sub/\.\./\.\./secret\.bin' outside the model's folder"),
        ("w\0.bin", r" names an invalid external file 'w\\x00\.bin'"),
        ("", r" names an invalid external file ''"),
        ("missing.bin", r": external file 'missing\.bin' is not a regular file in the model's folder"),
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "nul", "empty", "missing"],
)
def test_external_locations_outside_or_invalid_are_refused_naming_them(location, message, tmp_path, rng):
    """Issue 17 items 13 and 15: each is an InteropError naming the location (NUL was a bare ValueError)."""
    (tmp_path / "secret.bin").write_bytes(b"\0" * 96)
    sub = tmp_path / "m"
    sub.mkdir()
    path, _ = external_model(sub, rng, location=location, write=False)
    with pytest.raises(InteropError, match=r"model\.onnx: tensor 'W_0'" + message):
        from_onnx(path)


def test_external_symlink_escaping_the_folder_is_refused(tmp_path, rng):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 96)
    sub = tmp_path / "m"
    sub.mkdir()
    path, _ = external_model(sub, rng, location="weights.bin", write=False)
    (sub / "weights.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(InteropError, match=r"'weights\.bin', which resolves outside the model's folder"):
        from_onnx(path)
    # a symlink that stays inside the folder is what onnxruntime follows too
    (sub / "weights.bin").unlink()
    path2, stack = external_model(sub, rng, location="real.bin")
    os.rename(sub / "real.bin", sub / "data.bin")
    (sub / "real.bin").symlink_to(sub / "data.bin")
    got = from_onnx(path2)
    for name, value in stack.parameters().items():
        np.testing.assert_array_equal(got.parameters()[name], value, err_msg=name)


def test_external_fifo_is_refused_without_blocking(tmp_path, rng):
    path, _ = external_model(tmp_path, rng, location="pipe.bin", write=False)
    os.mkfifo(tmp_path / "pipe.bin")

    def load():
        with pytest.raises(InteropError, match=r"external file 'pipe\.bin' is not a regular file in the model's folder"):
            from_onnx(path)

    peak, elapsed = _bounded(load)
    assert elapsed < 5 and peak < 20 * 1024 * 1024


def test_external_file_shorter_than_claimed_is_refused(tmp_path, rng):
    path, _ = external_model(tmp_path, rng)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(InteropError, match=r"reads bytes 0\.\.96 past the end of 'weights\.bin' \(10 bytes\)"):
        from_onnx(path)


def test_huge_external_file_is_refused_before_reading(tmp_path, rng):
    """A small .onnx whose tensor claims 3 GB in a (sparse) side file: refused by size, nothing read."""
    path, _ = external_model(tmp_path, rng)
    model = onnx.load(str(path), load_external_data=False)
    w = next(t for t in model.graph.initializer if t.name == "W_0")
    del w.dims[:]
    w.dims.extend([1, 12, 1 << 26])  # 12 · 2^26 float32 = 3 GiB
    for entry in w.external_data:
        if entry.key == "length":
            entry.value = str(12 * (1 << 26) * 4)
    path.write_bytes(model.SerializeToString())
    with open(tmp_path / "weights.bin", "wb") as fh:
        fh.truncate(12 * (1 << 26) * 4)  # sparse: no disk used
    assert os.path.getsize(path) < 5_000
    tracemalloc.start()
    with pytest.raises(InteropError, match=r"exceeds max_external_bytes=1073741824 at tensor 'W_0'"):
        from_onnx(path, allow_external_data=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 1024 * 1024
    small = tmp_path / "small"
    small.mkdir()
    with pytest.raises(InteropError, match=r"exceeds max_external_bytes=50 at tensor 'W_0'"):
        from_onnx(external_model(small, rng)[0], allow_external_data=True, max_external_bytes=50)


# ---------------------------------------------------------------- hostile sizes


def test_huge_declared_input_imports_from_small_probes_with_bounded_memory(rng):
    """Issue 17 item 12: a static X of absurd size is proven on small probes of the same rank.

    (It used to be refused because the proof needed graph-sized tensors.)
    The default verify skips a graph too large to run; verify=True says so.
    """
    W, R, B = weights(rng, 1, 3, 2)
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=3, name="lstm")
    model = make_model([node], [vi("X", [1 << 20, 1 << 20, 2])], [vi("Y", None)], dict(W=W, R=R, B=B))
    tracemalloc.start()
    imported = from_onnx(model)
    with pytest.raises(InteropError, match=r"verify: the graph runs on X of shape \(1048576, 1048576, 2\) .* pass verify=False"):
        from_onnx(model, verify=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 1024 * 1024
    x = rng.normal(size=(4, 3, 2)).astype(np.float32)
    (Y,) = run_ort(model_with_symbolic_x(model), {"X": x})
    np.testing.assert_allclose(imported.forward(x)[0], Y[:, 0], atol=1e-5)


def model_with_symbolic_x(model):
    """The same graph with X's sequence and batch axes symbolic (so onnxruntime runs it at any size)."""
    other = onnx.ModelProto()
    other.CopyFrom(model)
    dims = other.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ("T", "B")):
        d.dim_param = name
    return other


def test_zero_state_of_absurd_shape_is_refused_with_bounded_memory(rng):
    W, R, B = weights(rng, 1, 3, 2)
    nodes = [
        const("huge", np.array([1, 1 << 30, 3], dtype=np.int64)),
        helper.make_node("ConstantOfShape", ["huge"], ["h0"], name="zeros"),
        helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "h0"], ["Y"], hidden_size=3, name="lstm"),
    ]
    model = make_model(nodes, [vi("X", ["T", "B", 2])], [vi("Y", None)], dict(W=W, R=R, B=B))
    tracemalloc.start()
    with pytest.raises(InteropError, match=r"node ConstantOfShape 'zeros': builds a tensor of shape \[1, 1073741824, 3\]"):
        from_onnx(model)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 1024 * 1024


def test_unknown_attributes_and_foreign_domains_are_refused(rng):
    W, R, B = weights(rng, 1, 3, 2)
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=3, name="lstm", peephole_mode=1)
    model = make_model([node], [vi("X", ["T", "B", 2])], [vi("Y", None)], dict(W=W, R=R, B=B))
    with pytest.raises(InteropError, match=r"LSTM node 'lstm': unknown attribute\(s\) \['peephole_mode'\]"):
        from_onnx(model, verify=False)
    nodes = [
        helper.make_node("Transpose", ["X"], ["xt"], perm=[1, 0, 2], name="custom_t", domain="com.example"),
        helper.make_node("LSTM", ["xt", "W", "R", "B"], ["Y"], hidden_size=3, name="lstm"),
    ]
    graph = helper.make_graph(nodes, "g", [vi("X", ["B", "T", 2])], [vi("Y", None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in dict(W=W, R=R, B=B).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(InteropError, match=r"node Transpose 'custom_t': operator of domain 'com.example'"):
        from_onnx(model, verify=False)


def test_onnx_lstm_takes_one_sequence_and_the_command_line_runs_it(rng, tmp_path):
    W, R, B = weights(rng, 1, 3, 2)
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=3, direction="reverse", name="rev")
    outputs = [vi("Y", ["T", 1, "B", 3]), vi("Y_h", [1, "B", 3])]
    model = make_model([node], [vi("X", ["T", "B", 2])], outputs, dict(W=W, R=R, B=B))
    imported = from_onnx(model)
    x = rng.normal(size=(5, 2)).astype(np.float32)
    Y, Y_h = run_ort(model, {"X": x[:, None]})
    out, (h, _) = imported.forward(x)
    np.testing.assert_allclose(out, Y[:, 0, 0], atol=1e-5)
    np.testing.assert_allclose(h, Y_h[:, 0], atol=1e-5)
    from nplstm.loading import load_model, run_model

    path = tmp_path / "rev.onnx"
    onnx.save(model, str(path))
    np.testing.assert_allclose(run_model(load_model(path), x)["outputs"], Y[:, 0, 0], atol=1e-5)


def test_a_cast_of_the_input_to_float16_is_refused(rng):
    """Small graphs' labels fit float16 exactly, so the cast itself must be refused."""
    W, R, B = weights(rng, 1, 3, 2, np.float16)
    nodes = [
        helper.make_node("Cast", ["X"], ["x16"], to=TensorProto.FLOAT16, name="to_half"),
        helper.make_node("LSTM", ["x16", "W", "R", "B"], ["Y"], hidden_size=3, name="lstm"),
    ]
    model = make_model(nodes, [vi("X", ["T", "B", 2])], [vi("Y", None, TensorProto.FLOAT16)], dict(W=W, R=R, B=B))
    with pytest.raises(InteropError, match=r"node Cast 'to_half': casts data to float16"):
        from_onnx(model, verify=False)
