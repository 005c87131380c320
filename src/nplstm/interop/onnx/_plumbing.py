"""The plumbing interpreter: runs the non-LSTM nodes in NumPy (ONNX semantics), allocations bounded."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .._protobuf import onnx_api
from ..gates import InteropError
from ._constants import _ALL_DATA_INPUTS, _SHAPE_ONLY, PLUMBING
from ._source import _first_line, _to_array


def _node_name(node: Any) -> str:
    """The node's name, or its first named output for nameless nodes."""
    return node.name or next((o for o in node.output if o), "")


def _where(node: Any) -> str:
    return f"node {node.op_type} {_node_name(node)!r}"


def _attrs(node: Any) -> dict[str, Any]:
    helper = onnx_api().helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        out[a.name] = value
    return out


def _ints(value: np.ndarray | None) -> list[int]:
    return [] if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _constant_value(node: Any, attrs: dict[str, Any]) -> np.ndarray:
    for a in node.attribute:
        if a.name == "value":
            return _to_array(a.t)
    if "value_float" in attrs:
        return np.array(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], dtype=np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], dtype=np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], dtype=np.int64)
    raise InteropError(f"{_where(node)}: unsupported Constant attribute {sorted(attrs)}")


def _axes(node: Any, attrs: dict[str, Any], args: list[Any]) -> list[int] | None:
    if len(args) > 1 and args[1] is not None:
        return _ints(args[1])
    return list(attrs["axes"]) if "axes" in attrs else None


def _slice_params(node: Any, attrs: dict[str, Any], args: list[Any], rank: int) -> list[tuple[int, int, int, int]]:
    """A Slice node's (axis, start, end, step) per sliced axis, axes made non-negative."""
    if len(args) > 1:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    else:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = list(attrs.get("axes", range(len(starts)))), [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise InteropError(f"{_where(node)}: starts, ends, axes and steps differ in length")
    if any(st == 0 for st in steps):
        raise InteropError(f"{_where(node)}: Slice step 0")
    if any(not -rank <= a < rank for a in axes):
        raise InteropError(f"{_where(node)}: Slice axes {axes} out of range for rank {rank}")
    return [(a % rank, s, e, st) for s, e, a, st in zip(starts, ends, axes, steps)]


def _split_sizes(node: Any, attrs: dict[str, Any], args: list[Any], extent: int) -> list[int]:
    """The sizes of a Split node's parts along its axis (ONNX semantics, all versions)."""
    split: list[int] = _ints(args[1]) if len(args) > 1 and args[1] is not None else list(attrs.get("split", []))
    if not split:
        n = attrs.get("num_outputs", len(node.output))
        size = -(-extent // n)
        split = [min(size, max(extent - k * size, 0)) for k in range(n)]
    if sum(split) != extent or any(v < 0 for v in split):
        raise InteropError(f"{_where(node)}: split sizes {split} do not add up to the axis' {extent}")
    return split


#: Bound on the elements of any array built while checking a graph.
MAX_CHECK_ELEMENTS = 1 << 22
#: Bound on the bytes the plumbing may allocate in one evaluation, beyond a
#: small multiple of the values fed to it (graph inputs and LSTM outputs).
MAX_PLUMBING_BYTES = 16 << 20


def _check_size(node: Any, shape: list[int]) -> list[int]:
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=object)) > MAX_CHECK_ELEMENTS:
        raise InteropError(f"{_where(node)}: builds a tensor of shape {shape}, over the {MAX_CHECK_ELEMENTS}-element check limit")
    return shape


def _count(shape: Sequence[int]) -> int:
    return int(np.prod([int(d) for d in shape], dtype=object))


def _itemsize(value: Any) -> int:
    return int(np.asarray(value).dtype.itemsize) if value is not None else 0


def _planned(node: Any, args: list[Any]) -> tuple[int, tuple[int, ...]]:
    """The shape and bytes a plumbing node is about to allocate, computed from shapes alone (before allocating).

    Only the operators whose output can be larger than their inputs are
    predicted (Expand, ConstantOfShape, Concat, Gather, broadcasting
    arithmetic); the others (Reshape, Transpose, Slice, Cast, ...) build at
    most one input's size, counted after they run.
    """
    op = node.op_type
    shape: tuple[int, ...] = ()
    itemsize = 8
    try:
        if op == "Expand":
            shape, itemsize = tuple(np.broadcast_shapes(np.shape(args[0]), tuple(_ints(args[1])))), _itemsize(args[0])
        elif op == "ConstantOfShape":
            shape = tuple(_ints(args[0]))
        elif op == "Concat":
            parts = [np.asarray(a) for a in args if a is not None]
            axis = _attrs(node).get("axis", 0) % max(parts[0].ndim, 1)
            shape = parts[0].shape[:axis] + (sum(p.shape[axis] for p in parts),) + parts[0].shape[axis + 1 :]
            itemsize = max(p.dtype.itemsize for p in parts)
        elif op == "Gather":
            x, idx = np.asarray(args[0]), np.asarray(args[1])
            axis = _attrs(node).get("axis", 0) % max(x.ndim, 1)
            shape, itemsize = x.shape[:axis] + idx.shape + x.shape[axis + 1 :], x.dtype.itemsize
        elif op in _SHAPE_ONLY:
            shape = tuple(np.broadcast_shapes(np.shape(args[0]), np.shape(args[1])))
        else:
            return 0, ()
    except (ValueError, TypeError, IndexError):
        return 0, ()  # incompatible shapes: running the node raises the error
    if any(d < 0 for d in shape):
        return 0, ()
    return _count(shape) * itemsize, tuple(int(d) for d in shape)


