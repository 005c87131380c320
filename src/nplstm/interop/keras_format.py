"""Keras 3: ``keras.layers.LSTM`` and ``Bidirectional(LSTM)`` weights, activations and masking.

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

Every other setting is refused by name rather than ignored: each LSTM config
key must be one :func:`check_lstm_config` knows cannot change the output
(initialisers, regularisers, constraints, training-only dropout, ``unroll``,
``use_cudnn``), one that is mapped, or ``stateful``/``time_major`` at False.
So ``stateful=True`` (Keras carries states between calls; nplstm does not),
``float16``/``mixed_*`` dtype policies, Bidirectional directions that differ
in any setting, merge modes other than ``'concat'``, subclassed layers and
functional models that are not one input -> [Masking] -> LSTM chain all raise
InteropError.

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
from typing import Any, Mapping, Sequence

import numpy as np

from ..stack import StackedLSTM
from .gates import InteropError, check_shape, open_framework_file, unpack

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
    from ..cell import Activation, CellOptions

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


def check_lstm_config(cfg: Mapping[str, Any], what: str = "LSTM") -> None:
    """Refuse, naming the key, any Keras LSTM setting that nplstm would not reproduce.

    The one gate for every LSTM config :func:`from_keras` meets (a layer, each
    direction of a Bidirectional, a ``config=`` given with a weight list): each
    key must be in :data:`KERAS_INERT_KEYS` (cannot change the output),
    :data:`KERAS_MAPPED_KEYS` (reproduced; activations and dtype checked
    here) or :data:`KERAS_FIXED_KEYS` at its one reproduced value.  Any other
    key -- e.g. one a later Keras adds -- is refused rather than ignored.
    """
    _unknown_keys(cfg, KERAS_INERT_KEYS | KERAS_MAPPED_KEYS | frozenset(KERAS_FIXED_KEYS), what)
    for key, (value, advice) in KERAS_FIXED_KEYS.items():
        if key in cfg and cfg[key] != value:
            raise InteropError(f"{what} has {key}={cfg[key]!r}, which nplstm does not reproduce: {advice}")
    _check_dtype(cfg, what)
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
    mask = np.any(x != mask_value, axis=-1)
    lengths = mask.sum(axis=1)
    trailing = np.arange(x.shape[1])[None, :] < lengths[:, None]
    bad = np.flatnonzero(np.any(mask != trailing, axis=1))
    if bad.size:
        raise ValueError(
            f"sequence {int(bad[0])} has masked steps before unmasked ones; nplstm maps Masking to lengths "
            "and needs the padding (steps equal to mask_value) at the end of each sequence only"
        )
    if np.any(lengths == 0):
        raise ValueError(f"sequence {int(np.flatnonzero(lengths == 0)[0])} is masked entirely; it has no length")
    return lengths


def _reverse_within(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(B, T, ·) with each row's first ``lengths[b]`` steps reversed."""
    out = x.copy()
    for b, n in enumerate(lengths):
        out[b, :n] = x[b, :n][::-1]
    return out


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
            x = x[:, ::-1] if lengths is None else _reverse_within(x, lengths)
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
            out = np.concatenate([h_n[0], h_n[1]], axis=-1)
        else:
            out = h_n[0].copy()
            if lengths is not None and self.zero_output_for_mask and not self.go_backwards:
                # Keras' "last output" is the output at step T-1, zeroed when that step is padding
                out[lengths < T] = 0
        if not self.return_state:
            return out
        states = []
        for d in range(self.stack.num_directions):
            states += [h_n[d], c_n[d]]
        return [out, *states]

    __call__ = forward

    def __repr__(self) -> str:
        s = self.stack
        extras = "".join(
            f", {k}={v!r}"
            for k, v in (("go_backwards", self.go_backwards), ("mask_value", self.mask_value))
            if v not in (False, None)
        )
        return (
            f"KerasLSTM(input_size={s.input_size}, units={s.hidden_size}, bidirectional={s.bidirectional}, "
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


def _check_chain(model: Any, layers: list[Any]) -> None:
    """Refuse a functional model unless its one input runs through ``layers`` in turn to its outputs."""
    try:
        tensor = model.inputs[0] if len(model.inputs) == 1 else None
        linear = tensor is not None
        previous = None
        for layer in layers:
            given = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
            linear = linear and given[0] is tensor
            if previous is not None and _is_keras(previous, "Masking"):
                # Keras passes the Masking's mask as an input of its own: it must be that mask
                linear = linear and len(given) == 2 and _is_masking_mask(given[1], previous)
            else:
                linear = linear and len(given) == 1
            tensor, previous = layer.output, layer
        outputs = tensor if isinstance(tensor, (list, tuple)) else [tensor]
        linear = linear and len(outputs) == len(model.outputs) and all(a is b for a, b in zip(outputs, model.outputs))
    except (AttributeError, ValueError, IndexError, TypeError):  # Keras raises for shared layers; odd graphs
        linear = False
    if not linear:
        raise InteropError(
            "from_keras maps a functional model only when its one input runs through each layer once, "
            "in order, to its outputs (no shared layers, extra inputs such as initial_state, or skipped Masking)"
        )


def _split_model(model: Any) -> tuple[Any, float | None]:
    """(the recurrent layer, the Masking value or None) of a Keras model of [Input], [Masking], LSTM."""
    if not (_is_keras(model, "Sequential") or _is_keras(model, "Functional")):
        raise InteropError(
            f"from_keras maps a Keras Sequential or functional model; got a {type(model).__name__}, "
            "whose call() nplstm cannot check"
        )
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    kinds = [type(layer).__name__ for layer in layers]
    if kinds not in (["LSTM"], ["Bidirectional"], ["Masking", "LSTM"], ["Masking", "Bidirectional"]):
        raise InteropError(f"from_keras maps a model of [Input], [Masking], LSTM or Bidirectional(LSTM); got layers {kinds}")
    for tensor in model.inputs:  # the input layer casts to its dtype
        if str(tensor.dtype) not in KERAS_DTYPES:
            raise InteropError(f"the model's input has dtype {tensor.dtype}; nplstm maps float32 or float64 inputs only")
    mask_value = None
    if kinds[0] == "Masking":
        if not _is_keras(layers[0], "Masking"):
            raise InteropError(f"expected Keras' own Masking layer; got {type(layers[0]).__module__}.Masking")
        _unknown_keys(layers[0].get_config(), _MASKING_KEYS, "Masking")
        _check_dtype(layers[0].get_config(), "Masking")  # it passes its input on in its compute dtype
        mask_value = _mask_value(layers[0])
    if _is_keras(model, "Functional"):
        _check_chain(model, layers)
    return layers[-1], mask_value


def _check_bidirectional(layer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two LSTM configs of a Keras Bidirectional, refused unless nplstm reproduces the pair."""
    if not _is_keras(layer, "Bidirectional"):
        raise InteropError(f"expected Keras' own Bidirectional layer; got {type(layer).__module__}.{type(layer).__name__}")
    outer = layer.get_config()
    _unknown_keys(outer, _BIDIRECTIONAL_KEYS, "Bidirectional")
    if outer.get("merge_mode", "concat") != "concat":
        raise InteropError(f"Bidirectional merge_mode {outer.get('merge_mode')!r} does not map; only 'concat'")
    _check_dtype(outer, "Bidirectional")
    fwd, bwd = layer.forward_layer, layer.backward_layer
    for sub, what in ((fwd, "forward_layer"), (bwd, "backward_layer")):
        if not _is_keras(sub, "LSTM"):
            raise InteropError(f"Bidirectional {what} must be Keras' own LSTM; got {type(sub).__name__}")
    cfg, bwd_cfg = fwd.get_config(), bwd.get_config()
    check_lstm_config(cfg, "Bidirectional forward_layer")
    check_lstm_config(bwd_cfg, "Bidirectional backward_layer")
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


#: Largest ``config.json`` / ``metadata.json`` member of a ``.keras`` file read (an LSTM model's is a few KB).
MAX_KERAS_CONFIG_BYTES = 1 << 20


#: The layer classes a model from_keras maps may hold (NotEqual and Any: how a saved functional model
#: stores Masking's mask, checked by :func:`_is_masking_mask`); any other is refused before Keras builds it.
_MODEL_LAYERS = frozenset({"InputLayer", "Masking", "LSTM", "Bidirectional", "NotEqual", "Any"})
_INITIALIZERS = ("kernel_initializer", "recurrent_initializer", "bias_initializer")


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
    if config.get("class_name") not in ("Sequential", "Functional") or not set(kinds) <= _MODEL_LAYERS:
        raise WeightsFileError(
            f"{path}: from_keras maps a Sequential or functional model of [Input], [Masking], LSTM or "
            f"Bidirectional(LSTM); the file holds a {config.get('class_name')!r} of layers {kinds[:6]}"
        )
    sizes = [n for n in _input_sizes(config) if n > 0]
    input_size = max(sizes, default=1)
    total = 0
    for layer in layers:
        inner = layer.get("config")
        subs = [inner] if layer["class_name"] == "LSTM" else []
        if layer["class_name"] == "Bidirectional" and isinstance(inner, Mapping):
            subs = [sub.get("config") for sub in (inner.get("layer"), inner.get("backward_layer")) if isinstance(sub, Mapping)]
        for sub in subs:
            try:
                units = positive_int(sub["units"], "units")
                count = stack_parameter_count(input_size, units, 1, bidirectional=False, proj_size=0, bias=True, peepholes=False)
                check_model_size(count, 1, 4, f"the Keras LSTM(units={units}) the file declares")
            except (KeyError, TypeError, ValueError) as exc:
                raise WeightsFileError(f"{path}: {exc}") from None
            total += count
            for key in _INITIALIZERS:
                if key in sub:
                    sub[key] = {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None}
    # Keras allocates what the config declares before reading a weight: no more than the file stores
    if 4 * total > 2 * stored_bytes + BUDGET_ALLOWANCE:
        raise WeightsFileError(
            f"{path}: its config declares {total} LSTM parameters but the file stores only {stored_bytes} bytes "
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
) -> KerasLSTM:
    """Build a :class:`KerasLSTM` from a Keras ``LSTM`` or ``Bidirectional(LSTM)`` layer.

    Also accepts a Keras model made of an optional ``Masking`` layer and
    one such layer (Masking maps to lengths: trailing padding only), a path
    to a saved ``.keras`` model (loaded with ``safe_mode=True``), or the
    weight list ``[kernel, recurrent_kernel, bias]`` of an LSTM layer with an
    optional ``config`` (``return_sequences``, ``return_state``,
    ``go_backwards``, ``use_bias``, ``activation``,
    ``recurrent_activation``).  The Keras layer must be built (called once
    or given an input shape).  Only ``merge_mode='concat'`` maps for
    Bidirectional.  Settings nplstm does not reproduce (``stateful=True``,
    reduced-precision dtype policies, unknown config keys, ...) raise
    InteropError naming them (:func:`check_lstm_config`); for a stateful
    layer import its weights with ``config=dict(layer.get_config(),
    stateful=False)`` and pass the states to ``model.stack.forward(x, (h0, c0))``.
    A path is read by :func:`load_keras_file`.
    """
    mask_value = None
    if isinstance(layer_or_weights, (str, os.PathLike)):
        layer_or_weights = load_keras_file(layer_or_weights)
    if hasattr(layer_or_weights, "layers") and not hasattr(layer_or_weights, "forward_layer"):
        layer_or_weights, mask_value = _split_model(layer_or_weights)
    sub_weights: list[dict[str, np.ndarray]]
    zero_output = False
    if isinstance(layer_or_weights, (list, tuple)):
        cfg = dict(config or {})
        check_lstm_config(cfg, "config")
        use_bias = cfg.get("use_bias", True)
        sub_weights = [_check_weights(layer_or_weights, use_bias, None, "weights")]
        bidirectional = False
    elif hasattr(layer_or_weights, "forward_layer"):
        layer = layer_or_weights
        cfg, _ = _check_bidirectional(layer)
        fwd, bwd = layer.forward_layer, layer.backward_layer
        use_bias = cfg.get("use_bias", True)
        sub_weights = [
            _check_weights(fwd.get_weights(), use_bias, None, "forward_layer"),
            _check_weights(bwd.get_weights(), use_bias, None, "backward_layer"),
        ]
        if sub_weights[0]["kernel"].shape != sub_weights[1]["kernel"].shape:
            raise InteropError("forward and backward layers of Bidirectional differ in shape")
        cfg = dict(cfg, go_backwards=False, return_state=getattr(layer, "return_state", False))
        bidirectional = True
    elif hasattr(layer_or_weights, "get_weights") and hasattr(layer_or_weights, "get_config"):
        layer = layer_or_weights
        if not _is_keras(layer, "LSTM"):
            raise InteropError(
                f"expected Keras' own LSTM or Bidirectional(LSTM) layer; got {type(layer).__module__}.{type(layer).__name__}"
            )
        cfg = layer.get_config()
        check_lstm_config(cfg)
        use_bias = cfg.get("use_bias", True)
        if not layer.weights:
            raise InteropError("the Keras layer has no weights yet: build it (call it once) first")
        sub_weights = [_check_weights(layer.get_weights(), use_bias, None, type(layer).__name__)]
        bidirectional = False
        zero_output = bool(getattr(layer, "zero_output_for_mask", False))
    else:
        raise TypeError(f"expected a Keras LSTM/Bidirectional layer or model, a path or a weight list; got {type(layer_or_weights).__name__}")

    options = cell_options_from_config(cfg)
    kernel = sub_weights[0]["kernel"]
    I, H = kernel.shape[0], kernel.shape[1] // 4
    if cfg.get("units", H) != H:
        raise InteropError(f"the config says units={cfg['units']!r} but the weights are for {H} units")
    if dtype is None:
        dtype = np.float64 if kernel.dtype == np.float64 else np.float32
    kwargs: dict[str, Any] = {} if options is None else {"cell": options}
    stack = StackedLSTM(I, H, bidirectional=bidirectional, bias=use_bias, batch_first=True, seed=0, dtype=dtype, **kwargs)
    for cell, w in zip(stack.layers[0], sub_weights):
        unpack(cell, KERAS_ORDER, w["kernel"].T, w["recurrent_kernel"].T, w.get("bias"))
    return KerasLSTM(
        stack,
        return_sequences=bool(cfg.get("return_sequences", False)),
        return_state=bool(cfg.get("return_state", False)),
        go_backwards=bool(cfg.get("go_backwards", False)),
        mask_value=mask_value,
        zero_output_for_mask=zero_output,
    )


default_keras_backend()
