"""Whole models: an embedding lookup, the LSTM nodes and a dense head, imported as a :class:`~nplstm.SequenceModel`.

The graph is cut at the value the head reads.  Up to there the wiring
proof of :func:`~nplstm.interop.onnx._match._match` runs as for an LSTM
alone, with two additions: an embedding lookup (``Gather`` of a constant
2-D table at the ids of the one graph input) is labelled like an LSTM
output, and the head's input must be, label for label at every probe, the
last LSTM's h_n (``Y_h``, directions concatenated), its output at the last
step (``Y[-1]``, ``out[:, -1]``: a last-step selection is accepted there)
or its whole output laid out (B, T, D·H).  From there on the head is a
chain read node by node: ``Gemm``, ``MatMul`` (+ ``Add`` of a constant
bias), ``Relu`` / ``Tanh`` / ``Sigmoid`` / ``Softmax`` / ``LogSoftmax``
(over the last axis) and ``Identity`` / ``Dropout`` (inference: identity),
ending at the one graph output.  Every weight must be a constant of the
file.  Anything else is refused naming the node and what is supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._protobuf import onnx_api
from ..gates import InteropError
from ._constants import _SHAPE_ONLY, PLUMBING
from ._match import _match, _Plan
from ._plumbing import _attrs, _needed_nodes, _run_plumbing, _where
from ._probe import _graph_inputs, _input_shape, _np_dtype
from ._source import _first_line, _to_array

#: Operators a whole model's head may hold after the LSTM, and the activation each names.
HEAD_ACTIVATIONS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax", "LogSoftmax": "log_softmax"}
HEAD_OPERATORS = ("Gemm", "MatMul", "Add") + tuple(HEAD_ACTIVATIONS) + ("Identity", "Dropout")
_SUPPORTED = (
    "a whole model's head may hold Gemm, MatMul (+ Add of a constant bias), Relu, Tanh, Sigmoid, Softmax and LogSoftmax "
    "(over the last axis), Identity and Dropout"
)
#: Constant-only nodes folded before the head is read (they never grow their input).
_FOLDABLE = {"Constant", "Identity", "Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze"}


@dataclass
class _DenseSpec:
    W: np.ndarray  # (out, in), float64
    b: np.ndarray  # (out,)
    activation: str = "linear"
    nodes: list[str] = field(default_factory=list)


@dataclass
class _ModelPlan:
    plan: _Plan
    input_name: str
    output_name: str
    dense: list[_DenseSpec]
    embedding: np.ndarray | None = None  # (num_embeddings, dim), float64


def _lstm_data_consumer(nodes: list[Any]) -> tuple[Any, str] | None:
    """The first node that does more than plumbing with data computed from an LSTM output, and that input."""
    from ._constants import _ALL_DATA_INPUTS

    carries: set[str] = set()
    for node in nodes:
        if node.op_type == "LSTM":
            carries.update(o for o in node.output if o)
            continue
        if node.op_type in ("Shape", "ConstantOfShape", "Constant"):
            continue
        held = [n for n in node.input if n in carries]
        if not held:
            continue
        if node.op_type not in PLUMBING or node.op_type in _SHAPE_ONLY:
            if _feeds_an_lstm(nodes, node):
                return None  # between LSTM layers: the LSTM-alone proof refuses it by name
            return node, held[0]
        positions = node.input if node.op_type in _ALL_DATA_INPUTS else node.input[:1]
        if any(n in carries for n in positions):
            carries.update(o for o in node.output if o)
    return None


def _feeds_an_lstm(nodes: list[Any], start: Any) -> bool:
    """Whether any LSTM node reads (through any path) an output of ``start``."""
    reached = {o for o in start.output if o}
    for node in nodes[nodes.index(start) + 1 :]:
        if any(n in reached for n in node.input):
            if node.op_type == "LSTM":
                return True
            reached.update(o for o in node.output if o)
    return False


def _embedding_lookups(nodes: list[Any], consts: dict[str, np.ndarray]) -> list[Any]:
    """Gather nodes of a constant 2-D float table at non-constant indices (the shape of an embedding lookup)."""
    found = []
    for node in nodes:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in consts and node.input[1] not in consts:
            table = np.asarray(consts[node.input[0]])
            if table.ndim == 2 and table.dtype.kind == "f":
                found.append(node)
    return found


def _fold_constants(nodes: list[Any], consts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Initializers plus what Constant / Transpose / Cast / Reshape ... nodes compute from constants alone."""
    values = dict(consts)
    for node in nodes:
        if node.op_type in _FOLDABLE and all(n in values for n in node.input if n):
            try:
                outs = _run_plumbing(node, [values[n] if n else None for n in node.input])
            except Exception:
                continue  # left unfolded: the head refuses what it cannot read
            values.update({name: np.asarray(v) for name, v in zip(node.output, outs) if name})
    return values


