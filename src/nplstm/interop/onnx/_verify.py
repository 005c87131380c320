"""Verification: the original graph in onnxruntime against the import (:func:`verify_import`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...stack import StackedLSTM
from ..gates import InteropError
from ._match import _match, _Plan
from ._plumbing import _count, _evaluate, _needed_nodes
from ._probe import _graph_inputs, _input_shape, _np_dtype
from ._source import _first_line, _load_model, _tensors_of, _to_array
from ._wrapper import OnnxLSTM


def _ort_compatible(model: Any) -> Any:
    """The same graph as onnxruntime's CPU LSTM can run it.

    Its LSTM kernel is float32-only and layout 0 only: float16/float64
    tensors and types become float32, and each layout=1 node becomes a
    layout=0 node between Transposes (an exact rewrite).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    other = (TensorProto.DOUBLE, TensorProto.FLOAT16)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in _tensors_of(out):
        if tensor.data_type in other:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    for vi in list(out.graph.input) + list(out.graph.output) + list(out.graph.value_info):
        if vi.type.tensor_type.elem_type in other:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = []
    for k, node in enumerate(out.graph.node):
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i in other:
                attr.i = TensorProto.FLOAT
        layout = [a for a in node.attribute if a.name == "layout"]
        if node.op_type != "LSTM" or not layout or layout[0].i != 1:
            nodes.append(node)
            continue
        layout[0].i = 0
        tag = f"_nplstm_layout0_{k}"
        for slot in (0, 5, 6):
            if slot < len(node.input) and node.input[slot]:
                nodes.append(helper.make_node("Transpose", [node.input[slot]], [f"{tag}_in{slot}"], perm=[1, 0, 2]))
                node.input[slot] = f"{tag}_in{slot}"
        nodes.append(node)
        for slot, perm in ((0, [2, 0, 1, 3]), (1, [1, 0, 2]), (2, [1, 0, 2])):
            if slot < len(node.output) and node.output[slot]:
                original = node.output[slot]
                node.output[slot] = f"{tag}_out{slot}"
                nodes.append(helper.make_node("Transpose", [node.output[slot]], [original], perm=perm))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _random_feeds(model: Any, plan: _Plan, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    by_name = {vi.name: vi for vi in _graph_inputs(model)}
    x_shape = _input_shape(by_name[plan.x_name], plan.sizes)
    T = x_shape[1] if plan.batch_first else x_shape[0]
    for name, vi in by_name.items():
        shape = _input_shape(vi, plan.sizes)
        if name == plan.lens_input:
            feeds[name] = rng.integers(1, T + 1, size=shape).astype(_np_dtype(vi))
            feeds[name].reshape(-1)[0] = T
        else:
            feeds[name] = rng.normal(size=shape).astype(np.float32 if _np_dtype(vi).kind == "f" else _np_dtype(vi))
    return feeds


#: Bound on the work of one verification, in elements of the input and every
#: layer's output at the sizes it runs (a static graph's declared sizes).
VERIFY_MAX_ELEMENTS = 1 << 24


def _verify_elements(model: Any, plan: _Plan) -> tuple[int, tuple[int, ...]]:
    """The elements verify would handle (input plus every layer's output) and the shape of X it would feed."""
    by_name = {vi.name: vi for vi in _graph_inputs(model)}
    x_shape = _input_shape(by_name[plan.x_name], plan.sizes)
    per_step = x_shape[2] + sum(layer.num_directions * layer.hidden_size for layer in plan.layers)
    return _count(x_shape[:2]) * per_step, x_shape


#: onnxruntime's LSTM always runs float32 (verify widens nothing): its rounding and
#: its approximate sigmoid/tanh differ from nplstm by ~1e-6 per step, far below this.
VERIFY_ATOL = VERIFY_RTOL = 2e-4


def verify_import(model: Any, imported: StackedLSTM | OnnxLSTM, *, seed: int = 0, plan: Any = None) -> list[str]:
    """Run ``model`` in onnxruntime and ``imported`` on one random input; compare every graph output it reproduces.

    Returns the names of the compared graph outputs; raises InteropError
    naming the output and the largest difference when they disagree.
    Graph outputs it cannot reproduce (the sequence output of a middle
    layer) are not compared.
    """
    import onnxruntime as ort

    if plan is None:
        model, _ = _load_model(model, False, 0)
        plan = _match(model)
    work, x_shape = _verify_elements(model, plan)
    if work > VERIFY_MAX_ELEMENTS:
        raise InteropError(
            f"verify: the graph runs on X of shape {x_shape} ({work} elements of input and outputs), over the "
            f"{VERIFY_MAX_ELEMENTS}-element verify limit; pass verify=False to skip"
        )
    rng = np.random.default_rng(seed)
    feeds = _random_feeds(model, plan, rng)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: errors come back as one InteropError line, not ORT's own log on stderr
    try:
        session = ort.InferenceSession(_ort_compatible(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # a kernel's failure is logged per run, not per session
        expected = session.run(None, feeds, quiet)
    except Exception as exc:
        raise InteropError(f"verify: onnxruntime cannot run this graph ({_first_line(exc)}); pass verify=False to skip") from None
    x = feeds[plan.x_name]
    hx = None
    if plan.state_inputs is not None:
        hx = (feeds[plan.state_inputs[0]], feeds[plan.state_inputs[1]])
        if plan.states_batch_major:
            hx = (hx[0].transpose(1, 0, 2), hx[1].transpose(1, 0, 2))
    lengths = None if plan.lens_input is None else feeds[plan.lens_input].astype(np.int64)
    out, (h_n, c_n) = imported.forward(x, hx, lengths=lengths)
    D, L = plan.layers[0].num_directions, len(plan.layers)
    batch_first = plan.batch_first
    seq = np.asarray(out).transpose(1, 0, 2) if batch_first else np.asarray(out)
    T, B = seq.shape[:2]
    H = plan.layers[0].hidden_size

    def hook(k: int, node: Any, args: list[Any]) -> list[Any]:
        layout = plan.layers[k].layout
        # A middle layer's sequence output is not reproduced: NaN marks it (shapes still flow).
        y = seq.reshape(T, B, D, H).transpose(0, 2, 1, 3) if k == L - 1 else np.full((T, D, B, H), np.nan)
        yh, yc = np.asarray(h_n)[k * D : (k + 1) * D], np.asarray(c_n)[k * D : (k + 1) * D]
        if layout == 1:
            return [y.transpose(2, 0, 1, 3), yh.transpose(1, 0, 2), yc.transpose(1, 0, 2)]
        return [y, yh, yc]

    graph = model.graph
    consts = {t.name: _to_array(t) for t in graph.initializer}
    values, _ = _evaluate(graph, _needed_nodes(graph), consts, {k: v for k, v in feeds.items()}, hook)
    atol, rtol = VERIFY_ATOL, VERIFY_RTOL
    compared = []
    for vi, want in zip(graph.output, expected):
        got = values.get(vi.name)
        if got is None or vi.name in feeds or np.isnan(np.asarray(got, dtype=np.float64)).any():
            continue
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            raise InteropError(f"verify: graph output {vi.name!r} has shape {want.shape} in onnxruntime but {got.shape} from the import")
        diff = np.abs(got - want)
        excess = diff - (atol + rtol * np.abs(want))
        if excess.max(initial=-1.0) > 0:
            at = np.unravel_index(int(np.argmax(diff)), diff.shape)
            raise InteropError(
                f"verify: graph output {vi.name!r} differs from onnxruntime by up to {diff.max():.3g} at index {tuple(int(i) for i in at)} "
                f"(tolerance {atol:g} + {rtol:g}·|value|); the import does not reproduce this graph"
            )
        compared.append(vi.name)
    return compared
