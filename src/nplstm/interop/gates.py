"""The one gate mapping between nplstm's named weights and packed layouts."""

from __future__ import annotations

import os
from typing import BinaryIO, Mapping

import numpy as np

from ..io import WeightsFileError, open_regular_file, require
from ..params import DirectionParams

__all__ = ["InteropError", "packed", "unpack", "check_shape", "open_framework_file"]

#: nplstm's public attribute suffix of each gate letter used in the orders below.
_SUFFIX = {"i": "i", "f": "f", "g": "c", "c": "c", "o": "o"}


class InteropError(WeightsFileError):
    """Weights from another framework that do not fit: wrong names, shapes or settings."""


def open_framework_file(path: str | os.PathLike) -> BinaryIO:
    """A framework's file opened with nplstm's regular-file check (:func:`~nplstm.io.open_regular_file`), failures as InteropError."""
    try:
        return open_regular_file(path)
    except WeightsFileError as exc:
        raise InteropError(str(exc)) from None


def packed(cell: DirectionParams, order: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W_ih (4H, I), W_hh (4H, P), b (4H,))`` with gates stacked in ``order``.

    ``order`` spells the gates with i, f, o and g or c (candidate), e.g.
    ``"ifgo"`` for PyTorch.
    """
    P = cell.state_size
    Ws = [getattr(cell, f"W{_SUFFIX[g]}") for g in order]
    bs = [getattr(cell, f"b{_SUFFIX[g]}")[:, 0] for g in order]
    W = np.concatenate(Ws, axis=0)
    return W[:, P:].copy(), W[:, :P].copy(), np.concatenate(bs)


def unpack(
    cell: DirectionParams, order: str, W_ih: np.ndarray, W_hh: np.ndarray, b: np.ndarray | None, W_hr: np.ndarray | None = None
) -> None:
    """Set ``cell``'s weights from packed ``W_ih``, ``W_hh`` and summed bias ``b`` (None: zeros).

    Shapes must already be checked (:func:`check_shape`); this only copies.
    """
    H = cell.hidden_size
    for k, g in enumerate(order):
        rows = slice(k * H, (k + 1) * H)
        setattr(cell, f"W{_SUFFIX[g]}", np.concatenate([W_hh[rows], W_ih[rows]], axis=1))
        if cell.has_bias:
            setattr(cell, f"b{_SUFFIX[g]}", np.zeros(H) if b is None else b[rows])
    if W_hr is not None:
        cell.W_hr = W_hr


def check_shape(tensors: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``tensors[name]`` as a finite float array of ``shape``, or InteropError naming both shapes."""
    return require(tensors, name, shape, kind="tensor", error=InteropError)
