"""PyTorch: ``torch.nn.LSTM`` modules, state dicts and ``.pt`` files."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from ..head import HEAD_ACTIVATIONS
from ..model import OUTPUTS
from ..params import check_model_size
from ..stack import StackedLSTM, stack_parameter_count
from .gates import InteropError, check_shape, open_framework_file, packed, unpack

__all__ = ["from_torch", "to_torch_state_dict", "load_torch", "torch_module", "TORCH_ORDER"]

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


def from_torch(
    source: Any = None,
    *,
    batch_first: bool | None = None,
    dtype: Any = None,
    lstm: Any = None,
    head: Any = None,
    embedding: Any = None,
    output: str | None = None,
) -> Any:
    """An nplstm model with the weights of a torch ``nn.LSTM`` or of a whole torch model.

    **One LSTM** -> :class:`~nplstm.stack.StackedLSTM`: ``from_torch(m.lstm)``
    or ``from_torch(state_dict, batch_first=...)``.  A module carries its
    layout; **a state dict does not**, so with one ``batch_first=True`` or
    ``False`` must be given, as the module was built (otherwise a
    ``(B, T, I)`` batch would run as ``(T, B, I)`` without any error).
    ``batch_first`` overrides a module's.

    **A whole model** (``nn.Embedding`` -> ``nn.LSTM`` -> ``nn.Linear`` layers
    and activations) -> :class:`~nplstm.SequenceModel`, by naming its parts in
    forward order, as modules::

        from_torch(lstm=m.lstm, head=[m.fc1, "relu", m.fc2], embedding=m.emb, output="h_n")

    or as names of the model's submodules (then every parameter of ``m``
    must belong to a named part) or of a whole state dict's prefixes (every
    tensor must be used)::

        from_torch(m, lstm="lstm", head=["fc1", "relu", "fc2"], embedding="emb", output="h_n")
        from_torch(m.state_dict(), lstm="lstm", head=["fc1", "relu", "fc2"], embedding="emb", output="h_n")

    ``head`` items: ``nn.Linear`` (no bias: a zero bias) or its name;
    ``nn.Sequential`` (flattened); an activation, as a name (``"relu"``,
    ``"tanh"``, ``"sigmoid"``, ``"softmax"``, ``"log_softmax"``,
    ``"linear"``) or a module (``nn.ReLU``, ``nn.Tanh``, ``nn.Sigmoid``,
    ``nn.Softmax(dim=-1)``, ``nn.LogSoftmax(dim=-1)``); ``nn.Dropout`` and
    ``nn.Identity`` are the identity at inference.  Each activation follows
    a Linear.  A state dict holds no activations: name them in ``head``.
    A whole model's ``batch_first`` is optional: the model takes
    ``(B, T, I)`` however the torch LSTM was built.  ``lstm=`` without a
    head gives just that LSTM's StackedLSTM (a state dict then needs
    ``batch_first``).  ``output`` (required) says what the head reads, as the torch forward
    does: ``"h_n"`` (``h_n[-1]``, bidirectional ``cat(h_n[-2], h_n[-1])``),
    ``"last"`` (``out[:, -1]``) or ``"sequence"`` (every step, ``out``).
    ``nn.Embedding``: ``padding_idx`` is kept (a state dict does not record
    it); ``max_norm``, ``scale_grad_by_freq`` and ``sparse`` are refused.
    The model's ``predict`` takes ``(B, T, I)`` floats (or ``(B, T)`` ids)
    whatever the torch LSTM's layout, from zero initial states; anything
    else is refused by name.  ``dtype`` defaults to the LSTM weights'.
    """
    if head is None and embedding is None and output is None:
        if lstm is None:
            return _stack_from(source, batch_first=batch_first, dtype=dtype)
        if isinstance(source, Mapping):  # only the LSTM out of a whole model's state dict
            return _stack_from(_Prefixed(source).take(lstm, "lstm"), batch_first=batch_first, dtype=dtype,
                               where=f"lstm={lstm!r}: ")
        return _stack_from(_resolve(source, lstm, "lstm"), batch_first=batch_first, dtype=dtype,
                           where=f"lstm={lstm!r}: " if isinstance(lstm, str) else "")
    return _model_from(source, batch_first=batch_first, dtype=dtype, lstm=lstm, head=head,
                       embedding=embedding, output=output)


_ACTIVATION_MODULES = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax",
                       "LogSoftmax": "log_softmax", "Dropout": "linear", "Identity": "linear"}
_SUPPORTED = ("supported: nn.Linear, nn.Sequential of them, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Softmax(dim=-1), "
              "nn.LogSoftmax(dim=-1), nn.Dropout, nn.Identity, or the names " + ", ".join(map(repr, HEAD_ACTIVATIONS)))


class _Prefixed:
    """A whole model's state dict, taken apart by prefix; remembers which tensors were used."""

    def __init__(self, sd: Mapping[Any, Any]) -> None:
        bad = [k for k in sd if not isinstance(k, str)]
        if bad:
            raise InteropError(f"state dict names must be strings; got {bad[:5]}")
        self.sd = sd
        self.used: set[str] = set()

    def prefixes(self) -> list[str]:
        return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in self.sd if "." in k))

    def take(self, name: Any, role: str) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise TypeError(f"with a state dict, {role}= is the prefix of its tensors' names (a str); got {name!r}")
        part = {k[len(name) + 1:]: v for k, v in self.sd.items() if k.startswith(name + ".")}
        if not part:
            raise InteropError(f"{role}={name!r}: the state dict has no tensors named {name}.*; "
                               f"its prefixes: {self.prefixes()[:12]}")
        self.used.update(f"{name}.{k}" for k in part)
        return part

    def check_all_used(self, named: str) -> None:
        left = [k for k in self.sd if k not in self.used]
        if left:
            raise InteropError(
                f"the state dict has tensors no part names: {left[:6]}; nplstm maps nn.Embedding -> nn.LSTM -> "
                f"nn.Linear layers and activations, each named in {named} (a layer with other weights, e.g. a "
                "LayerNorm, cannot be mapped)"
            )


