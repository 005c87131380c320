"""ONNX: export to the standard ``LSTM`` operator and import LSTM nodes back.

One ONNX ``LSTM`` node per layer (``direction`` forward or bidirectional),
gate order i, o, f, c, tensors ``W`` (D, 4H, I), ``R`` (D, 4H, H) and
``B`` (D, 8H) = input bias then recurrent bias.  Between layers the
(T, D, B, H) output is transposed and reshaped to (T, B, D·H).  The ONNX
operator has no projection, so stacks with ``proj_size`` cannot be exported.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..stack import StackedLSTM
from .gates import InteropError, check_shape, packed, unpack

ONNX_ORDER = "iofc"
OPSET = 17
#: Nodes that may sit between LSTM nodes of an imported graph (plumbing only).
_PLUMBING = {"Transpose", "Reshape", "Slice", "Concat", "Squeeze", "Unsqueeze", "Constant", "Identity", "Shape", "Gather"}


def to_onnx(
    stack: StackedLSTM,
    path: str | os.PathLike | None = None,
    *,
    with_initial_states: bool = True,
    dtype: Any = np.float32,
) -> Any:
    """Export ``stack`` as an ONNX model; write it to ``path`` if given (atomically).

    ``dtype`` is float32 by default because onnxruntime's LSTM kernel runs
    float32 only; ``dtype=np.float64`` writes a valid double-precision model
    for runtimes that support it.

    Graph inputs: ``X`` (T, B, I) (``(B, T, I)`` if batch_first) and, with
    ``with_initial_states``, ``initial_h`` (L·D, B, H) and ``initial_c``.
    Outputs: ``Y`` shaped like :meth:`StackedLSTM.forward`'s outputs, ``Y_h``
    and ``Y_c`` (L·D, B, H).  Returns the checked ``onnx.ModelProto``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if stack.proj_size:
        raise InteropError("the ONNX LSTM operator has no projection: a stack with proj_size > 0 cannot be exported")
    from ..params import model_dtype

    np_dtype = model_dtype(dtype)
    elem = TensorProto.DOUBLE if np_dtype == np.float64 else TensorProto.FLOAT
    L, D, H = stack.num_layers, stack.num_directions, stack.hidden_size
    direction = "bidirectional" if stack.bidirectional else "forward"
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        value = np.asarray(value)
        inits.append(numpy_helper.from_array(value.astype(np_dtype) if value.dtype.kind == "f" else value, name))
        return name

    x_dims = ["B", "T", stack.input_size] if stack.batch_first else ["T", "B", stack.input_size]
    inputs = [helper.make_tensor_value_info("X", elem, x_dims)]
    layer_in = "X"
    if stack.batch_first:
        nodes.append(helper.make_node("Transpose", ["X"], ["X_tbi"], perm=[1, 0, 2]))
        layer_in = "X_tbi"
    if with_initial_states:
        inputs += [
            helper.make_tensor_value_info("initial_h", elem, [L * D, "B", H]),
            helper.make_tensor_value_info("initial_c", elem, [L * D, "B", H]),
        ]
    y_h, y_c = [], []
    for l in range(L):
        W, R, Bias = [], [], []
        for cell in stack.layers[l]:
            w_ih, w_hh, b = packed(cell, ONNX_ORDER)
            W.append(w_ih)
            R.append(w_hh)
            Bias.append(np.concatenate([b, np.zeros_like(b)]))
        names = [layer_in, const(f"W_{l}", np.stack(W)), const(f"R_{l}", np.stack(R)), const(f"B_{l}", np.stack(Bias)), ""]
        if with_initial_states:
            starts, ends, axes = const(f"start_{l}", np.array([l * D])), const(f"end_{l}", np.array([(l + 1) * D])), const(f"axes_{l}", np.array([0]))
            nodes.append(helper.make_node("Slice", ["initial_h", starts, ends, axes], [f"h0_{l}"]))
            nodes.append(helper.make_node("Slice", ["initial_c", starts, ends, axes], [f"c0_{l}"]))
            names += [f"h0_{l}", f"c0_{l}"]
        nodes.append(helper.make_node("LSTM", names, [f"Y4_{l}", f"Yh_{l}", f"Yc_{l}"], hidden_size=H, direction=direction, name=f"lstm_{l}"))
        # (T, D, B, H) -> (T, B, D·H)
        nodes.append(helper.make_node("Transpose", [f"Y4_{l}"], [f"Yt_{l}"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"Yt_{l}", const(f"shape_{l}", np.array([0, 0, -1]))], [f"Y_{l}"]))
        layer_in = f"Y_{l}"
        y_h.append(f"Yh_{l}")
        y_c.append(f"Yc_{l}")
    if stack.batch_first:
        nodes.append(helper.make_node("Transpose", [layer_in], ["Y"], perm=[1, 0, 2]))
    else:
        nodes.append(helper.make_node("Identity", [layer_in], ["Y"]))
    nodes.append(helper.make_node("Concat", y_h, ["Y_h"], axis=0))
    nodes.append(helper.make_node("Concat", y_c, ["Y_c"], axis=0))
    y_dims = ["B", "T", D * H] if stack.batch_first else ["T", "B", D * H]
    outputs = [
        helper.make_tensor_value_info("Y", elem, y_dims),
        helper.make_tensor_value_info("Y_h", elem, [L * D, "B", H]),
        helper.make_tensor_value_info("Y_c", elem, [L * D, "B", H]),
    ]
    graph = helper.make_graph(nodes, "nplstm", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nplstm")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        from ..io import write_atomic

        write_atomic(path, lambda tmp: onnx.save(model, str(tmp)))
    return model


def _to_array(tensor: Any) -> np.ndarray:
    """An initializer as an array, refusing sizes a weights file cannot need."""
    from onnx import numpy_helper

    from ..io import DEFAULT_MAX_BYTES

    count = 1
    for d in tensor.dims:
        count *= int(d)
    if count < 0 or count * 8 > DEFAULT_MAX_BYTES:
        raise InteropError(f"tensor {tensor.name!r} claims dims {list(tensor.dims)}, over the size limit")
    if tensor.data_location == 1:  # EXTERNAL: never follow paths named inside a file
        raise InteropError(f"tensor {tensor.name!r} keeps its data in an external file; embed it")
    return numpy_helper.to_array(tensor)


def _tensor_values(graph: Any) -> dict[str, np.ndarray]:
    values = {t.name: _to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = _to_array(attr.t)
    return values


def from_onnx(model_or_path: Any, *, dtype: Any = None) -> StackedLSTM:
    """Read the ``LSTM`` nodes of an ONNX model, in graph order, as the layers of a stack.

    Nodes other than LSTM must be plumbing (Transpose, Reshape, Slice, …);
    LSTM nodes must use the default activations, no clip, no
    input_forget and no peepholes.  A file is loaded with ``onnx.load`` and
    checked with ``onnx.checker`` first.
    """
    import onnx

    if isinstance(model_or_path, (str, os.PathLike)):
        try:
            model = onnx.load(str(model_or_path))
            onnx.checker.check_model(model)
        except FileNotFoundError:
            raise InteropError(f"{model_or_path}: no such file") from None
        except Exception as exc:  # onnx raises assorted protobuf/checker errors
            raise InteropError(f"{model_or_path} is not a valid ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    else:
        model = model_or_path
    try:
        return _stack_from_graph(model.graph, dtype)
    except InteropError:
        raise
    except Exception as exc:  # a file that parses but whose fields are nonsense
        raise InteropError(f"malformed ONNX LSTM model: {type(exc).__name__}: {exc}") from None


def _stack_from_graph(graph: Any, dtype: Any) -> StackedLSTM:
    from onnx import helper

    values = _tensor_values(graph)
    lstm_nodes = [n for n in graph.node if n.op_type == "LSTM"]
    if not lstm_nodes:
        raise InteropError("the ONNX graph has no LSTM node")
    others = sorted({n.op_type for n in graph.node} - _PLUMBING - {"LSTM"})
    if others:
        raise InteropError(f"the ONNX graph has operators besides LSTM plumbing that nplstm would ignore: {others}")

    layers = []
    for node in lstm_nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        where = f"LSTM node {node.name or node.output[0]!r}"
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if acts and any(a != d for a, d in zip(acts, ["Sigmoid", "Tanh", "Tanh"] * 2)):
            raise InteropError(f"{where}: activations {acts} do not map; only Sigmoid, Tanh, Tanh")
        for unsupported in ("clip", "activation_alpha", "activation_beta"):
            if unsupported in attrs:
                raise InteropError(f"{where}: attribute {unsupported!r} is not supported")
        if attrs.get("input_forget", 0):
            raise InteropError(f"{where}: input_forget=1 is not supported")
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if direction == "reverse":
            raise InteropError(f"{where}: direction 'reverse' alone does not map onto a stack layer")
        D = 2 if direction == "bidirectional" else 1
        inputs = list(node.input) + [""] * (8 - len(node.input))
        tensors = {}
        for slot, label in ((1, "W"), (2, "R"), (3, "B"), (7, "P")):
            if inputs[slot]:
                if inputs[slot] not in values:
                    raise InteropError(f"{where}: {label} ({inputs[slot]!r}) is computed at run time, not stored in the model")
                tensors[label] = values[inputs[slot]]
        if "W" not in tensors or "R" not in tensors:
            raise InteropError(f"{where}: missing W or R")
        R = tensors["R"]
        if R.ndim != 3 or R.shape[0] != D or R.shape[1] != 4 * R.shape[2]:
            raise InteropError(f"{where}: tensor 'R' must be ({D}, 4H, H); got {R.shape}")
        H = R.shape[2]
        if "hidden_size" in attrs and attrs["hidden_size"] != H:
            raise InteropError(f"{where}: hidden_size={attrs['hidden_size']} but R implies {H}")
        if np.ndim(tensors["W"]) != 3:
            raise InteropError(f"{where}: tensor 'W' must be ({D}, {4 * H}, I); got {np.shape(tensors['W'])}")
        W = check_shape(tensors, "W", (D, 4 * H, np.shape(tensors["W"])[2]))
        R = check_shape(tensors, "R", (D, 4 * H, H))
        B = check_shape(tensors, "B", (D, 8 * H)) if "B" in tensors else np.zeros((D, 8 * H), dtype=W.dtype)
        if "P" in tensors and np.any(tensors["P"]):
            raise InteropError(f"{where}: peephole weights P are not supported")
        layers.append({"W": W, "R": R, "B": B, "D": D, "layout": attrs.get("layout", 0)})

    first = layers[0]
    D, H, I = first["D"], first["R"].shape[2], first["W"].shape[2]
    for k, layer in enumerate(layers[1:], start=1):
        if layer["D"] != D or layer["R"].shape[2] != H or layer["W"].shape[2] != D * H:
            raise InteropError(
                f"LSTM node {k} does not stack on the previous one: expected W ({D}, {4 * H}, {D * H}); got {layer['W'].shape}"
            )
    if dtype is None:
        dtype = np.float64 if first["W"].dtype == np.float64 else np.float32
    stack = StackedLSTM(I, H, num_layers=len(layers), bidirectional=D == 2, batch_first=first["layout"] == 1, seed=0, dtype=dtype)
    for l, layer in enumerate(layers):
        for d, cell in enumerate(stack.layers[l]):
            b = layer["B"][d, : 4 * H] + layer["B"][d, 4 * H :]
            unpack(cell, ONNX_ORDER, layer["W"][d], layer["R"][d], b)
    return stack
