"""The LSTM step: the equations, one step forward and its derivative, side by side.

The contract, with z = [h_{t-1}; x_t] (hidden state first, then input), is
:func:`reference_step`, written exactly as the equations read::

    f = σ(Wf z + bf)        i = σ(Wi z + bi)
    g = tanh(Wc z + bc)     o = σ(Wo z + bo)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Everything else here computes that same step, in place, on the fused
pre-activations ``a = W z + b`` of a batch of rows (gates in
:data:`~nplstm.layout.GATE_ORDER` = f, i, o, g): :func:`step_` forward and
:func:`step_backward_` back, for every cell variant.  The loop over time
(:mod:`nplstm.loop`) calls them; the compiled engine (:mod:`nplstm.kernels`)
is another implementation of that loop and is not imported here.

The variants are those of the ONNX ``LSTM`` operator (:class:`CellOptions`):
other activations (:mod:`nplstm.activations`), a clip of the
pre-activations, peepholes and a coupled input-forget gate.  The standard
cell activates all four gates in one pass (:func:`halved_form`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .activations import Activation, sigmoid
from .checks import flag, is_real_number
from .layout import GATE_ORDER, GATE_SUFFIX, PEEPHOLE_GATES, PREACT_LIMIT, split_gates

#: The sigmoid under its former private name here (nplstm.head still imports it from this module).
_sigmoid = sigmoid

__all__ = [
    "reference_step", "CellOptions", "DEFAULT_CELL", "step_", "step_backward_", "halved_form", "tanh_form",
    "Activation", "GATE_ORDER", "GATE_SUFFIX", "PEEPHOLE_GATES", "PREACT_LIMIT", "split_gates",
]


# ------------------------------------------------------------ the contract
def reference_step(x: np.ndarray, h: np.ndarray, c: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of the standard cell, as the equations read (for reading and for tests; allocates).

    ``x`` (..., I), ``h`` (..., P), ``c`` (..., H); ``W`` (4H, P + I) and ``b`` (4H,) fused in GATE_ORDER.
    """
    z = np.concatenate([h, x], axis=-1)  # hidden state first
    f, i, o, g = np.split(z @ W.T + b, 4, axis=-1)
    f, i, o, g = sigmoid(f), sigmoid(i), sigmoid(o), np.tanh(g)
    c = f * c + i * g
    h = o * np.tanh(c)
    return h, c


# ------------------------------------------------------------ the variants
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
            if not is_real_number(self.clip):
                raise TypeError(f"clip must be a positive finite number or None; got {self.clip!r}")
            if not np.isfinite(self.clip) or self.clip <= 0:
                raise ValueError(f"clip must be a positive finite number or None; got {self.clip!r}")
            object.__setattr__(self, "clip", float(self.clip))
        for name in ("input_forget", "peepholes"):
            object.__setattr__(self, name, flag(getattr(self, name), name))

    @property
    def is_default(self) -> bool:
        """The standard cell (σ, tanh, tanh, no clip, no coupling, no peepholes): the fast path."""
        return self is DEFAULT_CELL or self == DEFAULT_CELL

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