def _resolve(source: Any, item: Any, role: str) -> Any:
    """A submodule named ``item`` of the torch module ``source`` (or ``item`` itself when it is no name)."""
    if not isinstance(item, str):
        return item
    if source is None:
        raise TypeError(f"{role}={item!r} names a part: pass the model (or its state dict) first, "
                        f"from_torch(m, {role}={item!r}, ...), or pass the module itself")
    if not _is_module(source):
        raise TypeError(f"{role}={item!r} names a part of a torch module or state dict; got {type(source).__name__}")
    try:
        return source.get_submodule(item)
    except AttributeError:
        names = [n for n, _ in source.named_modules() if n][:12]
        raise InteropError(f"{role}={item!r}: {type(source).__name__} has no submodule {item!r}; "
                           f"its submodules: {names}") from None


def _linear_arrays(part: Mapping[str, Any], where: str, prefix: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """``(weight (out, in), bias or None)`` of one nn.Linear's tensors (already without ``prefix``)."""
    if not set(part) <= {"weight", "bias"} or "weight" not in part:
        layers = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in part if "." in k))
        if layers and prefix:
            raise InteropError(
                f"{where} holds several layers {[f'{prefix}.{n}' for n in layers][:6]}: a state dict does not "
                f"record the activations between them; name each in forward order, e.g. "
                f"head=[{prefix + '.' + layers[0]!r}, 'relu', ...]"
            )
        raise InteropError(f"{where}: tensors {sorted(part)[:6]} are not an nn.Linear's (weight (out, in), bias (out,))")
    try:
        arrays = {k: _to_numpy(v) for k, v in part.items()}
    except (TypeError, RuntimeError, ValueError) as exc:
        raise InteropError(f"{where}: a tensor cannot be read as an array: {exc}") from None
    if arrays["weight"].ndim != 2:
        raise InteropError(f"{where}: 'weight' has shape {arrays['weight'].shape}; an nn.Linear's is (out, in)")
    return arrays["weight"], arrays.get("bias")


