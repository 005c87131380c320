"""Exporting: a StackedLSTM or SequenceModel as a torch state dict or an ``nn.LSTM``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...stack import StackedLSTM
from ..gates import InteropError, packed
from ._state import TORCH_ORDER


def to_torch_state_dict(
    model: Any, *, as_numpy: bool = False, lstm: str | None = None, head: Any = None, embedding: str | None = None
) -> dict[str, Any]:
    """The state dict a torch module of the same configuration loads.

    A :class:`~nplstm.stack.StackedLSTM` gives a ``torch.nn.LSTM``'s keys
    (``weight_ih_l0`` ...), under ``lstm + "."`` when ``lstm`` is given.  A
    :class:`~nplstm.SequenceModel` gives a whole model's, named by the same
    keywords as :func:`from_torch` takes: ``lstm`` (default ``"lstm"``),
    ``embedding`` (default ``"embedding"``: ``.weight``) and ``head``, one
    name per Dense layer (default nplstm's own: ``"dense.0"``, ... and
    ``"head"`` for the output layer: ``.weight`` (out, in), ``.bias``).
    A state dict holds weights only: the torch module's forward must apply
    the activations, the output selection (``h_n``, ``out[:, -1]`` or every
    step) and any masking itself.  The LSTM bias goes to ``bias_ih`` and
    ``bias_hh`` is zero.  Tensors are ``torch.Tensor`` (or NumPy arrays with
    ``as_numpy=True``, no torch needed).  ``torch.nn.LSTM`` has only the
    standard cell: a stack with other :class:`~nplstm.cell.CellOptions` is
    refused rather than exported wrong.
    """
    from ...model import SequenceModel

    if isinstance(model, SequenceModel):
        sd = _stack_state_dict(model.lstm, "lstm" if lstm is None else lstm)
        dense = list(model.dense)
        names = [f"dense.{k}" for k in range(len(dense) - 1)] + ["head"] if head is None else head
        if isinstance(names, str) or len(names) != len(dense) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"head= names each of the model's {len(dense)} Dense layer(s), in order; got {names!r}")
        for name, layer in zip(names, dense):
            sd[f"{name}.weight"] = layer.W.copy()
            sd[f"{name}.bias"] = layer.b.copy()
        if model.embedding is not None:
            sd[f"{'embedding' if embedding is None else embedding}.weight"] = model.embedding.W.copy()
    elif isinstance(model, StackedLSTM):
        if head is not None or embedding is not None:
            raise TypeError("a StackedLSTM has no head or embedding; lstm= is the only prefix it takes")
        sd = _stack_state_dict(model, lstm)
    else:
        raise TypeError(f"expected a StackedLSTM or a SequenceModel; got {type(model).__name__}")
    if as_numpy:
        return sd
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def _stack_state_dict(stack: StackedLSTM, prefix: str | None) -> dict[str, np.ndarray]:
    if not stack.cell.is_default:
        raise InteropError(f"torch.nn.LSTM has only the standard cell; this stack has cell={stack.cell!r}")
    pre = f"{prefix}." if prefix else ""
    sd: dict[str, np.ndarray] = {}
    for l, d, cell in ((l, d, cell) for l, pair in enumerate(stack.layers) for d, cell in enumerate(pair)):
        sfx = f"{pre}{{}}_l{l}{'_reverse' if d else ''}"
        w_ih, w_hh, b = packed(cell, TORCH_ORDER)
        sd[sfx.format("weight_ih")] = w_ih
        sd[sfx.format("weight_hh")] = w_hh
        if stack.bias:
            sd[sfx.format("bias_ih")] = b
            sd[sfx.format("bias_hh")] = np.zeros_like(b)
        if cell.W_hr is not None:
            sd[sfx.format("weight_hr")] = cell.W_hr.copy()
    return sd


def torch_module(stack: StackedLSTM) -> Any:
    """A ``torch.nn.LSTM`` with this stack's configuration and weights.

    ``dropout`` (between layers) carries over; ``torch.nn.LSTM`` has no
    ``input_dropout`` or ``recurrent_dropout``, so a stack with either warns
    that the module computes the same outputs but trains without them.
    """
    import torch

    dropped = {name: rate for name in ("input_dropout", "recurrent_dropout") if (rate := getattr(stack, name))}
    if dropped:
        warnings.warn(f"torch.nn.LSTM has no {' or '.join(dropped)}: the module computes the same outputs, but "
                      f"training it in torch drops {dropped} (only dropout={stack.dropout}, between layers, carries over)",
                      UserWarning, stacklevel=2)

    module = torch.nn.LSTM(
        stack.input_size,
        stack.hidden_size,
        num_layers=stack.num_layers,
        bias=stack.bias,
        batch_first=stack.batch_first,
        dropout=stack.dropout,
        bidirectional=stack.bidirectional,
        proj_size=stack.proj_size,
        dtype=torch.float64 if stack.dtype == np.float64 else torch.float32,
    )
    module.load_state_dict(to_torch_state_dict(stack))
    return module
