"""ONNX: export to the standard ``LSTM`` operator and import LSTM graphs back.

Export (:func:`to_onnx`) writes one ``LSTM`` node per layer (gate order i,
o, f, c; ``W`` (D, 4H, I), ``R`` (D, 4H, H), ``B`` (D, 8H) = input bias then
recurrent bias, ``P`` (D, 3H) = Pi, Po, Pf when the stack has peepholes),
the stack's activations, clip and input_forget as node attributes, and
between layers a Transpose (T, D, B, H) → (T, B, D, H) and a Reshape to
(T, B, D·H).  ``batch_first`` is a Transpose around the graph; lengths are
an optional ``sequence_lens`` graph input fed to every node.  The ONNX
operator has no projection, so stacks with ``proj_size`` cannot be exported.

Import (:func:`from_onnx`) reads the graph the way exporters really write
it.  Every node between the graph inputs, the LSTM nodes and the graph
outputs must be *plumbing*: an operator from :data:`PLUMBING` that only
moves values (Transpose, Reshape, Squeeze, Unsqueeze, Slice, Concat, …) or
computes shapes and constant zero states (Shape, Gather, Expand,
ConstantOfShape, …).  The plumbing is not trusted by pattern: it is run
(in NumPy) on *labelled* inputs, where every element of the graph input
and of every LSTM output carries a unique number, at two different
sequence/batch sizes.  An LSTM node's input must then hold exactly the
labels of the graph input (features last) or of the previous LSTM node's
output laid out as (T, B, D·H); states must be exactly the right rows of
one state graph input, or constants; lengths exactly the sequence_lens
graph input.  Anything else is refused with an :class:`InteropError` that
names the node and the reason, so a silently mis-wired import cannot
happen.  Then, when onnxruntime is importable (or ``verify=True``), the
original graph is run on random inputs and every graph output that the
returned object reproduces is compared (:func:`verify_import`).

Supported (import and export) — the ONNX ``LSTM`` operator in full:

=================== ======================================================
direction           forward, bidirectional; reverse (import: OnnxLSTM)
layout              0 and 1 (import); export writes 0 plus Transposes
sequence_lens       graph input → ``lengths=``; constant → OnnxLSTM
initial_h/initial_c graph input (L·D, B, H) → ``hx``; all-zero constant /
                    Expand / ConstantOfShape → none; other constants →
                    OnnxLSTM (both from one kind of source)
P (peepholes)       yes (all-zero P imports as no peepholes)
input_forget        yes
clip                yes (> 0)
activations         all eleven; alpha/beta consumed as onnxruntime does
                    (only by the activations that take them)
hidden_size         checked against R
B absent            bias-free stack (export omits B for ``bias=False``)
float16/32/64       weights cast to float64 before any arithmetic
=================== ======================================================

ONNX stores alpha, beta and clip as float32 attributes; :func:`to_onnx`
also writes the stack's CellOptions at full precision in the model's
metadata (``nplstm.cell_options``), which :func:`from_onnx` uses only when
it rounds to exactly the node's attributes, so round trips are exact.

Refused on import, with the node named: any non-plumbing operator; state
inputs that are not rows of one (L·D, B, H) graph input; initial_h without
initial_c (or the reverse); per-direction activations that differ; a
parametrised activation whose alpha/beta is left to a default on which the
ONNX spec and onnxruntime disagree (ThresholdedRelu, Affine, ScaledTanh)
or whose alpha/beta list length is ambiguous; layers of different
direction, hidden size or cell options; weights computed at run time;
external data files outside the model's folder, not regular files, or over
``max_external_bytes`` (or any, with ``allow_external_data=False``).

The wiring proof, precisely: every axis that can vary — symbolic ones,
and the sequence and batch axes of X even when declared static, unless the
plumbing pins them (torch's static export expands a batch-sized zero
constant) — is probed at two small sizes, then at a long odd sequence with
a small batch and a large batch with a short sequence, both beyond twice
the largest integer that can reach a Slice/Gather/Split index (INT32_MAX
and larger are "to the end" sentinels).  A Slice, Gather or Split on a
value carrying data must pass every index of an axis whose size follows
these probes, at every probe: ``x[:8]``, ``x[-1]``, ``x[::-1]`` or a
split of the sequence is refused naming the node (a last-step selection is
recognised as such).  Every array the plumbing builds is bounded
(:data:`MAX_PLUMBING_BYTES` plus four times what it is fed), growth
checked before allocating.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..stack import StackedLSTM
from .gates import InteropError, packed, unpack

ONNX_ORDER = "iofc"
OPSET = 17
#: Model metadata key holding the exported stack's CellOptions at full precision.
CELL_METADATA = "nplstm.cell_options"
#: Default bound on the bytes read from external-data files (when allowed).
DEFAULT_MAX_EXTERNAL_BYTES = 1 << 30

#: Operators that only move, reshape or select values, or compute shapes.
PLUMBING = frozenset(
    {
        "Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice", "Gather", "Split",
        "Shape", "Cast", "Expand", "ConstantOfShape", "Constant", "Add", "Sub", "Mul", "Div",
    }
)
#: Plumbing operators whose every input may carry data; for the others only input 0 may.
_ALL_DATA_INPUTS = {"Concat"}
#: Arithmetic is accepted on shape values only (never on data).
_SHAPE_ONLY = {"Add", "Sub", "Mul", "Div"}

#: The ONNX LSTM activations, and whether each takes (alpha, beta).
ACTIVATION_PARAMS: dict[str, tuple[bool, bool]] = {
    "Relu": (False, False),
    "Tanh": (False, False),
    "Sigmoid": (False, False),
    "Affine": (True, True),
    "LeakyRelu": (True, False),
    "ThresholdedRelu": (True, False),
    "ScaledTanh": (True, True),
    "HardSigmoid": (True, True),
    "Elu": (True, False),
    "Softsign": (False, False),
    "Softplus": (False, False),
}
#: Defaults on which the ONNX operators and onnxruntime agree; a missing
#: alpha/beta of another parametrised activation is ambiguous and refused.
_AGREED_DEFAULTS: dict[str, tuple[float | None, float | None]] = {
    "LeakyRelu": (0.01, None),
    "HardSigmoid": (0.2, 0.5),
    "Elu": (1.0, None),
}
_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- export


def _cell_options(stack: Any) -> Any:
    """The stack's CellOptions, or None for the plain LSTM (engines without options)."""
    return getattr(stack, "cell", None)