def _head_items(items: Any, source: Any, sd: _Prefixed | None, where: str) -> list[tuple[str, Any, str]]:
    """The head as ``("linear", (weight, bias), name)`` and ``("act", activation, name)`` items, flattened."""
    out: list[tuple[str, Any, str]] = []
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__") or _is_module(items):
        items = [items]
    for k, item in enumerate(items):
        name = f"{where}[{k}]"
        if isinstance(item, str) and item.lower() in HEAD_ACTIVATIONS and (sd is None or item not in sd.prefixes()):
            out.append(("act", item.lower(), repr(item)))
            continue
        if isinstance(item, str) and sd is not None:
            part = sd.take(item, "head")
            out.append(("linear", _linear_arrays(part, f"head item {item!r}", item), repr(item)))
            continue
        module = _resolve(source, item, "head")
        label = repr(item) if isinstance(item, str) else f"{name} ({type(module).__name__})"
        kind = _torch_class(module, "Linear", "Sequential", *_ACTIVATION_MODULES)
        if kind is not None and type(module).__name__ != kind:  # a subclass may change forward
            raise InteropError(f"head item {label}: a {type(module).__name__} (a subclass of nn.{kind}, whose forward "
                               f"may differ), not a plain nn.{kind}; {_SUPPORTED}")
        if kind == "Sequential":
            out += _head_items(list(module), None, None, f"{label} of the head")
        elif kind == "Linear":
            sd_raw = module.state_dict()
            out.append(("linear", _linear_arrays(sd_raw, f"head item {label}"), label))
        elif kind in ("Softmax", "LogSoftmax"):
            out.append(("act", (_ACTIVATION_MODULES[kind], module.dim), label))
        elif kind is not None:
            out.append(("act", _ACTIVATION_MODULES[kind], label))
        else:
            what = type(module).__name__ if _is_module(module) else repr(module)
            raise InteropError(f"head item {label}: {what} cannot be mapped; {_SUPPORTED}")
    return out


def _model_from(source: Any, *, batch_first: bool | None, dtype: Any, lstm: Any, head: Any, embedding: Any,
                output: str | None) -> Any:
    from ..model import SequenceModel

    if output is None:
        raise TypeError(
            "output= is required for a whole model: what its head reads, as the torch forward does: "
            "'h_n' (h_n[-1], or cat(h_n[-2], h_n[-1]) when bidirectional), 'last' (out[:, -1]) or 'sequence' (out)"
        )
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    if head is None:
        raise TypeError("a whole model needs head=[...]: its nn.Linear layers and activations in forward order")
    if lstm is None:
        if _torch_class(source, "LSTM") is not None:
            source, lstm = None, source
        else:
            raise TypeError("a whole model needs lstm=: the nn.LSTM module, or its name in the model or state dict")
    emb: tuple[np.ndarray, int | None, str] | None = None
    if isinstance(source, Mapping):
        sd = _Prefixed(source)
        stack = _stack_from(sd.take(lstm, "lstm"), batch_first=batch_first, dtype=dtype, layout_required=False,
                            where=f"lstm={lstm!r}: ")
        items = _head_items(head, None, sd, "head")
        if embedding is not None:
            part = sd.take(embedding, "embedding")
            if set(part) != {"weight"}:
                raise InteropError(f"embedding={embedding!r}: tensors {sorted(part)[:6]}; an nn.Embedding has only 'weight'")
            emb = (_to_numpy(part["weight"]), None, f"embedding={embedding!r}")
        sd.check_all_used("lstm=, head= or embedding=")
    else:
        lstm_module = _resolve(source, lstm, "lstm")
        where = f"lstm={lstm!r}: " if isinstance(lstm, str) else ""
        if _torch_class(lstm_module, "RNNBase") is None:  # GRU and RNN: refused by _stack_from
            raise InteropError(f"{where}a {type(lstm_module).__name__}, not a torch.nn.LSTM")
        stack = _stack_from(lstm_module, batch_first=batch_first, dtype=dtype, where=where)
        items = _head_items(head, source, None, "head")
        if embedding is not None:
            emb_module = _resolve(source, embedding, "embedding")
            emb = _embedding_arrays(emb_module, embedding)
        if source is not None:
            _check_covered(source, [lstm, head, embedding])
    layers = _dense_layers(items, stack, output)
    built = _embedding(emb, stack) if emb is not None else None
    return SequenceModel.from_parts(stack, layers, embedding=built, output=output)


def _embedding_arrays(module: Any, name: Any) -> tuple[np.ndarray, int | None, str]:
    label = f"embedding={name!r}" if isinstance(name, str) else f"embedding ({type(module).__name__})"
    if _torch_class(module, "Embedding") is None or type(module).__name__ != "Embedding":
        raise InteropError(f"{label}: a {type(module).__name__}; nplstm maps a plain torch.nn.Embedding")
    for attr, why in (("max_norm", "renormalizes the rows it looks up, changing the outputs"),
                      ("scale_grad_by_freq", "scales gradients by word frequency"),
                      ("sparse", "has sparse gradients")):
        if getattr(module, attr, None):
            raise InteropError(f"{label}: {attr}={getattr(module, attr)!r} is not supported (it {why}); "
                               f"nplstm's Embedding is a plain lookup")
    return _to_numpy(module.weight), module.padding_idx, label


