"""The LSTM equations, written once.

With z = [h_{t-1}; x_t] (hidden state first, then input)::

    f = σ(Wf z + bf)        i = σ(Wi z + bi)
    g = tanh(Wc z + bc)     o = σ(Wo z + bo)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

This module holds one step of those equations (:func:`cell_step_`) and the
loop over time for one layer and direction (:func:`run_sequence`); the fused
gate layout and the one helper that slices it (:func:`split_gates`) come
from :mod:`nplstm.layout`.  Everything that
runs an LSTM in this package (single sequences, batches, stacks, both
directions, streaming, training) goes through them; backpropagation
(:mod:`nplstm.backward`) differentiates exactly these steps.

Internally the four gates are fused into one weight in the order
:data:`GATE_ORDER` = f, i, o, g (the candidate last, as the one gate that
needs tanh).

The cell has the variants of the ONNX ``LSTM`` operator as options
(:class:`CellOptions`): other activations, a clip of the pre-activations,
peepholes and a coupled input-forget gate.  The default cell takes the fast
in-place path below; the variants take the general path of the same step.

Variable-length batches follow ``torch.nn.utils.rnn.pack_padded_sequence``:
rows are sorted by length (longest first) by the caller, and at step t only
the first ``batch_sizes[t]`` rows advance; the others keep their state and
get zero outputs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from . import kernels
from .layout import GATE_ORDER, GATE_SUFFIX, PEEPHOLE_GATES, PREACT_LIMIT, split_gates

__all__ = [
    "GATE_ORDER", "GATE_SUFFIX", "PEEPHOLE_GATES", "PREACT_LIMIT", "split_gates", "Activation", "CellOptions",
    "DEFAULT_CELL", "Trace", "cell_step_", "standard_step_", "tanh_form", "run_sequence",
]

#: Steps whose input projection is computed in one GEMM.  Bounds the extra
#: memory of inference to O(chunk·B·H) while keeping the GEMM large.
PROJECTION_CHUNK = 16

#: Bytes of input projections handed to the compiled loop per call.
KERNEL_CHUNK_BYTES = 4 << 20

# ------------------------------------------------------------ activations
#: ONNX's default (alpha, beta) of each activation it lists for LSTM.
ACTIVATION_DEFAULTS: dict[str, tuple[float | None, float | None]] = {
    "Sigmoid": (None, None),
    "Tanh": (None, None),
    "Relu": (None, None),
    "Affine": (1.0, 0.0),
    "LeakyRelu": (0.01, None),
    "ThresholdedRelu": (1.0, None),
    "ScaledTanh": (1.0, 1.0),
    "HardSigmoid": (0.2, 0.5),
    "Elu": (1.0, None),
    "Softsign": (None, None),
    "Softplus": (None, None),
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    limit = PREACT_LIMIT[x.dtype] if x.dtype in PREACT_LIMIT else 350.0
    return 1.0 / (1.0 + np.exp(-np.clip(x, -limit, limit)))


def _is_real_number(value: object) -> bool:
    """An int or float (NumPy scalars too), but not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x).astype(x.dtype, copy=False)


