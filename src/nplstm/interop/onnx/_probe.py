"""Labelled runs of the plumbing at probe sizes, and the selections (Slice / Gather / Split) they record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._protobuf import onnx_api
from ..gates import InteropError
from ._constants import _ALL_DATA_INPUTS
from ._plumbing import MAX_CHECK_ELEMENTS, _attrs, _constant_value, _evaluate, _slice_params, _split_sizes, _where


def _graph_inputs(model: Any) -> list[Any]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _is_static(dim: Any) -> bool:
    return bool(dim.HasField("dim_value") and dim.dim_value > 0)


def _dim_key(value_info: Any, axis: int) -> str:
    """The probe key of one axis of a graph input: its symbol, or ``name:axis``."""
    dim = value_info.type.tensor_type.shape.dim[axis]
    return dim.dim_param if not _is_static(dim) and dim.dim_param else f"{value_info.name}:{axis}"


def _input_shape(value_info: Any, sizes: dict[str, int]) -> tuple[int, ...]:
    """The shape a graph input gets at one probe: ``sizes`` by key, else the declared size (1 if symbolic)."""
    shape = []
    for axis, d in enumerate(value_info.type.tensor_type.shape.dim):
        default = int(d.dim_value) if _is_static(d) else 1
        shape.append(sizes.get(_dim_key(value_info, axis), default))
    return tuple(shape)


def _symbolic_keys(value_info: Any) -> list[str | None]:
    return [None if _is_static(d) else _dim_key(value_info, axis) for axis, d in enumerate(value_info.type.tensor_type.shape.dim)]


def _probe_keys(value_info: Any, data_inputs: set[str]) -> list[str]:
    """The axes the wiring proof varies: every symbolic one, and the static sequence/batch axes of X.

    A static export (torch's default) declares X as e.g. (1000, 32, 16); its
    sequence and batch axes (all but the features, last) are probed at
    other sizes like symbolic ones, so the proof needs no graph-sized
    tensors and sees what the graph does at other lengths.
    """
    dims = value_info.type.tensor_type.shape.dim
    keys = []
    for axis, d in enumerate(dims):
        if not _is_static(d) or (value_info.name in data_inputs and axis < len(dims) - 1):
            keys.append(_dim_key(value_info, axis))
    return keys


def _data_sources(nodes: list[Any], name: str, consts: dict[str, np.ndarray] | None = None) -> set[str]:
    """The values with no producer among ``nodes`` whose *data* can reach ``name`` (shape-only edges excluded).

    With ``consts``, a Gather of a constant table follows its indices (an
    embedding lookup: the ids are the data).
    """
    producer = {o: node for node in nodes for o in node.output if o}
    found: set[str] = set()
    stack, seen = [name], set()
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        node = producer.get(value)
        if node is None:
            found.add(value)
        elif consts is not None and node.op_type == "Gather" and node.input[0] in consts and len(node.input) > 1:
            stack.append(node.input[1])
        elif node.op_type not in ("Shape", "ConstantOfShape", "Constant", "LSTM"):
            stack.extend(n for n in (node.input if node.op_type in _ALL_DATA_INPUTS else node.input[:1]) if n)
    return found


class _Labeller:
    def __init__(self) -> None:
        self.next = 1

    def __call__(self, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        n = int(np.prod(shape, dtype=object))
        if n > MAX_CHECK_ELEMENTS or self.next + n > MAX_CHECK_ELEMENTS * 8:
            raise InteropError(f"a tensor of shape {shape} is over the {MAX_CHECK_ELEMENTS}-element limit for checking the graph")
        out = np.arange(self.next, self.next + n, dtype=np.float64).reshape(shape)
        self.next += n
        return out.astype(dtype)


def _np_dtype(value_info: Any) -> np.dtype:
    helper = onnx_api().helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type))


def _labelled_run(
    model: Any, nodes: list[Any], consts: dict[str, np.ndarray], sizes: dict[str, int], embed: bool = False
) -> dict[str, Any]:
    """Run the plumbing with labelled graph inputs and labelled LSTM outputs (and embedding outputs, with ``embed``)."""
    label = _Labeller()
    feeds = {}
    for vi in _graph_inputs(model):
        dt = _np_dtype(vi)
        feeds[vi.name] = label(_input_shape(vi, sizes), np.int64 if dt.kind in "iu" else np.float64)
    record: dict[str, Any] = {"lstm_inputs": [], "lstm_outputs": [], "embeddings": []}

    def lookup(node: Any, args: list[Any]) -> list[Any]:
        table, ids = np.asarray(args[0]), np.asarray(args[1])
        out = label(ids.shape + table.shape[1:])
        record["embeddings"].append((node, table, ids, out))
        return [out]

    def hook(k: int, node: Any, args: list[Any]) -> list[Any]:
        attrs = _attrs(node)
        layout = int(attrs.get("layout", 0))
        D = 2 if attrs.get("direction", "forward") == "bidirectional" else 1
        x = args[0]
        if x is None or np.ndim(x) != 3:
            raise InteropError(f"{_where(node)}: input X must be 3-D; got shape {np.shape(x)}")
        R = args[2]
        H = np.shape(R)[-1]
        T, B = (x.shape[0], x.shape[1]) if layout == 0 else (x.shape[1], x.shape[0])
        y = label((T, D, B, H))
        state_shape = (D, B, H)
        yh, yc = label(state_shape), label(state_shape)
        outs = [y, yh, yc] if layout == 0 else [y.transpose(2, 0, 1, 3), yh.transpose(1, 0, 2), yc.transpose(1, 0, 2)]
        record["lstm_inputs"].append(args)
        record["lstm_outputs"].append((y, yh, yc))
        return outs

    selections: list[_Selection] = []

    def observe(node: Any, args: list[Any], arg_deps: list[frozenset[str]], outs: list[Any]) -> None:
        if node.op_type in ("Slice", "Gather", "Split") and arg_deps and arg_deps[0]:
            selections.extend(_selections(node, args))

    values, deps = _evaluate(model.graph, nodes, consts, feeds, hook, observe, lookup if embed else None)
    record.update(values=values, deps=deps, feeds=feeds, selections=selections)
    return record


def _as_tbf(y: np.ndarray) -> np.ndarray:
    """A node's (T, D, B, H) output as the stack's (T, B, D·H)."""
    T, D, B, H = y.shape
    return y.transpose(0, 2, 1, 3).reshape(T, B, D * H)


#: Integers this large in a graph are "to the end" sentinels (INT32_MAX, INT64_MAX as
#: exporters write them), not bounds: no sequence or batch is that long.
SENTINEL = (1 << 31) - 1


@dataclass(frozen=True)
class _Selection:
    """What one Slice / Gather / Split takes along one axis of a data-carrying value, at one probe.

    ``identity``: every index in order (the node passes the axis through);
    ``last_step``: only the last index (``x[-1]``, ``Slice -1:``), the one
    selection a model can represent; recorded so it is recognisable.
    """

    node: str
    axis: int
    extent: int
    identity: bool
    last_step: bool
    what: str


def _selections(node: Any, args: list[Any]) -> list[_Selection]:
    op, attrs, x = node.op_type, _attrs(node), np.asarray(args[0])
    where = _where(node)
    if op == "Slice":
        out = []
        for a, s0, e, st in _slice_params(node, attrs, args, x.ndim):
            n = x.shape[a]
            taken = range(*slice(s0, e, st).indices(n))
            shown = ":".join("" if abs(v) >= SENTINEL else str(v) for v in (s0, e)) + ("" if st == 1 else f":{st}")
            out.append(_Selection(where, a, n, taken == range(n), list(taken) == [n - 1], f"[{shown}]"))
        return out
    if op == "Gather":
        a = attrs.get("axis", 0) % x.ndim
        n, idx = x.shape[a], np.asarray(args[1]).astype(np.int64)
        norm = np.where(idx < 0, idx + n, idx)
        identity = idx.ndim == 1 and norm.tolist() == list(range(n))
        return [_Selection(where, a, n, identity, idx.size == 1 and int(norm.reshape(-1)[0]) == n - 1, f"index {idx.tolist()}")]
    a = attrs.get("axis", 0) % x.ndim
    parts = _split_sizes(node, attrs, args, x.shape[a])
    return [_Selection(where, a, x.shape[a], len(parts) == 1, False, f"parts {parts}")]


class _SelectionError(InteropError):
    """A Slice / Gather / Split drops data along an axis the probes showed to vary: final, whatever else is pinned."""


def _check_selections(records: list[dict[str, Any]], allow_last_step: bool = False) -> None:
    """Refuse a Slice / Gather / Split that drops data along an axis whose size follows the probe sizes.

    An axis whose extent differs between probes carries sequence steps or
    batch entries; on it a selection must pass everything through at every
    probe.  Selections on fixed-size axes (the L·D rows of a state input)
    are the wiring the matching checks.  With ``allow_last_step`` (a whole
    model, whose head input is then checked label by label), a node taking
    the last index at every probe is accepted.
    """
    seen: dict[tuple[str, int], list[_Selection]] = {}
    for record in records:
        for sel in record["selections"]:
            seen.setdefault((sel.node, sel.axis), []).append(sel)
    for (node, axis), sels in seen.items():
        if allow_last_step and all(s.last_step for s in sels):
            continue
        if len({s.extent for s in sels}) > 1 and not all(s.identity for s in sels):
            bad = next(s for s in sels if not s.identity)
            kind = "the last step only" if all(s.last_step for s in sels) else f"{bad.what}"
            raise _SelectionError(
                f"{node}: takes {kind} of axis {axis} (size {bad.extent} at this probe), an axis whose size follows the "
                "sequence length or batch; nplstm imports only plumbing that passes every step and batch entry through"
            )


def _constant_bound(nodes: list[Any], consts: dict[str, np.ndarray]) -> int:
    """The largest magnitude of any integer that can reach a selection's indices (sentinels aside).

    Walks back from the index arguments of every Slice / Gather / Split
    (starts, ends, steps, indices, split sizes, and their attributes)
    through whatever computes them, collecting integer constants and small
    float constants (a Cast can turn them into indices).
    """
    AttributeProto = onnx_api().AttributeProto

    producer = {o: node for node in nodes for o in node.output if o}
    arrays: list[np.ndarray] = []
    stack: list[str] = []
    for node in nodes:
        if node.op_type in ("Slice", "Gather", "Split"):
            stack.extend(n for n in node.input[1:] if n)
            arrays.extend(np.array(list(a.ints), dtype=np.int64) for a in node.attribute if a.type == AttributeProto.INTS)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in consts:
            arrays.append(consts[name])
        node = producer.get(name)
        if node is None or node.op_type == "LSTM":
            continue
        if node.op_type == "Constant":
            arrays.append(_constant_value(node, _attrs(node)))
        stack.extend(n for n in node.input if n)
    bound = 0
    for arr in arrays:
        arr = np.asarray(arr)
        if arr.dtype.kind in "iu" or (arr.dtype.kind == "f" and arr.size <= 64):
            mags = np.abs(arr.reshape(-1).astype(np.float64))
            mags = mags[np.isfinite(mags) & (mags < SENTINEL)]
            if mags.size:
                bound = max(bound, int(np.ceil(mags.max())))
    return bound