class _Budget:
    """The memory one evaluation of the plumbing may allocate.

    The plumbing only moves values, so what it builds is bounded by a small
    multiple of what is fed to it plus :data:`MAX_PLUMBING_BYTES` (shape
    vectors, zero states).  Every node's allocation is checked against it,
    growth before allocating: a tiny graph cannot make the check itself
    use gigabytes.
    """

    def __init__(self) -> None:
        self.fed = 0
        self.built = 0

    def feed(self, values: Sequence[Any]) -> None:
        self.fed += sum(int(np.asarray(v).nbytes) for v in values if v is not None)

    @property
    def limit(self) -> int:
        return MAX_PLUMBING_BYTES + 4 * self.fed

    def take(self, node: Any, nbytes: int, shape: tuple[int, ...] | None = None) -> None:
        if self.built + nbytes > self.limit:
            what = f"builds a tensor of shape {list(shape)}" if shape else f"builds {nbytes} bytes"
            raise InteropError(
                f"{_where(node)}: {what}, over the {self.limit}-byte check limit with the {self.built} bytes already built "
                "(plumbing only moves the LSTM's values; it must not grow them)"
            )
        self.built += nbytes


def _run_plumbing(node: Any, args: list[Any]) -> list[np.ndarray]:
    """Execute one plumbing node in NumPy (ONNX semantics)."""
    helper = onnx_api().helper

    op, attrs = node.op_type, _attrs(node)
    x: Any = args[0] if args else None
    if op == "Identity":
        return [x]
    if op == "Transpose":
        perm = attrs.get("perm", list(range(x.ndim))[::-1])
        return [np.transpose(x, perm)]
    if op == "Reshape":
        shape = _ints(args[1])
        if not attrs.get("allowzero", 0):
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return [np.reshape(x, shape)]
    if op == "Squeeze":
        axes = _axes(node, attrs, args)
        return [np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))]
    if op == "Unsqueeze":
        axes = _axes(node, attrs, args) or []
        rank = x.ndim + len(axes)
        out = x
        for a in sorted(a % rank for a in axes):
            out = np.expand_dims(out, a)
        return [out]
    if op == "Concat":
        return [np.concatenate(args, axis=attrs["axis"])]
    if op == "Slice":
        index = [slice(None)] * x.ndim
        for a, s, e, st in _slice_params(node, attrs, args, x.ndim):
            index[a] = slice(s, e, st)
        return [x[tuple(index)]]
    if op == "Gather":
        return [np.take(x, np.asarray(args[1]).astype(np.int64), axis=attrs.get("axis", 0))]
    if op == "Split":
        axis = attrs.get("axis", 0) % x.ndim
        return list(np.split(x, np.cumsum(_split_sizes(node, attrs, args, x.shape[axis]))[:-1], axis=axis))
    if op == "Shape":
        dims = np.array(x.shape, dtype=np.int64)
        return [dims[attrs.get("start", 0) : attrs.get("end", len(dims))]]
    if op == "Cast":
        return [np.asarray(x).astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))]
    if op == "Expand":
        target = np.broadcast_shapes(x.shape, tuple(_check_size(node, _ints(args[1]))))
        return [np.broadcast_to(x, target).copy()]
    if op == "ConstantOfShape":
        fill = np.zeros(1, dtype=np.float32)
        for a in node.attribute:
            if a.name == "value":
                fill = _to_array(a.t).reshape(-1)
        return [np.full(tuple(_check_size(node, _ints(x))), fill[0], dtype=fill.dtype)]
    if op == "Constant":
        return [_constant_value(node, attrs)]
    if op in _SHAPE_ONLY:
        a, b = np.asarray(args[0]), np.asarray(args[1])
        if op == "Add":
            return [a + b]
        if op == "Sub":
            return [a - b]
        if op == "Mul":
            return [a * b]
        return [np.trunc(a / b).astype(np.result_type(a, b)) if a.dtype.kind in "iu" else a / b]
    raise InteropError(f"{_where(node)}: operator {op} is not LSTM plumbing")  # pragma: no cover (PLUMBING covers)


#: An LSTM hook gets (node index, node, evaluated inputs) and returns the node's three outputs.
LSTMHook = Callable[[int, Any, list[Any]], list[Any]]


#: An embedding hook gets (node, evaluated inputs: table and indices) and returns the lookup's output.
EmbedHook = Callable[[Any, list[Any]], list[Any]]


