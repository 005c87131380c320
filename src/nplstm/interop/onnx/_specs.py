"""Node specs: one ONNX LSTM node's attributes and weights, checked and cast to float64."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..gates import InteropError
from ._constants import _AGREED_DEFAULTS, _DEFAULT_ACTIVATIONS, _FLOAT_DTYPES, ACTIVATION_PARAMS
from ._plumbing import _attrs, _node_name


@dataclass
class _Layer:
    """One ONNX LSTM node, its weights cast to float64 (before any arithmetic)."""

    name: str
    direction: str
    layout: int
    hidden_size: int
    W: np.ndarray  # (D, 4H, I)
    R: np.ndarray  # (D, 4H, H)
    B: np.ndarray  # (D, 4H): input bias + recurrent bias, summed in float64
    P: np.ndarray | None  # (D, 3H) Pi, Po, Pf, or None when absent / all zero
    source_dtype: np.dtype
    activations: tuple[tuple[str, float | None, float | None], ...]
    clip: float | None
    input_forget: bool
    has_bias: bool = True

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1


def _activations(where: str, attrs: dict[str, Any], D: int) -> tuple[tuple[str, float | None, float | None], ...]:
    """Parse activations with alpha/beta the way onnxruntime consumes them (one triple, checked equal per direction)."""
    canonical = {name.lower(): name for name in ACTIVATION_PARAMS}
    names = attrs.get("activations")
    if names is None:
        names = list(_DEFAULT_ACTIVATIONS) * D
    if len(names) != 3 * D:
        raise InteropError(f"{where}: activations must list 3 functions per direction ({3 * D}); got {names}")
    resolved = []
    for n in names:
        if n.lower() not in canonical:
            raise InteropError(f"{where}: unknown activation {n!r}; the LSTM operator lists {sorted(ACTIVATION_PARAMS)}")
        resolved.append(canonical[n.lower()])
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    need_alpha = sum(ACTIVATION_PARAMS[n][0] for n in resolved)
    need_beta = sum(ACTIVATION_PARAMS[n][1] for n in resolved)
    # The spec says values are "consumed in the order of activation functions";
    # onnxruntime consumes one per activation that takes it.  Any other count
    # could be read two ways, so it is refused.
    for label, given, needed in (("activation_alpha", alphas, need_alpha), ("activation_beta", betas, need_beta)):
        if given and len(given) != needed:
            raise InteropError(
                f"{where}: {label} has {len(given)} values for {needed} activations that take one ({resolved}); ambiguous"
            )
    out = []
    given_values = {"activation_alpha": list(alphas or ()), "activation_beta": list(betas or ())}

    def value(n: str, k: int, attr: str) -> float | None:
        """Activation ``n``'s k-th parameter (0: alpha, 1: beta): the next one given, else the default both runtimes agree on."""
        if not ACTIVATION_PARAMS[n][k]:
            return None
        if given_values[attr]:
            return float(given_values[attr].pop(0))
        agreed = _AGREED_DEFAULTS.get(n, (None, None))[k]
        if agreed is None:
            raise InteropError(f"{where}: activation {n} without {attr}: the ONNX spec and onnxruntime differ on its default")
        return agreed

    for n in resolved:
        alpha = value(n, 0, "activation_alpha")
        out.append((n, alpha, value(n, 1, "activation_beta")))
    if D == 2 and out[:3] != out[3:]:
        raise InteropError(f"{where}: attribute 'activations' differs between the directions ({out[:3]} vs {out[3:]}); nplstm shares one per stack")
    return tuple(out[:3])


def _weight(where: str, label: str, value: Any, deps: frozenset[str], shape: tuple[int | None, ...]) -> np.ndarray:
    if deps:
        raise InteropError(f"{where}: {label} is computed at run time from {sorted(deps)}, not stored in the model")
    arr = np.asarray(value)
    if arr.dtype not in _FLOAT_DTYPES:
        raise InteropError(f"{where}: tensor '{label}' has dtype {arr.dtype}; expected float16, float32 or float64")
    expected = tuple(arr.shape[k] if s is None and k < arr.ndim else s for k, s in enumerate(shape))
    if arr.shape != expected:
        shown = tuple("?" if s is None else s for s in shape)
        raise InteropError(f"tensor '{label}' of {where} has shape {arr.shape}; expected {shown}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise InteropError(f"{where}: tensor '{label}' holds NaN or inf")
    return out


#: Attributes of the LSTM operator (all versions); any other is refused rather than ignored.
_LSTM_ATTRIBUTES = {
    "activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "input_forget", "layout",
    "output_sequence",
}


def _layer_spec(node: Any, args: list[Any], arg_deps: list[frozenset[str]]) -> _Layer:
    where = f"LSTM node {_node_name(node)!r}"
    attrs = _attrs(node)
    unknown = sorted(set(attrs) - _LSTM_ATTRIBUTES)
    if unknown:
        raise InteropError(f"{where}: unknown attribute(s) {unknown}; nplstm does not know what they change")
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise InteropError(f"{where}: unknown direction {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise InteropError(f"{where}: layout must be 0 or 1; got {layout}")
    args = list(args) + [None] * (8 - len(args))
    arg_deps = list(arg_deps) + [frozenset()] * (8 - len(arg_deps))
    if args[1] is None or args[2] is None:
        raise InteropError(f"{where}: missing W or R")
    R0 = np.asarray(args[2])
    if R0.ndim != 3 or R0.shape[0] != D or R0.shape[1] != 4 * R0.shape[2]:
        raise InteropError(f"{where}: tensor 'R' must be ({D}, 4H, H); got {R0.shape}")
    H = R0.shape[2]
    if "hidden_size" in attrs and attrs["hidden_size"] != H:
        raise InteropError(f"{where}: hidden_size={attrs['hidden_size']} but R implies {H}")
    W = _weight(where, "W", args[1], arg_deps[1], (D, 4 * H, None))
    if W.ndim != 3:
        raise InteropError(f"{where}: tensor 'W' must be ({D}, {4 * H}, I); got {W.shape}")
    R = _weight(where, "R", args[2], arg_deps[2], (D, 4 * H, H))
    Bfull = _weight(where, "B", args[3], arg_deps[3], (D, 8 * H)) if args[3] is not None else np.zeros((D, 8 * H))
    P = _weight(where, "P", args[7], arg_deps[7], (D, 3 * H)) if args[7] is not None else None
    if P is not None and not P.any():
        P = None
    dtypes = {np.asarray(a).dtype for a in (args[1], args[2], args[3], args[7]) if a is not None}
    clip = attrs.get("clip")
    if clip is not None and not (np.isfinite(clip) and clip > 0):
        raise InteropError(f"{where}: clip must be a positive number; got {clip}")
    input_forget = int(attrs.get("input_forget", 0))
    if input_forget not in (0, 1):
        raise InteropError(f"{where}: input_forget must be 0 or 1; got {input_forget}")
    return _Layer(
        name=_node_name(node),
        direction=direction,
        layout=layout,
        hidden_size=H,
        W=W,
        R=R,
        B=Bfull[:, : 4 * H] + Bfull[:, 4 * H :],
        P=P,
        source_dtype=np.dtype(np.float64) if np.dtype(np.float64) in dtypes else np.dtype(np.float32),
        activations=_activations(where, attrs, D),
        clip=None if clip is None else float(clip),
        input_forget=bool(input_forget),
        has_bias=args[3] is not None,
    )
