"""Parameters: those of one layer and direction, and how many a stack has.

:class:`DirectionParams` stores the four gates fused, transposed, in the order
:data:`nplstm.cell.GATE_ORDER`, and exposes each gate as the public,
assignable view the textbook API promises (``Wf, Wi, Wc, Wo`` of shape
(H, P + I) acting on z = [h; x], biases ``bf, bi, bc, bo`` of shape (H, 1)).
Reading gives a view into the fused storage, so in-place writes land there;
assignment copies in after a shape, dtype and finiteness check.  Either way
the next forward sees it and nothing needs re-fusing.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .cell import DEFAULT_CELL, CellOptions
from .checks import config_flag, dropout_rate, positive_int
from .layout import GATE_ORDER, GATE_SUFFIX, PEEPHOLE_GATES
from .shapes import as_real_array

__all__ = [
    "DirectionParams", "MAX_MODEL_BYTES", "CELL_OVERHEAD_BYTES", "FLOAT_DTYPES", "model_dtype",
    "as_generator", "positive_int", "check_model_size", "checked_array", "parameter_prefix",
    "stack_parameter_count", "stack_parameter_shapes", "INIT_SCHEMES", "init_scheme", "glorot_uniform", "orthogonal_rows",
]

FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))

#: The largest model a constructor builds, in bytes: its parameters plus
#: :data:`CELL_OVERHEAD_BYTES` per layer and direction (2 GiB).  Checked by
#: :func:`check_model_size` before anything is allocated, so ``LSTM(1, 10**9)``
#: or ``StackedLSTM(1, 1, num_layers=10**7)`` fail at once; raise it (e.g.
#: ``nplstm.params.MAX_MODEL_BYTES = 1 << 34``) to build a larger model on purpose.
MAX_MODEL_BYTES = 1 << 31
#: What one layer and direction costs besides its parameters (Python objects,
#: array headers, views): it bounds a stack of millions of tiny layers too.
CELL_OVERHEAD_BYTES = 4096


#: How a model's weights start, by name (``init=`` of the constructors):
#:
#: ``"torch"``
#:     as a fresh ``torch.nn.LSTM`` / ``nn.Linear`` / ``nn.Embedding``: every LSTM
#:     weight uniform(-k, k) with k = 1/√H, each gate bias the sum of two such draws
#:     (torch's ``bias_ih + bias_hh``, so the same distribution as importing a fresh
#:     torch model); dense weight and bias uniform(-1/√in, 1/√in); embedding N(0, 1).
#: ``"keras"``
#:     as a fresh Keras ``LSTM`` / ``Dense`` / ``Embedding``: input kernel
#:     glorot_uniform, recurrent kernel orthogonal, biases zero but the forget
#:     gate's one (``unit_forget_bias``); dense glorot_uniform with zero bias;
#:     embedding uniform(-0.05, 0.05).
#: ``"textbook"``
#:     the textbook :class:`nplstm.LSTM`'s contract (and every model's start before
#:     ``init=`` existed): LSTM weights uniform(-1/√H, 1/√H), every bias zero;
#:     dense weight uniform(-1/√in, 1/√in), bias zero; embedding N(0, 1).
#:
#: A projection ``W_hr`` starts uniform(-1/√H, 1/√H) (torch, textbook) or glorot_uniform
#: (keras, which has none); peepholes start at zero in every scheme.
INIT_SCHEMES: tuple[str, ...] = ("torch", "keras", "textbook")


def init_scheme(value: Any, name: str = "init") -> str:
    """``value`` if it names one of :data:`INIT_SCHEMES`, else ValueError naming them."""
    if not isinstance(value, str) or value not in INIT_SCHEMES:
        raise ValueError(f"{name} must be one of {list(INIT_SCHEMES)}; got {value!r}")
    return value


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, size: tuple[int, ...]) -> np.ndarray:
    """Keras' ``glorot_uniform``: uniform(-l, l) with l = √(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=size)


def orthogonal_rows(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Keras' ``Orthogonal`` (gain 1) for a (rows, cols) kernel, rows <= cols: orthonormal rows.

    The Q of a QR factorisation of a standard normal (cols, rows) matrix, signs
    fixed by R's diagonal (so Q is Haar-distributed), transposed.
    """
    q, r = np.linalg.qr(rng.standard_normal((cols, rows)))
    return (q * np.sign(np.diag(r))).T


def model_dtype(dtype: Any) -> np.dtype:
    """Validate a model dtype: float64 or float32."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float64 or float32; got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float64 or float32; got {dt}")
    return dt


