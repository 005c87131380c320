"""Matching: prove, by labelled runs at several sizes, how the graph maps onto a stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..gates import InteropError
from ._plumbing import _attrs, _needed_nodes, _node_name, _where
from ._probe import (
    _as_tbf,
    _check_selections,
    _constant_bound,
    _data_sources,
    _dim_key,
    _graph_inputs,
    _labelled_run,
    _probe_keys,
    _SelectionError,
    _symbolic_keys,
)
from ._source import _to_array
from ._specs import _Layer, _layer_spec, _weight


@dataclass
class _Plan:
    """How the graph maps onto a stack: found by :func:`_match`."""

    layers: list[_Layer]
    x_name: str
    batch_first: bool
    sizes: dict[str, int]
    state_inputs: tuple[str, str] | None = None
    states_batch_major: bool = False
    initial_states: tuple[np.ndarray, np.ndarray] | None = None
    lens_input: str | None = None
    lengths: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    #: whole models: the graph input of the ids an embedding lookup reads (``x_name`` is then the lookup's output)
    ids_name: str | None = None
    #: whole models: what the head reads, "h_n", "last" or "sequence" (see :func:`_classify_head_input`)
    head_input: str | None = None


def _match(model: Any, head_input: str | None = None, head_reader: str = "the head") -> _Plan:
    """Prove how the graph maps onto a stack, by labelled runs at several sizes.

    The rule: every axis that can vary (symbolic ones and the sequence and
    batch axes of X even when declared static) is probed at two small
    sizes and then, once X's sequence and batch axes are known, at a large
    odd sequence length with a small batch and a large batch with a short
    sequence, both larger than twice every integer constant in the graph
    (``x[:8]``, ``Gather -1``, ``Split [8, ...]`` then show).  Every probe
    must prove the same wiring and weights, and no Slice / Gather / Split
    may drop data along an axis whose size follows the probes.  Probes stay
    small (one large axis at a time); a graph whose constants would need
    probes over the check limit is refused.

    ``head_input`` names the value a whole model's head reads (the graph is
    then cut there): embedding lookups are labelled like LSTM outputs, a
    last-step selection is accepted, and the value must be, label for label,
    the last LSTM's h_n, last step or whole sequence at every probe.
    """
    graph = model.graph
    nodes = _needed_nodes(graph)
    lstm_nodes = [n for n in nodes if n.op_type == "LSTM"]
    if not lstm_nodes:
        raise InteropError("the ONNX graph has no LSTM node that the graph outputs depend on")
    consts = {t.name: _to_array(t) for t in graph.initializer}
    inputs = _graph_inputs(model)
    whole = head_input is not None
    data_inputs = _data_sources(nodes, lstm_nodes[0].input[0], consts if whole else None) if lstm_nodes[0].input else set()
    # Two size assignments for the varying dimensions: plumbing that only
    # works at one size (a Reshape to literal sizes) shows up as a mismatch.
    unique = list(dict.fromkeys(k for vi in inputs for k in _probe_keys(vi, data_inputs)))
    symbolic = {k for vi in inputs for k in _symbolic_keys(vi) if k is not None}
    static = [k for k in unique if k not in symbolic]
    # A static axis is probed "when the plumbing allows": torch's static
    # export expands a (1, 32, H) zero constant to the state shape, which
    # pins the batch at 32.  Such an axis keeps its declared size; the
    # graph defines nothing at other sizes there.
    first_error: InteropError | None = None
    for pinned in _subsets(static):
        keys = [k for k in unique if k not in pinned]
        assignments = [
            {k: v for k, v in zip(keys, [5, 3, 7, 2, 11, 13, 17, 19] * (1 + len(keys) // 8))},
            {k: v for k, v in zip(keys, [4, 6, 9, 8, 10, 12, 14, 16] * (1 + len(keys) // 8))},
        ]
        try:
            probes = [_unify_batch(model, nodes, consts, sizes) for sizes in assignments]
            records = [_labelled_run(model, nodes, consts, sizes, whole) for sizes in probes]
            _check_selections(records, whole)
            plans = [_match_at(model, nodes, consts, sizes, lstm_nodes, rec, head_input, head_reader) for sizes, rec in zip(probes, records)]
            records = [_selections_only(rec) for rec in records]  # the values are no longer needed: free them
            break
        except _SelectionError:
            raise  # the graph runs at these sizes and drops data there: pinning more axes would only hide it
        except InteropError as exc:
            first_error = first_error or exc
    else:
        assert first_error is not None
        raise first_error
    a = plans[0]
    # Then one large axis at a time, beyond every constant: a bound such as
    # x[:8] is the identity at small sizes only.
    vi_x = next(vi for vi in inputs if vi.name == (a.ids_name or a.x_name))
    t_key, b_key = _dim_key(vi_x, 1 if a.batch_first else 0), _dim_key(vi_x, 0 if a.batch_first else 1)
    bound = _constant_bound(nodes, consts)
    big = max(2 * bound + 17, 33) | 1
    verify_sizes = dict(a.sizes)
    for t, b in ((big, 3), (3, big)):
        if b == big and b_key not in keys:
            continue  # a pinned static batch
        sizes = dict(a.sizes)
        if b_key in keys:
            sizes[b_key] = b
        if t_key in keys:
            sizes[t_key] = t
        sizes = _unify_batch(model, nodes, consts, sizes)
        try:
            record = _labelled_run(model, nodes, consts, sizes, whole)
        except InteropError as exc:
            raise InteropError(
                f"cannot prove the wiring at sequence length {t} and batch {b} (beyond the graph's largest integer "
                f"constant, {bound}): {exc}"
            ) from None
        records.append(record)
        _check_selections(records, whole)
        plans.append(_match_at(model, nodes, consts, sizes, lstm_nodes, record, head_input, head_reader))
        records[-1] = _selections_only(record)
        del record
        if t == big:
            verify_sizes = sizes
    for other in plans[1:]:
        _same_plan(a, other)
    # verify runs at the long probe (an odd length beyond every constant);
    # static axes keep the size the graph declares (onnxruntime refuses others)
    a.sizes = {k: v for k, v in verify_sizes.items() if k in symbolic}
    return a


def _selections_only(record: dict[str, Any]) -> dict[str, Any]:
    return {"selections": record["selections"]}


def _subsets(keys: list[str]) -> list[set[str]]:
    """Sets of static axes to pin, fewest first (X has at most two probe-able static axes)."""
    from itertools import combinations

    keys = keys[:4]  # bounded: at most 16 attempts
    return [set(c) for r in range(len(keys) + 1) for c in combinations(keys, r)]


def _same_plan(a: _Plan, b: _Plan) -> None:
    """Refuse a graph whose weights or wiring differ between two probes."""
    for la, lb in zip(a.layers, b.layers):
        for name in ("W", "R", "B", "P"):
            wa, wb = getattr(la, name), getattr(lb, name)
            if (wa is None) != (wb is None) or (wa is not None and not np.array_equal(wa, wb)):
                raise InteropError(f"LSTM node {la.name!r}: tensor {name!r} changes with the input sizes")
    if a.batch_first != b.batch_first or a.state_inputs != b.state_inputs or a.lens_input != b.lens_input:
        raise InteropError("the graph's wiring changes with the input sizes; nplstm cannot map it onto one LSTM")
    if a.x_name != b.x_name or a.states_batch_major != b.states_batch_major or a.ids_name != b.ids_name:
        raise InteropError("the graph's wiring changes with the input sizes; nplstm cannot map it onto one LSTM")
    if (a.initial_states is None) != (b.initial_states is None):
        raise InteropError("the graph's constant initial states exist at some input sizes only")
    if a.initial_states is not None and b.initial_states is not None:
        for sa, sb in zip(a.initial_states, b.initial_states):
            if sa.shape[1] == 1 and sb.shape[1] == 1 and not np.array_equal(sa, sb):
                raise InteropError("the graph's constant initial states change with the input sizes")
    if a.head_input != b.head_input:
        raise InteropError(f"the head reads the LSTM's {a.head_input} at some input sizes and its {b.head_input} at others")
    if (a.lengths is None) != (b.lengths is None):
        raise InteropError("the graph's constant sequence lengths exist at some input sizes only")


def _unify_batch(model: Any, nodes: list[Any], consts: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, int]:
    """Give the batch dimension of state / sequence_lens graph inputs the size of X's batch.

    Exporters name dimensions freely, so the batch of ``initial_h`` may be
    a different symbol than the batch of ``X``; the LSTM operator needs
    them equal.  One labelled run tells which graph inputs feed each node's
    states and lengths.
    """
    try:
        record = _labelled_run(model, nodes, consts, sizes)
    except InteropError:
        return sizes  # the real run reports the problem
    by_name = {vi.name: vi for vi in _graph_inputs(model)}
    sizes = dict(sizes)
    lstm_nodes = [n for n in nodes if n.op_type == "LSTM"]
    for node, args in zip(lstm_nodes, record["lstm_inputs"]):
        layout = int(_attrs(node).get("layout", 0))
        batch = int(np.shape(args[0])[1 - layout])
        names = list(node.input) + [""] * (8 - len(node.input))
        for slot in (4, 5, 6):
            axis = 0 if slot == 4 else 1 - layout  # states are (D, B, H), or (B, D, H) beside layout=1
            for source in record["deps"].get(names[slot], frozenset()):
                if source in by_name:
                    if axis < len(by_name[source].type.tensor_type.shape.dim):
                        sizes[_dim_key(by_name[source], axis)] = batch
    return sizes


def _match_at(
    model: Any,
    nodes: list[Any],
    consts: dict[str, np.ndarray],
    sizes: dict[str, int],
    lstm_nodes: list[Any],
    record: dict[str, Any],
    head_input: str | None = None,
    head_reader: str = "the head",
) -> _Plan:
    values, deps, feeds = record["values"], record["deps"], record["feeds"]
    layers: list[_Layer] = []
    for node in lstm_nodes:
        args = [values[n] for n in node.input]
        layers.append(_layer_spec(node, args, [deps[n] for n in node.input]))
    first = layers[0]
    for k, layer in enumerate(layers[1:], start=1):
        if layer.direction != first.direction:
            raise InteropError(f"LSTM node {layer.name!r}: direction {layer.direction!r} differs from {first.name!r}'s {first.direction!r}")
        if layer.hidden_size != first.hidden_size:
            raise InteropError(f"LSTM node {layer.name!r}: hidden_size {layer.hidden_size} differs from {first.name!r}'s {first.hidden_size}")
        for attr in ("activations", "clip", "input_forget"):
            if getattr(layer, attr) != getattr(first, attr):
                raise InteropError(f"LSTM node {layer.name!r}: {attr} differs from {first.name!r}'s; nplstm shares one per stack")
        if (layer.P is None) != (first.P is None):
            raise InteropError(f"LSTM node {layer.name!r}: peepholes (P) in some layers only")
        expected_in = layers[k - 1].num_directions * layers[k - 1].hidden_size
        if layer.W.shape[2] != expected_in:
            raise InteropError(f"tensor 'W' of LSTM node {layer.name!r} has input size {layer.W.shape[2]}; the previous layer gives {expected_in}")

    # --- the data path: graph X -> node 0 -> node 1 -> ...
    x_name, batch_first = _match_first_input(lstm_nodes[0], layers[0], record, feeds)
    for k in range(1, len(layers)):
        prev = _as_tbf(record["lstm_outputs"][k - 1][0])
        expected = prev if layers[k].layout == 0 else prev.transpose(1, 0, 2)
        got = record["lstm_inputs"][k][0]
        if got is None or np.shape(got) != expected.shape or not np.array_equal(got, expected):
            between = _nodes_between(nodes, lstm_nodes[k - 1], lstm_nodes[k])
            raise InteropError(
                f"LSTM node {layers[k].name!r}: its input X is not the previous LSTM's output laid out as "
                f"{'(T, B, D·H)' if layers[k].layout == 0 else '(B, T, D·H)'}; the nodes between "
                f"({', '.join(between) or 'none'}) are not a pure re-layout"
            )
    plan = _Plan(layers=layers, x_name=x_name, batch_first=batch_first, sizes=sizes)
    if record["embeddings"]:
        plan.ids_name = _match_embedding(record, x_name)
    _match_states(plan, lstm_nodes, record)
    _match_lengths(plan, lstm_nodes, record)
    if head_input is not None:
        plan.head_input = _classify_head_input(record, head_input, head_reader)
    return plan


def _match_embedding(record: dict[str, Any], x_name: str) -> str:
    """The graph input whose ids the embedding lookup feeding the first LSTM reads, exactly (through plumbing only)."""
    feeds, deps = record["feeds"], record["deps"]
    for node, _table, ids, _out in record["embeddings"]:
        if node.output[0] != x_name:
            raise InteropError(f"{_where(node)}: an embedding lookup that does not feed the first LSTM; nplstm takes one, before it")
        dep = deps.get(node.input[1], frozenset())
        name = next(iter(dep)) if len(dep) == 1 else None
        if name not in feeds or np.shape(feeds[name]) != np.shape(ids) or not np.array_equal(feeds[name], ids):
            raise InteropError(f"{_where(node)}: its indices are not one graph input of ids passed through unchanged; they depend on {sorted(dep)}")
        if np.ndim(ids) != 2:
            raise InteropError(f"{_where(node)}: the ids must be 2-D (batch and sequence); got shape {np.shape(ids)}")
        return str(name)
    raise AssertionError("no embedding recorded")  # pragma: no cover


def _classify_head_input(record: dict[str, Any], name: str, reader: str = "the head") -> str:
    """What a whole model's head reads, label for label: the last LSTM's "h_n", "last" step or "sequence" (B, T, D·H)."""
    value = record["values"].get(name)
    y, yh, _ = record["lstm_outputs"][-1]
    T, D, B, H = y.shape
    seq = _as_tbf(y)
    candidates = {"h_n": yh.transpose(1, 0, 2).reshape(B, D * H), "last": seq[-1], "sequence": seq.transpose(1, 0, 2)}
    got = np.asarray(value) if value is not None else None
    for kind, want in candidates.items():
        if got is not None and got.shape == want.shape and np.array_equal(got, want):
            return kind
    if got is not None and got.shape == seq.shape and np.array_equal(got, seq):
        raise InteropError(
            f"{reader} reads the LSTM's sequence time-major (T, B, D·H) at {name!r}; a SequenceModel's head reads it (B, T, D·H)"
        )
    raise InteropError(
        f"{reader} reads {name!r}, which is not the last LSTM node's h_n (Y_h laid out (B, D·H)), its output at the last "
        f"step (B, D·H) or its whole output (B, T, D·H); a SequenceModel's head reads one of these"
    )


def _nodes_between(nodes: list[Any], a: Any, b: Any) -> list[str]:
    ia, ib = nodes.index(a), nodes.index(b)
    return [f"{n.op_type} {_node_name(n)!r}" for n in nodes[ia + 1 : ib] if n.op_type not in ("Constant",)]


def _match_first_input(node: Any, layer: _Layer, record: dict[str, Any], feeds: dict[str, np.ndarray]) -> tuple[str, bool]:
    where = f"LSTM node {layer.name!r}"
    x = record["lstm_inputs"][0][0]
    dep = record["deps"][node.input[0]]
    feeds = dict(feeds)
    feeds.update({e[0].output[0]: e[3] for e in record.get("embeddings", [])})  # an embedding lookup's output stands for X
    if len(dep) != 1 or next(iter(dep)) not in feeds:
        raise InteropError(f"{where}: input X must come from one graph input through plumbing only; it depends on {sorted(dep)}")
    name = next(iter(dep))
    source = feeds[name]
    if source.ndim != 3:
        raise InteropError(f"graph input {name!r} must be 3-D (sequence, batch and features); got rank {source.ndim}")
    for perm in ((0, 1, 2), (1, 0, 2)):
        candidate = source.transpose(perm)
        if candidate.shape == np.shape(x) and np.array_equal(candidate, x):
            time_axis = perm[0] if layer.layout == 0 else perm[1]
            if source.shape[2] != layer.W.shape[2]:
                raise InteropError(f"graph input {name!r} has {source.shape[2]} features; {where}'s W expects {layer.W.shape[2]}")
            return name, time_axis == 1
    raise InteropError(
        f"{where}: input X is not graph input {name!r} re-laid out with features last "
        f"(the Transpose/Reshape nodes in between move or mix its axes)"
    )


def _match_states(plan: _Plan, lstm_nodes: list[Any], record: dict[str, Any]) -> None:
    feeds, deps = record["feeds"], record["deps"]
    L, D, H = len(plan.layers), plan.layers[0].num_directions, plan.layers[0].hidden_size
    sources: list[list[Any]] = [[], []]  # per state kind: one entry per node
    for k, node in enumerate(lstm_nodes):
        layer = plan.layers[k]
        names = list(node.input) + [""] * (8 - len(node.input))
        for s, slot in enumerate((5, 6)):
            value, dep = record["lstm_inputs"][k][slot] if slot < len(record["lstm_inputs"][k]) else None, deps.get(names[slot], frozenset())
            label = ("initial_h", "initial_c")[s]
            if not names[slot]:
                sources[s].append(None)
                continue
            arr = np.asarray(value)
            if arr.ndim != 3:
                raise InteropError(f"LSTM node {layer.name!r}: {label} must be 3-D; got shape {arr.shape}")
            if layer.layout == 1:
                arr = arr.transpose(1, 0, 2)
            if not dep:
                if arr.shape[0] != D or arr.shape[2] != H:
                    raise InteropError(f"LSTM node {layer.name!r}: {label} has shape {arr.shape}; expected ({D}, B, {H})")
                sources[s].append(("const", _weight(f"LSTM node {layer.name!r}", label, arr, frozenset(), arr.shape)))
                continue
            if len(dep) != 1 or next(iter(dep)) not in feeds:
                raise InteropError(f"LSTM node {layer.name!r}: {label} must be rows of one graph input or a constant; it depends on {sorted(dep)}")
            g = next(iter(dep))
            G = feeds[g]
            # (L·D, B, H) as torch and time-major ONNX write it, or (B, L·D, H) beside layout=1 nodes
            candidates = [("LBH", G), ("BLH", G.transpose(1, 0, 2) if G.ndim == 3 else G)]
            orientation = next(
                (
                    o
                    for o, view in candidates
                    if view.ndim == 3 and view.shape[0] == L * D and view.shape[2] == H
                    and arr.shape == view[k * D : (k + 1) * D].shape and np.array_equal(arr, view[k * D : (k + 1) * D])
                ),
                None,
            )
            if orientation is None:
                raise InteropError(
                    f"LSTM node {layer.name!r}: {label} is not rows {k * D}..{(k + 1) * D - 1} of graph input {g!r} "
                    f"laid out (L·D, B, H) = ({L * D}, B, {H}) or (B, L·D, H); it has shape {G.shape}"
                )
            sources[s].append(("input", g, orientation))
    kinds = {src[0] if src else None for per_kind in sources for src in per_kind}
    if "input" in kinds:
        if kinds != {"input"}:
            raise InteropError("the LSTM nodes take initial states partly from graph inputs and partly not; nplstm takes all or none")
        h_names = {src[1] for src in sources[0]}
        c_names = {src[1] for src in sources[1]}
        if len(h_names) != 1 or len(c_names) != 1:
            raise InteropError(f"initial_h / initial_c come from several graph inputs ({sorted(h_names)}, {sorted(c_names)})")
        orientations = {src[2] for per_kind in sources for src in per_kind}
        if len(orientations) != 1:
            raise InteropError("initial_h and initial_c graph inputs are laid out differently")
        plan.state_inputs = (h_names.pop(), c_names.pop())
        plan.states_batch_major = orientations.pop() == "BLH"
        return
    # constants (or absent): all-zero ones are no initial state
    arrays = []
    for s in range(2):
        rows = []
        for k in range(L):
            src = sources[s][k]
            rows.append(None if src is None else src[1])
        arrays.append(rows)
    if all(r is None or not r.any() for rows in arrays for r in rows):
        return
    batches = {r.shape[1] for rows in arrays for r in rows if r is not None}
    if len(batches) != 1:
        raise InteropError(f"constant initial states have different batch sizes {sorted(batches)}")
    B = batches.pop()
    full = [np.concatenate([np.zeros((D, B, H)) if r is None else r for r in rows]) for rows in arrays]
    # a state broadcast over the batch (Expand of a (D, 1, H) constant) imports as (L·D, 1, H)
    if B > 1 and all(np.array_equal(f, np.broadcast_to(f[:, :1], f.shape)) for f in full):
        dep_on_batch = True
    else:
        dep_on_batch = False
    plan.initial_states = (full[0][:, :1], full[1][:, :1]) if dep_on_batch or B == 1 else (full[0], full[1])
    plan.notes.append(f"constant initial states {plan.initial_states[0].shape}")


def _match_lengths(plan: _Plan, lstm_nodes: list[Any], record: dict[str, Any]) -> None:
    feeds, deps = record["feeds"], record["deps"]
    found: list[tuple[str, Any] | None] = []
    for k, node in enumerate(lstm_nodes):
        names = list(node.input) + [""] * (8 - len(node.input))
        if not names[4]:
            found.append(None)
            continue
        value, dep = np.asarray(record["lstm_inputs"][k][4]), deps[names[4]]
        where = f"LSTM node {plan.layers[k].name!r}"
        if value.dtype.kind not in "iu" or value.ndim != 1:
            raise InteropError(f"{where}: sequence_lens must be a 1-D integer tensor; got {value.dtype} {value.shape}")
        if not dep:
            found.append(("const", value.astype(np.int64)))
            continue
        if len(dep) != 1 or next(iter(dep)) not in feeds or not np.array_equal(value, feeds[next(iter(dep))]):
            raise InteropError(f"{where}: sequence_lens must be a graph input or a constant; it depends on {sorted(dep)}")
        found.append(("input", next(iter(dep))))
    given = [f for f in found if f is not None]
    if not given:
        return
    if len(given) != len(found) or len({(kind, v if kind == "input" else v.tobytes()) for kind, v in given}) != 1:
        raise InteropError("sequence_lens is given to some LSTM nodes only, or differs between them; nplstm applies one to every layer")
    kind, value = given[0]
    if kind == "input":
        plan.lens_input = value
    else:
        plan.lengths = value