@dataclass(frozen=True)
class Activation:
    """One of the activations of the ONNX ``LSTM`` operator, with its alpha and beta.

    ``name`` is ONNX's (Sigmoid, Tanh, Relu, Affine, LeakyRelu,
    ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus);
    alpha and beta default to ONNX's defaults.
    """

    name: str
    alpha: float | None = None
    beta: float | None = None

    def __post_init__(self) -> None:
        if self.name not in ACTIVATION_DEFAULTS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATION_DEFAULTS)}; got {self.name!r}")
        default_alpha, default_beta = ACTIVATION_DEFAULTS[self.name]
        for attr, default in (("alpha", default_alpha), ("beta", default_beta)):
            value = getattr(self, attr)
            if value is None:
                object.__setattr__(self, attr, default)
            elif default is None:
                raise ValueError(f"activation {self.name} takes no {attr}; got {value!r}")
            elif not _is_real_number(value):
                raise TypeError(f"activation {self.name}: {attr} must be a finite number; got {value!r}")
            elif not np.isfinite(value):
                raise ValueError(f"activation {self.name}: {attr} must be finite; got {value!r}")
            else:
                object.__setattr__(self, attr, float(value))

    @property
    def coefficients(self) -> tuple[float, float]:
        """``(alpha, beta)`` with 0 for those this activation does not take."""
        return (self.alpha if self.alpha is not None else 0.0, self.beta if self.beta is not None else 0.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The activation of ``x`` (a new array, same dtype; finite for finite x)."""
        a, b = self.coefficients
        name = self.name
        with np.errstate(over="ignore", under="ignore"):
            if name == "Sigmoid":
                y = _sigmoid(x)
            elif name == "Tanh":
                y = np.tanh(x)
            elif name == "Relu":
                y = np.maximum(x, 0)
            elif name == "Affine":
                y = a * x + b
            elif name == "LeakyRelu":
                y = np.where(x >= 0, x, a * x)
            elif name == "ThresholdedRelu":
                y = np.where(x > a, x, 0)
            elif name == "ScaledTanh":
                y = a * np.tanh(b * x)
            elif name == "HardSigmoid":
                y = np.clip(a * x + b, 0, 1)
            elif name == "Elu":
                y = np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0)))
            elif name == "Softsign":
                y = x / (1 + np.abs(x))
            else:  # Softplus
                y = _softplus(x)
        return np.asarray(y, dtype=x.dtype)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        """d activation / dx at ``x`` (for backpropagation)."""
        a, b = self.coefficients
        name = self.name
        with np.errstate(over="ignore", under="ignore"):
            if name == "Sigmoid":
                s = _sigmoid(x)
                d = s * (1 - s)
            elif name == "Tanh":
                d = 1 - np.tanh(x) ** 2
            elif name == "Relu":
                d = (x > 0).astype(x.dtype)
            elif name == "Affine":
                d = np.full_like(x, a)
            elif name == "LeakyRelu":
                d = np.where(x >= 0, 1, a)
            elif name == "ThresholdedRelu":
                d = (x > a).astype(x.dtype)
            elif name == "ScaledTanh":
                d = a * b * (1 - np.tanh(b * x) ** 2)
            elif name == "HardSigmoid":
                d = np.where((a * x + b > 0) & (a * x + b < 1), a, 0)
            elif name == "Elu":
                d = np.where(x >= 0, 1, a * np.exp(np.minimum(x, 0)))
            elif name == "Softsign":
                d = 1 / (1 + np.abs(x)) ** 2
            else:  # Softplus: σ(x)
                d = _sigmoid(x)
        return np.asarray(d, dtype=x.dtype)

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in (("alpha", self.alpha), ("beta", self.beta)) if v is not None)
        return f"Activation({self.name!r}{params})"


@dataclass(frozen=True)
class CellOptions:
    """Variants of the LSTM cell (those of the ONNX ``LSTM`` operator).

    Parameters
    ----------
    gate_activation : Activation
        ONNX's f, for the input, forget and output gates (default Sigmoid).
    cell_activation : Activation
        ONNX's g, for the candidate (default Tanh).
    hidden_activation : Activation
        ONNX's h, in ``h = o ⊙ h(c)`` (default Tanh).
    clip : float or None
        Bound the pre-activations (the inputs of the activations) to
        [-clip, clip].
    input_forget : bool
        Couple the input and forget gates: f = 1 - i (as onnxruntime does).
    peepholes : bool
        Peephole weights ``Pi, Pf, Po`` (H, 1): i and f see ``P ⊙ c_{t-1}``,
        o sees ``Po ⊙ c_t``.
    """

    gate_activation: Activation = field(default_factory=lambda: Activation("Sigmoid"))
    cell_activation: Activation = field(default_factory=lambda: Activation("Tanh"))
    hidden_activation: Activation = field(default_factory=lambda: Activation("Tanh"))
    clip: float | None = None
    input_forget: bool = False
    peepholes: bool = False

    def __post_init__(self) -> None:
        for name in ("gate_activation", "cell_activation", "hidden_activation"):
            if not isinstance(getattr(self, name), Activation):
                raise TypeError(f"{name} must be an nplstm.cell.Activation; got {getattr(self, name)!r}")
        if self.clip is not None:
            if not _is_real_number(self.clip):
                raise TypeError(f"clip must be a positive finite number or None; got {self.clip!r}")
            if not np.isfinite(self.clip) or self.clip <= 0:
                raise ValueError(f"clip must be a positive finite number or None; got {self.clip!r}")
            object.__setattr__(self, "clip", float(self.clip))
        for flag in ("input_forget", "peepholes"):
            value = getattr(self, flag)
            if not isinstance(value, (bool, np.bool_)):  # bool("no") would be True: a silently different cell
                raise TypeError(f"{flag} must be True or False; got {value!r}")
            object.__setattr__(self, flag, bool(value))

    @property
    def is_default(self) -> bool:
        """The standard cell (σ, tanh, tanh, no clip, no coupling, no peepholes): the fast path."""
        return self == DEFAULT_CELL

    def to_config(self) -> dict[str, object]:
        """A JSON-able description (for weight files)."""
        acts = {n: [a.name, a.alpha, a.beta] for n, a in (
            ("gate_activation", self.gate_activation), ("cell_activation", self.cell_activation),
            ("hidden_activation", self.hidden_activation))}
        return {**acts, "clip": self.clip, "input_forget": self.input_forget, "peepholes": self.peepholes}

    @classmethod
    def from_config(cls, config: object) -> CellOptions:
        """Inverse of :meth:`to_config`; ValueError for anything malformed."""
        if not isinstance(config, dict) or set(config) != set(DEFAULT_CELL.to_config()):
            raise ValueError(f"cell options must be a dict with keys {sorted(DEFAULT_CELL.to_config())}; got {config!r}")
        acts = {}
        for name in ("gate_activation", "cell_activation", "hidden_activation"):
            spec = config[name]
            if not isinstance(spec, list) or len(spec) != 3 or not isinstance(spec[0], str):
                raise ValueError(f"cell option {name} must be [name, alpha, beta]; got {spec!r}")
        try:
            for name in ("gate_activation", "cell_activation", "hidden_activation"):
                acts[name] = Activation(*config[name])
            return cls(**acts, clip=config["clip"], input_forget=config["input_forget"], peepholes=config["peepholes"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed cell options: {exc}") from None


DEFAULT_CELL = CellOptions()


# ------------------------------------------------------------------ step
def cell_step_(
    gates: np.ndarray,
    c: np.ndarray,
    h: np.ndarray,
    scratch: np.ndarray,
    options: CellOptions = DEFAULT_CELL,
    peepholes: np.ndarray | None = None,
    pre: np.ndarray | None = None,
) -> None:
    """Advance one LSTM step in place.

    Parameters
    ----------
    gates : (B, 4H) C-contiguous array
        On entry the pre-activations ``W z + b`` in :data:`GATE_ORDER`; on
        exit the activations f, i, o, g (kept for backward).
    c : (B, H) array
        ``c_{t-1}`` on entry, ``c_t`` on exit.
    h : (B, H) array
        Receives ``h_t`` (before any projection).  May not alias ``c``.
    scratch : (B, H) array
        Work space.
    options : CellOptions
        The cell variant; the default takes the fast path.
    peepholes : (3, H) array, optional
        Peephole weights in :data:`PEEPHOLE_GATES` order (with ``options.peepholes``).
    pre : (B, 4H) array, optional
        Receives the pre-activations as the activations see them (peepholes
        added, clipped): what backward needs for a non-default cell.
    """
    H = c.shape[-1]
    if options is not DEFAULT_CELL and not options.is_default:
        _general_step_(gates, c, h, options, peepholes, pre)
        return
    if pre is not None:
        pre[...] = gates
    scale, offset = tanh_form(gates.shape[-1], gates.dtype)
    standard_step_(split_gates(gates, H), c, h, scratch, gates, scale, offset)


def standard_step_(
    views: tuple[np.ndarray, ...], c: np.ndarray, h: np.ndarray, scratch: np.ndarray,
    gates: np.ndarray, scale: np.ndarray, offset: np.ndarray, *, prescaled: bool = False,
) -> None:
    """The standard cell on pre-activations ``gates`` whose gate views ``views`` are already made.

    ``prescaled``: the sigmoid gates' pre-activations arrive already halved.
    """
    f, i, o, g = views
    # σ(a) = ½ + ½·tanh(a/2) and g = tanh(a): one tanh pass over the whole
    # contiguous buffer, framed by one multiply before and a multiply-add
    # after (four calls in all; NumPy's SIMD tanh is as fast as its exp, and
    # tanh never overflows, so ±1e300 needs no clipping and gives no warning).
    if not prescaled:
        np.multiply(gates, scale, out=gates)
    np.tanh(gates, out=gates)
    np.multiply(gates, scale, out=gates)
    np.add(gates, offset, out=gates)
    # c_t = f ⊙ c_{t-1} + i ⊙ g
    np.multiply(c, f, out=c)
    np.multiply(i, g, out=scratch)
    np.add(c, scratch, out=c)
    # h_t = o ⊙ tanh(c_t)
    np.tanh(c, out=h)
    np.multiply(h, o, out=h)


@functools.lru_cache(maxsize=64)
def tanh_form(width: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(scale, offset)`` turning tanh into σ for the f, i, o blocks and leaving g as tanh."""
    H = width // 4
    scale = np.ones(width, dtype=dtype)
    offset = np.zeros(width, dtype=dtype)
    scale[: 3 * H] = 0.5
    offset[: 3 * H] = 0.5
    scale.flags.writeable = offset.flags.writeable = False
    return scale, offset


def _general_step_(
    gates: np.ndarray, c: np.ndarray, h: np.ndarray, options: CellOptions,
    peepholes: np.ndarray | None, pre: np.ndarray | None,
) -> None:
    """The same step for any :class:`CellOptions` (clearer, allocating, slower).

    Order as in onnxruntime: peephole terms are added, then the clip, then
    the activation; the output gate's peephole sees the new cell state.
    """
    H = c.shape[-1]
    a_f, a_i, a_o, a_g = split_gates(gates, H)
    p_f, p_i, p_o, p_g = split_gates(pre, H) if pre is not None else (None, None, None, None)

    def activate_(a: np.ndarray, recorded: np.ndarray | None, activation: Activation) -> None:
        if options.clip is not None:
            np.clip(a, -options.clip, options.clip, out=a)
        if recorded is not None:
            recorded[...] = a
        a[...] = activation(a)

    gate = options.gate_activation
    if peepholes is not None:
        a_i += peepholes[0] * c
        a_f += peepholes[1] * c
    activate_(a_i, p_i, gate)
    if options.input_forget:
        a_f[...] = 1 - a_i
    else:
        activate_(a_f, p_f, gate)
    activate_(a_g, p_g, options.cell_activation)
    c *= a_f
    c += a_i * a_g
    if peepholes is not None:
        a_o += peepholes[2] * c
    activate_(a_o, p_o, gate)
    np.multiply(a_o, options.hidden_activation(c), out=h)


# --------------------------------------------------------------- the loop
@dataclass
class Trace:
    """What a forward pass of one layer and direction records.

    All arrays are time-major: ``gates`` (T, B, 4H) activations in
    :data:`GATE_ORDER`, ``c`` (T, B, H) cell states after each step and
    ``h`` (T, B, P) the (projected) hidden state after each step.
    ``h_full`` (T, B, H) is ``o ⊙ h(c)`` before the projection, kept only
    with a projection; ``pre`` (T, B, 4H) the pre-activations, kept only for
    a non-default cell (backward needs them for general activations).
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

    def reversed(self) -> Trace:
        """Views of the same buffers with time reversed (for a backwards run)."""
        flip = lambda a: None if a is None else a[::-1]  # noqa: E731
        return Trace(self.gates[::-1], self.c[::-1], self.h[::-1], flip(self.h_full), flip(self.pre))

    def named(self) -> dict[str, np.ndarray]:
        """Views ``{"f", "i", "g", "o", "c", "h"}``, each (T, B, ·), time-major."""
        f, i, o, g = split_gates(self.gates, self.c.shape[-1])
        return {"f": f, "i": i, "g": g, "o": o, "c": self.c, "h": self.h}


class DirectionWeights(Protocol):
    """What the loop needs of one layer and direction (see :class:`nplstm.params.LayerWeights`)."""

    hidden_size: int
    W_hr: np.ndarray | None

    def fused(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def peephole_rows(self) -> np.ndarray | None: ...


def run_sequence(
    x: np.ndarray,
    weights: DirectionWeights,
    h: np.ndarray,
    c: np.ndarray,
    *,
    outputs: np.ndarray | None = None,
    trace: Trace | None = None,
    batch_sizes: np.ndarray | None = None,
    options: CellOptions = DEFAULT_CELL,
) -> None:
    """Run one layer and direction over time-major ``x``, updating ``h`` and ``c`` in place.

    Parameters
    ----------
    x : (T, B, I) array
        Inputs, already in the model's dtype.  Pass ``x[::-1]`` (and reversed
        views of ``outputs``/``trace``) to run backwards in time.
    weights : LayerWeights
    h : (B, P) C-contiguous array
    c : (B, H) C-contiguous array
        The initial states on entry, the final states on exit.
    outputs : (T, B, P) array, optional
        Receives the hidden state of every step (zeros for inactive rows).
    trace : Trace, optional
        Receives what backward needs.
    batch_sizes : (T,) int array, optional
        Rows active at each step (non-increasing; rows sorted by length).
    options : CellOptions
    """
    T, B, _ = x.shape
    W_xT, W_hT, b = weights.fused()
    W_hr = weights.W_hr
    peep = weights.peephole_rows() if options.peepholes else None
    P, H4 = W_hT.shape
    H = H4 // 4
    dtype = h.dtype
    receivers = [a for a in (outputs, None if trace is None else trace.h) if a is not None]
    if len(receivers) == 2 and receivers[0] is receivers[1]:
        receivers.pop()
    default = options.is_default
    key = ("forward",) + kernels.variant(outputs, W_hr, batch_sizes, *((None,) * 4 if trace is None else (trace.gates, trace.c, trace.h, trace.h_full)))
    fast = default and kernels.use_kernel(T, B, H, P, x.shape[2], dtype, training=trace is not None, key=key)
    # The compiled loop costs a few µs per call: give it as many steps as 4 MiB of projections hold.
    steps = max(PROJECTION_CHUNK, KERNEL_CHUNK_BYTES // max(1, B * H4 * dtype.itemsize)) if fast else PROJECTION_CHUNK
    chunk = max(1, min(T, steps))
    proj = np.empty((chunk, B, H4), dtype=dtype)
    if not fast:
        rows = _Rows(h, c, H4, W_hr is not None)
        W_hrT = W_hr.T if W_hr is not None else None
        scale, offset = tanh_form(H4, dtype)
        if default:  # halve the sigmoid gates' weights once (exact in binary), not their pre-activations every step
            W_hT = W_hT * scale
    for start in range(0, T, chunk):
        stop = min(T, start + chunk)
        n_steps = stop - start
        block = proj[:n_steps]
        np.matmul(x[start:stop].reshape(n_steps * B, -1), W_xT, out=block.reshape(n_steps * B, H4))
        block += b
        if default and not fast:
            block *= scale
        sizes = batch_sizes[start:stop] if batch_sizes is not None else None
        if fast:
            kernels.forward(
                block, W_hT, h, c,
                outputs=outputs[start:stop] if outputs is not None else None,
                tape=_trace_slice(trace, start, stop),  # the kernel fills tape.h as well
                W_hrT=W_hr.T if W_hr is not None else None,
                batch_sizes=sizes,
                limit=PREACT_LIMIT[dtype],
            )
            continue
        for k in range(n_steps):
            t = start + k
            n = B if sizes is None else int(sizes[k])
            h_n, c_n, gates, views, scratch, h_full = rows.of(n)
            if trace is not None:  # record the activations in place
                gates = trace.gates[t, :n]
                views = split_gates(gates, H)
            np.dot(h_n, W_hT, out=gates)  # np.dot: half of np.matmul's call overhead for one small product
            np.add(gates, block[k, :n] if n < B else block[k], out=gates)
            if default:
                if trace is not None and trace.pre is not None:
                    trace.pre[t, :n] = gates
                standard_step_(views, c_n, h_full, scratch, gates, scale, offset, prescaled=True)
            else:
                cell_step_(gates, c_n, h_full, scratch, options, peep,
                           trace.pre[t, :n] if trace is not None and trace.pre is not None else None)
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


def _trace_slice(trace: Trace | None, start: int, stop: int) -> Trace | None:
    if trace is None:
        return None
    sl = slice(start, stop)
    return Trace(trace.gates[sl], trace.c[sl], trace.h[sl],
                 None if trace.h_full is None else trace.h_full[sl], None if trace.pre is None else trace.pre[sl])