def _activation_attrs(options: Any, D: int) -> dict[str, Any]:
    """ONNX attributes for the stack's activations, clip and input_forget (defaults omitted)."""
    if options is None:
        return {}
    acts = [options.gate_activation, options.cell_activation, options.hidden_activation]
    attrs: dict[str, Any] = {}
    if tuple(a.name for a in acts) != _DEFAULT_ACTIVATIONS:
        attrs["activations"] = [a.name for a in acts] * D
        alphas, betas = [], []
        for a in acts:
            takes_alpha, takes_beta = ACTIVATION_PARAMS[a.name]
            if takes_alpha:
                alphas.append(float(a.alpha))
            if takes_beta:
                betas.append(float(a.beta))
        if alphas:
            attrs["activation_alpha"] = alphas * D
        if betas:
            attrs["activation_beta"] = betas * D
    if options.clip is not None:
        attrs["clip"] = float(options.clip)
    if options.input_forget:
        attrs["input_forget"] = 1
    return attrs


def to_onnx(
    stack: StackedLSTM,
    path: str | os.PathLike | None = None,
    *,
    with_initial_states: bool = True,
    with_lengths: bool = False,
    dtype: Any = np.float32,
) -> Any:
    """Export ``stack`` as an ONNX model; write it to ``path`` if given (atomically).

    Parameters
    ----------
    stack : StackedLSTM
        Any stack without projection: bias or not, batch_first, bidirectional,
        and every cell option (activations, clip, input_forget, peepholes).
    path : str or PathLike, optional
    with_initial_states : bool
        Add graph inputs ``initial_h`` and ``initial_c`` (L·D, B, H).
    with_lengths : bool
        Add the graph input ``sequence_lens`` (B,) int32, fed to every node:
        the graph then computes what ``stack.forward(x, hx, lengths=...)``
        does.
    dtype
        float32 (default: onnxruntime's LSTM kernel runs float32 only) or
        float64 for runtimes that support it.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker``.  Graph input ``X`` (T, B, I)
        (``(B, T, I)`` if batch_first); outputs ``Y`` shaped like the
        stack's outputs, ``Y_h`` and ``Y_c`` (L·D, B, H).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..params import model_dtype

    if stack.proj_size:
        raise InteropError("the ONNX LSTM operator has no projection: a stack with proj_size > 0 cannot be exported")
    np_dtype = model_dtype(dtype)
    elem = TensorProto.DOUBLE if np_dtype == np.float64 else TensorProto.FLOAT
    L, D, H = stack.num_layers, stack.num_directions, stack.hidden_size
    options = _cell_options(stack)
    peepholes = bool(options is not None and options.peepholes)
    attrs = dict(hidden_size=H, direction="bidirectional" if stack.bidirectional else "forward", **_activation_attrs(options, D))
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        value = np.asarray(value)
        inits.append(numpy_helper.from_array(value.astype(np_dtype) if value.dtype.kind == "f" else value, name))
        return name

    x_dims: list[str | int] = ["B", "T", stack.input_size] if stack.batch_first else ["T", "B", stack.input_size]
    inputs = [helper.make_tensor_value_info("X", elem, x_dims)]
    layer_in = "X"
    if stack.batch_first:
        nodes.append(helper.make_node("Transpose", ["X"], ["X_tbi"], perm=[1, 0, 2], name="batch_first_in"))
        layer_in = "X_tbi"
    lens = ""
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
        lens = "sequence_lens"
    if with_initial_states:
        inputs += [
            helper.make_tensor_value_info("initial_h", elem, [L * D, "B", H]),
            helper.make_tensor_value_info("initial_c", elem, [L * D, "B", H]),
        ]
    y_h, y_c = [], []
    for l in range(L):
        W, R, Bias, P = [], [], [], []
        for cell in stack.layers[l]:
            w_ih, w_hh, b = packed(cell, ONNX_ORDER)
            W.append(w_ih)
            R.append(w_hh)
            Bias.append(np.concatenate([b, np.zeros_like(b)]))
            if peepholes:
                P.append(np.concatenate([cell.Pi[:, 0], cell.Po[:, 0], cell.Pf[:, 0]]))
        bias_name = const(f"B_{l}", np.stack(Bias)) if stack.bias else ""
        names = [layer_in, const(f"W_{l}", np.stack(W)), const(f"R_{l}", np.stack(R)), bias_name, lens]
        if with_initial_states:
            starts, ends, axes = const(f"start_{l}", np.array([l * D])), const(f"end_{l}", np.array([(l + 1) * D])), const(f"axes_{l}", np.array([0]))
            nodes.append(helper.make_node("Slice", ["initial_h", starts, ends, axes], [f"h0_{l}"], name=f"initial_h_{l}"))
            nodes.append(helper.make_node("Slice", ["initial_c", starts, ends, axes], [f"c0_{l}"], name=f"initial_c_{l}"))
            names += [f"h0_{l}", f"c0_{l}"]
        else:
            names += ["", ""]
        if peepholes:
            names.append(const(f"P_{l}", np.stack(P)))
        while names[-1] == "":
            names.pop()
        nodes.append(helper.make_node("LSTM", names, [f"Y4_{l}", f"Yh_{l}", f"Yc_{l}"], name=f"lstm_{l}", **attrs))
        # (T, D, B, H) -> (T, B, D·H)
        nodes.append(helper.make_node("Transpose", [f"Y4_{l}"], [f"Yt_{l}"], perm=[0, 2, 1, 3], name=f"transpose_{l}"))
        nodes.append(helper.make_node("Reshape", [f"Yt_{l}", const(f"shape_{l}", np.array([0, 0, -1]))], [f"Y_{l}"], name=f"reshape_{l}"))
        layer_in = f"Y_{l}"
        y_h.append(f"Yh_{l}")
        y_c.append(f"Yc_{l}")
    if stack.batch_first:
        nodes.append(helper.make_node("Transpose", [layer_in], ["Y"], perm=[1, 0, 2], name="batch_first_out"))
    else:
        nodes.append(helper.make_node("Identity", [layer_in], ["Y"], name="output"))
    nodes.append(helper.make_node("Concat", y_h, ["Y_h"], axis=0, name="concat_h"))
    nodes.append(helper.make_node("Concat", y_c, ["Y_c"], axis=0, name="concat_c"))
    y_dims: list[str | int] = ["B", "T", D * H] if stack.batch_first else ["T", "B", D * H]
    outputs = [
        helper.make_tensor_value_info("Y", elem, y_dims),
        helper.make_tensor_value_info("Y_h", elem, [L * D, "B", H]),
        helper.make_tensor_value_info("Y_c", elem, [L * D, "B", H]),
    ]
    graph = helper.make_graph(nodes, "nplstm", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nplstm")
    model.ir_version = min(model.ir_version, 8)
    if options is not None and not options.is_default:
        # ONNX attributes are float32; the exact float64 alpha/beta/clip ride along for from_onnx
        import json

        helper.set_model_props(model, {CELL_METADATA: json.dumps(options.to_config())})
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        from ..io import write_atomic

        write_atomic(path, lambda tmp: onnx.save(model, str(tmp)))
    return model


# --------------------------------------------------------------------------- loading


def _tensors_of(model: Any) -> list[Any]:
    """Every TensorProto stored in the main graph: initializers and Constant values."""
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    return tensors


def _tensor_nbytes(tensor: Any) -> int:
    from onnx import helper

    count = 1
    for d in tensor.dims:
        if d < 0:
            raise InteropError(f"tensor {tensor.name!r} has a negative dimension {list(tensor.dims)}")
        count *= int(d)
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:
        raise InteropError(f"tensor {tensor.name!r} has an unsupported data type {tensor.data_type}") from None
    return count * itemsize


def _external_file(tensor: Any, location: str, base: Path, label: str) -> Path:
    """The external-data file a tensor names, refused unless it is a regular file inside ``base``.

    The location must be relative, without ``..`` or NUL, and must resolve
    (symlinks followed) to a regular file in the model's folder or below,
    as onnxruntime requires.
    """
    where = f"{label}: tensor {tensor.name!r}"
    if not location or "\0" in location:
        raise InteropError(f"{where} names an invalid external file {location!r}")
    rel = Path(location)
    if rel.is_absolute() or ".." in rel.parts:
        raise InteropError(f"{where} names external file {location!r} outside the model's folder")
    try:
        root = base.resolve()
        target = (root / rel).resolve()
    except (OSError, RuntimeError) as exc:
        raise InteropError(f"{where}: external file {location!r} cannot be resolved: {_first_line(exc)}") from None
    if root != target.parent and root not in target.parents:
        raise InteropError(f"{where} names external file {location!r}, which resolves outside the model's folder")
    if not target.is_file():  # checked again on the open descriptor; a FIFO is never opened for reading here
        raise InteropError(f"{where}: external file {location!r} is not a regular file in the model's folder")
    return target


def _read_external(target: Path, offset: int, nbytes: int, where: str, location: str) -> bytes:
    """``nbytes`` at ``offset`` of a regular file, checked on the open descriptor (a FIFO never blocks)."""
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InteropError(f"{where}: external file {location!r} cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        import stat

        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InteropError(f"{where}: external file {location!r} is not a regular file in the model's folder")
        if offset < 0 or offset + nbytes > st.st_size:
            raise InteropError(f"{where} reads bytes {offset}..{offset + nbytes} past the end of {location!r} ({st.st_size} bytes)")
        fh.seek(offset)
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise InteropError(f"{where}: external file {location!r} changed while being read")
    return data


def _load_external(model: Any, base: Path | None, label: str, allow: bool, max_bytes: int) -> None:
    """Replace external-data references by the bytes they point to, within bounds.

    Only regular files inside the model's folder are read, their sizes are
    checked before anything is read, and the total is bounded by
    ``max_bytes``.
    """
    from onnx import TensorProto

    total = 0
    for tensor in _tensors_of(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        where = f"{label}: tensor {tensor.name!r}"
        if not allow:
            raise InteropError(f"{where} keeps its data in the external file {location!r}, and allow_external_data=False")
        if base is None:
            raise InteropError(f"{where} has external data {location!r}; give from_onnx the file path")
        target = _external_file(tensor, location, base, label)
        nbytes = _tensor_nbytes(tensor)
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else nbytes
        except ValueError:
            raise InteropError(f"{where}: external data offset/length {info.get('offset')!r}/{info.get('length')!r} are not integers") from None
        if length != nbytes:
            raise InteropError(f"{where} has length {length} but dims {list(tensor.dims)} need {nbytes} bytes")
        total += nbytes
        if total > max_bytes:
            raise InteropError(f"{label}: external data exceeds max_external_bytes={max_bytes} at tensor {tensor.name!r}")
        tensor.raw_data = _read_external(target, offset, nbytes, where, location)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _load_model(source: Any, allow_external_data: bool, max_external_bytes: int) -> tuple[Any, str]:
    import onnx

    from ..io import DEFAULT_MAX_BYTES

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise InteropError(f"{label}: no such file")
        if path.stat().st_size > DEFAULT_MAX_BYTES:
            raise InteropError(f"{label}: {path.stat().st_size} bytes is over the {DEFAULT_MAX_BYTES}-byte limit")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises assorted protobuf errors
            raise InteropError(f"{label} is not a valid ONNX model: {_first_line(exc)}") from None
        base: Path | None = path.parent
    elif isinstance(source, (bytes, bytearray)):
        label, base = "ONNX bytes", None
        try:
            model = onnx.load_from_string(bytes(source))
        except Exception as exc:
            raise InteropError(f"{label} are not a valid ONNX model: {_first_line(exc)}") from None
    elif hasattr(source, "graph"):
        label, base = f"ONNX model {source.graph.name!r}", None
        model = onnx.ModelProto()
        model.CopyFrom(source)
    else:
        raise TypeError(f"expected an onnx.ModelProto, bytes or a path; got {type(source).__name__}")
    _load_external(model, base, label, allow_external_data, max_external_bytes)
    if not hasattr(source, "graph"):  # a model built in memory is the caller's; files and bytes are checked
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            raise InteropError(f"{label} is not a valid ONNX model: {_first_line(exc)}") from None
    return model, label


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_array(tensor: Any) -> np.ndarray:
    """A TensorProto as an array, refusing sizes a weights file cannot need."""
    from onnx import numpy_helper

    from ..io import DEFAULT_MAX_BYTES

    if _tensor_nbytes(tensor) > DEFAULT_MAX_BYTES:
        raise InteropError(f"tensor {tensor.name!r} claims dims {list(tensor.dims)}, over the size limit")
    return np.asarray(numpy_helper.to_array(tensor))


# --------------------------------------------------------------------------- plumbing interpreter


def _node_name(node: Any) -> str:
    """The node's name, or its first named output for nameless nodes."""
    return node.name or next((o for o in node.output if o), "")


