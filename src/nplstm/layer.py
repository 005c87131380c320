"""The single-layer :class:`LSTM`: public weights, shapes, forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backward import FusedGradients, backward_sequence
from .cell import GATE_ORDER, GATE_SUFFIX, Trace, named_activations, run_sequence
from .stream import StreamState, initial_state, step
from .shapes import (
    Orientation,
    as_real_array,
    as_time_major,
    resolve_states,
    sequence_in,
    sequence_out,
    state_in_rows,
    state_out,
)

_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def model_dtype(dtype: Any) -> np.dtype:
    """Validate a model dtype: float64 or float32."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float64 or float32; got {dtype!r}") from exc
    if dt not in _DTYPES:
        raise TypeError(f"dtype must be float64 or float32; got {dt}")
    return dt


def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A Generator from an int seed, a Generator, or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


class _GateArray:
    """Descriptor exposing one gate's slice of the fused storage.

    Reading gives a view, so in-place writes (``lstm.Wf[0, 0] = 1``) land in
    the fused array; assigning copies into it after a shape check.  Either
    way the next forward sees it, and nothing needs re-fusing.
    """

    def __init__(self, kind: str, gate: str) -> None:
        self.kind = kind  # "W" or "b"
        self.index = GATE_ORDER.index(gate)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: LSTM | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if self.kind == "W":
            return obj._WT[:, self.index, :].T
        return obj._b[self.index]

    def __set__(self, obj: LSTM, value: Any) -> None:
        target = self.__get__(obj)
        arr = as_real_array(value, self.name, obj.dtype)
        if self.kind == "b" and arr.shape == (target.shape[0],):
            arr = arr[:, None]
        if arr.shape != target.shape:
            extra = f" or ({target.shape[0]},)" if self.kind == "b" else ""
            raise ValueError(f"{self.name} must have shape {target.shape}{extra}; got {arr.shape}")
        target[...] = arr


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

    Attributes
    ----------
    Wf, Wi, Wc, Wo : (H, H + I) arrays
        Forget, input, candidate and output gate weights acting on
        ``[h_{t-1}; x_t]``.  Assign or write in place freely.
    bf, bi, bc, bo : (H, 1) arrays
        Their biases.
    W_hr : (P, H) array or None
        The projection, when ``proj_size > 0``.
    """

    Wf = _GateArray("W", "f")
    Wi = _GateArray("W", "i")
    Wc = _GateArray("W", "g")
    Wo = _GateArray("W", "o")
    bf = _GateArray("b", "f")
    bi = _GateArray("b", "i")
    bc = _GateArray("b", "g")
    bo = _GateArray("b", "o")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        seed: int | np.random.Generator | None = None,
        dtype: Any = np.float64,
        *,
        batch_first: bool = False,
        proj_size: int = 0,
    ) -> None:
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.proj_size = _positive_int(proj_size, "proj_size", minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size {hidden_size}; got {proj_size}")
        self.dtype = model_dtype(dtype)
        self.batch_first = bool(batch_first)
        H, I, P = self.hidden_size, self.input_size, self.state_size
        rng = as_generator(seed)
        bound = 1.0 / np.sqrt(H)
        # Fused storage, transposed: _WT (P + I, 4, H) so that its reshape to
        # (P + I, 4H) is the contiguous right-hand side of z @ Wᵀ (what BLAS and
        # the compiled kernels want).  Gate k of GATE_ORDER is _WT[:, k, :].T,
        # a (H, P + I) view, and its bias _b[k] (H, 1).
        W = rng.uniform(-bound, bound, size=(4, H, P + I)).astype(self.dtype)
        self._WT = np.ascontiguousarray(W.transpose(2, 0, 1))
        self._b = np.zeros((4, H, 1), dtype=self.dtype)
        self._W_hr = (
            rng.uniform(-bound, bound, size=(P, H)).astype(self.dtype) if self.proj_size else None
        )
        self._cache: dict[str, Any] | None = None

    # ----------------------------------------------------------- parameters
    @property
    def state_size(self) -> int:
        """Features of the hidden state: proj_size if projecting, else H."""
        return self.proj_size or self.hidden_size

    @property
    def W_hr(self) -> np.ndarray | None:
        return self._W_hr

    @W_hr.setter
    def W_hr(self, value: Any) -> None:
        if self._W_hr is None:
            raise AttributeError("W_hr exists only when proj_size > 0")
        arr = as_real_array(value, "W_hr", self.dtype)
        if arr.shape != self._W_hr.shape:
            raise ValueError(f"W_hr must have shape {self._W_hr.shape}; got {arr.shape}")
        self._W_hr[...] = arr

    def parameter_names(self) -> list[str]:
        """Names of the trainable arrays, in a fixed order."""
        names = [f"W{GATE_SUFFIX[g]}" for g in "figo"] + [f"b{GATE_SUFFIX[g]}" for g in "figo"]
        return names + (["W_hr"] if self.proj_size else [])

    def parameters(self) -> dict[str, np.ndarray]:
        """The trainable arrays by name (views: writing into them updates the model)."""
        return {name: getattr(self, name) for name in self.parameter_names()}

    def fused_T(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Contiguous views ``(W_xᵀ (I, 4H), W_hᵀ (P, 4H), b (4H,))``, gates in :data:`GATE_ORDER`."""
        P, H4 = self.state_size, 4 * self.hidden_size
        WT = self._WT.reshape(-1, H4)
        return WT[P:], WT[:P], self._b.reshape(H4)

    @property
    def num_parameters(self) -> int:
        return int(self._WT.size + self._b.size + (self._W_hr.size if self.proj_size else 0))

    def __repr__(self) -> str:
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        bf = ", batch_first=True" if self.batch_first else ""
        return (
            f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}{extra}, "
            f"dtype={self.dtype.name}{bf})"
        )

    # -------------------------------------------------------------- forward
    def _prepare(
        self, x: Any, h0: Any, c0: Any, check_finite: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Orientation]:
        x3, batched = as_time_major(x, self.input_size, self.dtype, self.batch_first, check_finite)
        h, c, orientation = resolve_states(
            h0,
            c0,
            hidden_size=self.hidden_size,
            state_size=self.state_size,
            batch=x3.shape[1],
            batched=batched,
            dtype=self.dtype,
            check_finite=check_finite,
        )
        return x3, h, c, orientation

    def run_time_major(
        self,
        x: np.ndarray,
        h0: np.ndarray,
        c0: np.ndarray,
        *,
        outputs: np.ndarray | None = None,
        trace: Trace | None = None,
        reverse: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run on already-validated time-major arrays (for stacks and training).

        ``x`` (T, B, I), ``h0`` (B, P), ``c0`` (B, H) in the model's dtype.
        With ``reverse`` the sequence is read from the last step to the first;
        ``outputs`` and ``trace`` are still indexed by original time.
        """
        W_xT, W_hT, b = self.fused_T()
        if reverse:
            x = x[::-1]
            outputs = outputs[::-1] if outputs is not None else None
            trace = trace.reversed() if trace is not None else None
        return run_sequence(x, W_xT, W_hT, b, h0, c0, outputs=outputs, trace=trace, W_hr=self._W_hr)

    # ------------------------------------------------------------ streaming
    def initial_state(self, initial_hidden_state: Any = None, initial_cell_state: Any = None, *, batch: int | None = None) -> StreamState:
        """Start a stream for :meth:`step`; states as for :meth:`forward` (zeros if omitted).

        ``batch`` sets the number of sequences when no states are given.
        """
        return initial_state(self, initial_hidden_state, initial_cell_state, batch=batch)

    def step(self, x_t: Any, state: StreamState) -> np.ndarray:
        """One time step for streaming: updates ``state`` in place, returns ``h_t``.

        Allocates nothing per call when ``x_t`` is in the model's dtype.  The
        returned array is the state's own buffer (``state.hidden``); ``state.cell``
        holds ``c_t``.  Same numbers as :meth:`forward` over the whole sequence.
        """
        if state.lstm is not self:
            raise ValueError("this StreamState belongs to another LSTM")
        return step(state, x_t)

    def new_trace(self, T: int, B: int) -> Trace:
        """Empty buffers for recording a forward pass of T steps, batch B."""
        H, P, dt = self.hidden_size, self.state_size, self.dtype
        return Trace(
            gates=np.empty((T, B, 4 * H), dtype=dt),
            c=np.empty((T, B, H), dtype=dt),
            h=np.empty((T, B, P), dtype=dt),
            h_full=np.empty((T, B, H), dtype=dt) if self.proj_size else None,
        )

    def forward(
        self,
        x: Any,
        initial_hidden_state: Any = None,
        initial_cell_state: Any = None,
        *,
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
        check_finite : bool
            Raise ValueError if any input or state holds NaN or inf.
        return_sequences : bool
            If False, ``outputs`` is None and no per-step array is allocated.
        train : bool
            Keep what :meth:`backward` needs.

        Returns
        -------
        outputs : ndarray or None
            The hidden state of every step: ``(T, H, 1)`` for column states,
            ``(T, H)`` for vector states or an unbatched ``x`` without
            states, ``(T, B, H)`` for rows (``(B, T, H)`` with batch_first).
        final_h, final_c : ndarray
            The last hidden and cell state, oriented like the given states.
        """
        x3, h0, c0, orientation = self._prepare(x, initial_hidden_state, initial_cell_state, check_finite)
        T, B, _ = x3.shape
        trace = self.new_trace(T, B) if train else None
        outputs = None
        if trace is not None:
            outputs = trace.h
        elif return_sequences:
            outputs = np.empty((T, B, self.state_size), dtype=self.dtype)
        h, c = self.run_time_major(x3, h0, c0, outputs=outputs, trace=trace)
        self._cache = (
            {
                "x": x3,
                "x_shape": np.shape(x),
                "h0": h0,
                "c0": c0,
                "trace": trace,
                "orientation": orientation,
            }
            if train
            else None
        )
        seq = sequence_out(outputs, orientation, self.batch_first) if return_sequences else None
        if train and seq is not None:
            seq = seq.copy()  # the trace must not change if the caller edits outputs
        return seq, state_out(h, orientation), state_out(c, orientation)

    __call__ = forward

    def trace(self, x: Any, initial_hidden_state: Any = None, initial_cell_state: Any = None) -> dict[str, np.ndarray]:
        """Every step's gate activations and states, for inspection and plots.

        Returns ``{"f", "i", "g", "o", "c", "h"}``: forget, input, candidate
        and output gates, cell and hidden state after each step, each shaped
        like ``forward``'s ``outputs`` for the same arguments (``h`` has P
        features with a projection).
        """
        x3, h0, c0, orientation = self._prepare(x, initial_hidden_state, initial_cell_state, False)
        trace = self.new_trace(*x3.shape[:2])
        self.run_time_major(x3, h0, c0, outputs=trace.h, trace=trace)
        return {k: np.ascontiguousarray(sequence_out(v, orientation, self.batch_first)) for k, v in named_activations(trace).items()}

    # ------------------------------------------------------------- backward
    def backward_time_major(
        self,
        x: np.ndarray,
        h0: np.ndarray,
        c0: np.ndarray,
        trace: Trace,
        d_outputs: np.ndarray | None,
        d_final_h: np.ndarray | None = None,
        d_final_c: np.ndarray | None = None,
        *,
        reverse: bool = False,
    ) -> FusedGradients:
        """BPTT on time-major arrays recorded by :meth:`run_time_major`."""
        W_xT, W_hT, _ = self.fused_T()
        if reverse:
            x = x[::-1]
            d_outputs = d_outputs[::-1] if d_outputs is not None else None
            trace = trace.reversed()
        grads = backward_sequence(x, W_xT.T, W_hT.T, self._W_hr, h0, c0, trace, d_outputs, d_final_h, d_final_c)
        if reverse:
            grads.x = grads.x[::-1]
        return grads

    def named_gradients(self, grads: FusedGradients) -> dict[str, np.ndarray]:
        """Split fused parameter gradients into ``{"Wf": ..., "bf": ..., ...}``."""
        H, P = self.hidden_size, self.state_size
        dW = np.concatenate(
            [grads.W_h.reshape(4, H, P), grads.W_x.reshape(4, H, self.input_size)], axis=2
        )
        db = grads.b.reshape(4, H, 1)
        named = {}
        for k, gate in enumerate(GATE_ORDER):
            named[f"W{GATE_SUFFIX[gate]}"] = dW[k]
            named[f"b{GATE_SUFFIX[gate]}"] = db[k]
        if self.proj_size:
            named["W_hr"] = grads.W_hr
        return {name: named[name] for name in self.parameter_names()}

    def backward(
        self, d_outputs: Any = None, d_final_h: Any = None, d_final_c: Any = None
    ) -> dict[str, np.ndarray]:
        """Gradients of a loss through the last ``forward(..., train=True)``.

        Parameters
        ----------
        d_outputs : array_like, optional
            dL/d(outputs), shaped like the ``outputs`` that forward returned.
        d_final_h, d_final_c : array_like, optional
            dL/d(final_h) and dL/d(final_c), shaped like the states returned.
            Omitted gradients are zero.

        Returns
        -------
        dict
            ``Wf, Wi, Wc, Wo, bf, bi, bc, bo`` (and ``W_hr``) shaped like the
            parameters, plus ``x``, ``h0`` and ``c0`` shaped like the inputs
            and initial states of that forward.
        """
        if self._cache is None:
            raise RuntimeError("backward needs a preceding forward(..., train=True)")
        cache = self._cache
        x3, trace, orientation = cache["x"], cache["trace"], cache["orientation"]
        B = x3.shape[1]
        out_shape = sequence_out(trace.h, orientation, self.batch_first).shape
        state_shapes = {"h": state_out(cache["h0"], orientation).shape, "c": state_out(cache["c0"], orientation).shape}

        def given(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
            if value is None:
                return None
            arr = as_real_array(value, name, self.dtype)
            if arr.shape != shape:
                raise ValueError(f"{name} must have the shape forward returned, {shape}; got {arr.shape}")
            return arr

        d_out = given(d_outputs, "d_outputs", out_shape)
        d_h = given(d_final_h, "d_final_h", state_shapes["h"])
        d_c = given(d_final_c, "d_final_c", state_shapes["c"])
        grads = self.backward_time_major(
            x3,
            cache["h0"],
            cache["c0"],
            trace,
            sequence_in(d_out, orientation, self.batch_first) if d_out is not None else None,
            state_in_rows(d_h, orientation, B) if d_h is not None else None,
            state_in_rows(d_c, orientation, B) if d_c is not None else None,
        )
        named = self.named_gradients(grads)
        dx = grads.x.transpose(1, 0, 2) if (len(cache["x_shape"]) == 3 and self.batch_first) else grads.x
        named["x"] = np.ascontiguousarray(dx).reshape(cache["x_shape"])
        named["h0"] = state_out(grads.h0, orientation).reshape(state_shapes["h"])
        named["c0"] = state_out(grads.c0, orientation).reshape(state_shapes["c"])
        return named
