"""The stack: multi-layer, bidirectional LSTMs with torch.nn.LSTM's options and shapes.

:class:`StackedLSTM` owns the parameters (one :class:`~nplstm.params.DirectionParams`
per layer and direction), runs the layers, each direction through the loop
of :mod:`nplstm.loop`, records training tapes, backpropagates through them
and traces gates.  :class:`nplstm.LSTM` is the single-layer textbook face of
this same stack, and :class:`nplstm.SequenceModel` puts a head on it.

Two levels: :meth:`StackedLSTM.forward`, :meth:`~StackedLSTM.forward_train`
and :meth:`~StackedLSTM.backward` take and return the user's layout; the
private ``_run``, ``_backward`` and ``_trace`` work on checked time-major
arrays and serve the other faces (:class:`nplstm.LSTM`, the models).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .cell import DEFAULT_CELL, CellOptions
from .checks import dropout_rate, positive_int
from .loop import Packing, Trace, backward_direction, flip, run_direction
from .modelfile import load_model_of_kind, register, save_model
from .params import (
    DirectionParams,
    as_generator,
    check_model_size,
    init_scheme,
    model_dtype,
    parameter_prefix,
    stack_parameter_count,
    stack_parameter_shapes,
)
from .shapes import as_real_array, as_time_major, check_lengths

__all__ = ["StackedLSTM", "Tape", "StackLayout", "Packing", "stack_parameter_count", "stack_parameter_shapes", "STREAM_BLOCK"]

#: Steps a unidirectional stack runs through all its layers at a time when no
#: one needs every step of the lower layers: inference memory stays O(B·H)
#: however long the sequence.
STREAM_BLOCK = 256


@dataclass
class Tape:
    """What a training forward recorded, for :meth:`StackedLSTM.backward`.

    Made by :meth:`StackedLSTM.forward_train` (or a face built on it); each
    tape is independent: inference calls never touch it, and two tapes from
    two forwards give each its own gradients.  ``layout`` records how the
    user's arrays were shaped, so gradients come back in the same shapes.
    """

    model: Any
    inputs: list[np.ndarray] = field(default_factory=list)  # time-major input of each layer (sorted rows)
    traces: list[list[Trace]] = field(default_factory=list)  # the reverse direction's in its run order
    params: list[list[DirectionParams]] = field(default_factory=list)  # the parameters the forward used (frozen copies)
    masks: list[np.ndarray | None] = field(default_factory=list)  # between-layer dropout on each layer's outputs
    input_masks: list[list[np.ndarray | None]] = field(default_factory=list)  # (B, I) per layer and direction, sorted rows
    recurrent_masks: list[list[np.ndarray | None]] = field(default_factory=list)  # (B, P) likewise
    h0: np.ndarray | None = None
    c0: np.ndarray | None = None
    packing: Packing | None = None
    layout: Any = None


@dataclass(frozen=True)
class StackLayout:
    """How the user gave ``x`` to a stack: batched or one sequence, and its full shape."""

    batched: bool
    x_shape: tuple[int, ...]
    T: int
    B: int


class _DropoutRate:
    """A dropout probability, checked on every assignment (a rate of 1.5 would scale the kept units by -2)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, "_" + name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj, self.slot, dropout_rate(value, self.name))


