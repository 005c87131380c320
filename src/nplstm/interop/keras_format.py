"""Keras 3: ``keras.layers.LSTM``, ``Bidirectional(LSTM)`` and whole models around them.

Keras packs gates i, f, c, o and stores ``kernel`` (I, 4H),
``recurrent_kernel`` (H, 4H) and one ``bias`` (4H,).  Its layer options
``return_sequences``, ``return_state`` and ``go_backwards`` are reproduced
by :class:`KerasLSTM`, and so are:

* ``recurrent_activation`` (the i/f/o gates) and ``activation`` (candidate
  and output), mapped onto nplstm's cell activations by
  :data:`KERAS_ACTIVATIONS` (``hard_sigmoid`` is Keras 3's
  ``relu6(x + 3) / 6``, i.e. HardSigmoid with alpha 1/6, beta 0.5);
* ``unit_forget_bias``, which only initialises the forget bias to one: the
  weights already hold whatever bias training produced, so nothing maps;
* ``keras.layers.Masking`` in front of the LSTM (give :func:`from_keras`
  the model): each sequence's mask becomes its length.  The rule is
  **trailing padding only** -- a sequence whose masked steps are not all
  at its end raises ValueError at call time, because nplstm's lengths
  cannot skip steps in the middle.  Outputs at masked steps are what Keras
  gives: the last valid output (LSTM) or zeros (Bidirectional, or
  ``zero_output_for_mask=True``; then a padded sequence's "last output"
  with ``return_sequences=False`` is zero too, as Keras returns step T-1's).

Whole models (issue 18): a Sequential or single-chain functional model of
LSTM layers only (a stack of several: one StackedLSTM) stays a
:class:`KerasLSTM`; one with an ``Embedding`` (``mask_zero`` -> lengths) or
a head of ``Dense`` / ``TimeDistributed(Dense)`` / ``Activation`` layers
becomes a :class:`~nplstm.model.SequenceModel` (``from_parts``), Keras'
masking, ``go_backwards`` and repeated/zero outputs at padded steps mapped
onto its ``mask_value``, ``go_backwards`` and ``masked_outputs``.  Dropout,
SpatialDropout1D, GaussianNoise, GaussianDropout and ActivityRegularization
are the identity at inference.  ``Bidirectional(merge_mode='sum'/'ave')``
is folded into the Dense that reads it (exact: that Dense is linear in its
input); ``'mul'`` and ``None`` are refused.  :data:`SUPPORTED_MODELS` says
what maps; every other layer, order or combination that nplstm cannot
reproduce exactly is refused naming the layer.

Every other setting is refused by name rather than ignored: each LSTM config
key must be one ``_check_lstm_config`` knows cannot change the output
(initialisers, regularisers, constraints, training-only dropout, ``unroll``,
``use_cudnn``), one that is mapped, or ``stateful``/``time_major`` at False;
Dense and Embedding configs pass ``_check_dense_config`` and
``_check_embedding_config`` the same way.
So ``stateful=True`` (Keras carries states between calls; nplstm does not),
``float16``/``mixed_*`` dtype policies, Bidirectional directions that differ
in any setting, LSTM layers of different units in one stack, LoRA or
quantized layers, subclassed layers and functional models that are not one
input -> layers -> output chain all raise InteropError.

Keras needs a backend, and Keras 3 defaults to tensorflow, which
``nplstm[keras]`` does not install.  Importing this module sets
``KERAS_BACKEND=torch`` (else jax, else tensorflow, whichever is installed)
when the variable is unset and keras is not yet imported
(:func:`default_keras_backend`), so ``from_keras`` and a later ``import
keras`` work; :func:`import_keras` says what to install when none is.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..model import _prefix_lengths, _reverse_each
from ..stack import StackedLSTM
from .gates import InteropError, check_shape, open_framework_file, unpack

__all__ = [
    "from_keras", "load_keras_file", "KerasLSTM", "import_keras", "default_keras_backend", "cell_options_from_config",
    "KERAS_ORDER", "KERAS_ACTIVATIONS", "KERAS_DTYPES", "KERAS_INERT_KEYS", "KERAS_MAPPED_KEYS", "KERAS_FIXED_KEYS",
    "KERAS_IDENTITY_LAYERS", "KERAS_DENSE_INERT_KEYS", "KERAS_DENSE_MAPPED_KEYS", "KERAS_EMBEDDING_INERT_KEYS",
    "KERAS_EMBEDDING_MAPPED_KEYS", "KERAS_HEAD_FIXED_KEYS", "KERAS_MERGE_MODES", "SUPPORTED_MODELS", "MAX_KERAS_CONFIG_BYTES",
]

KERAS_ORDER = "ifco"

#: Keras activation name -> (ONNX activation name, alpha, beta), the names nplstm's cell uses.
KERAS_ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "elu": ("Elu", 1.0, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
}
_BACKENDS = ("torch", "jax", "tensorflow")

#: Keras LSTM config keys that cannot change what the built layer returns at
#: inference: initialisers (the weights hold what training made of them),
#: regularisers and constraints (training only), dropout (training only: Keras'
#: ``predict`` and a plain call run without it), and how Keras runs the loop.
KERAS_INERT_KEYS = frozenset({
    "name", "trainable", "seed", "unroll", "use_cudnn", "implementation",
    "kernel_initializer", "recurrent_initializer", "bias_initializer", "unit_forget_bias",
    "kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
    "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout", "recurrent_dropout",
})
#: Keras LSTM config keys that :func:`from_keras` reproduces (any supported value).
KERAS_MAPPED_KEYS = frozenset({
    "units", "activation", "recurrent_activation", "use_bias", "dtype",
    "return_sequences", "return_state", "go_backwards", "zero_output_for_mask",
})
#: Keras LSTM config keys nplstm reproduces only at one value, with what to do otherwise.
KERAS_FIXED_KEYS: dict[str, tuple[Any, str]] = {
    "stateful": (
        False,
        "nplstm does not carry Keras' states from one call to the next; rebuild the layer with "
        "stateful=False, or import it so and pass the states explicitly (model.stack.forward(x, (h0, c0)))",
    ),
    "time_major": (False, "give the model batch-major (B, T, I) input"),
}
#: The dtype policies whose computation nplstm reproduces (it computes in the weights' dtype).
KERAS_DTYPES = frozenset({"float32", "float64"})
#: Keras Masking / Bidirectional config keys that are mapped or inert; Bidirectional's
#: ``layer`` and ``backward_layer`` are checked as LSTM configs.
_MASKING_KEYS = frozenset({"name", "trainable", "dtype", "mask_value"})
_BIDIRECTIONAL_KEYS = frozenset({"name", "trainable", "dtype", "merge_mode", "layer", "backward_layer"})
#: What must agree between Bidirectional's two layers (go_backwards must differ).
_DIRECTION_KEYS = ("units", "activation", "recurrent_activation", "use_bias", "dtype", "return_sequences",
                   "return_state", "zero_output_for_mask", "stateful")


def default_keras_backend() -> str | None:
    """Set ``KERAS_BACKEND`` to an installed backend unless it is set or keras is already imported.

    Keras 3 defaults to tensorflow, which ``nplstm[keras]`` does not
    install; the first importable of torch, jax and tensorflow is chosen.
    Called when this module is imported, so a later ``import keras`` works
    too.  Returns the backend in force (None: none is installed).
    """
    if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        backend = next((b for b in _BACKENDS if importlib.util.find_spec(b) is not None), None)
        if backend is not None:
            os.environ["KERAS_BACKEND"] = backend
    return os.environ.get("KERAS_BACKEND")


def import_keras() -> Any:
    """Import keras with :func:`default_keras_backend`; InteropError saying what to install otherwise."""
    if default_keras_backend() is None and "keras" not in sys.modules:
        raise InteropError("keras needs a backend: install torch, jax or tensorflow and set KERAS_BACKEND to its name")
    try:
        import keras
    except ImportError as exc:
        raise InteropError(
            f"keras cannot be imported ({exc}); install keras and a backend, and set KERAS_BACKEND "
            f"(now {os.environ.get('KERAS_BACKEND')!r}) to torch, jax or tensorflow"
        ) from None
    return keras


def _activation_name(value: Any, what: str) -> str:
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):  # a serialized activation: {"class_name": ..., "config": ...}
        name = value.get("config", {}).get("name") if isinstance(value.get("config"), Mapping) else value.get("config")
        if isinstance(name, str):
            return name
    name = getattr(value, "__name__", None)
    if isinstance(name, str):
        return name
    raise InteropError(f"{what}={value!r} is not a named Keras activation")


def cell_options_from_config(cfg: Mapping[str, Any]) -> Any:
    """nplstm CellOptions for a Keras LSTM config, or None for tanh/sigmoid."""
    activation = _activation_name(cfg.get("activation", "tanh"), "activation")
    recurrent = _activation_name(cfg.get("recurrent_activation", "sigmoid"), "recurrent_activation")
    for what, name in (("activation", activation), ("recurrent_activation", recurrent)):
        if name not in KERAS_ACTIVATIONS:
            raise InteropError(f"{what}={name!r} does not map onto nplstm's cell; supported: {sorted(KERAS_ACTIVATIONS)}")
    if (activation, recurrent) == ("tanh", "sigmoid"):
        return None
    from ..activations import Activation
    from ..cell import CellOptions

    g = Activation(*KERAS_ACTIVATIONS[activation])
    return CellOptions(gate_activation=Activation(*KERAS_ACTIVATIONS[recurrent]), cell_activation=g, hidden_activation=g)


def _dtype_name(value: Any) -> str | None:
    """The policy name of a Keras ``dtype`` config entry (a string, a serialized policy, or None)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        inner = value.get("config")
        name = inner.get("name") if isinstance(inner, Mapping) else None
        return name if isinstance(name, str) else repr(value)
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else repr(value)


