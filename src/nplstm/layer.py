"""The single-layer :class:`LSTM`: the textbook face of the engine in :mod:`nplstm.stack`.

It adds what the textbook API promises on top of a one-layer
:class:`~nplstm.stack.StackedLSTM`: public per-gate weights ``Wf … bo``,
states given as a column, a vector or rows and results given back the
same way, and ``forward(...) -> (outputs, final_h, final_c)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .cell import CellOptions
from .modelfile import load_model_of_kind, register, save_model
from .params import DirectionParams
from .shapes import (
    Orientation,
    as_real_array,
    as_time_major,
    check_lengths,
    resolve_states,
    sequence_in,
    sequence_out,
    state_in_rows,
    state_out,
)
from .stack import StackedLSTM, Tape, stack_parameter_shapes
from .stream import StreamState, initial_state, step

__all__ = ["LSTM"]


class _Delegate:
    """A public parameter of the one layer, read from and assigned to its DirectionParams."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: LSTM | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.params, self.name)

    def __set__(self, obj: LSTM, value: Any) -> None:
        setattr(obj.params, self.name, value)


@dataclass(frozen=True)
class _LayerLayout:
    """How the user gave ``x`` and the states to an LSTM."""

    orientation: Orientation
    x_shape: tuple[int, ...]
    batch_first: bool
    T: int
    B: int


