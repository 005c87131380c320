"""The loop over time: one layer and direction, forward and backward, with lengths and directions.

* :func:`run_sequence` runs the step (:func:`nplstm.cell.step_`) over
  time-major inputs; :func:`backward_sequence` runs its derivative
  (:func:`nplstm.cell.step_backward_`) back over the same steps.  The input
  projections, and in backward the weight and input gradients, are one GEMM
  each over many steps; only the recurrent product runs per step (at small H
  the inputs ride in that product instead: one call per step, not two).
* The compiled engine (:mod:`nplstm.kernels`) is another implementation of
  these two loops for the standard cell; this module is the only one that
  calls it, when :func:`nplstm.kernels.use_kernel` says so.
* Lengths follow ``torch.nn.utils.rnn.pack_padded_sequence``: rows sorted by
  length, longest first (:class:`Packing`), and at step t only the first
  ``batch_sizes[t]`` rows advance; the others keep their state and get zero
  outputs.
* Directions: the reverse direction is the same loop over :func:`flip`-ped
  inputs (each sequence reversed within its own length), its results
  flipped back (:func:`run_direction`, :func:`backward_direction`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Protocol

import numpy as np

from . import kernels
from .cell import DEFAULT_CELL, CellOptions, halved_form, step_, step_backward_
from .layout import split_gates

__all__ = [
    "Trace", "Packing", "flip", "DirectionParams", "DirectionGradients", "run_sequence", "backward_sequence",
    "run_direction", "backward_direction", "PROJECTION_CHUNK", "STACKED_MAX_GATES",
]

#: Steps whose input projection is computed in one GEMM on the NumPy path.
#: Bounds the extra memory of inference to O(chunk·B·H) while keeping the GEMM large.
PROJECTION_CHUNK = 16

#: The widest gate row (4H) whose steps stack x_t under h_{t-1} into one product (:class:`_StackedInputs`):
#: 0.91–0.98× the projected form's time at 4H ≤ 256 with I ≤ P, 1.07–1.57× from 4H = 1024 (OpenBLAS, 1 thread).
STACKED_MAX_GATES = 256


# ------------------------------------------------------------ what a run records
@dataclass
class Trace:
    """What a forward pass of one layer and direction records, in the order its steps ran.

    All arrays are time-major: ``gates`` (T, B, 4H) activations in
    GATE_ORDER, ``c`` (T, B, H) cell states after each step and
    ``h`` (T, B, P) the (projected) hidden state after each step.
    ``h_full`` (T, B, H) is ``o ⊙ h(c)`` before the projection, kept only
    with a projection; ``pre`` (T, B, 4H) the pre-activations, kept only for
    a non-standard cell (backward needs them for general activations).
    """

    gates: np.ndarray
    c: np.ndarray
    h: np.ndarray
    h_full: np.ndarray | None = None
    pre: np.ndarray | None = None

    @classmethod
    def empty(cls, T: int, B: int, H: int, P: int, dtype: np.dtype, *, projection: bool, general: bool) -> Trace:
        """Buffers for recording T steps of a batch of B (zeros: inactive rows stay 0)."""
        return cls(
            gates=np.zeros((T, B, 4 * H), dtype=dtype),
            c=np.zeros((T, B, H), dtype=dtype),
            h=np.zeros((T, B, P), dtype=dtype),
            h_full=np.zeros((T, B, H), dtype=dtype) if projection else None,
            pre=np.zeros((T, B, 4 * H), dtype=dtype) if general else None,
        )

    def steps(self, start: int, stop: int) -> Trace:
        """Views of steps [start, stop)."""
        w = slice(start, stop)
        return Trace(self.gates[w], self.c[w], self.h[w], None if self.h_full is None else self.h_full[w],
                     None if self.pre is None else self.pre[w])

    def named(self) -> dict[str, np.ndarray]:
        """Views ``{"f", "i", "g", "o", "c", "h"}``, each (T, B, ·), time-major."""
        f, i, o, g = split_gates(self.gates, self.c.shape[-1])
        return {"f": f, "i": i, "g": g, "o": o, "c": self.c, "h": self.h}


# ------------------------------------------------------------ lengths and directions
@dataclass
class Packing:
    """How a variable-length batch is run: rows sorted by length, longest first.

    ``order`` sorts the batch, ``inverse`` undoes it; ``batch_sizes[t]`` rows
    are active at step t; ``reverse_index[t, b]`` is the time step a
    per-sequence reversed run reads at its step t (each sequence reversed
    within its own length, padding left in place).
    """

    lengths: np.ndarray  # sorted, descending
    order: np.ndarray
    inverse: np.ndarray
    batch_sizes: np.ndarray
    reverse_index: np.ndarray
    columns: np.ndarray

    @classmethod
    def of(cls, lengths: np.ndarray, T: int) -> Packing:
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
        steps = np.arange(T)[:, None]
        return cls(
            lengths=sorted_lengths,
            order=order,
            inverse=np.argsort(order),
            batch_sizes=(sorted_lengths[None, :] > steps).sum(axis=1),
            reverse_index=np.where(steps < sorted_lengths, sorted_lengths - 1 - steps, steps),
            columns=np.arange(len(lengths))[None, :],
        )

    def reverse_each(self, seq: np.ndarray) -> np.ndarray:
        """A copy of time-major ``seq`` (rows sorted) with every sequence reversed within its length."""
        return flip(seq, self)


def flip(seq: np.ndarray, packing: Packing | None = None) -> np.ndarray:
    """Time-major ``seq`` in the reverse direction's order, and back (flipping twice is the identity).

    Every sequence is reversed within its own length, padding left in place:
    a view ``seq[::-1]`` when all are full (``packing`` None), else a copy.
    """
    return seq[::-1] if packing is None else seq[packing.reverse_index, packing.columns]


class DirectionParams(Protocol):
    """What the loop needs of one layer and direction (see :class:`nplstm.params.DirectionParams`)."""

    hidden_size: int
    W_hr: np.ndarray | None

    def fused(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def peephole_rows(self) -> np.ndarray | None: ...


def run_direction(
    x: np.ndarray, params: DirectionParams, h: np.ndarray, c: np.ndarray, *, reverse: bool,
    packing: Packing | None = None, start: int = 0, outputs: np.ndarray | None = None,
    trace: Trace | None = None, cell: CellOptions = DEFAULT_CELL, recurrent_mask: np.ndarray | None = None,
) -> None:
    """One layer and direction over ``x`` (steps ``start`` onwards of the packed batch); see :func:`run_sequence`.

    The reverse direction runs over :func:`flip` ``(x)``; its ``trace`` is
    recorded in that order (as :func:`backward_direction` wants it) and its
    outputs are flipped back into ``outputs``.
    """
    sizes = None if packing is None else packing.batch_sizes[start : start + x.shape[0]]
    if not reverse:
        run_sequence(x, params, h, c, outputs=outputs, trace=trace, batch_sizes=sizes, cell=cell, recurrent_mask=recurrent_mask)
        return
    if packing is None or outputs is None:  # flip(outputs) is a view: the run writes straight into outputs
        receiver = None if outputs is None else flip(outputs)
    else:
        receiver = trace.h if trace is not None else np.empty(outputs.shape, outputs.dtype)
    run_sequence(flip(x, packing), params, h, c, outputs=receiver, trace=trace, batch_sizes=sizes, cell=cell,
                 recurrent_mask=recurrent_mask)
    if packing is not None and outputs is not None and receiver is not None:
        outputs[...] = flip(receiver, packing)


# ------------------------------------------------------------ forward
def run_sequence(
    x: np.ndarray, params: DirectionParams, h: np.ndarray, c: np.ndarray, *,
    outputs: np.ndarray | None = None, trace: Trace | None = None,
    batch_sizes: np.ndarray | None = None, cell: CellOptions = DEFAULT_CELL, recurrent_mask: np.ndarray | None = None,
) -> None:
    """Run one layer and direction over time-major ``x``, updating ``h`` and ``c`` in place.

    Parameters
    ----------
    x : (T, B, I) array
        Inputs, already in the model's dtype.
    params : DirectionParams
    h : (B, P) C-contiguous array
    c : (B, H) C-contiguous array
        The initial states on entry, the final states on exit.
    outputs : (T, B, P) array, optional
        Receives the hidden state of every step (zeros for inactive rows).
    trace : Trace, optional
        Receives what backward needs.
    batch_sizes : (T,) int array, optional
        Rows active at each step (non-increasing; rows sorted by length).
    cell : CellOptions
    recurrent_mask : (B, P) array, optional
        Variational recurrent dropout: ``h_{t-1} ⊙ mask`` enters the recurrent
        product at every step (the compiled engine has no masks: this runs
        the NumPy step).
    """
    if recurrent_mask is None and cell.is_default and _run_compiled(x, params, h, c, outputs, trace, batch_sizes):
        return
    T, B, I = x.shape
    W_xT, W_hT, b = params.fused()
    W_hr = params.W_hr
    P, H4 = W_hT.shape
    peepholes = params.peephole_rows() if cell.peepholes else None
    W_hT, halved = halved_form(W_hT, cell)  # the standard cell's σ(a) = ½ + ½·tanh(a/2), halved once here
    inputs_kind = _StackedInputs if H4 <= STACKED_MAX_GATES and I <= P else _ProjectedInputs
    inputs = inputs_kind(x, W_xT, W_hT, b, None if halved is None else halved[0])
    rows = _Rows(h, c, H4, W_hr is not None)
    W_hrT = W_hr.T if W_hr is not None else None
    receivers = [a for a in (outputs, None if trace is None else trace.h) if a is not None]
    if len(receivers) == 2 and receivers[0] is receivers[1]:
        receivers.pop()
    masked = None if recurrent_mask is None else np.empty_like(h)  # h_{t-1} ⊙ mask, for recurrent dropout
    for start, stop in inputs.chunks():
        for k in range(stop - start):
            t = start + k
            n = B if batch_sizes is None else int(batch_sizes[t])
            h_n, c_n, gates, views, scratch, h_full = rows.of(n)
            if trace is not None:  # record the activations in place
                gates = trace.gates[t, :n]
                views = split_gates(gates, H4 // 4)
            h_in = h_n if masked is None else np.multiply(h_n, recurrent_mask[:n], out=masked[:n])  # type: ignore[index]
            inputs.pre_activations(k, h_in, out=gates)
            pre = trace.pre[t, :n] if trace is not None and trace.pre is not None else None
            step_(gates, c_n, h_full, scratch, cell, peepholes, pre, halved=halved, views=views)
            if W_hrT is not None:
                np.dot(h_full, W_hrT, out=h_n)
            for target in receivers:
                if n == B:
                    target[t] = h_n
                else:
                    target[t, :n] = h_n
                    target[t, n:] = 0
            if trace is not None:
                trace.c[t, :n] = c_n
                if trace.h_full is not None:
                    trace.h_full[t, :n] = h_full


def _run_compiled(x: np.ndarray, params: DirectionParams, h: np.ndarray, c: np.ndarray, outputs: np.ndarray | None,
                  trace: Trace | None, batch_sizes: np.ndarray | None) -> bool:
    """Run the standard cell through the compiled engine if :func:`nplstm.kernels.use_kernel` says so; whether it did."""
    T, B, I = x.shape
    P, H = h.shape[1], c.shape[1]
    tape = None if trace is None else (trace.gates, trace.c, trace.h, trace.h_full)
    fold = kernels.folds_inputs(B, I, P, H, h.itemsize)  # x_t in each step's product, or all steps projected first
    if fold:  # one layout of x for the engine (batch-first inputs arrive as a transposed view): one specialisation, not two
        x = np.ascontiguousarray(x)
    key = ("forward", fold) + kernels.variant(x if fold else None, outputs, params.W_hr, batch_sizes, *(tape or (None,) * 4))
    if not kernels.use_kernel(T, B, H, P, I, h.dtype, training=trace is not None, key=key):
        return False
    WT, b = _fused_matrix(params)
    kernels.forward(WT, b, params.W_hr, x, h, c, outputs=outputs, tape=trace, batch_sizes=batch_sizes)
    return True


def _fused_matrix(params: DirectionParams) -> tuple[np.ndarray, np.ndarray]:
    """``([W_h; W_x]ᵀ, b)``: the parameters' own fused view when they have one (the engine caches its packing per storage)."""
    if hasattr(params, "fused_matrix"):
        return params.fused_matrix(), params.b  # type: ignore[attr-defined]
    W_xT, W_hT, b = params.fused()
    return np.concatenate([W_hT, W_xT]), b


