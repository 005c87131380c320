"""Keras' gate order, the backend, and the allow-lists every imported config is checked against."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from ..gates import InteropError, check_shape

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
    from ...activations import Activation
    from ...cell import CellOptions

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


def _is_keras(obj: Any, name: str) -> bool:
    """``obj`` is exactly Keras' own class ``name`` (a subclass may override ``call``)."""
    return type(obj).__name__ == name and type(obj).__module__.startswith("keras.")


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
    from ...head import HEAD_ACTIVATIONS

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