def is_embedding(node: Any, arg_deps: list[frozenset[str]], args: list[Any]) -> bool:
    """A Gather of a constant 2-D float table (axis 0) at indices computed from data: an embedding lookup."""
    if node.op_type != "Gather" or len(args) != 2 or arg_deps[0] or not arg_deps[1]:
        return False
    table = np.asarray(args[0])
    return table.ndim == 2 and table.dtype.kind == "f" and _attrs(node).get("axis", 0) in (0, -2)


#: An observer gets (node, evaluated inputs, their data dependencies, outputs) after each plumbing node.
Observer = Callable[[Any, list[Any], list[frozenset[str]], list[Any]], None]


def _evaluate(
    graph: Any,
    nodes: list[Any],
    consts: dict[str, np.ndarray],
    feeds: dict[str, np.ndarray],
    hook: LSTMHook,
    observe: Observer | None = None,
    embed: EmbedHook | None = None,
) -> tuple[dict[str, Any], dict[str, frozenset[str]]]:
    """Run ``nodes`` (topologically sorted) with LSTM nodes replaced by ``hook``.

    Returns every value and its data dependencies: the graph inputs and
    LSTM outputs whose *values* (not just shapes) flow into it.  Empty
    (omitted) optional inputs are None.  Every allocation is bounded by a
    :class:`_Budget`.  With ``embed``, an embedding lookup (a Gather of a
    constant table at indices computed from data, see :func:`is_embedding`)
    is replaced by ``embed`` too, its output a data source of its own.
    """
    helper = onnx_api().helper

    values: dict[str, Any] = {"": None}
    deps: dict[str, frozenset[str]] = {"": frozenset()}
    for name, value in consts.items():
        values[name], deps[name] = value, frozenset()
    for name, value in feeds.items():
        values[name], deps[name] = value, frozenset({name})
    budget = _Budget()
    budget.feed(list(feeds.values()))
    lstm_index = 0
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            raise InteropError(f"{_where(node)}: operator of domain {node.domain!r} is not the standard one; nplstm cannot reproduce it")
        missing = [n for n in node.input if n not in values]
        if missing:
            raise InteropError(f"{_where(node)}: input {missing[0]!r} is not produced by any node before it")
        args = [values[n] for n in node.input]
        arg_deps = [deps[n] for n in node.input]
        if node.op_type == "LSTM":
            outs = hook(lstm_index, node, args)
            budget.feed(outs)
            for k, name in enumerate(node.output):
                values[name] = outs[k] if k < len(outs) else None
                deps[name] = frozenset({f"{name}"})
            lstm_index += 1
            continue
        if embed is not None and is_embedding(node, arg_deps, args):
            outs = embed(node, args)
            budget.feed(outs)
            values[node.output[0]], deps[node.output[0]] = outs[0], frozenset({node.output[0]})
            continue
        if node.op_type not in PLUMBING:
            raise InteropError(f"{_where(node)}: operator {node.op_type} is not plumbing; nplstm cannot reproduce it")
        data_positions = range(len(args)) if node.op_type in _ALL_DATA_INPUTS else [0]
        for k, d in enumerate(arg_deps):
            if d and (k not in data_positions or node.op_type in _SHAPE_ONLY):
                raise InteropError(f"{_where(node)}: input {node.input[k]!r} is computed from data, not from shapes or constants")
        if node.op_type == "Cast" and arg_deps[0] and args[0] is not None:
            to = np.dtype(helper.tensor_dtype_to_np_dtype(_attrs(node)["to"]))
            ids = np.asarray(args[0]).dtype.kind in "iu" and to.kind in "iu"  # integer ids, as tf2onnx casts them before a lookup
            if not ids and (to.kind != "f" or to.itemsize < 4):  # rounding data to float16 (or to integers) changes it
                raise InteropError(f"{_where(node)}: casts data to {to}, which changes its values")
        out_deps: frozenset[str] = frozenset()
        if node.op_type not in ("Shape", "ConstantOfShape"):
            out_deps = out_deps.union(*(arg_deps[k] for k in data_positions if k < len(arg_deps)))
        budget.take(node, *_planned(node, args))
        try:
            outs = _run_plumbing(node, args)
        except InteropError:
            raise
        except Exception as exc:
            raise InteropError(f"{_where(node)} fails on the LSTM's values: {_first_line(exc)}") from None
        if node.op_type not in ("Constant", "Expand", "ConstantOfShape", "Concat", "Gather") and node.op_type not in _SHAPE_ONLY:
            # the others build at most one input's size: counted once built (views cost nothing)
            budget.take(node, sum(int(o.nbytes) for o in outs if isinstance(o, np.ndarray) and o.base is None))
        if observe is not None:
            observe(node, args, arg_deps, outs)
        for name, value in zip(node.output, outs):
            values[name], deps[name] = value, out_deps
    return values, deps


def _needed_nodes(graph: Any) -> list[Any]:
    """The nodes the graph outputs depend on, in graph order."""
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output if out}
    needed: set[int] = set()
    stack = [o.name for o in graph.output]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        k = producer[name]
        if k not in needed:
            needed.add(k)
            stack.extend(n for n in graph.node[k].input if n)
    return [graph.node[k] for k in sorted(needed)]
