"""Export: a StackedLSTM to the ONNX ``LSTM`` operator (:func:`to_onnx`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...stack import StackedLSTM
from ..gates import InteropError, packed
from ._constants import _DEFAULT_ACTIVATIONS, ACTIVATION_PARAMS, CELL_METADATA, ONNX_ORDER, OPSET


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

    from ...params import model_dtype

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
        from ...io import write_atomic

        write_atomic(path, lambda tmp: onnx.save(model, str(tmp)))
    return model