def as_generator(seed: int | np.random.Generator | None, name: str = "seed") -> np.random.Generator:
    """A Generator from a non-negative int seed, a Generator, or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"{name} must be a non-negative integer, a numpy.random.Generator or None; got {seed!r}")
    return np.random.default_rng(seed)


def check_model_size(n_parameters: int, n_cells: int, itemsize: int, what: str) -> None:
    """Raise ValueError if a model of ``n_parameters`` in ``n_cells`` layer-directions exceeds :data:`MAX_MODEL_BYTES`.

    The one size check every constructor (and every loader, before it builds
    one) makes; it needs only counts, so it runs before any allocation.
    """
    need = int(n_parameters) * int(itemsize) + int(n_cells) * CELL_OVERHEAD_BYTES
    if need > MAX_MODEL_BYTES:
        raise ValueError(
            f"{what} needs about {need} bytes ({n_parameters} parameters of {itemsize} bytes in {n_cells} "
            f"layer-directions), over nplstm.params.MAX_MODEL_BYTES = {MAX_MODEL_BYTES}; raise that limit to build it"
        )


def checked_array(value: Any, name: str, shape: tuple[int, ...], dtype: np.dtype, *, check_finite: bool = True) -> np.ndarray:
    """``value`` as a real array of ``shape`` in ``dtype``, refusing non-finite values unless told not to."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; give a plain array (masks would be ignored)")
    arr = as_real_array(value, name, dtype, check_finite=False)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {arr.shape}")
    if check_finite and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf; assign finite values (or use set_parameter(..., check_finite=False))")
    return arr


class _GateView:
    """Descriptor exposing one gate's slice of :class:`DirectionParams`' fused storage."""

    def __init__(self, kind: str, gate: str) -> None:
        self.kind = kind  # "W", "b" or "P"
        self.gate = gate

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: DirectionParams | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.gate_view(self.kind, self.gate)

    def __set__(self, obj: DirectionParams, value: Any) -> None:
        obj.set_parameter(self.name, value)


