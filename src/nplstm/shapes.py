"""Input and state conventions: parsing what users give and giving it back.

Inputs ``x``:

=====================  ===================================================
given                  meaning
=====================  ===================================================
``(T,)``               one sequence of scalars (only when input_size is 1)
``(T, I)``             one sequence
``(T, B, I)``          a batch, time-major
``(B, T, I)``          a batch, when the model has ``batch_first=True``
=====================  ===================================================

States (initial hidden and cell state) come as a column ``(H, 1)``, a
vector ``(H,)`` or rows ``(B, H)``; results come back in the orientation
given.  Internally everything is time-major rows: x ``(T, B, I)``, states
``(B, H)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "Orientation", "refuse_masked", "as_real_array", "as_time_major", "state_orientation", "as_state_rows",
    "resolve_states", "state_out", "state_in_rows", "sequence_out", "sequence_in", "check_lengths",
]

Orientation = Literal["column", "vector", "rows"]

_NUMERIC_KINDS = "iuf"


def refuse_masked(a: object, name: str) -> None:
    """Refuse a ``numpy.ma.MaskedArray``: the one check every entry point of user arrays makes.

    ``np.asarray`` would silently drop the mask, so masked steps would be
    read as data.  Called by :func:`as_real_array` and :func:`check_lengths`
    (so by every forward, state, step, lengths and training-data path).
    """
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, whose mask nplstm would ignore; give a plain array "
            f"(and lengths=... for sequences of different lengths)"
        )


def as_real_array(a: object, name: str, dtype: np.dtype, check_finite: bool = False) -> np.ndarray:
    """Return ``a`` as an array of ``dtype``; refuse non-numeric data.

    Integers and floats are accepted and cast; booleans, complex numbers,
    strings and objects raise TypeError naming the dtype given; so do masked
    arrays (:func:`refuse_masked`).
    """
    refuse_masked(a, name)
    try:
        arr = np.asarray(a)
    except ValueError:  # NumPy's "inhomogeneous shape" for ragged nesting
        raise ValueError(
            f"{name} is ragged (its rows have different lengths); give a rectangular array "
            f"(pad sequences of different lengths and pass lengths=...)"
        ) from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name} must hold real numbers (int or float); got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > np.dtype(dtype).itemsize and arr.size:
        # a finite value beyond the narrower dtype's range would silently become inf
        limit = float(np.finfo(dtype).max)
        finite = np.isfinite(arr)
        biggest = float(np.max(np.abs(arr[finite]), initial=0.0))
        if biggest > limit:
            raise ValueError(f"{name} holds values up to {biggest:.3g}, beyond {np.dtype(dtype)}'s range ±{limit:.3g}")
    arr = arr.astype(dtype, copy=False)
    if check_finite and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf) and check_finite=True")
    return arr


def as_time_major(
    x: object, input_size: int, dtype: np.dtype, batch_first: bool, check_finite: bool
) -> tuple[np.ndarray, bool]:
    """Return ``(x as (T, B, I), batched)`` for any accepted input shape."""
    arr = as_real_array(x, "x", dtype, check_finite)
    I = input_size
    if arr.ndim == 1:
        if I != 1:
            raise ValueError(
                f"x of shape {arr.shape} (T,) is only accepted when input_size is 1; "
                f"expected (T, {I}) or a batch (T, B, {I}), got {arr.shape}"
            )
        return arr.reshape(-1, 1, 1), False
    if arr.ndim == 2:
        if arr.shape[1] != I:
            raise ValueError(f"x must have shape (T, {I}) for one sequence; got {arr.shape}")
        return arr[:, None, :], False
    if arr.ndim == 3:
        layout = "(B, T, I)" if batch_first else "(T, B, I)"
        if arr.shape[2] != I:
            raise ValueError(f"x must have shape {layout} with I = {I}; got {arr.shape}")
        if arr.shape[0 if batch_first else 1] == 0:
            raise ValueError(f"x is a batch of 0 sequences (shape {arr.shape}); give at least one")
        return (arr.transpose(1, 0, 2) if batch_first else arr), True
    raise ValueError(
        f"x must be (T,), (T, {I}) or a batch {'(B, T, I)' if batch_first else '(T, B, I)'} "
        f"with I = {I}; got {arr.ndim}-D shape {arr.shape}"
    )


def state_orientation(shape: tuple[int, ...], name: str, size: int, batch: int, batched: bool) -> Orientation:
    """Work out how a state of ``shape`` is oriented, or raise ValueError."""
    expected = f"({size}, 1), ({size},) or ({batch}, {size})"
    if len(shape) == 1:
        if shape != (size,):
            raise ValueError(f"{name} must be {expected}; got {shape}")
        orientation: Orientation = "vector"
    elif len(shape) == 2:
        if shape == (size, 1) and (size != 1 or not batched):
            orientation = "column"
        elif shape[1] == size:
            if shape[0] != batch:
                raise ValueError(
                    f"{name} has {shape[0]} rows but x has a batch of {batch} sequence(s); "
                    f"expected ({batch}, {size}), got {shape}"
                )
            return "rows"
        else:
            raise ValueError(f"{name} must be {expected}; got {shape}")
    else:
        raise ValueError(f"{name} must be {expected}; got {len(shape)}-D shape {shape}")
    if batch != 1:
        raise ValueError(
            f"{name} of shape {shape} is the state of one sequence but x has a batch of {batch}; "
            f"give rows ({batch}, {size})"
        )
    return orientation


def as_state_rows(
    state: object | None,
    name: str,
    size: int,
    batch: int,
    batched: bool,
    dtype: np.dtype,
    check_finite: bool,
) -> tuple[np.ndarray | None, Orientation | None]:
    """Return ``(state as (B, size) rows, orientation)``; ``(None, None)`` if omitted."""
    if state is None:
        return None, None
    arr = as_real_array(state, name, dtype, check_finite)
    orientation = state_orientation(arr.shape, name, size, batch, batched)
    return arr.reshape(batch, size), orientation


def resolve_states(
    h0: object | None,
    c0: object | None,
    *,
    hidden_size: int,
    state_size: int,
    batch: int,
    batched: bool,
    dtype: np.dtype,
    check_finite: bool,
) -> tuple[np.ndarray, np.ndarray, Orientation]:
    """Parse both initial states; an omitted one is zeros.

    Returns rows ``h0 (B, state_size)``, ``c0 (B, hidden_size)`` and the
    orientation results are given back in.  ``state_size`` differs from
    ``hidden_size`` only with a projection (LSTMP).
    """
    h, h_or = as_state_rows(h0, "initial_hidden_state", state_size, batch, batched, dtype, check_finite)
    c, c_or = as_state_rows(c0, "initial_cell_state", hidden_size, batch, batched, dtype, check_finite)
    if h_or is not None and c_or is not None and h_or != c_or:
        raise ValueError(
            f"initial_hidden_state is a {h_or} {np.shape(h0)} but initial_cell_state is a "  # type: ignore[call-overload]
            f"{c_or} {np.shape(c0)}; give both in the same orientation"  # type: ignore[call-overload]
        )
    orientation: Orientation = h_or or c_or or ("rows" if batched else "vector")
    if h is None:
        h = np.zeros((batch, state_size), dtype=dtype)
    if c is None:
        c = np.zeros((batch, hidden_size), dtype=dtype)
    return h, c, orientation


def state_out(rows: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Give a (B, H) state back in the user's orientation."""
    if orientation == "column":
        return rows.reshape(-1, 1)
    if orientation == "vector":
        return rows.reshape(-1)
    return rows