def _where(node: Any) -> str:
    return f"node {node.op_type} {_node_name(node)!r}"


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

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
    from onnx import helper

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


#: An observer gets (node, evaluated inputs, their data dependencies, outputs) after each plumbing node.
Observer = Callable[[Any, list[Any], list[frozenset[str]], list[Any]], None]


def _evaluate(
    graph: Any,
    nodes: list[Any],
    consts: dict[str, np.ndarray],
    feeds: dict[str, np.ndarray],
    hook: LSTMHook,
    observe: Observer | None = None,
) -> tuple[dict[str, Any], dict[str, frozenset[str]]]:
    """Run ``nodes`` (topologically sorted) with LSTM nodes replaced by ``hook``.

    Returns every value and its data dependencies: the graph inputs and
    LSTM outputs whose *values* (not just shapes) flow into it.  Empty
    (omitted) optional inputs are None.  Every allocation is bounded by a
    :class:`_Budget`.
    """
    from onnx import helper

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
        if node.op_type not in PLUMBING:
            raise InteropError(f"{_where(node)}: operator {node.op_type} is not plumbing; nplstm cannot reproduce it")
        data_positions = range(len(args)) if node.op_type in _ALL_DATA_INPUTS else [0]
        for k, d in enumerate(arg_deps):
            if d and (k not in data_positions or node.op_type in _SHAPE_ONLY):
                raise InteropError(f"{_where(node)}: input {node.input[k]!r} is computed from data, not from shapes or constants")
        if node.op_type == "Cast" and arg_deps[0] and args[0] is not None:
            to = np.dtype(helper.tensor_dtype_to_np_dtype(_attrs(node)["to"]))
            if to.kind != "f" or to.itemsize < 4:  # rounding data to float16 (or to integers) changes it
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