class StackedLSTM:
    """An LSTM of ``num_layers`` layers, optionally bidirectional, like ``torch.nn.LSTM``.

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int
    bias : bool
        Without bias the gate biases stay zero, are read-only and are not parameters.
    batch_first : bool
        Batched ``x`` and outputs are ``(B, T, ·)`` instead of ``(T, B, ·)``.
    dropout : float
        torch's ``dropout``: on the outputs of every layer but the last, a
        fresh mask for every element and step, in training only.
    input_dropout : float
        Keras' ``dropout``: on each layer's inputs (the first layer's too),
        one mask per sequence and input feature, the same at every step, drawn
        separately for each direction; training only, inverted scaling 1/(1-p).
    recurrent_dropout : float
        Keras' ``recurrent_dropout`` (variational, Gal & Ghahramani 2016):
        one mask per sequence and state feature on ``h_{t-1}`` as it enters
        the recurrent product, the same at every step; the returned states
        are not dropped.  Training only; runs the NumPy step (the compiled
        engine has no masks).  The four gates share each mask (Keras 3 with
        ``recurrent_dropout`` draws one per gate).
    bidirectional : bool
    proj_size : int
        LSTMP projection size (0: none).
    cell : CellOptions, optional
        Cell variant (activations, clip, peepholes, coupled input-forget gate);
        the standard cell by default.
    seed : int, numpy.random.Generator or None
        Source of the initial weights and of dropout.
    dtype : float64 or float32
    init : {"textbook", "torch", "keras"}
        How the weights start (:data:`nplstm.params.INIT_SCHEMES`).  The
        default, "textbook", keeps this stack's historic start (weights
        uniform(-1/√H, 1/√H), zero biases: what :class:`nplstm.LSTM` promises);
        to train a stack directly, "torch" (uniform biases too, as a fresh
        ``torch.nn.LSTM``) or "keras" (orthogonal recurrent kernel, forget
        bias 1) start where those libraries do.

    Attributes
    ----------
    layers : list of list of DirectionParams
        ``layers[l][d]``: layer ``l``, direction ``d`` (1 = reverse), with
        public assignable ``Wf, Wi, Wc, Wo``, ``bf, bi, bc, bo`` (and ``W_hr``,
        ``Pi, Pf, Po``).
    """

    KIND = "StackedLSTM"
    dropout = _DropoutRate()
    input_dropout = _DropoutRate()
    recurrent_dropout = _DropoutRate()

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        cell: CellOptions | None = None,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | np.random.Generator | None = None,
        dtype: Any = np.float64,
        init: str = "textbook",
    ) -> None:
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_layers = positive_int(num_layers, "num_layers")
        self.proj_size = positive_int(proj_size, "proj_size", minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size {hidden_size}; got {proj_size}")
        self.dropout = dropout  # checked on assignment (_DropoutRate)
        if cell is not None and not isinstance(cell, CellOptions):
            raise TypeError(f"cell must be an nplstm.cell.CellOptions or None; got {type(cell).__name__}")
        self.cell = cell if cell is not None else DEFAULT_CELL
        if self.dropout and num_layers == 1:
            warnings.warn(f"dropout={self.dropout} acts between layers, so it does nothing with num_layers=1 "
                          "(input_dropout and recurrent_dropout act within a layer)", UserWarning, stacklevel=2)
        self.input_dropout = input_dropout
        self.recurrent_dropout = recurrent_dropout
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dtype = model_dtype(dtype)
        self._rng = as_generator(seed)
        init = init_scheme(init)
        D, P = self.num_directions, self.state_size
        count = stack_parameter_count(self.input_size, self.hidden_size, self.num_layers, bidirectional=self.bidirectional,
                                      proj_size=self.proj_size, bias=self.bias, peepholes=self.cell.peepholes)
        check_model_size(count, self.num_layers * D, self.dtype.itemsize, f"{type(self).__name__} of this size")
        self.layers = [[DirectionParams(self.input_size if l == 0 else D * P, self.hidden_size, proj_size=self.proj_size,
                                        peepholes=self.cell.peepholes, bias=self.bias, rng=self._rng, dtype=self.dtype,
                                        init=init)
                        for _ in range(D)] for l in range(self.num_layers)]

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def state_size(self) -> int:
        """Features of the hidden state: proj_size if projecting, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def output_size(self) -> int:
        """Features of each output step: num_directions · state_size."""
        return self.num_directions * self.state_size

    def _cells(self) -> Iterator[tuple[int, int, int, DirectionParams]]:
        """Yield ``(k, layer, direction, params)`` with k = layer·D + direction, torch's h_n index."""
        for l, pair in enumerate(self.layers):
            for d, params in enumerate(pair):
                yield l * self.num_directions + d, l, d, params

    def parameters(self) -> dict[str, np.ndarray]:
        """Trainable arrays (views) named ``l{layer}[_reverse].{Wf,...}``."""
        return {
            parameter_prefix(l, d) + name: value
            for _, l, d, params in self._cells()
            for name, value in params.parameters().items()
        }

    @property
    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters().values()))

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this stack (weights aside), JSON-able.

        ``input_dropout`` and ``recurrent_dropout`` appear only when not zero,
        so a file without them is what earlier versions wrote and read.
        """
        config = {
            "input_size": self.input_size, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
            "bias": self.bias, "batch_first": self.batch_first, "dropout": self.dropout,
            "bidirectional": self.bidirectional, "proj_size": self.proj_size, "cell": self.cell.to_config(),
        }
        config.update({name: rate for name, rate in self._variational_rates().items() if rate})
        return config

    def _variational_rates(self) -> dict[str, float]:
        return {"input_dropout": self.input_dropout, "recurrent_dropout": self.recurrent_dropout}

    def __repr__(self) -> str:
        cell = "" if self.cell.is_default else f", cell={self.cell!r}"
        rates = "".join(f", {name}={rate}" for name, rate in self._variational_rates().items() if rate)
        return (
            f"StackedLSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
            f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}{rates}, "
            f"bidirectional={self.bidirectional}, proj_size={self.proj_size}{cell}, dtype={self.dtype.name})"
        )

    # --------------------------------------------------------------- files
    def save(self, path: Any) -> Any:
        """Write to ``.npz`` (no pickle, atomically); read back with :meth:`load` or ``nplstm.loading.load_model``."""
        return save_model(self, path)

    @classmethod
    def load(cls, path: Any, **kwargs: Any) -> StackedLSTM:
        """Read a stack written by :meth:`save`; a malformed file raises WeightsFileError."""
        return load_model_of_kind(path, cls, **kwargs)

    # -------------------------------------------------------- user layout
    def _user_in(
        self, x: Any, hx: Any, lengths: Any, check_finite: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, StackLayout]:
        x3, batched = as_time_major(x, self.input_size, self.dtype, self.batch_first, check_finite)
        T, B, _ = x3.shape
        LD = self.num_layers * self.num_directions
        shapes = {"h_0": (LD, B, self.state_size), "c_0": (LD, B, self.hidden_size)}
        if hx is None:
            h0, c0 = (np.zeros(s, dtype=self.dtype) for s in shapes.values())
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx must be a pair (h_0, c_0); got {type(hx).__name__}")
            states = []
            for (name, shape), value in zip(shapes.items(), hx):
                arr = as_real_array(value, name, self.dtype, check_finite)
                expected = shape if batched else (shape[0], shape[2])
                if arr.shape != expected:
                    raise ValueError(f"{name} must have shape {expected}; got {arr.shape}")
                states.append(arr.reshape(shape))
            h0, c0 = states
        return x3, h0, c0, check_lengths(lengths, B, T), StackLayout(batched, np.shape(x), T, B)

    def _user_out(self, seq: np.ndarray | None, layout: StackLayout) -> np.ndarray | None:
        if seq is None:
            return None
        if not layout.batched:
            return seq[:, 0]
        return np.ascontiguousarray(seq.transpose(1, 0, 2)) if self.batch_first else seq

    def _user_states(self, h: np.ndarray, c: np.ndarray, layout: StackLayout) -> tuple[np.ndarray, np.ndarray]:
        return (h, c) if layout.batched else (h[:, 0], c[:, 0])

    def forward(
        self, x: Any, hx: tuple[Any, Any] | None = None, *, lengths: Any = None,
        return_sequences: bool = True, check_finite: bool = False,
    ) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
        """Run the stack; returns ``(outputs, (h_n, c_n))`` with torch's shapes.

        Parameters
        ----------
        x : array_like
            ``(T, B, I)`` (``(B, T, I)`` with batch_first) or one sequence ``(T, I)``.
        hx : (h_0, c_0), optional
            Shapes ``(L·D, B, P)`` and ``(L·D, B, H)`` (no B for one sequence); zeros if omitted.
        lengths : array_like of int, optional
            Length of each sequence (B,), 0 < length <= T: outputs past it are zero,
            final states are those at its last step, and the reverse direction
            starts there (``pack_padded_sequence`` semantics).
        return_sequences : bool
            If False, ``outputs`` is None and memory stays O(B·H) for a
            unidirectional stack, however long the sequence.
        check_finite : bool
            Refuse NaN or inf in the inputs.

        Returns
        -------
        outputs : ``(T, B, D·P)`` (``(B, T, D·P)`` with batch_first) or None
        (h_n, c_n) : ``(L·D, B, P)``, ``(L·D, B, H)``
        """
        x3, h0, c0, lengths, layout = self._user_in(x, hx, lengths, check_finite)
        outputs, h_n, c_n, _ = self._run(x3, h0, c0, lengths=lengths, return_sequences=return_sequences)
        return self._user_out(outputs, layout), self._user_states(h_n, c_n, layout)

    __call__ = forward

    def forward_train(
        self, x: Any, hx: tuple[Any, Any] | None = None, *, lengths: Any = None, check_finite: bool = False,
        rng: int | np.random.Generator | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], Tape]:
        """Like :meth:`forward` with dropout applied, also returning the :class:`Tape` for :meth:`backward`.

        ``rng`` (a Generator or an int seed) draws the dropout masks; by
        default the stack's own generator (from its ``seed``) does.  The tape
        keeps the masks, so :meth:`backward` differentiates the very function
        this forward computed; the same seed gives the same masks.
        """
        x3, h0, c0, lengths, layout = self._user_in(x, hx, lengths, check_finite)
        source = self._rng if rng is None else as_generator(rng, "rng")
        outputs, h_n, c_n, tape = self._run(x3, h0, c0, lengths=lengths, record=True, dropout=True, rng=source)
        assert tape is not None and outputs is not None
        tape.layout = layout
        seq = self._user_out(outputs, layout)
        assert seq is not None
        return seq.copy(), self._user_states(h_n, c_n, layout), tape

    def backward(self, tape: Tape, d_outputs: Any = None, d_h_n: Any = None, d_c_n: Any = None) -> dict[str, np.ndarray]:
        """Gradients of a loss through the forward that recorded ``tape``.

        Arguments are dL/d(what :meth:`forward_train` returned), in the same
        shapes (None: zero).  Returns gradients named as in :meth:`parameters`,
        plus ``x``, ``h_0`` and ``c_0``.
        """
        layout = self._check_tape(tape, StackLayout)
        T, B = layout.T, layout.B
        LD, P, H = self.num_layers * self.num_directions, self.state_size, self.hidden_size
        D = self.num_directions

        def given(value: Any, name: str, internal: tuple[int, ...]) -> np.ndarray | None:
            if value is None:
                return None
            if layout.batched:
                user = ((B, T, internal[2]) if self.batch_first else internal) if name == "d_outputs" else internal
            else:
                user = (internal[0], internal[2])
            arr = as_real_array(value, name, self.dtype)
            if arr.shape != user:
                raise ValueError(f"{name} must have the shape forward returned, {user}; got {arr.shape}")
            if layout.batched and self.batch_first and name == "d_outputs":
                return arr.transpose(1, 0, 2)
            return arr.reshape(internal)

        grads = self._backward(
            tape,
            given(d_outputs, "d_outputs", (T, B, D * P)),
            given(d_h_n, "d_h_n", (LD, B, P)),
            given(d_c_n, "d_c_n", (LD, B, H)),
        )
        dx = grads["x"]
        if layout.batched and self.batch_first:
            dx = dx.transpose(1, 0, 2)
        grads["x"] = np.ascontiguousarray(dx).reshape(layout.x_shape)
        if not layout.batched:
            grads["h_0"], grads["c_0"] = grads["h_0"][:, 0], grads["c_0"][:, 0]
        return grads

    def _check_tape(self, tape: Any, layout: type | None = None) -> Any:
        if not isinstance(tape, Tape):
            raise TypeError(f"backward needs the Tape returned by forward_train; got {type(tape).__name__}")
        if tape.model is not self:
            raise ValueError("this tape was recorded by another model")
        if layout is not None and not isinstance(tape.layout, layout):
            raise ValueError("this tape was recorded through another face of the model (e.g. LSTM.forward_train): "
                             "give it to that face's backward")
        return tape.layout

    def trace(self, x: Any, hx: tuple[Any, Any] | None = None, *, lengths: Any = None) -> list[list[dict[str, np.ndarray]]]:
        """Gate activations and states of every layer and direction (no dropout).

        ``result[l][d]`` is ``{"f", "i", "g", "o", "c", "h"}``, each shaped like
        :meth:`forward`'s outputs (time-major, batch-first or one sequence as
        given), indexed by original time also for the reverse direction;
        zero past each sequence's length.
        """
        x3, h0, c0, lengths, layout = self._user_in(x, hx, lengths, False)
        return [
            [{k: self._user_out(v, layout) for k, v in named.items()} for named in layer]  # type: ignore[misc]
            for layer in self._trace(x3, h0, c0, lengths=lengths)
        ]

    # ----------------------------------------------------------- time-major
    def _run(
        self,
        x: np.ndarray,
        h0: np.ndarray,
        c0: np.ndarray,
        *,
        lengths: np.ndarray | None = None,
        record: bool = False,
        dropout: bool = False,
        rng: np.random.Generator | None = None,
        return_sequences: bool = True,
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, Tape | None]:
        """The engine on checked time-major arrays: ``x`` (T, B, I), ``h0`` (L·D, B, P), ``c0`` (L·D, B, H).

        ``lengths`` must come from :func:`nplstm.shapes.check_lengths` (None
        when every sequence is full).  Returns ``(outputs (T, B, D·P) or None,
        h_n, c_n, tape or None)``; ``record`` keeps a :class:`Tape` (and the
        outputs), ``dropout`` (with ``record``) applies every dropout the stack
        is configured with, masks drawn from ``rng`` (the stack's own by default).
        """
        assert record or not dropout, "dropout needs a tape to keep its masks"
        rng = self._rng if rng is None else rng
        T, B, _ = x.shape
        D, P, H, L = self.num_directions, self.state_size, self.hidden_size, self.num_layers
        packing = Packing.of(lengths, T) if lengths is not None else None
        if packing is not None:
            x, h0, c0 = x[:, packing.order], h0[:, packing.order], c0[:, packing.order]
        if record:
            # The tape owns its input: the caller may reuse its buffer before backward.
            # Padding is zeroed: whatever it holds (NaN included) must not reach the gradients.
            x = np.array(x, copy=True) if packing is None else x
            if packing is not None:
                x[np.arange(T)[:, None] >= packing.lengths[None, :]] = 0
        h_n = np.array(h0, dtype=self.dtype, order="C", copy=True)
        c_n = np.array(c0, dtype=self.dtype, order="C", copy=True)
        tape = None
        if record:
            tape = Tape(self, h0=h_n.copy(), c0=c_n.copy(), packing=packing,
                        params=[[p.snapshot() for p in pair] for pair in self.layers])
        keep = return_sequences or record
        outputs = np.empty((T, B, D * P), dtype=self.dtype) if keep else None
        # A unidirectional stack in inference runs block by block through all
        # layers, so lower layers never hold more than a block of steps.
        block = T if (record or D == 2) else min(T, STREAM_BLOCK)
        buffers = [np.empty((block, B, D * P), dtype=self.dtype) for _ in range(L - 1)] if not record else []
        for start in range(0, max(T, 1), max(block, 1)):  # T = 0 still records empty layers
            stop = min(T, start + block)
            layer_input = x[start:stop]
            for l in range(L):
                last = l == L - 1
                if last:
                    out = outputs[start:stop] if outputs is not None else None
                elif record:
                    out = np.empty((T, B, D * P), dtype=self.dtype)
                else:
                    out = buffers[l][: stop - start]
                traces, input_masks, recurrent_masks = [], [], []
                for d, params in enumerate(self.layers[l]):
                    k = l * D + d
                    trace = (
                        Trace.empty(T, B, H, P, self.dtype, projection=bool(self.proj_size), general=not self.cell.is_default)
                        if record else None
                    )
                    m = self._sequence_mask(rng, self.input_dropout, layer_input.shape[2], B, packing) if dropout else None
                    r = self._sequence_mask(rng, self.recurrent_dropout, P, B, packing) if dropout else None
                    run_direction(layer_input if m is None else layer_input * m, params, h_n[k], c_n[k], reverse=d == 1,
                                  packing=packing, start=start, outputs=None if out is None else out[:, :, d * P : (d + 1) * P],
                                  trace=trace, cell=self.cell, recurrent_mask=r)
                    traces.append(trace)
                    input_masks.append(m)
                    recurrent_masks.append(r)
                mask = None
                if dropout and self.dropout and not last and out is not None:
                    mask = (rng.random(out.shape) >= self.dropout).astype(self.dtype) / (1.0 - self.dropout)
                    out *= mask
                if tape is not None:
                    tape.inputs.append(layer_input)
                    tape.traces.append(traces)  # type: ignore[arg-type]
                    tape.masks.append(mask)
                    tape.input_masks.append(input_masks)
                    tape.recurrent_masks.append(recurrent_masks)
                if out is not None:
                    layer_input = out
        if packing is not None:
            outputs = outputs[:, packing.inverse] if outputs is not None else None
            h_n, c_n = h_n[:, packing.inverse], c_n[:, packing.inverse]
        return outputs, h_n, c_n, tape

    def _sequence_mask(self, rng: np.random.Generator, rate: float, width: int, B: int,
                       packing: Packing | None) -> np.ndarray | None:
        """A (B, width) inverted-dropout mask (None at rate 0), drawn in the caller's row order, returned in the run's."""
        if not rate:
            return None
        mask = (rng.random((B, width)) >= rate).astype(self.dtype) / (1.0 - rate)
        return mask if packing is None else mask[packing.order]

    def _backward(
        self, tape: Tape, d_outputs: np.ndarray | None, d_h_n: np.ndarray | None, d_c_n: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """BPTT through ``tape`` with time-major gradients (rows in the user's order)."""
        self._check_tape(tape)
        packing = tape.packing
        D, P = self.num_directions, self.state_size
        if packing is not None:
            d_outputs = None if d_outputs is None else d_outputs[:, packing.order]
            d_h_n = None if d_h_n is None else d_h_n[:, packing.order]
            d_c_n = None if d_c_n is None else d_c_n[:, packing.order]
        assert tape.h0 is not None and tape.c0 is not None
        grads: dict[str, np.ndarray] = {}
        dh0 = np.zeros_like(tape.h0)
        dc0 = np.zeros_like(tape.c0)
        d_out = d_outputs
        for l in range(self.num_layers - 1, -1, -1):
            layer_input = tape.inputs[l]
            mask = tape.masks[l]
            if d_out is not None and mask is not None:
                d_out = d_out * mask
            d_input = np.zeros(layer_input.shape, dtype=self.dtype)
            for d, params in enumerate(tape.params[l]):  # the parameters of the forward, not today's
                k = l * D + d
                m = tape.input_masks[l][d]  # the direction read layer_input ⊙ m
                g = backward_direction(layer_input if m is None else layer_input * m, params, tape.h0[k], tape.c0[k],
                                       tape.traces[l][d], None if d_out is None else d_out[:, :, d * P : (d + 1) * P],
                                       None if d_h_n is None else d_h_n[k], None if d_c_n is None else d_c_n[k],
                                       reverse=d == 1, packing=packing, cell=self.cell,
                                       recurrent_mask=tape.recurrent_masks[l][d])
                d_input += g.x if m is None else g.x * m
                dh0[k], dc0[k] = g.h0, g.c0
                named = params.named_gradients(g.W_x, g.W_h, g.b, g.W_hr, g.P)
                grads.update({parameter_prefix(l, d) + name: value for name, value in named.items()})
            d_out = d_input
        assert d_out is not None
        if packing is not None:
            d_out, dh0, dc0 = d_out[:, packing.inverse], dh0[:, packing.inverse], dc0[:, packing.inverse]
        ordered = {name: grads[name] for name in self.parameters()}
        ordered.update(x=d_out, h_0=dh0, c_0=dc0)
        return ordered

    def _trace(
        self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, *, lengths: np.ndarray | None = None
    ) -> list[list[dict[str, np.ndarray]]]:
        """Per layer and direction ``{"f", "i", "g", "o", "c", "h"}``, each (T, B, ·), original time and row order."""
        _, _, _, tape = self._run(x, h0, c0, lengths=lengths, record=True)
        assert tape is not None
        packing = tape.packing

        def original_order(v: np.ndarray, d: int) -> np.ndarray:  # time as given, rows as given
            v = np.array(flip(v, packing) if d == 1 else v)
            return v if packing is None else v[:, packing.inverse]

        return [[{k: original_order(v, d) for k, v in trace.named().items()} for d, trace in enumerate(layer)]
                for layer in tape.traces]


# ------------------------------------------------------------ weight files
def _stack_from_config(config: dict[str, Any], dtype: Any) -> StackedLSTM:
    cfg = dict(config)
    cell = cfg.pop("cell", None)
    return StackedLSTM(**cfg, cell=CellOptions.from_config(cell) if cell is not None else None, seed=0, dtype=dtype)


register(StackedLSTM, shapes=stack_parameter_shapes, build=_stack_from_config)