def _unknown_keys(cfg: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    unknown = sorted(str(k) for k in cfg if k not in known)
    if unknown:
        raise InteropError(
            f"{what} config key(s) {unknown} are not reproduced by nplstm (it maps {sorted(known)}); "
            "refused rather than ignored, since they may change the output"
        )


def _check_dtype(cfg: Mapping[str, Any], what: str) -> None:
    """Refuse a dtype policy other than float32/float64: a reduced-precision layer rounds what it computes."""
    dtype = _dtype_name(cfg.get("dtype"))
    if dtype is not None and dtype not in KERAS_DTYPES:
        raise InteropError(
            f"{what} has dtype policy {dtype!r}; nplstm computes in float32 or float64 only, "
            f"so the numbers would differ: rebuild the layer with dtype='float32'"
        )


def _check_lstm_config(cfg: Mapping[str, Any], what: str = "LSTM") -> None:
    """Refuse, naming the key, any Keras LSTM setting that nplstm would not reproduce.

    The one gate for every LSTM config :func:`from_keras` meets (a layer, each
    direction of a Bidirectional, a ``config=`` given with a weight list): each
    key must be in :data:`KERAS_INERT_KEYS` (cannot change the output),
    :data:`KERAS_MAPPED_KEYS` (reproduced; activations and dtype checked
    here) or :data:`KERAS_FIXED_KEYS` at its one reproduced value.  Any other
    key -- e.g. one a later Keras adds -- is refused rather than ignored.
    """
    _check_keys(cfg, KERAS_INERT_KEYS, KERAS_MAPPED_KEYS, KERAS_FIXED_KEYS, what)
    cell_options_from_config(cfg)  # refuses activations that do not map


def _check_weights(weights: Sequence[np.ndarray], use_bias: bool, input_size: int | None, where: str) -> dict[str, np.ndarray]:
    names = ["kernel", "recurrent_kernel"] + (["bias"] if use_bias else [])
    if len(weights) != len(names):
        raise InteropError(f"{where}: expected {len(names)} weight arrays {names}; got {len(weights)}")
    arrays = {n: np.asarray(w) for n, w in zip(names, weights)}
    rk = arrays["recurrent_kernel"]
    if rk.ndim != 2 or rk.shape[1] != 4 * rk.shape[0]:
        raise InteropError(f"{where}: tensor 'recurrent_kernel' must be (H, 4H); got {rk.shape}")
    H = rk.shape[0]
    I = input_size if input_size is not None else np.shape(arrays["kernel"])[0]
    out = {
        "kernel": check_shape(arrays, "kernel", (I, 4 * H)),
        "recurrent_kernel": check_shape(arrays, "recurrent_kernel", (H, 4 * H)),
    }
    if use_bias:
        out["bias"] = check_shape(arrays, "bias", (4 * H,))
    return out


def _trailing_lengths(x: np.ndarray, mask_value: float) -> np.ndarray:
    """Keras Masking's mask of (B, T, I) ``x`` as lengths; trailing padding only."""
    lengths, bad = _prefix_lengths(np.any(x != mask_value, axis=-1))
    if bad.size:
        raise ValueError(
            f"sequence {int(bad[0])} has masked steps before unmasked ones; nplstm maps Masking to lengths "
            "and needs the padding (steps equal to mask_value) at the end of each sequence only"
        )
    if np.any(lengths == 0):
        raise ValueError(f"sequence {int(np.flatnonzero(lengths == 0)[0])} is masked entirely; it has no length")
    return lengths


class KerasLSTM:
    """A :class:`~nplstm.stack.StackedLSTM` called the way the Keras layer is.

    ``model(x)`` or ``model.forward(x)`` with ``x`` (B, T, I) returns what the
    Keras layer returns: the sequence (B, T, D·H) if ``return_sequences``
    else the last output (B, D·H), followed by the final h and c (per
    direction) if ``return_state``.  With ``mask_value`` set (the model had a
    Masking layer) steps equal to it are padding (trailing only).
    """

    def __init__(
        self,
        stack: StackedLSTM,
        *,
        return_sequences: bool,
        return_state: bool,
        go_backwards: bool,
        mask_value: float | None = None,
        zero_output_for_mask: bool = False,
    ) -> None:
        self.stack = stack
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.mask_value = mask_value
        self.zero_output_for_mask = zero_output_for_mask

    def parameters(self) -> dict[str, np.ndarray]:
        """The stack's trainable arrays (views)."""
        return self.stack.parameters()

    def forward(self, x: Any) -> Any:
        """What the Keras layer returns for ``x`` (B, T, I)."""
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x must be (B, T, I) as for Keras; got shape {x.shape}")
        T = x.shape[1]
        lengths = None if self.mask_value is None else _trailing_lengths(x, self.mask_value)
        if self.go_backwards:  # Keras reads the reversed sequence and returns outputs in that order
            x = _reverse_each(x, lengths)
        seq, (h_n, c_n) = self.stack.forward(x, lengths=lengths)
        assert seq is not None  # return_sequences is on
        if lengths is not None:
            if self.go_backwards:
                # Keras met the padding first (state untouched, zero output), then the valid steps
                shifted = np.zeros_like(seq)
                for b, n in enumerate(lengths):
                    shifted[b, T - n :] = seq[b, :n]
                seq = shifted
            elif not self.zero_output_for_mask and not self.stack.bidirectional:
                for b, n in enumerate(lengths):  # Keras repeats the last valid output over masked steps
                    seq[b, n:] = seq[b, n - 1]
        if self.return_sequences:
            out = seq
        elif self.stack.bidirectional:
            out = np.concatenate([h_n[-2], h_n[-1]], axis=-1)
        else:
            out = h_n[-1].copy()
            if lengths is not None and self.zero_output_for_mask and not self.go_backwards:
                # Keras' "last output" is the output at step T-1, zeroed when that step is padding
                out[lengths < T] = 0
        if not self.return_state:
            return out
        states = []  # the last layer's (a Keras stack returns its last LSTM's states)
        D = self.stack.num_directions
        for d in range(D):
            states += [h_n[-D + d], c_n[-D + d]]
        return [out, *states]

    __call__ = forward

    def __repr__(self) -> str:
        s = self.stack
        extras = "".join(
            f", {k}={v!r}"
            for k, v in (("go_backwards", self.go_backwards), ("mask_value", self.mask_value))
            if v not in (False, None)
        )
        layers = f", num_layers={s.num_layers}" if s.num_layers > 1 else ""
        return (
            f"KerasLSTM(input_size={s.input_size}, units={s.hidden_size}{layers}, bidirectional={s.bidirectional}, "
            f"return_sequences={self.return_sequences}, return_state={self.return_state}{extras}, dtype={s.dtype.name})"
        )


def _is_keras(obj: Any, name: str) -> bool:
    """``obj`` is exactly Keras' own class ``name`` (a subclass may override ``call``)."""
    return type(obj).__name__ == name and type(obj).__module__.startswith("keras.")


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


#: Keras layers that are the identity at inference (Keras' ``predict`` runs them with ``training=False``),
#: with the config keys each may have (all inert at inference).
KERAS_IDENTITY_LAYERS: dict[str, frozenset[str]] = {
    "Dropout": frozenset({"name", "trainable", "dtype", "rate", "noise_shape", "seed"}),
    "SpatialDropout1D": frozenset({"name", "trainable", "dtype", "rate", "seed"}),
    "GaussianNoise": frozenset({"name", "trainable", "dtype", "stddev", "seed"}),
    "GaussianDropout": frozenset({"name", "trainable", "dtype", "rate", "seed"}),
    "ActivityRegularization": frozenset({"name", "trainable", "dtype", "l1", "l2"}),
}
#: Keras Dense config keys that cannot change its output at inference (initialisers, regularisers --
#: including the activity regulariser, a training loss --, constraints: applied by the optimizer only).
KERAS_DENSE_INERT_KEYS = frozenset({
    "name", "trainable", "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
    "activity_regularizer", "kernel_constraint", "bias_constraint", "lora_alpha",
})
#: Keras Dense config keys that are reproduced: ``use_bias=False`` maps to a zero bias.
KERAS_DENSE_MAPPED_KEYS = frozenset({"units", "activation", "use_bias", "dtype"})
#: Keras Embedding config keys that cannot change its output (``input_length``: Keras 2's, ignored by Keras 3).
KERAS_EMBEDDING_INERT_KEYS = frozenset({
    "name", "trainable", "embeddings_initializer", "embeddings_regularizer", "activity_regularizer",
    "embeddings_constraint", "input_length", "lora_alpha",
})
KERAS_EMBEDDING_MAPPED_KEYS = frozenset({"input_dim", "output_dim", "mask_zero", "dtype"})
#: Dense / Embedding config keys reproduced at one value only, with why.
KERAS_HEAD_FIXED_KEYS: dict[str, tuple[Any, str]] = {
    "lora_rank": (None, "a LoRA-enabled layer adds its low-rank update to the weights; merge it (and save) first"),
    "quantization_config": (None, "a quantized layer computes with rounded weights; nplstm computes in float32/float64"),
    "sparse": (False, "a sparse Embedding's output is a sparse tensor; nplstm returns a dense one"),
}
_ACTIVATION_LAYER_KEYS = frozenset({"name", "trainable", "dtype", "activation"})
_TIME_DISTRIBUTED_KEYS = frozenset({"name", "trainable", "dtype", "layer"})
_RECURRENT = ("LSTM", "Bidirectional")
#: The Bidirectional merge modes from_keras maps (sum and ave only folded into the Dense they feed).
KERAS_MERGE_MODES = ("concat", "sum", "ave")
SUPPORTED_MODELS = (
    "Sequential or single-chain functional models of [InputLayer], [Embedding or Masking], one or more LSTM "
    "or Bidirectional(LSTM) layers (same units; merge_mode concat, or sum/ave feeding a Dense), then Dense, "
    "TimeDistributed(Dense) and Activation layers (Dense activations "
    "linear/relu/tanh/sigmoid/softmax/log_softmax); Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout "
    "and ActivityRegularization anywhere (the identity at inference)"
)


def _check_keys(cfg: Mapping[str, Any], inert: frozenset[str], mapped: frozenset[str],
                fixed: Mapping[str, tuple[Any, str]], what: str) -> None:
    """The allow-list gate: every key inert, mapped, or at the one value nplstm reproduces; dtype float32/64."""
    _unknown_keys(cfg, inert | mapped | frozenset(fixed), what)
    for key, (value, advice) in fixed.items():
        if key in cfg and cfg[key] != value:
            raise InteropError(f"{what} has {key}={cfg[key]!r}, which nplstm does not reproduce: {advice}")
    _check_dtype(cfg, what)


def _head_activation(value: Any, what: str) -> str:
    from ..head import HEAD_ACTIVATIONS

    name = _activation_name(value, f"{what} activation")
    if name not in HEAD_ACTIVATIONS:
        raise InteropError(f"{what} has activation={name!r}; nplstm's Dense maps {list(HEAD_ACTIVATIONS)}")
    return name


def _check_dense_config(cfg: Mapping[str, Any], what: str = "Dense") -> str:
    """Refuse, naming the key, a Keras Dense setting nplstm would not reproduce; returns its activation."""
    _check_keys(cfg, KERAS_DENSE_INERT_KEYS, KERAS_DENSE_MAPPED_KEYS, KERAS_HEAD_FIXED_KEYS, what)
    return _head_activation(cfg.get("activation"), what)


def _check_embedding_config(cfg: Mapping[str, Any], what: str = "Embedding") -> None:
    """Refuse, naming the key, a Keras Embedding setting nplstm would not reproduce."""
    _check_keys(cfg, KERAS_EMBEDDING_INERT_KEYS, KERAS_EMBEDDING_MAPPED_KEYS, KERAS_HEAD_FIXED_KEYS, what)


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


def _check_bidirectional(layer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two LSTM configs of a Keras Bidirectional, refused unless nplstm reproduces the pair."""
    if not _is_keras(layer, "Bidirectional"):
        raise InteropError(f"expected Keras' own Bidirectional layer; got {type(layer).__module__}.{type(layer).__name__}")
    outer = layer.get_config()
    _unknown_keys(outer, _BIDIRECTIONAL_KEYS, "Bidirectional")
    merge = outer.get("merge_mode", "concat")
    if merge == "mul":
        raise InteropError(
            f"Bidirectional {layer.name!r} has merge_mode 'mul', which does not map: the product of the two "
            "directions is not linear in them, so it cannot be folded into the Dense after it; "
            f"supported: 'concat', and 'sum'/'ave' when a Dense reads the Bidirectional"
        )
    if merge not in KERAS_MERGE_MODES:
        raise InteropError(
            f"Bidirectional {layer.name!r} has merge_mode {merge!r}, which does not map (None returns the two "
            "directions as a list); supported: 'concat', and 'sum'/'ave' when a Dense reads the Bidirectional"
        )
    _check_dtype(outer, "Bidirectional")
    fwd, bwd = layer.forward_layer, layer.backward_layer
    for sub, what in ((fwd, "forward_layer"), (bwd, "backward_layer")):
        if not _is_keras(sub, "LSTM"):
            raise InteropError(f"Bidirectional {what} must be Keras' own LSTM; got {type(sub).__name__}")
    cfg, bwd_cfg = fwd.get_config(), bwd.get_config()
    _check_lstm_config(cfg, "Bidirectional forward_layer")
    _check_lstm_config(bwd_cfg, "Bidirectional backward_layer")
    if cfg.get("go_backwards", False) or not bwd_cfg.get("go_backwards", False):
        raise InteropError(
            "Bidirectional maps when its forward_layer reads forwards and its backward_layer backwards; "
            f"got go_backwards={cfg.get('go_backwards')!r} and {bwd_cfg.get('go_backwards')!r}"
        )
    def norm(c: Mapping[str, Any], key: str) -> Any:
        value = c.get(key)
        if key == "dtype":
            return _dtype_name(value)
        if key.endswith("activation"):
            return _activation_name(value, key)
        return value
    differ = [k for k in _DIRECTION_KEYS if norm(cfg, k) != norm(bwd_cfg, k)]
    if differ:
        raise InteropError(f"the forward and backward layers of Bidirectional differ in {differ}; nplstm runs both alike")
    return cfg, bwd_cfg


@dataclass
class _Recurrent:
    """One Keras LSTM or Bidirectional(LSTM) layer, checked: its (forward) config and weights per direction."""

    layer: Any
    cfg: dict[str, Any]
    bidirectional: bool
    merge_mode: str
    weights: list[dict[str, np.ndarray]]
    zero_output: bool

    @property
    def units(self) -> int:
        return int(self.weights[0]["recurrent_kernel"].shape[0])

    @property
    def what(self) -> str:
        return f"{type(self.layer).__name__} {self.layer.name!r}"


def _recurrent(layer: Any, input_size: int | None = None) -> _Recurrent:
    """Check a Keras LSTM or Bidirectional(LSTM) layer (``_check_lstm_config``) and read its weights."""
    if _is_keras(layer, "Bidirectional"):
        cfg, _ = _check_bidirectional(layer)
        fwd, bwd = layer.forward_layer, layer.backward_layer
        use_bias = cfg.get("use_bias", True)
        weights = [
            _check_weights(fwd.get_weights(), use_bias, input_size, f"{layer.name} forward_layer"),
            _check_weights(bwd.get_weights(), use_bias, input_size, f"{layer.name} backward_layer"),
        ]
        if weights[0]["kernel"].shape != weights[1]["kernel"].shape:
            raise InteropError("forward and backward layers of Bidirectional differ in shape")
        cfg = dict(cfg, go_backwards=False, return_state=bool(getattr(layer, "return_state", False)))
        merge = layer.get_config().get("merge_mode", "concat")
        return _Recurrent(layer, cfg, True, merge, weights, bool(getattr(fwd, "zero_output_for_mask", False)))
    if not _is_keras(layer, "LSTM"):
        raise InteropError(
            f"expected Keras' own LSTM or Bidirectional(LSTM) layer; got {type(layer).__module__}.{type(layer).__name__}"
        )
    cfg = layer.get_config()
    _check_lstm_config(cfg, f"LSTM {layer.name!r}")
    if not layer.weights:
        raise InteropError("the Keras layer has no weights yet: build it (call it once) first")
    weights = [_check_weights(layer.get_weights(), cfg.get("use_bias", True), input_size, layer.name)]
    return _Recurrent(layer, cfg, False, "concat", weights, bool(getattr(layer, "zero_output_for_mask", False)))


def _float_dtype(arrays: Sequence[np.ndarray], dtype: Any) -> Any:
    if dtype is not None:
        return dtype
    return np.float64 if any(np.asarray(a).dtype == np.float64 for a in arrays) else np.float32


def _build_stack(recs: list[_Recurrent], dtype: Any) -> StackedLSTM:
    """One StackedLSTM holding every layer of ``recs`` (already checked to agree)."""
    first = recs[0]
    options = cell_options_from_config(first.cfg)
    kernel = first.weights[0]["kernel"]
    I, H = kernel.shape[0], first.units
    if first.cfg.get("units", H) != H:
        raise InteropError(f"the config says units={first.cfg['units']!r} but the weights are for {H} units")
    kwargs: dict[str, Any] = {} if options is None else {"cell": options}
    stack = StackedLSTM(I, H, len(recs), bidirectional=first.bidirectional, bias=first.cfg.get("use_bias", True),
                        batch_first=True, seed=0, dtype=dtype, **kwargs)
    for pair, rec in zip(stack.layers, recs):
        for cell, w in zip(pair, rec.weights):
            unpack(cell, KERAS_ORDER, w["kernel"].T, w["recurrent_kernel"].T, w.get("bias"))
    return stack


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
    from .. import Dense, Embedding
    from ..model import SequenceModel

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


#: Largest ``config.json`` / ``metadata.json`` member of a ``.keras`` file read (an LSTM model's is a few KB).
MAX_KERAS_CONFIG_BYTES = 1 << 20


#: The layer classes a model from_keras maps may hold (NotEqual and Any: how a saved functional model
#: stores Masking's mask, checked by :func:`_is_masking_mask`); any other is refused before Keras builds it.
_MODEL_LAYERS = frozenset({
    "InputLayer", "Masking", "Embedding", "LSTM", "Bidirectional", "Dense", "TimeDistributed", "Activation",
    "NotEqual", "Any", *KERAS_IDENTITY_LAYERS,
})
_INITIALIZERS = ("kernel_initializer", "recurrent_initializer", "bias_initializer", "embeddings_initializer")
_ZEROS: dict[str, Any] = {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None}


def _input_sizes(node: Any) -> list[int]:
    """The last dimension of every input shape (``batch_shape``, ``input_shape``, ...) anywhere in a config."""
    found: list[int] = []
    stack = [node]
    while stack:  # iterative: json.loads has already bounded the depth
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, value in item.items():
                if key in ("batch_shape", "batch_input_shape", "input_shape", "shape") and isinstance(value, list) and value:
                    last = value[-1]
                    if isinstance(last, int) and not isinstance(last, bool):
                        found.append(last)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _precheck_config(raw: bytes, path: Any, stored_bytes: int) -> bytes:
    """Refuse a ``.keras`` config that from_keras cannot map, or that implies a huge model, before Keras builds it.

    Keras builds (and initialises, e.g. orthogonally) every variable the config
    declares before it reads a weight: ``units=8192`` in a 15 KB file costs a
    gigabyte and a minute.  So the layer classes must be those of
    :data:`_MODEL_LAYERS`, and the LSTM sizes pass
    :func:`~nplstm.params.check_model_size`, the limit nplstm's own
    constructors use; and they declare no more float32 parameters than the
    file's ``stored_bytes`` of weights could hold (twice, plus
    :data:`~nplstm.io.BUDGET_ALLOWANCE`).  Returns the config with every LSTM initialiser set to
    zeros (initialisers cannot change the loaded layer: its weights replace them).
    """
    from ..io import BUDGET_ALLOWANCE, WeightsFileError
    from ..params import check_model_size, positive_int
    from ..stack import stack_parameter_count

    try:
        config = json.loads(raw)
        layers = config["config"]["layers"]
        kinds = [layer["class_name"] for layer in layers]
    except (ValueError, RecursionError, KeyError, TypeError) as exc:
        raise WeightsFileError(f"{path}: config.json is not a Keras model config ({type(exc).__name__})") from None
    if config.get("class_name") not in ("Sequential", "Functional"):
        raise WeightsFileError(f"{path}: from_keras maps {SUPPORTED_MODELS}; the file holds a {config.get('class_name')!r}")
    for layer, kind in zip(layers, kinds):
        if kind not in _MODEL_LAYERS:
            name = layer.get("name") if isinstance(layer, Mapping) else None
            if name is None and isinstance(layer, Mapping) and isinstance(layer.get("config"), Mapping):
                name = layer["config"].get("name")  # a Sequential's layers name themselves in their config
            raise WeightsFileError(f"{path}: from_keras cannot map layer {name!r} ({kind}); it maps {SUPPORTED_MODELS}")
    if not {"LSTM", "Bidirectional"} & set(kinds):
        raise WeightsFileError(
            f"{path}: from_keras maps models with an LSTM or Bidirectional(LSTM) layer; the file holds a "
            f"{config.get('class_name')!r} of layers {kinds[:6]}"
        )
    sizes = [n for n in _input_sizes(config) if n > 0]
    widest = max(sizes, default=1)
    total = 0
    for layer in layers:
        if not isinstance(layer, Mapping):
            raise WeightsFileError(f"{path}: config.json is not a Keras model config (a layer is not an object)")
        kind, inner = layer["class_name"], layer.get("config")
        own = [n for n in _input_sizes({k: v for k, v in layer.items() if k != "config"}) if n > 0]
        input_size = max(own, default=widest)  # its build_config / inbound shapes, else the widest anywhere
        if kind == "TimeDistributed" and isinstance(inner, Mapping) and isinstance(inner.get("layer"), Mapping):
            kind, inner = inner["layer"].get("class_name"), inner["layer"].get("config")
        subs: list[Any] = [inner] if kind in ("LSTM", "Dense", "Embedding") else []
        if kind == "Bidirectional" and isinstance(inner, Mapping):
            subs = [sub.get("config") for sub in (inner.get("layer"), inner.get("backward_layer")) if isinstance(sub, Mapping)]
        for sub in subs:
            try:
                if kind == "Embedding":
                    rows, cols = positive_int(sub["input_dim"], "input_dim"), positive_int(sub["output_dim"], "output_dim")
                    count, what = rows * cols, f"the Keras Embedding({rows}, {cols}) the file declares"
                elif kind == "Dense":
                    units = positive_int(sub["units"], "units")
                    count, what = (input_size + 1) * units, f"the Keras Dense(units={units}) the file declares"
                else:
                    units = positive_int(sub["units"], "units")
                    count = stack_parameter_count(input_size, units, 1, bidirectional=False, proj_size=0, bias=True, peepholes=False)
                    what = f"the Keras LSTM(units={units}) the file declares"
                check_model_size(count, 1, 4, what)
            except (KeyError, TypeError, ValueError) as exc:
                raise WeightsFileError(f"{path}: {exc}") from None
            total += count
            for key in _INITIALIZERS:
                if key in sub:
                    sub[key] = dict(_ZEROS)
    # Keras allocates what the config declares before reading a weight: no more than the file stores
    if 4 * total > 2 * stored_bytes + BUDGET_ALLOWANCE:
        raise WeightsFileError(
            f"{path}: its config declares {total} Dense/Embedding/LSTM parameters but the file stores only {stored_bytes} bytes "
            "of weights; a .keras file holds the weights of every layer it declares"
        )
    return json.dumps(config).encode()


def load_keras_file(path: str | os.PathLike) -> Any:
    """The Keras model in a ``.keras`` file, checked before Keras reads a byte of it.

    The file must be a regular file (:func:`~nplstm.io.open_regular_file`: a
    FIFO or device is refused at once, also behind a symlink) and a zip whose
    directory passes :func:`~nplstm.io.check_zip_budget`: at most
    :data:`~nplstm.io.DEFAULT_MAX_TOTAL_BYTES` declared, no more than twice
    the file's size (Keras stores members uncompressed), and its JSON members
    at most :data:`MAX_KERAS_CONFIG_BYTES` each.  Its config must describe a
    model from_keras maps, within :data:`~nplstm.params.MAX_MODEL_BYTES`
    (:func:`_precheck_config`).  Keras then reads a copy of those checked
    bytes (never the path again), initialisers set to zeros, with
    ``safe_mode=True`` and ``compile=False``.  Every failure is an
    InteropError naming the file.
    """
    import zipfile

    from ..io import DEFAULT_MAX_TOTAL_BYTES, WeightsFileError, check_zip_budget

    import_keras()  # InteropError saying what to install, before the file is touched
    with open_framework_file(path) as fh:
        try:
            if not zipfile.is_zipfile(fh):
                raise WeightsFileError(f"{path} is not a Keras 3 .keras file (a zip archive); nplstm reads only those")
            check_zip_budget(fh, DEFAULT_MAX_TOTAL_BYTES, max_expansion=2)
            with zipfile.ZipFile(fh) as zf:  # its directory was just bounded by check_zip_budget
                for info in zf.infolist():
                    if info.filename.endswith(".json") and info.file_size > MAX_KERAS_CONFIG_BYTES:
                        raise WeightsFileError(
                            f"{path}: member {info.filename!r} declares {info.file_size} bytes, "
                            f"over the limit of {MAX_KERAS_CONFIG_BYTES} for a Keras config"
                        )
                if "config.json" not in zf.namelist():
                    raise WeightsFileError(f"{path}: no config.json; not a Keras 3 .keras file")
                stored = sum(i.file_size for i in zf.infolist() if not i.filename.endswith(".json"))
                config = _precheck_config(zf.read("config.json"), path, stored)
                # Keras reads a copy whose initialisers are zeros (they are inert: the weights are loaded
                # over them), since an orthogonal initialiser of a large layer costs minutes before any check
                archive = io.BytesIO()
                with zipfile.ZipFile(archive, "w") as out:
                    for info in zf.infolist():
                        out.writestr(info.filename, config if info.filename == "config.json" else zf.read(info))
            archive.seek(0)
        except WeightsFileError as exc:
            raise InteropError(str(exc)) from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise InteropError(f"{path} is not a readable zip file: {exc}") from None
        from keras.src.saving import saving_lib  # the loader keras.saving.load_model calls, given the open file

        try:
            return saving_lib.load_model(archive, compile=False, safe_mode=True)
        except Exception as exc:  # keras raises assorted errors (and RecursionError) for unreadable files
            text = " ".join(str(exc).split())[:300]
            raise InteropError(f"{path}: cannot be loaded as a Keras model: {type(exc).__name__}: {text}") from None


def from_keras(
    layer_or_weights: Any, *, config: Mapping[str, Any] | None = None, dtype: Any = None
) -> Any:
    """Import a Keras LSTM layer or a whole Keras model.

    Returns a :class:`KerasLSTM` for a Keras ``LSTM`` or
    ``Bidirectional(LSTM)`` layer, a weight list, or a model of LSTM layers
    only ([Input], [Masking], one or more LSTM or Bidirectional(LSTM) layers,
    identity layers such as Dropout): it returns what the Keras layer/model
    returns, states included with ``return_state``.  A model with an
    ``Embedding`` or a Dense head becomes a
    :class:`~nplstm.model.SequenceModel` (``SequenceModel.from_parts``) whose
    ``predict`` equals Keras' ``predict``; the layers it maps are listed in
    :data:`SUPPORTED_MODELS`.  Masking and ``Embedding(mask_zero=True)`` map
    to lengths (trailing padding only, else ValueError at call time).  A
    ``Bidirectional`` with ``merge_mode='sum'``/``'ave'`` is folded into the
    Dense that reads it (``W (f + b) = [W; W] [f; b]``).

    Also accepts a path to a saved ``.keras`` model (read by
    :func:`load_keras_file`: checked before Keras builds it, then
    ``safe_mode=True``), or the weight list ``[kernel, recurrent_kernel,
    bias]`` of an LSTM layer with an optional ``config``
    (``return_sequences``, ``return_state``, ``go_backwards``, ``use_bias``,
    ``activation``, ``recurrent_activation``).  The Keras layer must be built.
    Every layer, setting or wiring nplstm does not reproduce exactly is
    refused with an InteropError naming it (allow-lists:
    ``_check_lstm_config``, ``_check_dense_config``,
    ``_check_embedding_config``, :data:`KERAS_IDENTITY_LAYERS`); for a
    stateful layer import its weights with ``config=dict(layer.get_config(),
    stateful=False)`` and pass the states to ``model.stack.forward(x, (h0, c0))``.
    ``dtype`` defaults to float64 if any imported weight is, else float32.
    """
    if isinstance(layer_or_weights, (str, os.PathLike)):
        layer_or_weights = load_keras_file(layer_or_weights)
    if hasattr(layer_or_weights, "layers") and not hasattr(layer_or_weights, "forward_layer"):
        return _from_model(layer_or_weights, dtype)
    if isinstance(layer_or_weights, (list, tuple)):
        cfg = dict(config or {})
        _check_lstm_config(cfg, "config")
        weights = [_check_weights(layer_or_weights, cfg.get("use_bias", True), None, "weights")]
        rec = _Recurrent(None, cfg, False, "concat", weights, False)
    elif hasattr(layer_or_weights, "get_weights") and hasattr(layer_or_weights, "get_config"):
        rec = _recurrent(layer_or_weights)
        if rec.merge_mode != "concat":
            raise InteropError(
                f"Bidirectional merge_mode {rec.merge_mode!r} maps only in a model where a Dense reads the "
                "Bidirectional (folded into that Dense's weights); a lone layer maps with 'concat'"
            )
    else:
        raise TypeError(f"expected a Keras LSTM/Bidirectional layer or model, a path or a weight list; got {type(layer_or_weights).__name__}")
    stack = _build_stack([rec], _float_dtype([rec.weights[0]["kernel"]], dtype))
    return KerasLSTM(
        stack,
        return_sequences=bool(rec.cfg.get("return_sequences", False)),
        return_state=bool(rec.cfg.get("return_state", False)),
        go_backwards=bool(rec.cfg.get("go_backwards", False)),
        zero_output_for_mask=rec.zero_output,
    )


default_keras_backend()