# --------------------------------------------------------------------------- node specs


@dataclass
class _Layer:
    """One ONNX LSTM node, its weights cast to float64 (before any arithmetic)."""

    name: str
    direction: str
    layout: int
    hidden_size: int
    W: np.ndarray  # (D, 4H, I)
    R: np.ndarray  # (D, 4H, H)
    B: np.ndarray  # (D, 4H): input bias + recurrent bias, summed in float64
    P: np.ndarray | None  # (D, 3H) Pi, Po, Pf, or None when absent / all zero
    source_dtype: np.dtype
    activations: tuple[tuple[str, float | None, float | None], ...]
    clip: float | None
    input_forget: bool
    has_bias: bool = True

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1


def _activations(where: str, attrs: dict[str, Any], D: int) -> tuple[tuple[str, float | None, float | None], ...]:
    """Parse activations with alpha/beta the way onnxruntime consumes them (one triple, checked equal per direction)."""
    canonical = {name.lower(): name for name in ACTIVATION_PARAMS}
    names = attrs.get("activations")
    if names is None:
        names = list(_DEFAULT_ACTIVATIONS) * D
    if len(names) != 3 * D:
        raise InteropError(f"{where}: activations must list 3 functions per direction ({3 * D}); got {names}")
    resolved = []
    for n in names:
        if n.lower() not in canonical:
            raise InteropError(f"{where}: unknown activation {n!r}; the LSTM operator lists {sorted(ACTIVATION_PARAMS)}")
        resolved.append(canonical[n.lower()])
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    need_alpha = sum(ACTIVATION_PARAMS[n][0] for n in resolved)
    need_beta = sum(ACTIVATION_PARAMS[n][1] for n in resolved)
    # The spec says values are "consumed in the order of activation functions";
    # onnxruntime consumes one per activation that takes it.  Any other count
    # could be read two ways, so it is refused.
    for label, given, needed in (("activation_alpha", alphas, need_alpha), ("activation_beta", betas, need_beta)):
        if given and len(given) != needed:
            raise InteropError(
                f"{where}: {label} has {len(given)} values for {needed} activations that take one ({resolved}); ambiguous"
            )
    out = []
    ia = ib = 0
    for n in resolved:
        takes_alpha, takes_beta = ACTIVATION_PARAMS[n]
        agreed = _AGREED_DEFAULTS.get(n, (None, None))
        alpha = beta = None
        if takes_alpha:
            if alphas:
                alpha, ia = float(alphas[ia]), ia + 1
            elif agreed[0] is None:
                raise InteropError(f"{where}: activation {n} without activation_alpha: the ONNX spec and onnxruntime differ on its default")
            else:
                alpha = agreed[0]
        if takes_beta:
            if betas:
                beta, ib = float(betas[ib]), ib + 1
            elif agreed[1] is None:
                raise InteropError(f"{where}: activation {n} without activation_beta: the ONNX spec and onnxruntime differ on its default")
            else:
                beta = agreed[1]
        out.append((n, alpha, beta))
    if D == 2 and out[:3] != out[3:]:
        raise InteropError(f"{where}: attribute 'activations' differs between the directions ({out[:3]} vs {out[3:]}); nplstm shares one per stack")
    return tuple(out[:3])


