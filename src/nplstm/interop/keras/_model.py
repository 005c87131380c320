"""Whole Keras models: the Sequential or functional chain walked into a StackedLSTM or a SequenceModel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..gates import InteropError, check_shape
from ._config import (
    _ACTIVATION_LAYER_KEYS,
    _MASKING_KEYS,
    _RECURRENT,
    _TIME_DISTRIBUTED_KEYS,
    KERAS_DTYPES,
    KERAS_IDENTITY_LAYERS,
    SUPPORTED_MODELS,
    _activation_name,
    _check_dense_config,
    _check_dtype,
    _check_embedding_config,
    _check_keys,
    _head_activation,
    _is_keras,
)
from ._layers import KerasLSTM, _build_stack, _float_dtype, _Recurrent, _recurrent


def _mask_value(masking: Any) -> float:
    """A Masking layer's ``mask_value`` as a float, or InteropError (Keras also accepts None, strings...)."""
    value = masking.get_config().get("mask_value")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InteropError(f"Masking mask_value={value!r} does not map; nplstm needs a number")
    return float(value)


def _is_masking_mask(mask: Any, masking: Any) -> bool:
    """``mask`` is ``any(masking.input != mask_value, axis=-1)``, the mask Keras computes for ``masking``.

    A saved functional model stores that computation as its own operations
    (NotEqual, Any), separately from the Masking layer's ``mask_value``; an
    edited file could mask on another value than the one nplstm reads.
    """
    op, index, _ = mask._keras_history
    if type(op).__name__ != "Any" or getattr(op, "axis", None) not in (-1, [-1], (-1,)) or getattr(op, "keepdims", True):
        return False
    (flags,) = op._inbound_nodes[index].arguments.args
    op, index, _ = flags._keras_history
    if type(op).__name__ != "NotEqual":
        return False
    x, value = op._inbound_nodes[index].arguments.args
    expected = _mask_value(masking)
    return bool(x is masking.input and isinstance(value, (int, float)) and (value == expected or (value != value and expected != expected)))


def _is_embedding_mask(mask: Any, embedding: Any) -> bool:
    """``mask`` is ``not_equal(embedding.input, 0)``, the mask Keras computes for ``Embedding(mask_zero=True)``."""
    op, index, _ = mask._keras_history
    if type(op).__name__ != "NotEqual":
        return False
    x, value = op._inbound_nodes[index].arguments.args
    return bool(x is embedding.input and isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)


@dataclass
class _Head:
    """A Dense layer of the head, with the activation it ends with (a following Activation layer folded in)."""

    layer: Any
    activation: str
    name: str


@dataclass
class _Plan:
    """What :func:`_walk_model` found in a Keras model, in order."""

    embedding: Any = None
    mask_value: float | None = None
    recurrent: list[Any] = field(default_factory=list)
    head: list[_Head] = field(default_factory=list)
    reads_state: bool = False  # the head reads the last LSTM's returned h, not its output

    @property
    def masked(self) -> bool:
        return self.mask_value is not None or bool(self.embedding is not None and self.embedding.mask_zero)


def _refuse_layer(layer: Any, why: str = "") -> InteropError:
    kind = type(layer).__name__
    return InteropError(
        f"from_keras cannot map layer {layer.name!r} ({kind}){': ' + why if why else ''}; it maps {SUPPORTED_MODELS}"
    )