def whole_model_parts(model: Any) -> tuple[Any, str] | None:
    """``(first head node, the value it reads)`` when the graph is a whole model, None for an LSTM alone."""
    graph = model.graph
    nodes = _needed_nodes(graph)
    consts = {t.name: _to_array(t) for t in graph.initializer}
    found = _lstm_data_consumer(nodes)
    if found is None:
        lookups = _embedding_lookups(nodes, _fold_constants(nodes, consts))
        if lookups and any(n.op_type == "LSTM" for n in nodes):
            raise InteropError(
                f"{_where(lookups[0])}: an embedding lookup before the LSTM, but no dense head after it; nplstm imports "
                "an LSTM alone or a whole model (embedding, LSTM, dense head)"
            )
        return None
    return found


def _bias_vector(where: str, value: np.ndarray, out: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    while arr.ndim > 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape in ((), (1,)):
        return np.full(out, float(arr.reshape(-1)[0]))
    if arr.shape != (out,):
        raise InteropError(f"{where}: its bias has shape {np.shape(value)}; a dense layer's bias is ({out},) (or broadcast to it)")
    return arr


def _constant(where: str, label: str, name: str, values: dict[str, np.ndarray]) -> np.ndarray:
    if name not in values:
        raise InteropError(f"{where}: its {label} {name!r} is computed at run time; a dense layer's weights must be constants of the file")
    arr = np.asarray(values[name])
    if arr.dtype.kind != "f":
        raise InteropError(f"{where}: its {label} {name!r} has dtype {arr.dtype}; expected floats")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise InteropError(f"{where}: its {label} {name!r} holds NaN or inf")
    return out


def _read_head(model: Any, first: Any, value: str, rank: int, features: int) -> tuple[list[_DenseSpec], str]:
    """Read the head as a chain of dense layers from ``value`` (the LSTM's features) to the one graph output."""
    graph = model.graph
    nodes = _needed_nodes(graph)
    values = _fold_constants(nodes, {t.name: _to_array(t) for t in graph.initializer})
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for n in node.input:
            if n:
                consumers.setdefault(n, []).append(node)
    outputs = [o.name for o in graph.output]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    dense: list[_DenseSpec] = []
    cur = value
    while True:
        users = consumers.get(cur, [])
        if not users and cur in outputs:
            break
        if len(users) != 1 or cur in outputs:
            shown = ", ".join(_where(u) for u in users) or "none"
            raise InteropError(f"value {cur!r} after the LSTM feeds {shown}{' and a graph output' if cur in outputs else ''}; a head is one chain")
        node = users[0]
        op, where, attrs = node.op_type, _where(node), _attrs(node)
        if node.domain not in ("", "ai.onnx") or op not in HEAD_OPERATORS:
            raise InteropError(f"{where}: operator {op} after the LSTM is not supported; {_SUPPORTED}")
        if node.input[0] != cur and op not in ("Add",):
            raise InteropError(f"{where}: reads the LSTM's features as input {list(node.input).index(cur)}; expected input 0")
        if op == "Gemm":
            if rank != 2 or attrs.get("transA", 0):
                raise InteropError(f"{where}: Gemm on a transposed or non-2-D input; {_SUPPORTED}")
            B = _constant(where, "B", node.input[1], values)
            W = float(attrs.get("alpha", 1.0)) * (B if attrs.get("transB", 0) else B.T)
            b = np.zeros(W.shape[0])
            if len(node.input) > 2 and node.input[2]:
                b = float(attrs.get("beta", 1.0)) * _bias_vector(where, _constant(where, "C", node.input[2], values), W.shape[0])
            dense.append(_DenseSpec(W, b, nodes=[where]))
        elif op == "MatMul":
            B = _constant(where, "B", node.input[1], values)
            if B.ndim != 2:
                raise InteropError(f"{where}: MatMul by a {B.ndim}-D constant; a dense layer multiplies by a 2-D (in, out) matrix")
            dense.append(_DenseSpec(B.T.copy(), np.zeros(B.shape[1]), nodes=[where]))
        elif op == "Add":
            other = [n for n in node.input if n != cur]
            if len(other) != 1 or len(node.input) != 2:
                raise InteropError(f"{where}: adds the LSTM's features to themselves or to data; a dense layer adds a constant bias")
            if not dense or dense[-1].activation != "linear":
                raise InteropError(f"{where}: Add of a constant without a dense layer (Gemm / MatMul) right before it; {_SUPPORTED}")
            dense[-1].b = dense[-1].b + _bias_vector(where, _constant(where, "bias", other[0], values), dense[-1].W.shape[0])
            dense[-1].nodes.append(where)
        elif op in HEAD_ACTIVATIONS:
            if not dense or dense[-1].activation != "linear":
                before = "another activation" if dense else "no dense layer"
                raise InteropError(f"{where}: activation {op} with {before} before it; a SequenceModel applies one activation per dense layer")
            if op in ("Softmax", "LogSoftmax"):
                axis = int(attrs.get("axis", -1 if opset >= 13 else 1))
                if axis % rank != rank - 1:
                    raise InteropError(f"{where}: {op} over axis {axis} of a rank-{rank} value; nplstm's {op} runs over the last axis")
            dense[-1].activation = HEAD_ACTIVATIONS[op]
            dense[-1].nodes.append(where)
        elif op == "Dropout":
            if len(node.input) > 2 and node.input[2]:
                mode = values.get(node.input[2])
                if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                    raise InteropError(f"{where}: Dropout in training mode (or a mode computed at run time); inference needs training_mode false")
            if any(o and (o in consumers or o in outputs) for o in node.output[1:]):
                raise InteropError(f"{where}: its dropout mask is used; nplstm reads Dropout as the inference identity only")
        if op in ("Gemm", "MatMul"):
            if dense[-1].W.shape[1] != features:
                raise InteropError(f"{where}: a dense layer of input size {dense[-1].W.shape[1]} after {features} features")
            features = dense[-1].W.shape[0]
        cur = node.output[0]
    if not dense:
        raise InteropError(f"{_where(first)}: no dense layer after the LSTM; a SequenceModel needs at least one (Gemm or MatMul)")
    return dense, cur


def match_model(model: Any, first: Any, value: str) -> _ModelPlan:
    """The whole-model plan: the wiring proof up to the head's input ``value``, then the head read as a chain."""
    helper = onnx_api().helper

    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise InteropError(
            f"a whole model takes one graph input (the ids or the features); this graph has {[vi.name for vi in inputs]}"
        )
    if len(model.graph.output) != 1:
        raise InteropError(f"a whole model has one graph output (the prediction); this graph has {[o.name for o in model.graph.output]}")
    cut = type(model)()
    cut.CopyFrom(model)
    del cut.graph.output[:]
    cut.graph.output.append(helper.make_empty_tensor_value_info(value))
    plan = _match(cut, head_input=value, head_reader=_where(first))
    head_input = plan.head_input
    assert head_input is not None
    first_layer = plan.layers[0]
    if plan.state_inputs is not None or plan.initial_states is not None:
        raise InteropError("the LSTM nodes take initial states; a whole model starts every sequence from zero states")
    if plan.lens_input is not None or plan.lengths is not None:
        raise InteropError("the LSTM nodes take sequence_lens; a whole model imports without it (full sequences)")
    if first_layer.direction == "reverse" and head_input != "h_n":
        raise InteropError(
            f"LSTM node {first_layer.name!r}: a reverse-only LSTM whose head reads its {head_input} output; nplstm maps a reverse "
            "LSTM onto go_backwards only when the head reads h_n"
        )
    if not plan.batch_first:
        raise InteropError(
            f"graph input {inputs[0].name!r} is time-major (T, B, ...); a SequenceModel predicts on batch-first input (B, T, ...): "
            "export the model with batch_first=True"
        )
    rank = 3 if head_input == "sequence" else 2
    features = first_layer.num_directions * first_layer.hidden_size
    dense, output = _read_head(model, first, value, rank, features)
    embedding = None
    if plan.ids_name is not None:
        lookup = next(n for n in _needed_nodes(model.graph) if n.output and n.output[0] == plan.x_name)
        embedding = _constant(_where(lookup), "table", lookup.input[0], _fold_constants(_needed_nodes(model.graph), {
            t.name: _to_array(t) for t in model.graph.initializer}))
        if _np_dtype(inputs[0]).kind not in "iu":
            raise InteropError(f"graph input {inputs[0].name!r} feeds an embedding lookup but holds {_np_dtype(inputs[0])}; expected integer ids")
    return _ModelPlan(plan=plan, input_name=inputs[0].name, output_name=output, dense=dense, embedding=embedding)


def build_model(mplan: _ModelPlan, dtype: Any, label: str, metadata: str | None = None) -> Any:
    """The :class:`~nplstm.SequenceModel` of a whole-model plan."""
    from ... import Dense, Embedding, SequenceModel
    from ._wrapper import OnnxLSTM, _build

    plan = mplan.plan
    built = _build(plan, dtype, label, metadata)
    stack = built.stack if isinstance(built, OnnxLSTM) else built
    dense = []
    for spec in mplan.dense:
        layer = Dense(spec.W.shape[1], spec.W.shape[0], spec.activation, seed=0, dtype=stack.dtype)
        layer.W = spec.W.astype(stack.dtype)
        layer.b = spec.b.astype(stack.dtype)
        dense.append(layer)
    embedding = None
    if mplan.embedding is not None:
        embedding = Embedding(mplan.embedding.shape[0], mplan.embedding.shape[1], seed=0, dtype=stack.dtype)
        embedding.W = mplan.embedding.astype(stack.dtype)
    go_backwards = plan.layers[0].direction == "reverse"
    assert plan.head_input is not None
    return SequenceModel.from_parts(stack, dense, embedding=embedding, output=plan.head_input, go_backwards=go_backwards)


def model_elements(model: Any, mplan: _ModelPlan) -> tuple[int, tuple[int, ...]]:
    """The elements verify would handle (input plus every layer's output) and the input shape it would feed."""
    vi = _graph_inputs(model)[0]
    shape = _input_shape(vi, mplan.plan.sizes)
    per_step = (1 if mplan.embedding is None else mplan.embedding.shape[1]) + (shape[2] if len(shape) == 3 else 0)
    per_step += sum(layer.num_directions * layer.hidden_size for layer in mplan.plan.layers)
    return int(np.prod(shape[:2], dtype=object)) * per_step, shape


def verify_model(model: Any, imported: Any, mplan: _ModelPlan, *, seed: int = 0) -> float:
    """Run the whole graph in onnxruntime and ``imported.predict`` on one random input; return the largest difference.

    Raises InteropError when they differ by more than the verify tolerance.
    """
    import onnxruntime as ort

    from ._verify import VERIFY_ATOL, VERIFY_RTOL, _ort_compatible

    vi = _graph_inputs(model)[0]
    _, shape = model_elements(model, mplan)
    rng = np.random.default_rng(seed)
    if mplan.embedding is not None:
        x = rng.integers(0, mplan.embedding.shape[0], size=shape).astype(_np_dtype(vi))
    else:
        x = rng.normal(size=shape).astype(np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(_ort_compatible(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        (want,) = session.run(None, {vi.name: x}, quiet)
    except Exception as exc:
        raise InteropError(f"verify: onnxruntime cannot run this graph ({_first_line(exc)}); pass verify=False to skip") from None
    got = np.asarray(imported.predict(x.astype(np.int64) if mplan.embedding is not None else x), dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise InteropError(f"verify: graph output {mplan.output_name!r} has shape {want.shape} in onnxruntime but {got.shape} from the import")
    diff = np.abs(got - want)
    if (diff - (VERIFY_ATOL + VERIFY_RTOL * np.abs(want))).max(initial=-1.0) > 0:
        at = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise InteropError(
            f"verify: graph output {mplan.output_name!r} differs from onnxruntime by up to {diff.max():.3g} at index "
            f"{tuple(int(i) for i in at)}; the import does not reproduce this graph"
        )
    return float(diff.max(initial=0.0))