def _weight(where: str, label: str, value: Any, deps: frozenset[str], shape: tuple[int | None, ...]) -> np.ndarray:
    if deps:
        raise InteropError(f"{where}: {label} is computed at run time from {sorted(deps)}, not stored in the model")
    arr = np.asarray(value)
    if arr.dtype not in _FLOAT_DTYPES:
        raise InteropError(f"{where}: tensor '{label}' has dtype {arr.dtype}; expected float16, float32 or float64")
    expected = tuple(arr.shape[k] if s is None and k < arr.ndim else s for k, s in enumerate(shape))
    if arr.shape != expected:
        shown = tuple("?" if s is None else s for s in shape)
        raise InteropError(f"tensor '{label}' of {where} has shape {arr.shape}; expected {shown}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise InteropError(f"{where}: tensor '{label}' holds NaN or inf")
    return out


#: Attributes of the LSTM operator (all versions); any other is refused rather than ignored.
_LSTM_ATTRIBUTES = {
    "activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "input_forget", "layout",
    "output_sequence",
}


def _layer_spec(node: Any, args: list[Any], arg_deps: list[frozenset[str]]) -> _Layer:
    where = f"LSTM node {_node_name(node)!r}"
    attrs = _attrs(node)
    unknown = sorted(set(attrs) - _LSTM_ATTRIBUTES)
    if unknown:
        raise InteropError(f"{where}: unknown attribute(s) {unknown}; nplstm does not know what they change")
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise InteropError(f"{where}: unknown direction {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise InteropError(f"{where}: layout must be 0 or 1; got {layout}")
    args = list(args) + [None] * (8 - len(args))
    arg_deps = list(arg_deps) + [frozenset()] * (8 - len(arg_deps))
    if args[1] is None or args[2] is None:
        raise InteropError(f"{where}: missing W or R")
    R0 = np.asarray(args[2])
    if R0.ndim != 3 or R0.shape[0] != D or R0.shape[1] != 4 * R0.shape[2]:
        raise InteropError(f"{where}: tensor 'R' must be ({D}, 4H, H); got {R0.shape}")
    H = R0.shape[2]
    if "hidden_size" in attrs and attrs["hidden_size"] != H:
        raise InteropError(f"{where}: hidden_size={attrs['hidden_size']} but R implies {H}")
    W = _weight(where, "W", args[1], arg_deps[1], (D, 4 * H, None))
    if W.ndim != 3:
        raise InteropError(f"{where}: tensor 'W' must be ({D}, {4 * H}, I); got {W.shape}")
    R = _weight(where, "R", args[2], arg_deps[2], (D, 4 * H, H))
    Bfull = _weight(where, "B", args[3], arg_deps[3], (D, 8 * H)) if args[3] is not None else np.zeros((D, 8 * H))
    P = _weight(where, "P", args[7], arg_deps[7], (D, 3 * H)) if args[7] is not None else None
    if P is not None and not P.any():
        P = None
    dtypes = {np.asarray(a).dtype for a in (args[1], args[2], args[3], args[7]) if a is not None}
    clip = attrs.get("clip")
    if clip is not None and not (np.isfinite(clip) and clip > 0):
        raise InteropError(f"{where}: clip must be a positive number; got {clip}")
    input_forget = int(attrs.get("input_forget", 0))
    if input_forget not in (0, 1):
        raise InteropError(f"{where}: input_forget must be 0 or 1; got {input_forget}")
    return _Layer(
        name=_node_name(node),
        direction=direction,
        layout=layout,
        hidden_size=H,
        W=W,
        R=R,
        B=Bfull[:, : 4 * H] + Bfull[:, 4 * H :],
        P=P,
        source_dtype=np.dtype(np.float64) if np.dtype(np.float64) in dtypes else np.dtype(np.float32),
        activations=_activations(where, attrs, D),
        clip=None if clip is None else float(clip),
        input_forget=bool(input_forget),
        has_bias=args[3] is not None,
    )


# --------------------------------------------------------------------------- matching


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


def _data_sources(nodes: list[Any], name: str) -> set[str]:
    """The values with no producer among ``nodes`` whose *data* can reach ``name`` (shape-only edges excluded)."""
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
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type))


