"""State dicts: torch's LSTM keys and layout read into a StackedLSTM."""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from ...params import check_model_size
from ...stack import StackedLSTM, stack_parameter_count
from ..gates import InteropError, check_shape, unpack

TORCH_ORDER = "ifgo"
_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}{'_reverse' if direction else ''}"


def _whole_module_hint(module: Any) -> str:
    """What to call for a whole torch model: its parts by name, with the submodules it has."""
    children = [(name, type(child).__name__) for name, child in module.named_children()]
    lstm = next((n for n, kind in children if kind == "LSTM"), "lstm")
    emb = next((n for n, kind in children if kind == "Embedding"), None)
    head = [n for n, kind in children if kind not in ("LSTM", "Embedding")] or ["fc"]
    call = f"from_torch(m, lstm={lstm!r}, head={head!r} (with activations, in forward order)"
    call += f", embedding={emb!r}" if emb else ""
    seen = ", ".join(f"{n} ({kind})" for n, kind in children[:12]) or "none"
    return (
        f"expected a torch.nn.LSTM or its state dict; got {type(module).__name__}, a whole model: name its parts, "
        f"{call}, output='h_n' | 'last' | 'sequence'), or pass them: from_torch(lstm=m.{lstm}, head=[...], "
        f"output=...); its submodules: {seen}"
    )


def _prefix_hint(keys: list[str]) -> str:
    """For a state dict whose names have prefixes: which, and the call that names them."""
    prefixes = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys if "." in k))
    lstm = [p for p in prefixes if any(_KEY.match(k[len(p) + 1:]) for k in keys if k.startswith(p + "."))]
    others = [p for p in prefixes if p not in lstm]
    return (
        f"; its names have prefixes {prefixes[:8]}, as a whole model's state dict does: name its parts, "
        f"e.g. from_torch(sd, lstm={(lstm or ['lstm'])[0]!r}, head=[Linear names and activations in "
        f"forward order, from {others[:6]}], embedding=<its name or None>, output='h_n' | 'last' | 'sequence')"
    )