def _embedding(emb: tuple[np.ndarray, int | None, str], stack: StackedLSTM) -> Any:
    from ..head import Embedding

    W, padding_idx, label = emb
    if W.ndim != 2 or W.shape[1] != stack.input_size:
        raise InteropError(f"{label}: weight of shape {W.shape}; the LSTM takes {stack.input_size} features, "
                           f"so expected (num_embeddings, {stack.input_size})")
    layer = Embedding(W.shape[0], W.shape[1], padding_idx=padding_idx, seed=0, dtype=stack.dtype)
    layer.W = check_shape({"weight": W}, "weight", W.shape)
    return layer


def _dense_layers(items: list[tuple[str, Any, str]], stack: StackedLSTM, output: str) -> list[Any]:
    """Fold Linear layers and the activation after each into Dense layers, checking every shape on the way."""
    from ..head import Dense

    layers: list[tuple[np.ndarray, np.ndarray | None]] = []
    acts: list[str] = []
    width = stack.output_size
    last_axis = 2 if output == "sequence" else 1
    for kind, value, label in items:
        if kind == "linear":
            W, b = value
            if W.shape[1] != width:
                before = f"the layer before ({width} features)" if layers else f"the LSTM's output ({width} features)"
                raise InteropError(f"head item {label}: an nn.Linear taking {W.shape[1]} features after {before}")
            if b is not None and np.shape(b) != (W.shape[0],):
                raise InteropError(f"head item {label}: bias of shape {np.shape(b)}; expected ({W.shape[0]},)")
            layers.append((W, b))
            acts.append("linear")
            width = W.shape[0]
            continue
        act = value
        if isinstance(value, tuple):  # Softmax / LogSoftmax with their dim
            act, dim = value
            if dim is None:
                raise InteropError(f"head item {label}: dim=None picks its axis from the input's rank; build it "
                                   "with dim=-1 (nplstm applies it over the features, the last axis)")
            if dim not in (-1, last_axis):
                raise InteropError(
                    f"head item {label}: dim={dim} is not the features axis of the head's input "
                    f"({'(B, T, F)' if output == 'sequence' else '(B, F)'}); nplstm applies it over the last axis: "
                    "build it with dim=-1"
                )
        if act == "linear":
            continue
        if not layers:
            raise InteropError(f"head item {label}: an activation before the first nn.Linear; nplstm's Dense applies "
                               "its activation after the affine map")
        if acts[-1] != "linear":
            raise InteropError(f"head item {label}: a second activation after one nn.Linear ({acts[-1]} then {act}); "
                               "each Dense has one")
        acts[-1] = act
    if not layers:
        raise InteropError("head= has no nn.Linear; a SequenceModel ends with one")
    dense = []
    for k, ((W, b), act) in enumerate(zip(layers, acts)):
        layer = Dense(W.shape[1], W.shape[0], act, seed=0, dtype=stack.dtype)
        layer.W = check_shape({f"head layer {k} weight": W}, f"head layer {k} weight", W.shape)
        layer.b = np.zeros(W.shape[0]) if b is None else check_shape({f"head layer {k} bias": b}, f"head layer {k} bias", b.shape)
        dense.append(layer)
    return dense


def _check_covered(model: Any, parts: list[Any]) -> None:
    """Every parameter and buffer of ``model`` belongs to a named part: none is silently left out."""
    named: list[str] = []
    for part in parts:
        for item in part if isinstance(part, (list, tuple)) else [part]:
            if isinstance(item, str):
                named.append(item)
            elif _is_module(item):
                found = next((n for n, m in model.named_modules() if m is item), None)
                if found is not None:
                    named.append(found)
    left = [k for k in model.state_dict() if not any(n == "" or k.startswith(n + ".") for n in named)]
    if left:
        raise InteropError(
            f"{type(model).__name__} has weights outside the named parts: {left[:6]}; nplstm maps nn.Embedding -> "
            "nn.LSTM -> nn.Linear layers and activations; name every part (a layer with other weights, e.g. a "
            "LayerNorm, cannot be mapped)"
        )