class _ProjectedInputs:
    """Pre-activations as ``h_{t-1} W_hᵀ + (x_t W_xᵀ + b)``: the inputs of PROJECTION_CHUNK steps projected in one GEMM.

    Two calls per step (the recurrent product, then the add); the input
    projection runs at the GEMM's rate however wide x is.
    """

    def __init__(self, x: np.ndarray, W_xT: np.ndarray, W_hT: np.ndarray, b: np.ndarray,
                 scale: np.ndarray | None) -> None:
        T, B, _ = x.shape
        self.x, self.W_xT, self.W_hT, self.b, self.scale = x, W_xT, W_hT, b, scale
        self.block = np.empty((max(1, min(T, PROJECTION_CHUNK)), B, W_hT.shape[1]), dtype=W_hT.dtype)

    def chunks(self) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each chunk of steps, its inputs projected (times ``scale``) into ``block``."""
        T, B, I = self.x.shape
        H4 = self.W_xT.shape[1]
        for start in range(0, T, self.block.shape[0]):
            stop = min(T, start + self.block.shape[0])
            block = self.block[: stop - start]
            np.matmul(self.x[start:stop].reshape((stop - start) * B, I), self.W_xT,
                      out=block.reshape((stop - start) * B, H4))
            block += self.b
            if self.scale is not None:
                block *= self.scale
            yield start, stop

    def pre_activations(self, k: int, h: np.ndarray, out: np.ndarray) -> None:
        """``out`` = the pre-activations of step k of the chunk for the first ``len(h)`` rows."""
        np.dot(h, self.W_hT, out=out)  # np.dot: half of np.matmul's call overhead for one small product
        np.add(out, self.block[k, : len(h)], out=out)


class _StackedInputs:
    """Pre-activations as ``[h_{t-1}, x_t, 1] [W_h; W_x; b]ᵀ``: one product per step, bias included.

    Where a step's work is a few microseconds (small H), the call that adds
    the projected inputs is a tenth of it; stacking x_t under h_{t-1} saves
    it at the cost of I more rows in the per-step product, which pays while
    x is no wider than h (run_sequence decides).
    """

    def __init__(self, x: np.ndarray, W_xT: np.ndarray, W_hT: np.ndarray, b: np.ndarray,
                 scale: np.ndarray | None) -> None:
        T, B, I = x.shape
        P = W_hT.shape[0]
        W_xb = np.concatenate([W_xT, b[None]])
        self.W = np.concatenate([W_hT, W_xb if scale is None else W_xb * scale])  # W_hT comes already scaled
        self.x, self.P = x, P
        self.z = np.empty((max(1, min(T, PROJECTION_CHUNK)), B, P + I + 1), dtype=W_hT.dtype)  # z_t of a chunk
        self.z[:, :, -1] = 1

    def chunks(self) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each chunk of steps, their x_t copied into ``z``."""
        T = self.x.shape[0]
        for start in range(0, T, self.z.shape[0]):
            stop = min(T, start + self.z.shape[0])
            self.z[: stop - start, :, self.P : -1] = self.x[start:stop]
            yield start, stop

    def pre_activations(self, k: int, h: np.ndarray, out: np.ndarray) -> None:
        """``out`` = the pre-activations of step k of the chunk for the first ``len(h)`` rows."""
        z = self.z[k, : len(h)]
        z[:, : self.P] = h
        np.dot(z, self.W, out=out)


