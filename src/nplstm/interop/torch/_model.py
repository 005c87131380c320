"""Importing: an ``nn.LSTM``, its state dict, or a whole model named by its parts (embedding, LSTM, head)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ...head import HEAD_ACTIVATIONS
from ...model import OUTPUTS
from ...stack import StackedLSTM
from ..gates import InteropError, check_shape
from ._state import _is_module, _stack_from, _to_numpy, _torch_class


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
    from ...model import SequenceModel

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
    from ...head import Embedding

    W, padding_idx, label = emb
    if W.ndim != 2 or W.shape[1] != stack.input_size:
        raise InteropError(f"{label}: weight of shape {W.shape}; the LSTM takes {stack.input_size} features, "
                           f"so expected (num_embeddings, {stack.input_size})")
    layer = Embedding(W.shape[0], W.shape[1], padding_idx=padding_idx, seed=0, dtype=stack.dtype)
    layer.W = check_shape({"weight": W}, "weight", W.shape)
    return layer


def _dense_layers(items: list[tuple[str, Any, str]], stack: StackedLSTM, output: str) -> list[Any]:
    """Fold Linear layers and the activation after each into Dense layers, checking every shape on the way."""
    from ...head import Dense

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