def _walk_model(model: Any) -> _Plan:
    """Check a Keras Sequential/functional model layer by layer and say what it is made of.

    Each layer must be Keras' own class (a subclass may override ``call``)
    and one :data:`SUPPORTED_MODELS` names, in that order, its config passing
    its allow-list.  A functional model must run its one input through each
    layer once, in order, to its one output (:func:`_check_node`), every mask
    a layer receives being the one its Masking or Embedding computes.
    """
    if not (_is_keras(model, "Sequential") or _is_keras(model, "Functional")):
        raise InteropError(
            f"from_keras maps a Keras Sequential or functional model; got a {type(model).__name__}, "
            "whose call() nplstm cannot check"
        )
    functional = _is_keras(model, "Functional")
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    ids = bool(layers) and type(layers[0]).__name__ == "Embedding"
    allowed = ("int32", "int64", "float32", "float64") if ids else tuple(sorted(KERAS_DTYPES))
    for tensor in model.inputs:  # the input layer casts to its dtype
        if str(tensor.dtype) not in allowed:
            raise InteropError(f"the model's input has dtype {tensor.dtype}; nplstm maps {list(allowed)} inputs here")
    plan = _Plan()
    stage = 0  # 0: before the first LSTM, 1: LSTMs, 2: head
    mask_source: Any = None  # the Masking or Embedding whose mask is in force, or None
    last_dense_was_previous = False
    chain = _Chain(model) if functional else None
    for layer in layers:
        kind = type(layer).__name__
        known = kind in KERAS_IDENTITY_LAYERS or kind in (
            "Masking", "Embedding", "LSTM", "Bidirectional", "Dense", "TimeDistributed", "Activation")
        if not known:
            raise _refuse_layer(layer)
        if not _is_keras(layer, kind):
            raise _refuse_layer(layer, f"expected Keras' own {kind}, got {type(layer).__module__}.{kind}")
        cfg = layer.get_config()
        what = f"{kind} {layer.name!r}"
        if mask_source is not None and stage < 2 and not layer.supports_masking:
            raise _refuse_layer(layer, "it drops the mask of the layers before it")
        if kind in KERAS_IDENTITY_LAYERS:
            _check_keys(cfg, KERAS_IDENTITY_LAYERS[kind], frozenset(), {}, what)
        elif kind == "Masking":
            if stage or plan.embedding is not None or plan.mask_value is not None or mask_source is not None:
                raise _refuse_layer(layer, "Masking maps only as the first layer, on the model's float input")
            _check_keys(cfg, _MASKING_KEYS, frozenset(), {}, what)
            plan.mask_value = _mask_value(layer)
            mask_source = layer
        elif kind == "Embedding":
            if stage or plan.embedding is not None or plan.mask_value is not None:
                raise _refuse_layer(layer, "Embedding maps only as the first layer, on the model's id input")
            _check_embedding_config(cfg, what)
            plan.embedding = layer
            mask_source = layer if layer.mask_zero else None
        elif kind in _RECURRENT:
            if stage == 2:
                raise _refuse_layer(layer, "an LSTM after Dense layers (nplstm's model runs its LSTM stack first)")
            stage = 1
            plan.recurrent.append(layer)
        elif kind in ("Dense", "TimeDistributed"):
            if stage == 0:
                raise _refuse_layer(layer, "a Dense layer before the first LSTM")
            dense = layer
            if kind == "TimeDistributed":
                _check_keys(cfg, _TIME_DISTRIBUTED_KEYS, frozenset(), {}, what)
                dense = layer.layer
                if not _is_keras(dense, "Dense"):
                    raise _refuse_layer(layer, f"TimeDistributed maps around Keras' own Dense only, got {type(dense).__name__}")
                _check_dtype(dense.get_config(), what)
            stage = 2
            plan.head.append(_Head(dense, _check_dense_config(dense.get_config(), f"Dense {dense.name!r}"), layer.name))
        elif kind == "Activation":
            _check_keys(cfg, _ACTIVATION_LAYER_KEYS, frozenset(), {}, what)
            name = _head_activation(cfg.get("activation"), what)
            if stage == 0:
                raise _refuse_layer(layer, "an Activation before the first LSTM")
            if name != "linear":
                if not (plan.head and last_dense_was_previous and plan.head[-1].activation == "linear"):
                    raise _refuse_layer(
                        layer, f"activation {name!r} folds only into a Dense with linear activation right before it")
                plan.head[-1].activation = name
        if chain is not None:
            chain.step(layer, mask_source, plan)
        if kind in ("Dense", "TimeDistributed"):
            last_dense_was_previous = True
        elif kind not in KERAS_IDENTITY_LAYERS:
            last_dense_was_previous = False
        if kind in _RECURRENT and not _recurrent_config(layer).get("return_sequences", False):
            mask_source = None  # Keras returns no mask with the last output
    if not plan.recurrent:
        raise InteropError(f"the model has no LSTM layer; from_keras maps {SUPPORTED_MODELS}")
    if chain is not None:
        chain.finish()
    return plan