class _Rows:
    """Views of the loop's state and work buffers for the first n rows, made once per n (not per step)."""

    def __init__(self, h: np.ndarray, c: np.ndarray, width: int, projection: bool) -> None:
        B, H = c.shape
        self.h, self.c = h, c
        self.gates = np.empty((B, width), dtype=h.dtype)
        self.scratch = np.empty((B, H), dtype=h.dtype)
        self.h_full = np.empty((B, H), dtype=h.dtype) if projection else h
        self.cache: dict[int, Any] = {}

    def of(self, n: int) -> Any:
        """``(h, c, gates, gate views, scratch, h_full)`` of the first n rows."""
        if n not in self.cache:
            gates = self.gates[:n]
            self.cache[n] = (self.h[:n], self.c[:n], gates, split_gates(gates, self.c.shape[1]),
                             self.scratch[:n], self.h_full[:n])
        return self.cache[n]


# ------------------------------------------------------------ backward
@dataclass
class DirectionGradients:
    """Gradients of one layer and direction, in the fused layout."""

    W_x: np.ndarray  # (4H, I)
    W_h: np.ndarray  # (4H, P)
    b: np.ndarray  # (4H,)
    W_hr: np.ndarray | None  # (P, H)
    P: np.ndarray | None  # (3, H) peepholes
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, P)
    c0: np.ndarray  # (B, H)


