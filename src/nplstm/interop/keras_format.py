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
  ``zero_output_for_mask=True``).

Keras needs a backend, and Keras 3 defaults to tensorflow, which
``nplstm[keras]`` does not install.  Importing this module sets
``KERAS_BACKEND=torch`` (else jax, else tensorflow, whichever is installed)
when the variable is unset and keras is not yet imported
(:func:`default_keras_backend`), so ``from_keras`` and a later ``import
keras`` work; :func:`import_keras` says what to install when none is.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from ..stack import StackedLSTM
from .gates import InteropError, check_shape, unpack

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
            out = h_n[0]
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


def _split_model(model: Any) -> tuple[Any, float | None]:
    """(the recurrent layer, the Masking value or None) of a Keras model of [Input], [Masking], LSTM."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    kinds = [type(layer).__name__ for layer in layers]
    if kinds not in (["LSTM"], ["Bidirectional"], ["Masking", "LSTM"], ["Masking", "Bidirectional"]):
        raise InteropError(f"from_keras maps a model of [Input], [Masking], LSTM or Bidirectional(LSTM); got layers {kinds}")
    mask_value = float(layers[0].mask_value) if kinds[0] == "Masking" else None
    return layers[-1], mask_value


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
    Bidirectional.
    """
    mask_value = None
    if isinstance(layer_or_weights, (str, os.PathLike)):
        keras = import_keras()
        try:
            layer_or_weights = keras.saving.load_model(str(layer_or_weights), compile=False, safe_mode=True)
        except Exception as exc:  # keras raises assorted errors for unreadable files
            raise InteropError(f"{layer_or_weights}: cannot be loaded as a Keras model: {exc}") from None
    if hasattr(layer_or_weights, "layers") and not hasattr(layer_or_weights, "forward_layer"):
        layer_or_weights, mask_value = _split_model(layer_or_weights)
    sub_weights: list[dict[str, np.ndarray]]
    zero_output = False
    if isinstance(layer_or_weights, (list, tuple)):
        cfg = dict(config or {})
        use_bias = cfg.get("use_bias", True)
        sub_weights = [_check_weights(layer_or_weights, use_bias, None, "weights")]
        bidirectional = False
    elif hasattr(layer_or_weights, "forward_layer"):
        layer = layer_or_weights
        if getattr(layer, "merge_mode", "concat") != "concat":
            raise InteropError(f"Bidirectional merge_mode {layer.merge_mode!r} does not map; only 'concat'")
        fwd, bwd = layer.forward_layer, layer.backward_layer
        cfg, bwd_cfg = fwd.get_config(), bwd.get_config()
        if cell_options_from_config(cfg) != cell_options_from_config(bwd_cfg):
            raise InteropError("the forward and backward layers of Bidirectional use different activations")
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
        if type(layer).__name__ != "LSTM":
            raise InteropError(f"expected a Keras LSTM or Bidirectional(LSTM) layer; got {type(layer).__name__}")
        cfg = layer.get_config()
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