@functools.lru_cache(maxsize=64)
def tanh_form(width: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(scale, offset)`` turning tanh into σ for the f, i, o blocks and leaving g as tanh.

    σ(a) = ½ + ½·tanh(a/2): the standard cell activates its whole (B, 4H)
    buffer with one tanh, framed by ``scale`` before and ``scale, offset`` after.
    """
    H = width // 4
    scale = np.ones(width, dtype=dtype)
    offset = np.zeros(width, dtype=dtype)
    scale[: 3 * H] = 0.5
    offset[: 3 * H] = 0.5
    scale.flags.writeable = offset.flags.writeable = False
    return scale, offset


def halved_form(W_hT: np.ndarray, cell: CellOptions) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The recurrent weight a loop over :func:`step_` wants, and the :func:`tanh_form` it was halved by.

    For the standard cell the sigmoid gates' columns are halved once (exact
    in binary), so ``step_(..., halved=form)`` skips halving the
    pre-activations at every step; the caller multiplies its input
    projections by ``form[0]``.  Other cells: ``(W_hT, None)``.
    """
    if not cell.is_default:
        return W_hT, None
    form = tanh_form(W_hT.shape[1], W_hT.dtype)
    return W_hT * form[0], form


# ------------------------------------------------------------ forward
def step_(
    gates: np.ndarray, c: np.ndarray, h: np.ndarray, scratch: np.ndarray, cell: CellOptions = DEFAULT_CELL,
    peepholes: np.ndarray | None = None, pre: np.ndarray | None = None, *,
    halved: tuple[np.ndarray, np.ndarray] | None = None, views: tuple[np.ndarray, ...] | None = None,
) -> None:
    """Advance one step in place: pre-activations in, activations, ``c_t`` and ``h_t`` out.

    Parameters
    ----------
    gates : (B, 4H) C-contiguous array
        On entry ``a = W z + b`` in GATE_ORDER; on exit the activations f, i, o, g (kept for backward).
    c : (B, H) array
        ``c_{t-1}`` on entry, ``c_t`` on exit.
    h : (B, H) array
        Receives ``h_t = o ⊙ h(c_t)`` (before any projection).  May not alias ``c``.
    scratch : (B, H) array
        Work space.
    cell : CellOptions
    peepholes : (3, H) array, optional
        Peephole weights in PEEPHOLE_GATES order (with ``cell.peepholes``).
    pre : (B, 4H) array, optional
        Receives the pre-activations as the activations see them (peepholes
        added, clipped): what :func:`step_backward_` needs for a non-standard cell.
    halved : (scale, offset), optional
        Standard cell only: the sigmoid gates' pre-activations arrive already
        halved, by this :func:`tanh_form` (from :func:`halved_form`).
    views : tuple, optional
        ``split_gates(gates, H)``, when the caller made them once for many steps.
    """
    f, i, o, g = views if views is not None else split_gates(gates, c.shape[-1])
    standard = cell is DEFAULT_CELL or cell.is_default  # (the `is` spares a call per step)
    if standard:
        # σ(a) = ½ + ½·tanh(a/2) and g = tanh(a): one tanh pass over the whole
        # contiguous buffer, framed by one multiply before and a multiply-add
        # after (NumPy's SIMD tanh is as fast as its exp, and tanh never
        # overflows, so ±1e300 needs no clipping and gives no warning).
        if pre is not None:
            pre[...] = gates
        if halved is None:
            scale, offset = tanh_form(gates.shape[-1], gates.dtype)
            np.multiply(gates, scale, out=gates)
        else:
            scale, offset = halved
        np.tanh(gates, out=gates)
        np.multiply(gates, scale, out=gates)
        np.add(gates, offset, out=gates)
    else:
        # Order as in onnxruntime: peephole terms, then the clip, then the activation.
        p_f, p_i, p_o, p_g = split_gates(pre, c.shape[-1]) if pre is not None else (None,) * 4
        if peepholes is not None:
            i += peepholes[0] * c
            f += peepholes[1] * c
        _activate_(i, p_i, cell.gate_activation, cell.clip)
        if cell.input_forget:
            np.subtract(1, i, out=f)
        else:
            _activate_(f, p_f, cell.gate_activation, cell.clip)
        _activate_(g, p_g, cell.cell_activation, cell.clip)
    # c_t = f ⊙ c_{t-1} + i ⊙ g
    np.multiply(c, f, out=c)
    np.multiply(i, g, out=scratch)
    np.add(c, scratch, out=c)
    # h_t = o ⊙ h(c_t); the output gate's peephole sees the new cell state
    if standard:
        np.tanh(c, out=h)
    else:
        if peepholes is not None:
            o += peepholes[2] * c
        _activate_(o, p_o, cell.gate_activation, cell.clip)
        h[...] = cell.hidden_activation(c)
    np.multiply(h, o, out=h)


def _activate_(a: np.ndarray, recorded: np.ndarray | None, activation: Activation, clip: float | None) -> None:
    """``a`` = activation(clip(a)) in place, the clipped pre-activation copied to ``recorded``."""
    if clip is not None:
        np.clip(a, -clip, clip, out=a)
    if recorded is not None:
        recorded[...] = a
    a[...] = activation(a)


# ------------------------------------------------------------ backward
def step_backward_(
    act: np.ndarray, c: np.ndarray, c_prev: np.ndarray, dh: np.ndarray, dc: np.ndarray, da: np.ndarray,
    scratch: np.ndarray, cell: CellOptions = DEFAULT_CELL, pre: np.ndarray | None = None,
    peepholes: np.ndarray | None = None, d_peepholes: np.ndarray | None = None,
) -> None:
    """One step back through :func:`step_`, in place.

    Parameters
    ----------
    act : (B, 4H) array
        The activations the forward step left in ``gates``.
    c, c_prev : (B, H) arrays
        ``c_t`` and ``c_{t-1}``.
    dh : (B, H) array
        dL/dh_t before the projection (read only).
    dc : (B, H) array
        dL/dc_t on entry (from step t+1), dL/dc_{t-1} on exit.
    da : (B, 4H) array
        Receives dL/d(pre-activations) in GATE_ORDER.
    scratch : (B, H) array
        Work space.
    cell : CellOptions
    pre : (B, 4H) array, optional
        The pre-activations :func:`step_` recorded (needed by a non-standard cell).
    peepholes, d_peepholes : (3, H) arrays, optional
        The peephole weights, and their gradient (accumulated).
    """
    H = c.shape[-1]
    f, i, o, g = split_gates(act, H)
    p_f, p_i, p_o, p_g = split_gates(pre, H) if pre is not None else (None,) * 4
    d_f, d_i, d_o, d_g = split_gates(da, H)
    gate, hidden = cell.gate_activation, cell.hidden_activation

    standard = cell is DEFAULT_CELL or cell.is_default

    def local(activation: Activation, x: np.ndarray | None, y: np.ndarray) -> np.ndarray:
        """dy/dx of a gate at its pre-activation x; nothing flows through a clipped one."""
        if standard:  # σ' = y(1 - y), tanh' = 1 - y²: the standard cell records no pre-activations
            return y * (1 - y) if activation.name == "Sigmoid" else 1 - y * y
        assert x is not None, "a non-standard cell records its pre-activations"
        d = activation.derivative(x, y)
        return d * (np.abs(x) < cell.clip) if cell.clip is not None else d

    hc = np.tanh(c, out=scratch) if standard else hidden(c)  # h(c_t)
    # output gate: dL/do = dh ⊙ h(c), then through the gate's activation
    np.multiply(dh, hc, out=d_o)
    d_o *= local(gate, p_o, o)
    # cell: dc += dh ⊙ o ⊙ h'(c) (the clip bounds pre-activations, not c)
    work = 1 - hc * hc if standard else hidden.derivative(c, hc)
    work *= o
    work *= dh
    dc += work
    if peepholes is not None and d_peepholes is not None:
        dc += d_o * peepholes[2]
        d_peepholes[2] += np.sum(d_o * c, axis=0)
    np.multiply(dc, c_prev, out=d_f)
    np.multiply(dc, g, out=d_i)
    if cell.input_forget:  # f = 1 - i
        d_i -= d_f
        d_f[...] = 0
    else:
        d_f *= local(gate, p_f, f)
    d_i *= local(gate, p_i, i)
    np.multiply(dc, i, out=d_g)
    d_g *= local(cell.cell_activation, p_g, g)
    dc *= f
    if peepholes is not None and d_peepholes is not None:
        dc += d_i * peepholes[0] + d_f * peepholes[1]
        d_peepholes[0] += np.sum(d_i * c_prev, axis=0)
        d_peepholes[1] += np.sum(d_f * c_prev, axis=0)