class DirectionParams:
    """The parameters of one LSTM layer in one direction.

    Parameters
    ----------
    input_size, hidden_size : int
    proj_size : int
        LSTMP projection size (0: none); the hidden state then has P features.
    peepholes : bool
        Add peephole weights ``Pi, Pf, Po`` (H, 1).
    rng : numpy.random.Generator
        Source of the initial weights.
    dtype : float64 or float32
    init : {"textbook", "torch", "keras"}
        How the weights start (see :data:`INIT_SCHEMES`); "textbook":
        uniform(-1/√H, 1/√H) weights, zero biases.
    """

    Wf = _GateView("W", "f")
    Wi = _GateView("W", "i")
    Wc = _GateView("W", "g")
    Wo = _GateView("W", "o")
    bf = _GateView("b", "f")
    bi = _GateView("b", "i")
    bc = _GateView("b", "g")
    bo = _GateView("b", "o")
    Pi = _GateView("P", "i")
    Pf = _GateView("P", "f")
    Po = _GateView("P", "o")

    def __init__(
        self, input_size: int, hidden_size: int, *, proj_size: int = 0, peepholes: bool = False,
        bias: bool = True, rng: np.random.Generator, dtype: np.dtype, init: str = "textbook",
    ) -> None:
        self.input_size, self.hidden_size, self.proj_size = input_size, hidden_size, proj_size
        self.dtype = dtype
        self.peepholes = peepholes
        self.has_bias = bias
        H, I, P = hidden_size, input_size, self.state_size
        bound = 1.0 / np.sqrt(H)
        # Transposed fused storage: WT (P + I, 4, H) reshapes to the contiguous
        # (P + I, 4H) right-hand side of z @ Wᵀ that BLAS and the kernels want;
        # gate k of GATE_ORDER is WT[:, k, :].T, an (H, P + I) view.
        if init_scheme(init) == "keras":  # kernels (I, 4H) and (P, 4H) as Keras shapes them; gate order is immaterial
            WT = np.concatenate([orthogonal_rows(rng, P, 4 * H), glorot_uniform(rng, I, 4 * H, (I, 4 * H))])
            self.WT = np.ascontiguousarray(WT.reshape(P + I, 4, H), dtype=dtype)
            W_hr = glorot_uniform(rng, H, P, (P, H)) if proj_size else None
        else:  # the textbook draws, in their historic order (same seed, same weights)
            W = rng.uniform(-bound, bound, size=(4, H, P + I)).astype(dtype)
            self.WT = np.ascontiguousarray(W.transpose(2, 0, 1))
            W_hr = rng.uniform(-bound, bound, size=(P, H)) if proj_size else None
        self.b = np.zeros((4, H, 1), dtype=dtype)
        if bias and init == "torch":  # torch's bias_ih + bias_hh: the sum of two uniform(-k, k) draws
            self.b[...] = rng.uniform(-bound, bound, size=(2, 4, H, 1)).sum(axis=0)
        elif bias and init == "keras":  # unit_forget_bias
            self.b[GATE_ORDER.index("f")] = 1.0
        if not bias:  # stays zero: a bias-free layer has no bias to set, save or train
            self.b.flags.writeable = False
        self.W_hr_storage = W_hr.astype(dtype) if W_hr is not None else None
        self.P = np.zeros((len(PEEPHOLE_GATES), H, 1), dtype=dtype) if peepholes else None

    @property
    def state_size(self) -> int:
        """Features of the hidden state: proj_size if projecting, else H."""
        return self.proj_size or self.hidden_size

    # ------------------------------------------------------------ views
    def gate_view(self, kind: str, gate: str) -> np.ndarray:
        if kind == "W":
            return self.WT[:, GATE_ORDER.index(gate), :].T
        if kind == "b":
            return self.b[GATE_ORDER.index(gate)]
        if self.P is None:
            raise AttributeError(f"P{GATE_SUFFIX[gate]} exists only with peepholes")
        return self.P[PEEPHOLE_GATES.index(gate)]

    @property
    def W_hr(self) -> np.ndarray | None:
        """The LSTMP projection (P, H), or None without one."""
        return self.W_hr_storage

    @W_hr.setter
    def W_hr(self, value: Any) -> None:
        self.set_parameter("W_hr", value)

    def set_parameter(self, name: str, value: Any, *, check_finite: bool = True) -> None:
        """Copy ``value`` into parameter ``name`` after checking shape, dtype and (by default) finiteness.

        Biases and peepholes (H, 1) may also be given as (H,).
        """
        if name[0] == "b" and not self.has_bias:
            raise AttributeError(f"{name}: this layer was made with bias=False, so its biases stay zero")
        if name == "W_hr":
            if self.W_hr_storage is None:
                raise AttributeError("W_hr exists only when proj_size > 0")
            target = self.W_hr_storage
        else:
            target = getattr(self, name)
        column = name[0] in "bP"
        if column and np.shape(value) == (target.shape[0],):
            value = np.reshape(value, target.shape)
        try:
            arr = checked_array(value, name, target.shape, self.dtype, check_finite=check_finite)
        except ValueError as exc:
            if column and "must have shape" in str(exc):
                raise ValueError(f"{name} must have shape {target.shape} or ({target.shape[0]},); got {np.shape(value)}") from None
            raise
        target[...] = arr

    @staticmethod
    def names_for(*, proj: bool, peepholes: bool, bias: bool) -> list[str]:
        """Parameter names of a layer with these options, in a fixed order."""
        names = [f"W{GATE_SUFFIX[g]}" for g in "figo"]
        if bias:
            names += [f"b{GATE_SUFFIX[g]}" for g in "figo"]
        if peepholes:
            names += [f"P{GATE_SUFFIX[g]}" for g in PEEPHOLE_GATES]
        return names + (["W_hr"] if proj else [])

    def parameter_names(self) -> list[str]:
        """Names of the trainable arrays, in a fixed order."""
        return self.names_for(proj=bool(self.proj_size), peepholes=self.peepholes, bias=self.has_bias)

    def parameters(self) -> dict[str, np.ndarray]:
        """The trainable arrays by name (views: writing into them updates the weights)."""
        return {name: getattr(self, name) for name in self.parameter_names()}

    def snapshot(self) -> DirectionParams:
        """A frozen copy (what a training tape keeps of the parameters its forward used)."""
        frozen = copy.copy(self)
        for name in ("WT", "b", "W_hr_storage", "P"):
            value = getattr(self, name)
            if value is not None:
                value = value.copy()
                value.flags.writeable = False
                setattr(frozen, name, value)
        return frozen

    def fused_matrix(self) -> np.ndarray:
        """The contiguous (P + I, 4H) view ``[W_h; W_x]ᵀ``: ``z @ it`` gives all four gates for z = [h; x]."""
        return self.WT.reshape(-1, 4 * self.hidden_size)

    def fused(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Contiguous views ``(W_xᵀ (I, 4H), W_hᵀ (P, 4H), b (4H,))``, gates in GATE_ORDER."""
        WT = self.fused_matrix()
        P = self.state_size
        return WT[P:], WT[:P], self.b.reshape(4 * self.hidden_size)

    def peephole_rows(self) -> np.ndarray | None:
        """Peepholes as (3, H) rows in PEEPHOLE_GATES order, or None."""
        return None if self.P is None else self.P[:, :, 0]

    def named_gradients(self, dW_x: np.ndarray, dW_h: np.ndarray, db: np.ndarray,
                        dW_hr: np.ndarray | None, dP: np.ndarray | None) -> dict[str, np.ndarray]:
        """Split fused gradients ((4H, I), (4H, P), (4H,)) into ``{"Wf": ..., "bf": ..., ...}``."""
        H, P = self.hidden_size, self.state_size
        dW = np.concatenate([dW_h.reshape(4, H, P), dW_x.reshape(4, H, self.input_size)], axis=2)
        db4 = db.reshape(4, H, 1)
        named: dict[str, np.ndarray] = {}
        for k, gate in enumerate(GATE_ORDER):
            named[f"W{GATE_SUFFIX[gate]}"] = dW[k]
            named[f"b{GATE_SUFFIX[gate]}"] = db4[k]  # dropped below for a bias-free layer
        if dP is not None:
            for k, gate in enumerate(PEEPHOLE_GATES):
                named[f"P{GATE_SUFFIX[gate]}"] = dP[k].reshape(H, 1)
        if dW_hr is not None:
            named["W_hr"] = dW_hr
        return {name: named[name] for name in self.parameter_names()}

    def __repr__(self) -> str:
        proj = f", proj_size={self.proj_size}" if self.proj_size else ""
        peep = ", peepholes=True" if self.peepholes else ""
        return f"DirectionParams(input_size={self.input_size}, hidden_size={self.hidden_size}{proj}{peep}, dtype={self.dtype.name})"


# ------------------------------------------------------------ counts and shapes
def parameter_prefix(layer: int, direction: int) -> str:
    """The name prefix of layer ``layer``, direction ``direction`` (1 = reverse): ``l{layer}[_reverse].``."""
    return f"l{layer}{'_reverse' if direction else ''}."


def stack_parameter_count(
    input_size: int, hidden_size: int, num_layers: int, *, bidirectional: bool, proj_size: int, bias: bool, peepholes: bool
) -> int:
    """How many parameters a stack of this configuration has, computed without building it."""
    I, H, L, P = input_size, hidden_size, num_layers, proj_size or hidden_size
    D = 2 if bidirectional else 1
    names = DirectionParams.names_for(proj=bool(proj_size), peepholes=peepholes, bias=bias)
    small = H * sum(name[0] in "bP" for name in names)  # biases and peepholes, (H, 1) each
    per_direction = 4 * H * P + small + (P * H if proj_size else 0)
    return D * 4 * H * I + (L - 1) * D * 4 * H * D * P + L * D * per_direction


def stack_parameter_shapes(config: dict[str, Any], max_count: int | None = None) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter a stack of ``config`` has, without building it.

    Checks the config first; with ``max_count``, refuses a config implying more
    parameters than that before listing them (a hostile file may claim 10⁷ layers).
    """
    I = positive_int(config["input_size"], "input_size")
    H = positive_int(config["hidden_size"], "hidden_size")
    L = positive_int(config["num_layers"], "num_layers")
    proj = positive_int(config["proj_size"], "proj_size", minimum=0)
    if proj >= H:
        raise ValueError(f"proj_size must be smaller than hidden_size {H}; got {proj}")
    bidirectional, bias = config_flag(config, "bidirectional"), config_flag(config, "bias", True)
    config_flag(config, "batch_first")
    for rate in ("dropout", "input_dropout", "recurrent_dropout"):
        dropout_rate(config.get(rate, 0.0), rate)
    P = proj or H
    D = 2 if bidirectional else 1
    cell = CellOptions.from_config(config["cell"]) if config.get("cell") is not None else DEFAULT_CELL
    names = DirectionParams.names_for(proj=bool(proj), peepholes=cell.peepholes, bias=bias)
    count = stack_parameter_count(I, H, L, bidirectional=bidirectional, proj_size=proj, bias=bias, peepholes=cell.peepholes)
    if max_count is not None and count > max_count:
        raise ValueError(f"the config implies {count} parameters, over the limit of {max_count} (pass max_bytes= to allow more)")
    # the constructor's own limit (float32, the smallest dtype): refused before listing 10^7 layers' shapes
    check_model_size(count, L * D, 4, "the model the config describes")
    shapes: dict[str, tuple[int, ...]] = {}
    for l in range(L):
        for d in range(D):
            for name in names:
                if name == "W_hr":
                    shape = (P, H)
                elif name[0] == "W":
                    shape = (H, P + (I if l == 0 else D * P))
                else:  # biases and peepholes
                    shape = (H, 1)
                shapes[parameter_prefix(l, d) + name] = shape
    return shapes
