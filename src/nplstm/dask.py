"""Run the forward pass over a Dask array of many sequences.

``forward(model, xs)`` maps the model over the chunks of ``xs`` (N, T, I),
chunked along N only, so data larger than memory streams through a laptop
or a Dask cluster unchanged.  Dask is an optional extra
(``pip install 'nplstm[dask]'``) and is imported only here.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from .layer import LSTM
from .shapes import as_real_array
from .stack import StackedLSTM

__all__ = ["forward"]

_Recurrent = Union[LSTM, StackedLSTM]


def _engine(model: _Recurrent) -> StackedLSTM:
    if isinstance(model, LSTM):
        return model.engine
    if isinstance(model, StackedLSTM):
        return model
    raise TypeError(f"model must be an nplstm LSTM or StackedLSTM; got {type(model).__name__}")


def _forward_block(block: np.ndarray, stack: StackedLSTM) -> np.ndarray:
    """One chunk (n, T, I) → one flat array [outputs | h_n | c_n] per sequence."""
    n = block.shape[0]
    x = as_real_array(block, "xs", stack.dtype)
    outputs, (h, c) = stack.forward(x if stack.batch_first else np.ascontiguousarray(x.transpose(1, 0, 2)))
    assert outputs is not None
    if not stack.batch_first:
        outputs = outputs.transpose(1, 0, 2)
    parts = (outputs, h.transpose(1, 0, 2), c.transpose(1, 0, 2))
    return np.concatenate([p.reshape(n, -1) for p in parts], axis=1)


def forward(model: _Recurrent, xs: Any) -> tuple[Any, tuple[Any, Any]]:
    """Lazy forward pass of ``model`` over ``xs``, a dask array (N, T, I), sequence-major.

    Returns ``(outputs, (h_n, c_n))`` as dask arrays, like ``torch.nn.LSTM``:
    ``outputs`` (N, T, D·P) (batch-first, like ``xs``), ``h_n`` (L·D, N, P)
    and ``c_n`` (L·D, N, H), chunked along N like ``xs`` (a single
    :class:`~nplstm.LSTM` has L·D = 1).  ``xs`` is rechunked to whole
    sequences if T or I are split.  Compute them together
    (``dask.compute(outputs, h_n, c_n)``) to run each chunk once.
    """
    import dask.array as da

    stack = _engine(model)
    if not isinstance(xs, da.Array):
        raise TypeError(f"xs must be a dask array (N, T, I); got {type(xs).__name__}")
    if xs.ndim != 3 or xs.shape[2] != stack.input_size:
        raise ValueError(f"xs must be (N, T, {stack.input_size}); got {xs.shape}")
    if xs.dtype.kind not in "iuf":
        raise TypeError(f"xs must hold real numbers (int or float); got dtype {xs.dtype}")
    if len(xs.chunks[1]) > 1 or len(xs.chunks[2]) > 1:
        xs = xs.rechunk({1: -1, 2: -1})
    N, T, _ = xs.shape
    F, slots, P, H = stack.output_size, stack.num_layers * stack.num_directions, stack.state_size, stack.hidden_size
    width = T * F + slots * P + slots * H
    flat = xs.map_blocks(
        _forward_block,
        stack,
        dtype=stack.dtype,
        chunks=(xs.chunks[0], (width,)),
        drop_axis=2,
        meta=np.empty((0, 0), dtype=stack.dtype),
    )
    outputs = flat[:, : T * F].reshape(N, T, F)
    h_n = flat[:, T * F : T * F + slots * P].reshape(N, slots, P).transpose(1, 0, 2)
    c_n = flat[:, T * F + slots * P :].reshape(N, slots, H).transpose(1, 0, 2)
    return outputs, (h_n, c_n)