class LSTM:
    """A single LSTM layer with the hidden state first in ``z = [h; x]``.

    Parameters
    ----------
    input_size : int
        Features per time step, I.
    hidden_size : int
        Size of the hidden and cell state, H.
    seed : int, numpy.random.Generator or None
        Source of the initial weights, drawn uniform(-1/√H, 1/√H) as in
        PyTorch.  Biases start at zero.
    dtype : float64 or float32
        Precision of weights, states and results; inputs are cast to it.
    batch_first : bool
        Batched ``x`` is ``(B, T, I)`` instead of ``(T, B, I)``; batched
        outputs follow.
    proj_size : int
        If > 0, an LSTMP projection ``h_t = W_hr (o ⊙ tanh(c_t))`` of shape
        (proj_size, H); the hidden state then has proj_size features and the
        gate weights are (H, proj_size + I).
    cell : CellOptions, optional
        A cell variant (see :class:`nplstm.cell.CellOptions`).

    Attributes
    ----------
    Wf, Wi, Wc, Wo : (H, H + I) arrays ((H, P + I) with a projection)
        Forget, input, candidate and output gate weights acting on
        ``[h_{t-1}; x_t]``.  Assign or write in place freely (assignments are
        checked for shape and finiteness).
    bf, bi, bc, bo : (H, 1) arrays
        Their biases.
    W_hr : (P, H) array or None
        The projection, when ``proj_size > 0``.
    """

    KIND = "LSTM"

    Wf = _Delegate("Forget gate weights (H, P + I) acting on z = [h; x]; assign or write in place.")
    Wi = _Delegate("Input gate weights (H, P + I) acting on z = [h; x]; assign or write in place.")
    Wc = _Delegate("Candidate weights (H, P + I) acting on z = [h; x]; assign or write in place.")
    Wo = _Delegate("Output gate weights (H, P + I) acting on z = [h; x]; assign or write in place.")
    bf = _Delegate("Forget gate bias (H, 1) (assign (H,) or (H, 1)).")
    bi = _Delegate("Input gate bias (H, 1) (assign (H,) or (H, 1)).")
    bc = _Delegate("Candidate bias (H, 1) (assign (H,) or (H, 1)).")
    bo = _Delegate("Output gate bias (H, 1) (assign (H,) or (H, 1)).")
    W_hr = _Delegate("LSTMP projection (P, H), or None without proj_size.")
    Pi = _Delegate("Input gate peephole (H, 1), with cell=CellOptions(peepholes=True).")
    Pf = _Delegate("Forget gate peephole (H, 1), with cell=CellOptions(peepholes=True).")
    Po = _Delegate("Output gate peephole (H, 1), with cell=CellOptions(peepholes=True).")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        seed: int | np.random.Generator | None = None,
        dtype: Any = np.float64,
        batch_first: bool = False,
        proj_size: int = 0,
        cell: Any = None,
    ) -> None:
        self.engine = StackedLSTM(
            input_size, hidden_size, batch_first=batch_first, proj_size=proj_size, cell=cell, seed=seed, dtype=dtype
        )
        self._last_tape: Tape | None = None

    # ----------------------------------------------------------- parameters
    @property
    def params(self) -> DirectionParams:
        """The layer's :class:`~nplstm.params.DirectionParams` (what ``Wf`` … ``bo`` are views of)."""
        return self.engine.layers[0][0]

    @property
    def weights(self) -> DirectionParams:
        """Deprecated alias of :attr:`params` (the README's ``lstm.weights.set_parameter`` still uses it)."""
        return self.params

    input_size = property(lambda self: self.engine.input_size, doc="Features per time step, I.")
    hidden_size = property(lambda self: self.engine.hidden_size, doc="Hidden and cell state size, H.")
    proj_size = property(lambda self: self.engine.proj_size, doc="Projection size (0: none).")
    state_size = property(lambda self: self.engine.state_size, doc="Features of the hidden state (P or H).")
    dtype = property(lambda self: self.engine.dtype, doc="float64 or float32.")
    batch_first = property(lambda self: self.engine.batch_first, doc="Batched x is (B, T, I).")
    cell = property(lambda self: self.engine.cell, doc="The cell variant (CellOptions).")

    def parameter_names(self) -> list[str]:
        """Names of the trainable arrays, in a fixed order."""
        return self.params.parameter_names()

    def parameters(self) -> dict[str, np.ndarray]:
        """The trainable arrays by name (views: writing into them updates the model)."""
        return self.params.parameters()

    @property
    def num_parameters(self) -> int:
        return self.engine.num_parameters

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this layer (weights aside), JSON-able."""
        cfg = self.engine.config()
        return {k: cfg[k] for k in ("input_size", "hidden_size", "batch_first", "proj_size", "cell")}

    def save(self, path: Any) -> Any:
        """Write to ``.npz`` (no pickle, atomically); read back with :meth:`load`."""
        return save_model(self, path)

    @classmethod
    def load(cls, path: Any, **kwargs: Any) -> LSTM:
        """Read an LSTM written by :meth:`save`; a malformed file raises WeightsFileError."""
        return load_model_of_kind(path, cls, **kwargs)

    def __repr__(self) -> str:
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        bf = ", batch_first=True" if self.batch_first else ""
        cell = "" if self.cell.is_default else f", cell={self.cell!r}"
        return (
            f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}{extra}, "
            f"dtype={self.dtype.name}{bf}{cell})"
        )

    # -------------------------------------------------------------- forward
    def _user_in(
        self, x: Any, h0: Any, c0: Any, lengths: Any, check_finite: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, _LayerLayout]:
        x3, batched = as_time_major(x, self.input_size, self.dtype, self.batch_first, check_finite)
        T, B, _ = x3.shape
        h, c, orientation = resolve_states(
            h0, c0, hidden_size=self.hidden_size, state_size=self.state_size, batch=B,
            batched=batched, dtype=self.dtype, check_finite=check_finite,
        )
        layout = _LayerLayout(orientation, np.shape(x), self.batch_first, T, B)
        return x3, h[None], c[None], check_lengths(lengths, B, T), layout

    def forward(
        self,
        x: Any,
        initial_hidden_state: Any = None,
        initial_cell_state: Any = None,
        *,
        lengths: Any = None,
        check_finite: bool = False,
        return_sequences: bool = True,
        train: bool = False,
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Run the LSTM over a sequence or a batch of sequences.

        Parameters
        ----------
        x : array_like
            ``(T,)`` (input_size 1), ``(T, I)``, or a batch ``(T, B, I)``
            (``(B, T, I)`` with ``batch_first``).  Ints are accepted and cast.
        initial_hidden_state, initial_cell_state : array_like, optional
            A column ``(H, 1)``, a vector ``(H,)`` or rows ``(B, H)``;
            zeros when omitted.  Results come back in the same orientation.
        lengths : array_like of int, optional
            Length of each sequence of a batch (see :meth:`StackedLSTM.forward`).
        check_finite : bool
            Raise ValueError if any input or state holds NaN or inf.
        return_sequences : bool
            If False, ``outputs`` is None and no per-step array is allocated.
        train : bool
            Record a tape for :meth:`backward` (kept as the layer's last tape;
            :meth:`forward_train` returns it explicitly instead).

        Returns
        -------
        outputs : ndarray or None
            The hidden state of every step: ``(T, H, 1)`` for column states,
            ``(T, H)`` for vector states or an unbatched ``x`` without
            states, ``(T, B, H)`` for rows (``(B, T, H)`` with batch_first).
        final_h, final_c : ndarray
            The last hidden and cell state, oriented like the given states.
        """
        if train:
            outputs, h, c, self._last_tape = self.forward_train(
                x, initial_hidden_state, initial_cell_state, lengths=lengths, check_finite=check_finite
            )
            return (outputs if return_sequences else None), h, c
        x3, h0, c0, lens, layout = self._user_in(x, initial_hidden_state, initial_cell_state, lengths, check_finite)
        seq, h_n, c_n, _ = self.engine._run(x3, h0, c0, lengths=lens, return_sequences=return_sequences)
        out = sequence_out(seq, layout.orientation, self.batch_first) if seq is not None else None
        return out, state_out(h_n[0], layout.orientation), state_out(c_n[0], layout.orientation)

    __call__ = forward

    def forward_train(
        self, x: Any, initial_hidden_state: Any = None, initial_cell_state: Any = None, *,
        lengths: Any = None, check_finite: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Tape]:
        """Like :meth:`forward`, returning ``(outputs, final_h, final_c, tape)`` for :meth:`backward`."""
        x3, h0, c0, lens, layout = self._user_in(x, initial_hidden_state, initial_cell_state, lengths, check_finite)
        seq, h_n, c_n, tape = self.engine._run(x3, h0, c0, lengths=lens, record=True)
        assert tape is not None and seq is not None
        tape.layout = layout
        out = np.array(sequence_out(seq, layout.orientation, self.batch_first))
        return out, state_out(h_n[0], layout.orientation), state_out(c_n[0], layout.orientation), tape

    def trace(self, x: Any, initial_hidden_state: Any = None, initial_cell_state: Any = None,
              *, lengths: Any = None) -> dict[str, np.ndarray]:
        """Every step's gate activations and states, for inspection and plots.

        Returns ``{"f", "i", "g", "o", "c", "h"}``: forget, input, candidate
        and output gates, cell and hidden state after each step, each shaped
        like ``forward``'s ``outputs`` for the same arguments (``h`` has P
        features with a projection).
        """
        x3, h0, c0, lens, layout = self._user_in(x, initial_hidden_state, initial_cell_state, lengths, False)
        named = self.engine._trace(x3, h0, c0, lengths=lens)[0][0]
        return {k: np.ascontiguousarray(sequence_out(v, layout.orientation, self.batch_first)) for k, v in named.items()}

    # ------------------------------------------------------------ streaming
    def initial_state(self, initial_hidden_state: Any = None, initial_cell_state: Any = None, *,
                      batch: int | None = None) -> StreamState:
        """Start a stream for :meth:`step`; states as for :meth:`forward` (zeros if omitted).

        ``batch`` sets the number of sequences when no states are given.
        """
        return initial_state(self.params, self.cell, initial_hidden_state, initial_cell_state, batch=batch)

    def step(self, x_t: Any, state: StreamState) -> np.ndarray:
        """One time step for streaming: updates ``state`` in place, returns ``h_t``.

        Allocates nothing per call when ``x_t`` is in the model's dtype.  The
        returned array is the state's own buffer (``state.hidden``); ``state.cell``
        holds ``c_t``.  Same numbers as :meth:`forward` over the whole sequence.
        """
        if state.params is not self.params:
            raise ValueError("this StreamState belongs to another LSTM")
        return step(state, x_t)

    # ------------------------------------------------------------- backward
    def backward(
        self, d_outputs: Any = None, d_h_n: Any = None, d_c_n: Any = None, *, tape: Tape | None = None
    ) -> dict[str, np.ndarray]:
        """Gradients of a loss through a training forward.

        Parameters
        ----------
        d_outputs : array_like, optional
            dL/d(outputs), shaped like the ``outputs`` that forward returned.
        d_h_n, d_c_n : array_like, optional
            dL/d(final_h) and dL/d(final_c), shaped like the states returned.
            Omitted gradients are zero.
        tape : Tape, optional
            From :meth:`forward_train`; by default the tape of the last
            ``forward(..., train=True)``.

        Returns
        -------
        dict
            ``Wf, Wi, Wc, Wo, bf, bi, bc, bo`` (and ``W_hr``) shaped like the
            parameters, plus ``x``, ``h_0`` and ``c_0`` shaped like the inputs
            and initial states of that forward.
        """
        if tape is None:
            tape = self._last_tape
            if tape is None:
                raise RuntimeError("backward needs a preceding forward(..., train=True) or a tape from forward_train")
        if not isinstance(tape, Tape) or tape.model is not self.engine or not isinstance(tape.layout, _LayerLayout):
            raise ValueError("this tape was not recorded by this LSTM")
        layout: _LayerLayout = tape.layout
        o = layout.orientation
        P, H = self.state_size, self.hidden_size
        out_shape = sequence_out(np.empty((layout.T, layout.B, P)), o, self.batch_first).shape
        h_shape = state_out(np.empty((layout.B, P)), o).shape
        c_shape = state_out(np.empty((layout.B, H)), o).shape

        def given(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
            if value is None:
                return None
            arr = as_real_array(value, name, self.dtype)
            if arr.shape != shape:
                raise ValueError(f"{name} must have the shape forward returned, {shape}; got {arr.shape}")
            return arr

        d_out = given(d_outputs, "d_outputs", out_shape)
        d_h = given(d_h_n, "d_h_n", h_shape)
        d_c = given(d_c_n, "d_c_n", c_shape)
        grads = self.engine._backward(
            tape,
            None if d_out is None else np.ascontiguousarray(sequence_in(d_out, o, self.batch_first)),
            None if d_h is None else state_in_rows(d_h, o, layout.B)[None],
            None if d_c is None else state_in_rows(d_c, o, layout.B)[None],
        )
        named = {name.split(".", 1)[1]: grads[name] for name in self.engine.parameters()}
        dx = grads["x"].transpose(1, 0, 2) if (len(layout.x_shape) == 3 and self.batch_first) else grads["x"]
        named["x"] = np.ascontiguousarray(dx).reshape(layout.x_shape)
        named["h_0"] = state_out(grads["h_0"][0], o).reshape(h_shape)
        named["c_0"] = state_out(grads["c_0"][0], o).reshape(c_shape)
        return named


# ------------------------------------------------------------ weight files
def _lstm_parameter_shapes(config: dict[str, Any], max_count: int | None = None) -> dict[str, tuple[int, ...]]:
    full = dict(config, num_layers=1, bidirectional=False, bias=True)
    return {name.split(".", 1)[1]: shape for name, shape in stack_parameter_shapes(full, max_count).items()}


def _lstm_from_config(config: dict[str, Any], dtype: Any) -> LSTM:
    cfg = dict(config)
    cell = cfg.pop("cell", None)
    return LSTM(cfg.pop("input_size"), cfg.pop("hidden_size"), seed=0, dtype=dtype,
                cell=CellOptions.from_config(cell) if cell is not None else None, **cfg)


register(LSTM, shapes=_lstm_parameter_shapes, build=_lstm_from_config)