def _labelled_run(model: Any, nodes: list[Any], consts: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, Any]:
    """Run the plumbing with labelled graph inputs and labelled LSTM outputs."""
    label = _Labeller()
    feeds = {}
    for vi in _graph_inputs(model):
        dt = _np_dtype(vi)
        feeds[vi.name] = label(_input_shape(vi, sizes), np.int64 if dt.kind in "iu" else np.float64)
    record: dict[str, Any] = {"lstm_inputs": [], "lstm_outputs": []}

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

    values, deps = _evaluate(model.graph, nodes, consts, feeds, hook, observe)
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


def _check_selections(records: list[dict[str, Any]]) -> None:
    """Refuse a Slice / Gather / Split that drops data along an axis whose size follows the probe sizes.

    An axis whose extent differs between probes carries sequence steps or
    batch entries; on it a selection must pass everything through at every
    probe.  Selections on fixed-size axes (the L·D rows of a state input)
    are the wiring the matching checks.
    """
    seen: dict[tuple[str, int], list[_Selection]] = {}
    for record in records:
        for sel in record["selections"]:
            seen.setdefault((sel.node, sel.axis), []).append(sel)
    for (node, axis), sels in seen.items():
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
    from onnx import AttributeProto

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


def _match(model: Any) -> _Plan:
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
    """
    graph = model.graph
    nodes = _needed_nodes(graph)
    lstm_nodes = [n for n in nodes if n.op_type == "LSTM"]
    if not lstm_nodes:
        raise InteropError("the ONNX graph has no LSTM node that the graph outputs depend on")
    consts = {t.name: _to_array(t) for t in graph.initializer}
    inputs = _graph_inputs(model)
    data_inputs = _data_sources(nodes, lstm_nodes[0].input[0]) if lstm_nodes[0].input else set()
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
            records = [_labelled_run(model, nodes, consts, sizes) for sizes in probes]
            _check_selections(records)
            plans = [_match_at(model, nodes, consts, sizes, lstm_nodes, rec) for sizes, rec in zip(probes, records)]
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
    vi_x = next(vi for vi in inputs if vi.name == a.x_name)
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
            record = _labelled_run(model, nodes, consts, sizes)
        except InteropError as exc:
            raise InteropError(
                f"cannot prove the wiring at sequence length {t} and batch {b} (beyond the graph's largest integer "
                f"constant, {bound}): {exc}"
            ) from None
        records.append(record)
        _check_selections(records)
        plans.append(_match_at(model, nodes, consts, sizes, lstm_nodes, record))
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
    if a.x_name != b.x_name or a.states_batch_major != b.states_batch_major:
        raise InteropError("the graph's wiring changes with the input sizes; nplstm cannot map it onto one LSTM")
    if (a.initial_states is None) != (b.initial_states is None):
        raise InteropError("the graph's constant initial states exist at some input sizes only")
    if a.initial_states is not None and b.initial_states is not None:
        for sa, sb in zip(a.initial_states, b.initial_states):
            if sa.shape[1] == 1 and sb.shape[1] == 1 and not np.array_equal(sa, sb):
                raise InteropError("the graph's constant initial states change with the input sizes")
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
    model: Any, nodes: list[Any], consts: dict[str, np.ndarray], sizes: dict[str, int], lstm_nodes: list[Any], record: dict[str, Any]
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
    _match_states(plan, lstm_nodes, record)
    _match_lengths(plan, lstm_nodes, record)
    return plan


def _nodes_between(nodes: list[Any], a: Any, b: Any) -> list[str]:
    ia, ib = nodes.index(a), nodes.index(b)
    return [f"{n.op_type} {_node_name(n)!r}" for n in nodes[ia + 1 : ib] if n.op_type not in ("Constant",)]


def _match_first_input(node: Any, layer: _Layer, record: dict[str, Any], feeds: dict[str, np.ndarray]) -> tuple[str, bool]:
    where = f"LSTM node {layer.name!r}"
    x = record["lstm_inputs"][0][0]
    dep = record["deps"][node.input[0]]
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


# --------------------------------------------------------------------------- the imported object


def _reverse_within(x: np.ndarray, lengths: np.ndarray | None, time_axis: int) -> np.ndarray:
    """Reverse each sequence over its own first ``lengths[b]`` steps (padding stays in place)."""
    if lengths is None:
        return np.flip(x, axis=time_axis).copy()
    out = np.array(x, copy=True)
    batch_axis = 1 - time_axis
    for b, n in enumerate(np.asarray(lengths).reshape(-1)):
        src = np.take(x, b, axis=batch_axis)
        dst = np.take(out, b, axis=batch_axis)
        dst[: int(n)] = src[: int(n)][::-1]
        if batch_axis == 0:
            out[b] = dst
        else:
            out[:, b] = dst
    return out


class OnnxLSTM:
    """An imported ONNX LSTM that a plain :class:`~nplstm.stack.StackedLSTM` cannot express alone.

    :func:`from_onnx` returns this wrapper only when the graph has a
    single-direction ``reverse`` LSTM, constant (non-zero) initial states or
    constant ``sequence_lens``; otherwise it returns the StackedLSTM itself.

    Attributes
    ----------
    stack : StackedLSTM
        The layers, run forward in time.
    reverse : bool
        Every node runs backwards in time: each sequence is reversed over its
        own length, run forward, and reversed back.
    initial_states : (h_0, c_0) or None
        Constant states of shape (L·D, B or 1, H) used when ``hx`` is None.
    lengths : (B,) int array or None
        Constant sequence lengths used when ``lengths`` is None.
    """

    def __init__(
        self,
        stack: StackedLSTM,
        *,
        reverse: bool = False,
        initial_states: tuple[np.ndarray, np.ndarray] | None = None,
        lengths: np.ndarray | None = None,
        source: str = "",
    ) -> None:
        self.stack = stack
        self.reverse = bool(reverse)
        self.initial_states = initial_states
        self.lengths = lengths
        self.source = source

    @property
    def batch_first(self) -> bool:
        return self.stack.batch_first

    def parameters(self) -> dict[str, np.ndarray]:
        """The stack's trainable arrays (views)."""
        return self.stack.parameters()

    def forward(
        self, x: Any, hx: tuple[Any, Any] | None = None, *, lengths: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Compute what the graph computes: ``(outputs, (h_n, c_n))`` as :meth:`StackedLSTM.forward`.

        ``x`` is (T, B, I) or (B, T, I) (batch_first), or one sequence (T,
        I); ``hx`` overrides the
        constant initial states; ``lengths`` the constant sequence lengths.
        """
        x = np.asarray(x)
        if x.ndim == 2:  # one sequence (T, I), as StackedLSTM takes it
            one = (np.asarray(hx[0])[:, None], np.asarray(hx[1])[:, None]) if hx is not None else None
            out, (h, c) = self.forward(x[None] if self.batch_first else x[:, None], one, lengths=lengths)
            return (out[0] if self.batch_first else out[:, 0]), (h[:, 0], c[:, 0])
        if x.ndim != 3:
            raise ValueError(f"x must be (T, I) or {'(B, T, I)' if self.batch_first else '(T, B, I)'}; got shape {x.shape}")
        batch = x.shape[0] if self.batch_first else x.shape[1]
        if lengths is None:
            lengths = self.lengths
        if hx is None and self.initial_states is not None:
            h0, c0 = self.initial_states
            if h0.shape[1] not in (1, batch):
                raise ValueError(f"this graph's constant initial states are for batch {h0.shape[1]}; got batch {batch}")
            hx = (np.broadcast_to(h0, (h0.shape[0], batch, h0.shape[2])), np.broadcast_to(c0, (c0.shape[0], batch, c0.shape[2])))
        time_axis = 1 if self.batch_first else 0
        if self.reverse:
            x = _reverse_within(x, lengths, time_axis)
        seq, states = self.stack.forward(x, hx, lengths=lengths)
        assert seq is not None  # return_sequences is on
        if self.reverse:
            seq = _reverse_within(seq, lengths, time_axis)
        return seq, states

    __call__ = forward

    def __repr__(self) -> str:
        extras = []
        if self.reverse:
            extras.append("reverse=True")
        if self.initial_states is not None:
            extras.append(f"initial_states={tuple(self.initial_states[0].shape)}")
        if self.lengths is not None:
            extras.append(f"lengths={self.lengths.tolist()}")
        return f"OnnxLSTM({self.stack!r}, {', '.join(extras)})"


def _cell_options_for(layer: _Layer) -> Any:
    """CellOptions for a node, or None when the node is the plain LSTM."""
    plain = (
        tuple(a[0] for a in layer.activations) == _DEFAULT_ACTIVATIONS
        and layer.clip is None
        and not layer.input_forget
        and layer.P is None
    )
    if plain:
        return None
    from ..cell import Activation, CellOptions

    f, g, h = (Activation(n, alpha, beta) for n, alpha, beta in layer.activations)
    return CellOptions(
        gate_activation=f, cell_activation=g, hidden_activation=h, clip=layer.clip, input_forget=layer.input_forget, peepholes=layer.P is not None
    )


def _same_in_float32(a: Any, b: Any) -> bool:
    """Two CellOptions that write the same (float32) ONNX attributes."""
    def key(o: Any) -> tuple[Any, ...]:
        acts = (o.gate_activation, o.cell_activation, o.hidden_activation)
        def f32(v: float | None) -> float | None:
            return None if v is None else float(np.float32(v))

        return tuple((x.name, f32(x.alpha), f32(x.beta)) for x in acts) + (f32(o.clip), o.input_forget, o.peepholes)

    return key(a) == key(b)


def _exact_options(options: Any, metadata: str | None) -> Any:
    """The exporter's full-precision CellOptions when they agree with the node's float32 attributes."""
    if options is None or metadata is None:
        return options
    import json

    from ..cell import CellOptions

    try:
        exact = CellOptions.from_config(json.loads(metadata))
    except (ValueError, TypeError):
        return options
    return exact if _same_in_float32(exact, options) else options


def _build(plan: _Plan, dtype: Any, label: str, metadata: str | None = None) -> StackedLSTM | OnnxLSTM:
    layers = plan.layers
    first = layers[0]
    D, H, I = first.num_directions, first.hidden_size, first.W.shape[2]
    if dtype is None:
        dtype = np.float64 if first.source_dtype == np.float64 else np.float32
    options = _exact_options(_cell_options_for(first), metadata)
    kwargs: dict[str, Any] = {} if options is None else {"cell": options}
    # a graph without any B input is a stack without bias (a missing B is zeros)
    kwargs["bias"] = any(layer.has_bias for layer in layers)
    stack = StackedLSTM(I, H, num_layers=len(layers), bidirectional=D == 2, batch_first=plan.batch_first, seed=0, dtype=dtype, **kwargs)
    for l, layer in enumerate(layers):
        for d, cell in enumerate(stack.layers[l]):
            unpack(cell, ONNX_ORDER, layer.W[d], layer.R[d], layer.B[d])
            if layer.P is not None:
                cell.Pi = layer.P[d, :H].reshape(H, 1)
                cell.Po = layer.P[d, H : 2 * H].reshape(H, 1)
                cell.Pf = layer.P[d, 2 * H :].reshape(H, 1)
    reverse = first.direction == "reverse"
    if not reverse and plan.initial_states is None and plan.lengths is None:
        return stack
    states = None
    if plan.initial_states is not None:
        states = (plan.initial_states[0].astype(stack.dtype), plan.initial_states[1].astype(stack.dtype))
    return OnnxLSTM(stack, reverse=reverse, initial_states=states, lengths=plan.lengths, source=label)


# --------------------------------------------------------------------------- verification


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


# --------------------------------------------------------------------------- import


def from_onnx(
    model_or_path: Any,
    *,
    dtype: Any = None,
    verify: bool | None = None,
    allow_external_data: bool = True,
    max_external_bytes: int = DEFAULT_MAX_EXTERNAL_BYTES,
) -> StackedLSTM | OnnxLSTM:
    """Import the LSTM of an ONNX model (a path, bytes or ``onnx.ModelProto``).

    Parameters
    ----------
    model_or_path
        The model.  A file is read with ``onnx.load`` (never following
        external data unless allowed) and checked with ``onnx.checker``.
    dtype
        The returned model's dtype; default float64 if the weights are
        float64, else float32 (float16 weights are widened exactly).
    verify : bool, optional
        Run the original graph in onnxruntime on a random input (random
        lengths too when sequence_lens is a graph input) and compare every
        graph output the returned object reproduces; raise InteropError on a
        mismatch.  Symbolic axes run at the wiring proof's long probe (an
        odd length beyond every constant in the graph); static axes at the
        size the graph declares (onnxruntime accepts no other).  Default:
        True when onnxruntime is importable and that run is within
        :data:`VERIFY_MAX_ELEMENTS`; ``verify=True`` on a larger graph is an
        InteropError.  onnxruntime's own log is silenced: a failure is one
        InteropError line.

        Whether or not it runs, the import is proven by the labelled wiring
        proof (see the module docstring): every Slice, Gather or Split on a
        sequence or batch axis must pass everything through, at a long odd
        length and a large batch beyond every constant in the graph.
    allow_external_data : bool
        Read tensors kept in external files (torch's exporter writes
        ``model.onnx.data`` beside the model), as onnxruntime does: only a
        relative location without ``..`` that resolves, symlinks followed,
        to a regular file inside the model's folder; at most
        ``max_external_bytes`` in total, sizes checked before reading.
        Anything else is refused naming the location.  False refuses every
        external reference.

    Returns
    -------
    StackedLSTM or OnnxLSTM
        A StackedLSTM whenever the graph is one: its ``forward(x, hx,
        lengths=...)`` takes the graph input ``X`` (its batch_first matches
        the graph), the state graph inputs as (L·D, B, H) (transpose a
        graph's batch-major (B, L·D, H) state inputs) and the
        ``sequence_lens`` graph input, and returns ``(Y, (Y_h, Y_c))`` laid
        out as torch does.  An :class:`OnnxLSTM` wraps it when the graph also
        has a reverse-only direction, constant initial states or constant
        lengths.
    """
    model, label = _load_model(model_or_path, allow_external_data, max_external_bytes)
    try:
        plan = _match(model)
        metadata = {p.key: p.value for p in model.metadata_props}.get(CELL_METADATA)
        imported = _build(plan, dtype, label, metadata)
    except InteropError as exc:
        raise InteropError(f"{label}: {exc}") from None
    except Exception as exc:  # a file that parses but whose fields are nonsense
        raise InteropError(f"{label}: malformed ONNX LSTM model: {type(exc).__name__}: {exc}") from None
    if verify is None:  # by default: when onnxruntime is there and the graph's sizes are affordable
        import importlib.util

        verify = importlib.util.find_spec("onnxruntime") is not None and _verify_elements(model, plan)[0] <= VERIFY_MAX_ELEMENTS
    if verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise InteropError("verify=True needs onnxruntime (pip install onnxruntime)") from None
        try:
            verify_import(model, imported, plan=plan)
        except InteropError as exc:  # one line that names the file too
            raise InteropError(f"{label}: {exc}") from None
    return imported


__all__: Sequence[str] = ["to_onnx", "from_onnx", "verify_import", "OnnxLSTM", "PLUMBING", "ACTIVATION_PARAMS"]