def _recurrent_config(layer: Any) -> dict[str, Any]:
    """The (forward) LSTM config of an LSTM or Bidirectional layer, with the wrapper's return_state."""
    if type(layer).__name__ == "Bidirectional":
        return dict(layer.forward_layer.get_config(), return_state=bool(getattr(layer, "return_state", False)))
    return dict(layer.get_config())


class _Chain:
    """Follows a functional model's one input through its layers: each layer must read the previous output."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.ok = len(model.inputs) == 1 and len(model.outputs) >= 1
        self.tensor: Any = model.inputs[0] if self.ok else None
        self.states: Any = None  # the last LSTM's [output, h, c, ...] when it has return_state=True

    def _fail(self, layer: Any) -> InteropError:
        return InteropError(
            f"from_keras maps a functional model only when its one input runs through each layer once, "
            f"in order, to its outputs (no shared layers, extra inputs such as initial_state, or skipped "
            f"Masking); layer {layer.name!r} breaks the chain"
        )

    def step(self, layer: Any, mask_source: Any, plan: _Plan) -> None:
        try:
            if not self.ok or len(layer._inbound_nodes) != 1:
                raise self._fail(layer)
            node = layer._inbound_nodes[0]
            given = list(node.arguments.keras_tensors)
            if node.arguments.kwargs.get("training"):
                raise InteropError(
                    f"layer {layer.name!r} is called with training=True, so Keras runs it in training mode "
                    "at inference too; nplstm reproduces inference only"
                )
            first = given[0] if given else None
            if self.states is not None:  # the previous LSTM returned [output, h, c, ...]
                if first is self.states[0]:
                    pass
                elif (len(self.states) == 3 and first is self.states[1]
                      and type(layer).__name__ not in _RECURRENT and not plan.head[:-1]):
                    plan.reads_state = True  # its h: the final state
                else:
                    raise InteropError(
                        f"layer {layer.name!r} reads a returned state of the LSTM before it other than its "
                        "output or (unidirectional) final h; nplstm maps those two only"
                    )
                self.states = None
            elif first is not self.tensor:
                raise self._fail(layer)
            extras = given[1:]
            if type(layer).__name__ in ("LSTM", "Bidirectional") and mask_source is not None:
                if len(extras) != 1 or not self._is_mask(extras[0], mask_source):
                    raise self._fail(layer)
            elif extras and not (mask_source is not None and len(extras) == 1 and self._is_mask(extras[0], mask_source)):
                raise self._fail(layer)
            out = layer.output
            if isinstance(out, (list, tuple)):
                self.states, self.tensor = list(out), None
            else:
                self.tensor = out
        except InteropError:
            raise
        except (AttributeError, ValueError, IndexError, TypeError):  # Keras raises for shared layers; odd graphs
            raise self._fail(layer) from None

    @staticmethod
    def _is_mask(tensor: Any, source: Any) -> bool:
        if type(source).__name__ == "Masking":
            return _is_masking_mask(tensor, source)
        return _is_embedding_mask(tensor, source)

    def finish(self) -> None:
        final = self.states if self.states is not None else [self.tensor]
        outputs = list(self.model.outputs)
        if not (len(final) == len(outputs) and all(a is b for a, b in zip(final, outputs))):
            raise InteropError(
                "from_keras maps a functional model only when its one input runs through each layer once, "
                "in order, to its outputs; this model's outputs are not its last layer's"
            )


def _check_stack(plan: _Plan) -> list[_Recurrent]:
    """The model's LSTM layers as one StackedLSTM can hold them, or InteropError naming the layer that cannot."""
    recs: list[_Recurrent] = []
    for k, layer in enumerate(plan.recurrent):
        previous = recs[-1] if recs else None
        if previous is not None and previous.merge_mode != "concat":
            raise InteropError(
                f"{previous.what} has merge_mode {previous.merge_mode!r} and feeds another LSTM; between LSTM "
                "layers only 'concat' maps (nplstm's next layer reads both directions side by side)"
            )
        size = None if previous is None else previous.units * (2 if previous.bidirectional else 1)
        rec = _recurrent(layer, size)
        if previous is not None:
            first = recs[0]
            if rec.bidirectional != first.bidirectional:
                raise InteropError(
                    f"{rec.what} follows {first.what}: nplstm's stack is all LSTM or all Bidirectional(LSTM) layers")
            if rec.units != first.units:
                raise InteropError(
                    f"{rec.what} has units={rec.units} but {first.what} has units={first.units}; the model holds one "
                    "StackedLSTM, whose layers share one hidden size"
                )
            for key in ("activation", "recurrent_activation", "use_bias"):
                a, b = first.cfg.get(key), rec.cfg.get(key)
                if key.endswith("activation"):
                    a, b = _activation_name(a, key), _activation_name(b, key)
                if a != b:
                    raise InteropError(f"{rec.what} has {key}={b!r} but {first.what} has {a!r}; nplstm's stack runs every layer alike")
            if not previous.cfg.get("return_sequences", False):
                raise InteropError(f"{rec.what} must read the whole sequence of {previous.what} (return_sequences=True)")
            if rec.cfg.get("go_backwards", False):
                raise InteropError(
                    f"{rec.what} has go_backwards=True; nplstm reverses the input of the whole stack only "
                    "(go_backwards on the first LSTM)"
                )
        recs.append(rec)
    if plan.masked and len(recs) > 1 and recs[0].cfg.get("go_backwards", False):
        raise InteropError(
            f"{recs[0].what} has go_backwards=True under a mask and feeds another LSTM: Keras hands the next layer "
            "the reversed outputs with the mask unreversed, which nplstm does not reproduce"
        )
    last = recs[-1]
    if last.bidirectional and last.merge_mode != "concat" and not plan.head:
        raise InteropError(
            f"{last.what} has merge_mode {last.merge_mode!r}; it maps only when a Dense reads the Bidirectional "
            "(folded into that Dense's weights)"
        )
    return recs