def to_torch_state_dict(
    model: Any, *, as_numpy: bool = False, lstm: str | None = None, head: Any = None, embedding: str | None = None
) -> dict[str, Any]:
    """The state dict a torch module of the same configuration loads.

    A :class:`~nplstm.stack.StackedLSTM` gives a ``torch.nn.LSTM``'s keys
    (``weight_ih_l0`` ...), under ``lstm + "."`` when ``lstm`` is given.  A
    :class:`~nplstm.SequenceModel` gives a whole model's, named by the same
    keywords as :func:`from_torch` takes: ``lstm`` (default ``"lstm"``),
    ``embedding`` (default ``"embedding"``: ``.weight``) and ``head``, one
    name per Dense layer (default nplstm's own: ``"dense.0"``, ... and
    ``"head"`` for the output layer: ``.weight`` (out, in), ``.bias``).
    A state dict holds weights only: the torch module's forward must apply
    the activations, the output selection (``h_n``, ``out[:, -1]`` or every
    step) and any masking itself.  The LSTM bias goes to ``bias_ih`` and
    ``bias_hh`` is zero.  Tensors are ``torch.Tensor`` (or NumPy arrays with
    ``as_numpy=True``, no torch needed).  ``torch.nn.LSTM`` has only the
    standard cell: a stack with other :class:`~nplstm.cell.CellOptions` is
    refused rather than exported wrong.
    """
    from ..model import SequenceModel

    if isinstance(model, SequenceModel):
        sd = _stack_state_dict(model.lstm, "lstm" if lstm is None else lstm)
        dense = list(model.dense)
        names = [f"dense.{k}" for k in range(len(dense) - 1)] + ["head"] if head is None else head
        if isinstance(names, str) or len(names) != len(dense) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"head= names each of the model's {len(dense)} Dense layer(s), in order; got {names!r}")
        for name, layer in zip(names, dense):
            sd[f"{name}.weight"] = layer.W.copy()
            sd[f"{name}.bias"] = layer.b.copy()
        if model.embedding is not None:
            sd[f"{'embedding' if embedding is None else embedding}.weight"] = model.embedding.W.copy()
    elif isinstance(model, StackedLSTM):
        if head is not None or embedding is not None:
            raise TypeError("a StackedLSTM has no head or embedding; lstm= is the only prefix it takes")
        sd = _stack_state_dict(model, lstm)
    else:
        raise TypeError(f"expected a StackedLSTM or a SequenceModel; got {type(model).__name__}")
    if as_numpy:
        return sd
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def _stack_state_dict(stack: StackedLSTM, prefix: str | None) -> dict[str, np.ndarray]:
    if not stack.cell.is_default:
        raise InteropError(f"torch.nn.LSTM has only the standard cell; this stack has cell={stack.cell!r}")
    pre = f"{prefix}." if prefix else ""
    sd: dict[str, np.ndarray] = {}
    for l, d, cell in ((l, d, cell) for l, pair in enumerate(stack.layers) for d, cell in enumerate(pair)):
        sfx = f"{pre}{{}}_l{l}{'_reverse' if d else ''}"
        w_ih, w_hh, b = packed(cell, TORCH_ORDER)
        sd[sfx.format("weight_ih")] = w_ih
        sd[sfx.format("weight_hh")] = w_hh
        if stack.bias:
            sd[sfx.format("bias_ih")] = b
            sd[sfx.format("bias_hh")] = np.zeros_like(b)
        if cell.W_hr is not None:
            sd[sfx.format("weight_hr")] = cell.W_hr.copy()
    return sd


def torch_module(stack: StackedLSTM) -> Any:
    """A ``torch.nn.LSTM`` with this stack's configuration and weights."""
    import torch

    module = torch.nn.LSTM(
        stack.input_size,
        stack.hidden_size,
        num_layers=stack.num_layers,
        bias=stack.bias,
        batch_first=stack.batch_first,
        dropout=stack.dropout,
        bidirectional=stack.bidirectional,
        proj_size=stack.proj_size,
        dtype=torch.float64 if stack.dtype == np.float64 else torch.float32,
    )
    module.load_state_dict(to_torch_state_dict(stack))
    return module