def state_in_rows(state: np.ndarray, orientation: Orientation, batch: int) -> np.ndarray:
    """Inverse of :func:`state_out` (used for gradients given by the user)."""
    if orientation == "rows":
        return state
    return state.reshape(batch, -1)


def sequence_out(seq: np.ndarray, orientation: Orientation, batch_first: bool) -> np.ndarray:
    """Give a time-major (T, B, H) per-step array back in the user's orientation.

    column → (T, H, 1); vector → (T, H); rows → (T, B, H), or (B, T, H)
    when ``batch_first``.
    """
    if orientation == "column":
        return seq.transpose(0, 2, 1)
    if orientation == "vector":
        return seq[:, 0, :]
    if batch_first:
        return np.ascontiguousarray(seq.transpose(1, 0, 2))
    return seq


def sequence_in(seq: np.ndarray, orientation: Orientation, batch_first: bool) -> np.ndarray:
    """Inverse of :func:`sequence_out`: back to time-major (T, B, H)."""
    if orientation == "column":
        return seq.transpose(0, 2, 1)
    if orientation == "vector":
        return seq[:, None, :]
    if batch_first:
        return seq.transpose(1, 0, 2)
    return seq


def check_lengths(lengths: object, batch: int, steps: int, name: str = "lengths") -> np.ndarray | None:
    """Validate per-sequence lengths: (B,) integers with 0 < length <= T.

    Returns them as int64, or None when every sequence is full (nothing to mask).
    ``name`` is the argument named in errors.
    """
    if lengths is None:
        return None
    refuse_masked(lengths, name)
    try:
        arr = np.asarray(lengths)
    except ValueError:  # ragged nesting
        raise ValueError(f"{name} must be a flat list of integers, shape ({batch},); got a ragged nesting") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    whole_floats = arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr)))
    if arr.dtype.kind not in "iu" and not whole_floats:
        raise TypeError(f"{name} must be integers; got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"{name} must have one entry per sequence, shape ({batch},); got {arr.shape}")
    if batch and (arr.min() < 1 or arr.max() > steps):  # checked before any cast, so 1e30 cannot wrap around
        raise ValueError(f"{name} must lie in [1, T={steps}]; got values from {arr.min()} to {arr.max()}")
    arr = arr.astype(np.int64)
    return None if np.all(arr == steps) else arr