def _config_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The torch.nn.LSTM configuration a state dict's names and layer-0 shapes describe.

    Its tensor names must be exactly those of one configuration: layers
    ``l0`` .. ``l{L-1}`` without gaps, each with the same tensors (both
    directions, biases, projection) -- so a key such as
    ``bias_hh_l100000000`` is refused here, before anything is built.
    """
    unknown = [k for k in sd if not _KEY.match(k)]
    if unknown:
        hint = _prefix_hint([str(k) for k in sd]) if any("." in str(k) for k in unknown) else ""
        raise InteropError(f"not a torch.nn.LSTM state dict: unexpected tensor(s) {unknown[:5]}{hint}")
    if "weight_ih_l0" not in sd or "weight_hh_l0" not in sd:
        raise InteropError("not a torch.nn.LSTM state dict: missing tensor 'weight_ih_l0' or 'weight_hh_l0'")
    w_ih, w_hh = sd["weight_ih_l0"], sd["weight_hh_l0"]
    if w_ih.ndim != 2 or w_hh.ndim != 2 or w_ih.shape[0] % 4 or w_ih.shape[0] == 0 or w_ih.shape[1] == 0:
        raise InteropError(
            f"tensor 'weight_ih_l0' must be (4H, I) and 'weight_hh_l0' (4H, P); got {w_ih.shape} and {w_hh.shape}"
        )
    layers = sorted({int(m.group(2)) for m in map(_KEY.match, sd) if m is not None})
    if layers != list(range(len(layers))):  # len(layers) <= len(sd): no loop runs to a number a key claims
        gaps = [n for n in layers if n >= len(layers)][:3]
        raise InteropError(
            f"not a torch.nn.LSTM state dict: its layers must be numbered l0..l{len(layers) - 1} without gaps; "
            f"found layer(s) {gaps}"
        )
    cfg = {
        "input_size": w_ih.shape[1],
        "hidden_size": w_ih.shape[0] // 4,
        "num_layers": len(layers),
        "bidirectional": "weight_ih_l0_reverse" in sd,
        "bias": "bias_ih_l0" in sd,
        "proj_size": sd["weight_hr_l0"].shape[0] if "weight_hr_l0" in sd and sd["weight_hr_l0"].ndim == 2 else 0,
    }
    expected = {
        f"{kind}{_suffix(l, d)}"
        for l in range(cfg["num_layers"])
        for d in range(2 if cfg["bidirectional"] else 1)
        for kind in ("weight_ih", "weight_hh") + ("bias_ih", "bias_hh") * cfg["bias"] + ("weight_hr",) * bool(cfg["proj_size"])
    }
    extra = sorted(set(sd) - expected)  # a missing tensor is named, with its shape, by check_shape
    if extra:
        raise InteropError(f"state dict has tensor(s) this configuration does not use: {extra[:5]}")
    return cfg


_LAYOUT_REQUIRED = (
    "a state dict does not record its layout: pass batch_first=True if the torch.nn.LSTM was built with "
    "batch_first=True (input (B, T, I)), or batch_first=False (input (T, B, I))"
)


def _torch_class(obj: Any, *names: str) -> str | None:
    """The ``torch.nn`` class name among ``names`` that ``obj`` is an instance of (by its MRO; torch is not imported)."""
    for cls in type(obj).__mro__:
        if cls.__name__ in names and cls.__module__.startswith("torch.nn"):
            return cls.__name__
    return None


def _is_module(obj: Any) -> bool:
    return _torch_class(obj, "Module") is not None


def _stack_from(
    source: Any, *, batch_first: bool | None, dtype: Any, layout_required: bool = True, where: str = ""
) -> StackedLSTM:
    """The StackedLSTM of one ``torch.nn.LSTM`` module or its (unprefixed) state dict."""
    module = None
    if _torch_class(source, "LSTM") is not None:
        module = source
        sd_raw = module.state_dict()
    elif isinstance(source, Mapping):
        sd_raw = source
    elif _torch_class(source, "GRU", "RNN", "RNNBase") is not None:
        raise InteropError(f"{where}a torch.nn.{type(source).__name__}: nplstm maps torch.nn.LSTM only")
    elif _is_module(source):
        raise TypeError(_whole_module_hint(source))
    else:
        raise TypeError(f"expected a torch.nn.LSTM or its state dict; got {type(source).__name__}")
    try:
        sd = {k: _to_numpy(v) for k, v in sd_raw.items()}
    except (TypeError, RuntimeError, ValueError) as exc:  # e.g. bfloat16 or sparse tensors
        raise InteropError(f"{where}a tensor of the state dict cannot be read as an array: {exc}") from None
    try:
        cfg = _config_from_state_dict(sd)
    except InteropError as exc:
        raise InteropError(f"{where}{exc}") from None
    if module is not None:
        if getattr(module, "dropout", 0):
            cfg["dropout"] = float(module.dropout)
        if batch_first is None:
            batch_first = bool(module.batch_first)
    if dtype is None:
        dtype = np.float64 if sd["weight_ih_l0"].dtype == np.float64 else np.float32
    H, I, P = cfg["hidden_size"], cfg["input_size"], cfg["proj_size"] or cfg["hidden_size"]
    D = 2 if cfg["bidirectional"] else 1
    try:  # the constructor's own limit, before even the shape checks touch (maybe stride-0) tensors
        count = stack_parameter_count(I, H, cfg["num_layers"], bidirectional=cfg["bidirectional"],
                                      proj_size=cfg["proj_size"], bias=cfg["bias"], peepholes=False)
        check_model_size(count, cfg["num_layers"] * D, np.dtype(dtype).itemsize, "the torch.nn.LSTM")
    except ValueError as exc:
        raise InteropError(f"{where}{exc}") from None
    checked = []
    try:
        for l in range(cfg["num_layers"]):
            for d in range(D):
                sfx = _suffix(l, d)
                t = {
                    "w_ih": check_shape(sd, f"weight_ih{sfx}", (4 * H, I if l == 0 else D * P)),
                    "w_hh": check_shape(sd, f"weight_hh{sfx}", (4 * H, P)),
                }
                if cfg["bias"]:
                    t["b"] = check_shape(sd, f"bias_ih{sfx}", (4 * H,)) + check_shape(sd, f"bias_hh{sfx}", (4 * H,))
                if cfg["proj_size"]:
                    t["w_hr"] = check_shape(sd, f"weight_hr{sfx}", (P, H))
                checked.append((l, d, t))
    except InteropError as exc:
        raise InteropError(f"{where}{exc}") from None
    if batch_first is None:
        if layout_required:  # every tensor is valid: only the layout is missing
            raise InteropError(f"{where}{_LAYOUT_REQUIRED}")
        batch_first = True  # a SequenceModel takes (B, T, I) whatever the torch layout was
    try:  # every shape matched real tensors; the constructor still checks the size before allocating
        stack = StackedLSTM(**cfg, batch_first=bool(batch_first), seed=0, dtype=dtype)
    except ValueError as exc:
        raise InteropError(f"{where}{exc}") from None
    for l, d, t in checked:
        unpack(stack.layers[l][d], TORCH_ORDER, t["w_ih"], t["w_hh"], t.get("b"), t.get("w_hr"))
    return stack