def load_torch(path: str | os.PathLike, **kwargs: Any) -> StackedLSTM:
    """Read a ``.pt`` file holding a ``torch.nn.LSTM`` state dict (or a whole model's).

    The file must be a regular file.  Its zip directory is checked before
    torch reads it (:func:`~nplstm.io.check_zip_budget`): at most
    :data:`~nplstm.io.DEFAULT_MAX_TOTAL_BYTES` declared, and no more than
    twice its size on disk, since ``torch.save`` stores tensors uncompressed;
    so a compressed zip bomb is refused before it is inflated.  Then
    ``torch.load(..., weights_only=True)``: tensors and plain containers only,
    never arbitrary pickled objects.  Before any tensor becomes an array,
    each must be dense and lie inside its stored bytes (no stride 0, no
    overlap), so the model is never larger than the file's data; then
    :func:`from_torch` checks the names (layers l0..l{L-1}, no gaps), shapes
    and size.  ``kwargs`` go to :func:`from_torch`: ``batch_first=`` is
    required for an LSTM's state dict (the file does not record the
    layout), and ``lstm=``, ``head=``, ``embedding=``, ``output=`` read a
    whole model's state dict.
    """
    import warnings
    import zipfile

    import torch

    from ..io import DEFAULT_MAX_TOTAL_BYTES, WeightsFileError, check_zip_budget

    with open_framework_file(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if zipfile.is_zipfile(fh):
                check_zip_budget(fh, DEFAULT_MAX_TOTAL_BYTES, max_expansion=2)
            elif size > DEFAULT_MAX_TOTAL_BYTES:  # torch's legacy (non-zip) format: read as it is stored
                raise WeightsFileError(f"{path}: {size} bytes, over the limit of {DEFAULT_MAX_TOTAL_BYTES}")
            fh.seek(0)
            with warnings.catch_warnings():  # torch warns about odd pickle protocols in junk files
                warnings.simplefilter("ignore", UserWarning)
                sd = torch.load(fh, map_location="cpu", weights_only=True)
        except WeightsFileError as exc:
            raise InteropError(str(exc)) from None
        except Exception as exc:  # torch.load raises many kinds (UnpicklingError, RuntimeError, zip errors, ...)
            # one line saying what nplstm needs, never torch's advice to retry with weights_only=False
            text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))  # torch's message has terminal escapes
            found = re.search(r"Unsupported global: GLOBAL ([A-Za-z_][\w.]*)", text)
            what = f"it holds a pickled {found.group(1)} object" if found else type(exc).__name__
            raise InteropError(
                f"{path} is not a loadable weights-only torch file ({what}); "
                "nplstm needs a state_dict() saved with torch.save, e.g. torch.save(lstm.state_dict(), path)"
            ) from None
    if not isinstance(sd, Mapping):
        raise InteropError(f"{path} holds a {type(sd).__name__}; nplstm needs a state_dict() saved with torch.save")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InteropError(f"{path}: entries that are not named tensors: {bad[:5]}")
    _check_stored(sd, path)
    try:
        return from_torch(sd, **kwargs)
    except InteropError as exc:
        raise InteropError(f"{path}: {exc}") from None


def _check_stored(sd: Mapping[str, Any], path: Any) -> None:
    """Refuse tensors whose elements the file does not really store, before any is read into an array.

    ``torch.save`` writes a tensor's storage plus its shape and strides, so
    a 1-element storage with stride 0 can claim (65536, 16384) elements.
    Every tensor must be dense and strided, each element at its own offset
    (strides sorted ascending each exceed the span of the dimensions below
    them: no stride 0, no overlap), that span inside its storage; and all
    tensors together claim no more bytes than their distinct storages hold.
    So a model loaded from a file is never larger than the file's data.
    """
    import torch

    held: dict[int, int] = {}
    claimed = 0
    for name, t in sd.items():
        if t.layout != torch.strided:
            raise InteropError(f"{path}: tensor {name!r} has layout {t.layout}; nplstm reads dense tensors only")
        storage = t.untyped_storage()
        held[storage.data_ptr()] = max(held.get(storage.data_ptr(), 0), storage.nbytes())
        if t.numel() == 0:
            continue  # holds nothing; its shape is checked with the others
        span = 1  # elements covered by the dimensions seen so far
        for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1):
            if stride < span:
                raise InteropError(
                    f"{path}: tensor {name!r} of shape {tuple(t.shape)} has strides {t.stride()}, which repeat "
                    "stored elements (stride 0 or overlapping); save a dense tensor (t.contiguous()) instead"
                )
            span += stride * (size - 1)
        end = (t.storage_offset() + span) * t.element_size()
        if t.storage_offset() < 0 or end > storage.nbytes():
            raise InteropError(
                f"{path}: tensor {name!r} of shape {tuple(t.shape)} needs {end} bytes of storage; "
                f"the file stores {storage.nbytes()}"
            )
        claimed += t.numel() * t.element_size()
    if claimed > sum(held.values()):
        raise InteropError(
            f"{path}: its tensors claim {claimed} bytes but share only {sum(held.values())} stored bytes "
            "(tensors overlapping one another)"
        )