def backward_direction(
    x: np.ndarray, params: DirectionParams, h0: np.ndarray, c0: np.ndarray, trace: Trace,
    d_outputs: np.ndarray | None, d_h: np.ndarray | None, d_c: np.ndarray | None, *,
    reverse: bool, packing: Packing | None = None, cell: CellOptions = DEFAULT_CELL,
    recurrent_mask: np.ndarray | None = None,
) -> DirectionGradients:
    """Gradients through one :func:`run_direction` (``x`` and ``d_outputs`` in original time order)."""
    sizes = None if packing is None else packing.batch_sizes
    if not reverse:
        return backward_sequence(x, params, h0, c0, trace, d_outputs, d_h, d_c, batch_sizes=sizes, cell=cell,
                                 recurrent_mask=recurrent_mask)
    grads = backward_sequence(flip(x, packing), params, h0, c0, trace, None if d_outputs is None else flip(d_outputs, packing),
                              d_h, d_c, batch_sizes=sizes, cell=cell, recurrent_mask=recurrent_mask)
    return replace(grads, x=flip(grads.x, packing))


def backward_sequence(
    x: np.ndarray, params: DirectionParams, h0: np.ndarray, c0: np.ndarray, trace: Trace,
    d_outputs: np.ndarray | None, d_h: np.ndarray | None, d_c: np.ndarray | None, *,
    batch_sizes: np.ndarray | None = None, cell: CellOptions = DEFAULT_CELL, recurrent_mask: np.ndarray | None = None,
) -> DirectionGradients:
    """Gradients of a loss through one run of :func:`run_sequence` (arguments as it got them).

    ``d_outputs`` (T, B, P) is dL/dh_t for every step, ``d_h``/``d_c``
    (B, P)/(B, H) are dL/d(final h) and dL/d(final c); any of them may be
    None (zero).  With ``batch_sizes`` only the active rows of a step take
    part in it; the others carry their gradients through unchanged.
    """
    T, B, _ = x.shape
    W_xT, W_hT, _ = params.fused()
    W_h, W_hr = W_hT.T, params.W_hr
    peepholes = params.peephole_rows() if cell.peepholes else None
    H = W_h.shape[0] // 4
    dt = h0.dtype
    dh = np.zeros_like(h0) if d_h is None else np.array(d_h, dtype=dt, copy=True)
    dc = np.zeros_like(c0) if d_c is None else np.array(d_c, dtype=dt, copy=True)
    d_pre = (np.zeros if batch_sizes is not None else np.empty)(trace.gates.shape, dtype=dt)
    dW_hr = np.zeros_like(W_hr) if W_hr is not None else None
    dP = np.zeros((3, H), dtype=dt) if peepholes is not None else None
    key = ("backward",) + kernels.variant(trace.gates, trace.c, trace.h_full, W_hr, d_outputs, batch_sizes)
    if recurrent_mask is None and cell.is_default and kernels.use_kernel(
            T, B, H, W_h.shape[1], x.shape[2], dt, training=True, key=key):
        kernels.backward(trace, W_hT, W_hr, c0, d_outputs, dh, dc, d_pre, dW_hr=dW_hr, batch_sizes=batch_sizes)
    else:
        scratch = np.empty((B, H), dtype=dt)
        for t in range(T - 1, -1, -1):
            n = B if batch_sizes is None else int(batch_sizes[t])
            dh_n, dc_n = dh[:n], dc[:n]
            if d_outputs is not None:
                dh_n += d_outputs[t, :n]
            if W_hr is not None and dW_hr is not None and trace.h_full is not None:
                dW_hr += dh_n.T @ trace.h_full[t, :n]
                dh_full = dh_n @ W_hr
            else:
                dh_full = dh_n
            c_prev = trace.c[t - 1, :n] if t > 0 else c0[:n]
            da = d_pre[t, :n]
            step_backward_(trace.gates[t, :n], trace.c[t, :n], c_prev, dh_full, dc_n, da, scratch[:n], cell,
                           None if trace.pre is None else trace.pre[t, :n], peepholes, dP)
            dh[:n] = da @ W_h  # dL/dh_{t-1}
            if recurrent_mask is not None:  # it entered the product as h_{t-1} ⊙ mask
                dh[:n] *= recurrent_mask[:n]

    flat = d_pre.reshape(T * B, 4 * H)
    h_prev = np.concatenate([h0[None], trace.h[:-1]], axis=0).reshape(T * B, h0.shape[1]) if T else h0[:0]
    if recurrent_mask is not None and T:  # what the recurrent product saw
        h_prev = (h_prev.reshape(T, B, h0.shape[1]) * recurrent_mask).reshape(T * B, h0.shape[1])
    I = x.shape[2]  # explicit sizes: reshape(..., -1) cannot infer them when T·B = 0
    return DirectionGradients(
        W_x=flat.T @ x.reshape(T * B, I),
        W_h=flat.T @ h_prev,
        b=flat.sum(axis=0),
        W_hr=dW_hr,
        P=dP,
        x=(flat @ W_xT.T).reshape(T, B, I),
        h0=dh,
        c0=dc,
    )
