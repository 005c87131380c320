"""Export of a whole :class:`~nplstm.SequenceModel`: embedding, LSTM stack, selection and dense head in one graph."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..gates import InteropError
from ._export import _cell_options, _Writer

#: The ONNX operator of each head activation ("linear" writes none).
ACTIVATION_OPERATORS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softmax": "Softmax", "log_softmax": "LogSoftmax"}


def _refuse_unexportable(model: Any) -> None:
    stack = model.lstm
    if stack.proj_size:
        raise InteropError("the ONNX LSTM operator has no projection: a model whose stack has proj_size > 0 cannot be exported")
    if getattr(model, "mask_value", None) is not None:
        raise InteropError(f"mask_value={model.mask_value!r}: masking derives lengths from the data, which this export does not write")
    embedding = getattr(model, "embedding", None)
    if embedding is not None and getattr(embedding, "mask_zero", False):
        raise InteropError("Embedding(mask_zero=True): masking derives lengths from the ids, which this export does not write")
    if getattr(model, "go_backwards", False) and (stack.bidirectional or model.output != "h_n"):
        raise InteropError(
            f"go_backwards with output={model.output!r}{' and a bidirectional stack' if stack.bidirectional else ''}: "
            "only a unidirectional go_backwards model read at h_n exports (as a reverse LSTM node)"
        )
    if model.output not in ("h_n", "last", "sequence"):
        raise InteropError(f"output={model.output!r}: the export writes 'h_n', 'last' or 'sequence'")
    for k, layer in enumerate(model.dense):
        if layer.activation != "linear" and layer.activation not in ACTIVATION_OPERATORS:
            raise InteropError(f"dense layer {k}: activation {layer.activation!r} has no ONNX operator here")


def model_to_onnx(model: Any, path: str | os.PathLike | None = None, *, dtype: Any = np.float32) -> Any:
    """Export a whole :class:`~nplstm.SequenceModel`; write it to ``path`` if given (atomically).

    The graph has one input ``x`` — floats (B, T, I), or int64 ids (B, T)
    when the model has an embedding (a ``Gather`` of its table) — and one
    output ``y`` = ``model.predict(x)``: (B, O), or (B, T, O) for
    ``output="sequence"``; batch and time are dynamic.  The stack is written
    as by :func:`~nplstm.interop.onnx.to_onnx`; the selection is ``Y_h`` of
    the last layer (``h_n``), ``Y[-1]`` (``last``, full sequences) or every
    step (``sequence``); each dense layer is a ``Gemm`` (or ``MatMul`` +
    ``Add`` per step) followed by its activation.  Refused by name: a stack
    with projection, ``mask_value``, an embedding with ``mask_zero`` and
    ``go_backwards`` other than unidirectional read at ``h_n``.
    """
    from onnx import TensorProto, helper

    _refuse_unexportable(model)
    stack = model.lstm
    w = _Writer(dtype)
    D, H = stack.num_directions, stack.hidden_size
    embedding = getattr(model, "embedding", None)
    if embedding is not None:
        inputs = [helper.make_tensor_value_info("x", TensorProto.INT64, ["B", "T"])]
        x = w.node("Gather", [w.const("embedding_W", np.asarray(embedding.W)), "x"], ["embedded"], "embedding", axis=0)
    else:
        inputs = [helper.make_tensor_value_info("x", w.elem, ["B", "T", stack.input_size])]
        x = "x"
    x_tbi = w.node("Transpose", [x], ["x_tbi"], "batch_first_in", perm=[1, 0, 2])
    y, y_h, _ = w.stack(stack, x_tbi, reverse=bool(getattr(model, "go_backwards", False)))
    if model.output == "h_n":
        t = w.node("Transpose", [y_h[-1]], ["h_n_bdh"], "h_n_batch_first", perm=[1, 0, 2])
        features = w.node("Reshape", [t, w.const("h_n_shape", np.array([0, -1]))], ["features"], "h_n_concat")
    elif model.output == "last":
        features = w.node("Gather", [y, w.const("last_index", np.array(-1, dtype=np.int64))], ["features"], "last_step", axis=0)
    else:
        features = w.node("Transpose", [y], ["features"], "batch_first_out", perm=[1, 0, 2])
    per_step = model.output == "sequence"
    n = len(model.dense)
    for k, layer in enumerate(model.dense):
        W, b = np.asarray(layer.W), np.asarray(layer.b)
        last = k == n - 1
        act = ACTIVATION_OPERATORS.get(layer.activation)
        out = "y" if last and act is None else f"dense_{k}"
        if per_step:
            product = w.node("MatMul", [features, w.const(f"dense_{k}_WT", W.T)], [f"dense_{k}_matmul"], f"dense_{k}_matmul")
            features = w.node("Add", [product, w.const(f"dense_{k}_b", b)], [out], f"dense_{k}_bias")
        else:
            features = w.node("Gemm", [features, w.const(f"dense_{k}_W", W), w.const(f"dense_{k}_b", b)], [out], f"dense_{k}", transB=1)
        if act is not None:
            attrs = {"axis": -1} if act in ("Softmax", "LogSoftmax") else {}
            features = w.node(act, [features], ["y" if last else f"dense_{k}_{layer.activation}"], f"dense_{k}_{layer.activation}", **attrs)
    O = model.dense[-1].W.shape[0]
    outputs = [helper.make_tensor_value_info("y", w.elem, ["B", "T", O] if per_step else ["B", O])]
    del D, H
    return w.finish(inputs, outputs, _cell_options(stack), path)
