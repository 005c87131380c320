"""Streaming inference: one time step per call, into preallocated buffers."""

from __future__ import annotations

from typing import Any

import numpy as np

from .cell import DEFAULT_CELL, CellOptions, step_
from .checks import positive_int
from .layout import split_gates
from .params import DirectionParams
from .shapes import Orientation, as_real_array, resolve_states, state_out

__all__ = ["StreamState", "initial_state", "step"]


class StreamState:
    """The state of a streaming run and every buffer a step needs.

    Made by :meth:`nplstm.LSTM.initial_state`.  ``h`` and ``c`` are updated in
    place by each :meth:`nplstm.LSTM.step`; nothing is allocated per step
    when ``x_t`` comes in the model's dtype.  ``h`` lives inside the buffer
    ``z = [h; x]``, so one matrix product with the fused weight gives all
    four gates.
    """

    def __init__(
        self, params: DirectionParams, cell: CellOptions, h0: np.ndarray, c0: np.ndarray, orientation: Orientation
    ) -> None:
        B, P, I, H = h0.shape[0], params.state_size, params.input_size, params.hidden_size
        dt = params.dtype
        self.params = params
        self.options = cell
        self.batch = B
        self.orientation = orientation
        self.z = np.zeros((B, P + I), dtype=dt)
        self.z[:, :P] = h0
        self.h = self.z[:, :P]
        self.x = self.z[:, P:]
        self.c = np.array(c0, dtype=dt, order="C", copy=True)
        self.gates = np.empty((B, 4 * H), dtype=dt)
        self.scratch = np.empty((B, H), dtype=dt)
        self.h_full = np.empty((B, H), dtype=dt) if params.proj_size else self.h
        # Views of the model's own storage: assignments and in-place edits of
        # lstm.Wf etc. show up here too.  Fused rows are [W_h; W_x], matching z = [h; x].
        self.WT = params.fused_matrix()
        self.b = params.fused()[2]
        self.W_hrT = params.W_hr.T if params.W_hr is not None else None
        self.peepholes = params.peephole_rows() if cell.peepholes else None
        self.gate_views = split_gates(self.gates, H)  # made once, so a step creates no view objects at all
        self.hidden = state_out(self.h, orientation)  # views: column/vector only arise with B = 1
        self.cell = state_out(self.c, orientation)
        self.x_shapes = {(B, I)} | ({(I,), (I, 1)} if B == 1 else set())
        self.column = (I, 1) if I != 1 else None

    def __repr__(self) -> str:
        return f"StreamState(batch={self.batch}, orientation={self.orientation!r})"


def _batch_of(states: tuple[tuple[Any, int], ...], batch: int | None) -> tuple[int, bool]:
    """(B, batched) from an explicit batch or from states given as rows."""
    if batch is not None:
        return positive_int(batch, "batch"), True
    for state, size in states:
        shape: tuple[int, ...] = np.shape(state) if state is not None else ()
        # (size, 1) is a column, and (1, 1) could be either: only other 2-D shapes say "rows"
        if len(shape) == 2 and shape[1] == size and shape != (size, 1) and shape != (1, 1):
            return shape[0], True
    return 1, False


def initial_state(
    params: DirectionParams, cell: CellOptions = DEFAULT_CELL, h0: Any = None, c0: Any = None, *,
    batch: int | None = None,
) -> StreamState:
    """A :class:`StreamState` from initial states given as for ``forward`` (zeros if omitted)."""
    B, batched = _batch_of(((h0, params.state_size), (c0, params.hidden_size)), batch)
    h, c, orientation = resolve_states(
        h0, c0, hidden_size=params.hidden_size, state_size=params.state_size, batch=B,
        batched=batched, dtype=params.dtype, check_finite=False,
    )
    return StreamState(params, cell, h, c, orientation)


def step(state: StreamState, x_t: Any) -> np.ndarray:
    """Advance ``state`` by one step with input ``x_t``; return the new hidden state.

    ``x_t`` is ``(B, I)``, or ``(I,)`` / ``(I, 1)`` for one sequence.  The
    result is a view of the state's buffer (oriented like the initial
    states), overwritten by the next step: copy it to keep it.
    """
    shape = np.shape(x_t)
    if shape not in state.x_shapes:
        B, I = state.x.shape
        also = f" or ({I},)" if B == 1 else ""
        raise ValueError(f"x_t must have shape ({B}, {I}){also} for this stream; got {shape}")
    if type(x_t) is not np.ndarray or x_t.dtype.kind not in "iuf" or x_t.dtype.itemsize > state.x.dtype.itemsize:
        # refuses bool, complex, text, masked arrays (any ndarray subclass goes through the full
        # check) and values beyond a float32 model's range; allocates only then
        x_t = as_real_array(x_t, "x_t", state.x.dtype)
    # (B, I) and (I,) broadcast straight into the buffer; only a column (I, 1) needs a reshaped view
    np.copyto(state.x, x_t if shape != state.column else np.reshape(x_t, state.x.shape), casting="same_kind")
    # One fused product for all four gates, then the one step of cell.py.
    np.matmul(state.z, state.WT, out=state.gates)
    np.add(state.gates, state.b, out=state.gates)
    step_(state.gates, state.c, state.h_full, state.scratch, state.options, state.peepholes, views=state.gate_views)
    if state.W_hrT is not None:
        np.matmul(state.h_full, state.W_hrT, out=state.h)
    return state.hidden