def _from_model(model: Any, dtype: Any) -> Any:
    """A :class:`KerasLSTM` (LSTM layers only) or a SequenceModel (with an Embedding or Dense head)."""
    plan = _walk_model(model)
    recs = _check_stack(plan)
    first, last = recs[0], recs[-1]
    go_backwards = bool(first.cfg.get("go_backwards", False))
    arrays = [w["kernel"] for rec in recs for w in rec.weights]
    if plan.embedding is None and not plan.head:
        stack = _build_stack(recs, _float_dtype(arrays, dtype))
        return KerasLSTM(  # reads_state: the model returns the LSTM's final h (exactly KerasLSTM's last output)
            stack,
            return_sequences=bool(last.cfg.get("return_sequences", False)) and not plan.reads_state,
            return_state=bool(last.cfg.get("return_state", False)) and not plan.reads_state,
            go_backwards=go_backwards,
            mask_value=plan.mask_value,
            zero_output_for_mask=last.zero_output and not plan.reads_state,
        )
    from ... import Dense, Embedding
    from ...model import SequenceModel

    sequence = bool(last.cfg.get("return_sequences", False)) and not plan.reads_state
    if last.cfg.get("return_state", False) and not plan.head and not plan.reads_state:
        raise InteropError(
            f"{last.what} has return_state=True and ends the model; a model with an Embedding maps to nplstm's "
            "SequenceModel, which returns one array: drop return_state"
        )
    if (plan.masked and not sequence and not plan.reads_state and last.zero_output and not last.bidirectional
            and not go_backwards):
        raise InteropError(
            f"{last.what} has zero_output_for_mask=True and return_sequences=False under a mask: Keras returns "
            "zeros for every padded sequence, which nplstm's model (its final state) does not reproduce"
        )
    dense_weights: list[tuple[np.ndarray, np.ndarray | None]] = []
    for item in plan.head:
        got = [np.asarray(w) for w in item.layer.get_weights()]
        use_bias = bool(item.layer.use_bias)
        if len(got) != 1 + use_bias:
            raise InteropError(f"Dense {item.name!r}: expected {1 + use_bias} weight arrays; got {len(got)}")
        dense_weights.append((got[0], got[1] if use_bias else None))
    emb_weights = None
    if plan.embedding is not None:
        got = [np.asarray(w) for w in plan.embedding.get_weights()]
        if len(got) != 1:
            raise InteropError(f"Embedding {plan.embedding.name!r}: expected 1 weight array; got {len(got)}")
        emb_weights = got[0]
    dtype = _float_dtype(arrays + [k for k, _ in dense_weights] + ([] if emb_weights is None else [emb_weights]), dtype)
    stack = _build_stack(recs, dtype)
    features = stack.output_size
    if last.bidirectional and last.merge_mode in ("sum", "ave"):
        # Keras feeds the Dense f + b (or (f + b) / 2): W(f + b) = [W; W] applied to [f, b]
        kernel, bias = dense_weights[0]
        scale = 0.5 if last.merge_mode == "ave" else 1.0
        dense_weights[0] = (np.concatenate([kernel * scale, kernel * scale], axis=0), bias)
    heads = []
    for item, (kernel, bias) in zip(plan.head, dense_weights):
        if kernel.ndim != 2 or kernel.shape[0] != features:
            raise InteropError(f"Dense {item.name!r} has kernel {kernel.shape}; expected ({features}, units)")
        arrays_ = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
        check_shape(arrays_, "kernel", kernel.shape)
        dense = Dense(features, kernel.shape[1], item.activation, seed=0, dtype=dtype)
        dense.W = kernel.T
        if bias is not None:
            dense.b = check_shape(arrays_, "bias", (kernel.shape[1],))
        else:
            dense.b = np.zeros(kernel.shape[1])
        heads.append(dense)
        features = kernel.shape[1]
    if not heads:  # an Embedding and LSTMs only: the identity (exact: each output is one product by 1.0)
        identity = Dense(features, features, "linear", seed=0, dtype=dtype)
        identity.W = np.eye(features)
        identity.b = np.zeros(features)
        heads.append(identity)
    embedding = None
    if plan.embedding is not None:
        assert emb_weights is not None
        emb_cfg = plan.embedding.get_config()
        check_shape({"embeddings": emb_weights}, "embeddings", (int(emb_cfg["input_dim"]), stack.input_size))
        embedding = Embedding(int(emb_cfg["input_dim"]), stack.input_size, mask_zero=bool(plan.embedding.mask_zero),
                              seed=0, dtype=dtype)
        embedding.W = emb_weights
    if sequence:
        masked_outputs = "zero" if (last.bidirectional or last.zero_output or go_backwards) else "repeat"
    else:
        masked_outputs = "zero"
    return SequenceModel.from_parts(
        stack, heads, embedding=embedding, output="sequence" if sequence else "h_n", mask_value=plan.mask_value,
        go_backwards=go_backwards, masked_outputs=masked_outputs,
    )
