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
from .stack import StackedLSTM

Recurrent = Union[LSTM, StackedLSTM]


def _sizes(model: Recurrent) -> tuple[int, int, int, int]:
    """(output features, state slots, state size, cell size) per sequence."""
    if isinstance(model, StackedLSTM):
        D, L = model.num_directions, model.num_layers
        return D * model.state_size, L * D, model.state_size, model.hidden_size
    return model.state_size, 1, model.state_size, model.hidden_size


def _forward_block(block: np.ndarray, model: Recurrent) -> np.ndarray:
    """One chunk (n, T, I) → one flat array [outputs | h | c] per sequence."""
    n = block.shape[0]
    if isinstance(model, StackedLSTM):
        outputs, (h, c) = model.forward(block if model.batch_first else block.transpose(1, 0, 2))
        if not model.batch_first:
            outputs = outputs.transpose(1, 0, 2)
        h, c = h.transpose(1, 0, 2), c.transpose(1, 0, 2)
    else:
        if model.batch_first:
            raise ValueError("use an LSTM without batch_first with nplstm.dask")
        outputs, h, c = model.forward(block.transpose(1, 0, 2))
        outputs = outputs.transpose(1, 0, 2)
    return np.concatenate([outputs.reshape(n, -1), h.reshape(n, -1), c.reshape(n, -1)], axis=1)


def forward(model: Recurrent, xs: Any) -> tuple[Any, Any, Any]:
    """Lazy forward pass of ``model`` over ``xs``, a dask array (N, T, I).

    Returns dask arrays ``outputs`` (N, T, F), ``h`` and ``c``: (N, H) for an
    :class:`~nplstm.LSTM`, (N, L·D, P) and (N, L·D, H) for a
    :class:`~nplstm.StackedLSTM` (sequence-major, unlike torch's h_n, so
    they stay chunked like ``xs``).  ``xs`` is rechunked to whole sequences
    if T or I are split.  Compute them together (``dask.compute(outputs, h,
    c)``) to run each chunk once.
    """
    import dask.array as da

    if not isinstance(xs, da.Array):
        raise TypeError(f"xs must be a dask array (N, T, I); got {type(xs).__name__}")
    if xs.ndim != 3 or xs.shape[2] != model.input_size:
        raise ValueError(f"xs must be (N, T, {model.input_size}); got {xs.shape}")
    if len(xs.chunks[1]) > 1 or len(xs.chunks[2]) > 1:
        xs = xs.rechunk({1: -1, 2: -1})
    N, T, _ = xs.shape
    F, slots, P, H = _sizes(model)
    width = T * F + slots * P + slots * H
    flat = xs.map_blocks(
        _forward_block,
        model,
        dtype=model.dtype,
        chunks=(xs.chunks[0], (width,)),
        drop_axis=2,
        meta=np.empty((0, 0), dtype=model.dtype),
    )
    outputs = flat[:, : T * F].reshape(N, T, F)
    h = flat[:, T * F : T * F + slots * P]
    c = flat[:, T * F + slots * P :]
    if isinstance(model, StackedLSTM):
        h, c = h.reshape(N, slots, P), c.reshape(N, slots, H)
    return outputs, h, c
