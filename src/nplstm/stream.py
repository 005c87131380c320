"""Streaming inference: one time step per call, into preallocated buffers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import kernels
from .cell import PREACT_LIMIT, cell_step_
from .shapes import Orientation, resolve_states, state_out

if TYPE_CHECKING:
    from .layer import LSTM


class StreamState:
    """The state of a streaming run and every buffer a step needs.

    Made by :meth:`nplstm.LSTM.initial_state`.  ``h`` and ``c`` are updated in
    place by each :meth:`nplstm.LSTM.step`; nothing is allocated per step
    when ``x_t`` comes in the model's dtype.  ``h`` lives inside the buffer
    ``z = [h; x]``, so one matrix product with the fused weight gives all
    four gates.
    """

    def __init__(self, lstm: LSTM, h0: np.ndarray, c0: np.ndarray, orientation: Orientation) -> None:
        B, P, I, H = h0.shape[0], lstm.state_size, lstm.input_size, lstm.hidden_size
        dt = lstm.dtype
        self.lstm = lstm
        self.batch = B
        self.orientation = orientation
        self.z = np.zeros((B, P + I), dtype=dt)
        self.z[:, :P] = h0
        self.h = self.z[:, :P]
        self.x = self.z[:, P:]
        self.x3 = self.x[None]  # (1, B, I): the kernel's time-major view of x
        self.c = np.array(c0, dtype=dt, order="C", copy=True)
        self.gates = np.empty((B, 4 * H), dtype=dt)
        self.scratch = np.empty((B, H), dtype=dt)
        self.h_full = np.empty((B, H), dtype=dt) if lstm.proj_size else self.h
        # Views of the model's own storage: assignments and in-place edits of
        # lstm.Wf etc. show up here too.
        self.WT = lstm._WT.reshape(P + I, 4 * H)
        self.W_xT, self.W_hT, self.b = lstm.fused_T()
        self.W_hrT = lstm.W_hr.T if lstm.proj_size else None
        self.use_kernel = not lstm.proj_size and kernels.use_kernel(B, H, P, I)
        self.limit = PREACT_LIMIT[dt]
        self.empty = np.empty((0, B, 0), dtype=dt)
        self.hidden = state_out(self.h, orientation)  # views: column/vector only arise with B = 1
        self.cell = state_out(self.c, orientation)
        self.x_shapes = {(B, I)} | ({(I,), (I, 1)} if B == 1 else set())

    def __repr__(self) -> str:
        return f"StreamState(batch={self.batch}, orientation={self.orientation!r})"


def _batch_of(states: tuple[tuple[Any, int], ...], batch: int | None) -> tuple[int, bool]:
    """(B, batched) from an explicit batch or from states given as rows."""
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1; got {batch!r}")
        return int(batch), True
    for state, size in states:
        shape = np.shape(state) if state is not None else ()
        if len(shape) == 2 and shape[1] == size and not (shape == (size, 1) and size != 1):
            return shape[0], True
    return 1, False


def initial_state(lstm: LSTM, h0: Any = None, c0: Any = None, *, batch: int | None = None) -> StreamState:
    """A :class:`StreamState` from initial states given as for ``forward`` (zeros if omitted)."""
    B, batched = _batch_of(((h0, lstm.state_size), (c0, lstm.hidden_size)), batch)
    h, c, orientation = resolve_states(
        h0, c0, hidden_size=lstm.hidden_size, state_size=lstm.state_size, batch=B,
        batched=batched, dtype=lstm.dtype, check_finite=False,
    )
    return StreamState(lstm, h, c, orientation)


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
    np.copyto(state.x, np.reshape(x_t, state.x.shape), casting="same_kind")
    if state.use_kernel:
        kernels.sequence_kernel()(
            state.x3, state.W_xT, state.W_hT, state.b, state.h, state.c, state.gates,
            state.empty, state.empty, state.empty, state.limit,
        )
    else:
        np.matmul(state.z, state.WT, out=state.gates)
        np.add(state.gates, state.b, out=state.gates)
        cell_step_(state.gates, state.c, state.h_full, state.scratch)
        if state.W_hrT is not None:
            np.matmul(state.h_full, state.W_hrT, out=state.h)
    return state.hidden
