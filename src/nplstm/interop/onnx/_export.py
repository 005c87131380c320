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


class _Writer:
    """Nodes and initializers of a graph being written, in one float dtype."""

    def __init__(self, dtype: Any) -> None:
        from onnx import TensorProto

        from ...params import model_dtype

        self.np_dtype = model_dtype(dtype)
        self.elem = TensorProto.DOUBLE if self.np_dtype == np.float64 else TensorProto.FLOAT
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        value = np.asarray(value)
        self.inits.append(numpy_helper.from_array(value.astype(self.np_dtype) if value.dtype.kind == "f" else value, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def stack(
        self, stack: StackedLSTM, layer_in: str, *, lens: str = "", initial_states: bool = False, reverse: bool = False
    ) -> tuple[str, list[str], list[str]]:
        """The stack's LSTM nodes on time-major ``layer_in`` (T, B, I): returns (Y (T, B, D·H), [Y_h per layer], [Y_c per layer])."""
        L, D, H = stack.num_layers, stack.num_directions, stack.hidden_size
        options = _cell_options(stack)
        peepholes = bool(options is not None and options.peepholes)
        direction = "bidirectional" if stack.bidirectional else ("reverse" if reverse else "forward")
        attrs = dict(hidden_size=H, direction=direction, **_activation_attrs(options, D))
        const = self.const
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
            if initial_states:
                starts, ends, axes = const(f"start_{l}", np.array([l * D])), const(f"end_{l}", np.array([(l + 1) * D])), const(f"axes_{l}", np.array([0]))
                self.node("Slice", ["initial_h", starts, ends, axes], [f"h0_{l}"], f"initial_h_{l}")
                self.node("Slice", ["initial_c", starts, ends, axes], [f"c0_{l}"], f"initial_c_{l}")
                names += [f"h0_{l}", f"c0_{l}"]
            else:
                names += ["", ""]
            if peepholes:
                names.append(const(f"P_{l}", np.stack(P)))
            while names[-1] == "":
                names.pop()
            self.node("LSTM", names, [f"Y4_{l}", f"Yh_{l}", f"Yc_{l}"], f"lstm_{l}", **attrs)
            # (T, D, B, H) -> (T, B, D·H)
            self.node("Transpose", [f"Y4_{l}"], [f"Yt_{l}"], f"transpose_{l}", perm=[0, 2, 1, 3])
            layer_in = self.node("Reshape", [f"Yt_{l}", const(f"shape_{l}", np.array([0, 0, -1]))], [f"Y_{l}"], f"reshape_{l}")
            y_h.append(f"Yh_{l}")
            y_c.append(f"Yc_{l}")
        return layer_in, y_h, y_c

    def finish(self, inputs: list[Any], outputs: list[Any], options: Any, path: str | os.PathLike | None) -> Any:
        """The checked model (cell options at full precision in its metadata), written to ``path`` if given."""
        import onnx
        from onnx import helper

        graph = helper.make_graph(self.nodes, "nplstm", inputs, outputs, initializer=self.inits)
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


def to_onnx(
    stack: Any,
    path: str | os.PathLike | None = None,
    *,
    with_initial_states: bool = True,
    with_lengths: bool = False,
    dtype: Any = np.float32,
) -> Any:
    """Export ``stack`` (or a whole :class:`~nplstm.SequenceModel`) as an ONNX model; write it to ``path`` if given (atomically).

    Parameters
    ----------
    stack : StackedLSTM or SequenceModel
        Any stack without projection: bias or not, batch_first, bidirectional,
        and every cell option (activations, clip, input_forget, peepholes).
        A SequenceModel is written whole (see :func:`~nplstm.interop.onnx._export_model.model_to_onnx`):
        graph input ``x`` (B, T, I) or integer ids (B, T), output ``y``
        = ``model.predict(x)``; ``with_initial_states`` and ``with_lengths``
        do not apply to it.
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
    from onnx import TensorProto, helper

    if hasattr(stack, "dense") and hasattr(stack, "lstm"):  # a whole SequenceModel
        from ._export_model import model_to_onnx

        return model_to_onnx(stack, path, dtype=dtype)
    if stack.proj_size:
        raise InteropError("the ONNX LSTM operator has no projection: a stack with proj_size > 0 cannot be exported")
    w = _Writer(dtype)
    elem = w.elem
    L, D, H = stack.num_layers, stack.num_directions, stack.hidden_size
    x_dims: list[str | int] = ["B", "T", stack.input_size] if stack.batch_first else ["T", "B", stack.input_size]
    inputs = [helper.make_tensor_value_info("X", elem, x_dims)]
    layer_in = "X"
    if stack.batch_first:
        layer_in = w.node("Transpose", ["X"], ["X_tbi"], "batch_first_in", perm=[1, 0, 2])
    lens = ""
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
        lens = "sequence_lens"
    if with_initial_states:
        inputs += [
            helper.make_tensor_value_info("initial_h", elem, [L * D, "B", H]),
            helper.make_tensor_value_info("initial_c", elem, [L * D, "B", H]),
        ]
    layer_in, y_h, y_c = w.stack(stack, layer_in, lens=lens, initial_states=with_initial_states)
    if stack.batch_first:
        w.node("Transpose", [layer_in], ["Y"], "batch_first_out", perm=[1, 0, 2])
    else:
        w.node("Identity", [layer_in], ["Y"], "output")
    w.node("Concat", y_h, ["Y_h"], "concat_h", axis=0)
    w.node("Concat", y_c, ["Y_c"], "concat_c", axis=0)
    y_dims: list[str | int] = ["B", "T", D * H] if stack.batch_first else ["T", "B", D * H]
    outputs = [
        helper.make_tensor_value_info("Y", elem, y_dims),
        helper.make_tensor_value_info("Y_h", elem, [L * D, "B", H]),
        helper.make_tensor_value_info("Y_c", elem, [L * D, "B", H]),
    ]
    return w.finish(inputs, outputs, _cell_options(stack), path)
