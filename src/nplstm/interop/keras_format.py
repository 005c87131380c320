"""Keras 3: ``keras.layers.LSTM`` and ``Bidirectional(LSTM)`` weights.

Keras packs gates i, f, c, o and stores ``kernel`` (I, 4H),
``recurrent_kernel`` (H, 4H) and one ``bias`` (4H,).  Its layer options
``return_sequences``, ``return_state`` and ``go_backwards`` are reproduced
by :class:`KerasLSTM`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..stack import StackedLSTM
from .gates import InteropError, check_shape, unpack

KERAS_ORDER = "ifco"


def _layer_config(layer: Any) -> dict[str, Any]:
    cfg = layer.get_config()
    activation, recurrent = cfg.get("activation", "tanh"), cfg.get("recurrent_activation", "sigmoid")
    if activation != "tanh" or recurrent != "sigmoid":
        raise InteropError(
            f"only activation='tanh' with recurrent_activation='sigmoid' maps onto nplstm; "
            f"got activation={activation!r}, recurrent_activation={recurrent!r}"
        )
    return cfg


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


class KerasLSTM:
    """A :class:`~nplstm.stack.StackedLSTM` called the way the Keras layer is.

    ``model(x)`` with ``x`` (B, T, I) returns what the Keras layer returns:
    the sequence (B, T, D·H) if ``return_sequences`` else the last output
    (B, D·H), followed by the final h and c (per direction) if
    ``return_state``.
    """

    def __init__(self, stack: StackedLSTM, *, return_sequences: bool, return_state: bool, go_backwards: bool) -> None:
        self.stack = stack
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards

    def __call__(self, x: Any) -> Any:
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x must be (B, T, I) as for Keras; got shape {x.shape}")
        if self.go_backwards:  # Keras reads the reversed sequence and returns outputs in that order
            x = x[:, ::-1]
        seq, (h_n, c_n) = self.stack.forward(x)
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


def from_keras(
    layer_or_weights: Any, *, config: Mapping[str, Any] | None = None, dtype: Any = None
) -> KerasLSTM:
    """Build a :class:`KerasLSTM` from a Keras ``LSTM`` or ``Bidirectional(LSTM)`` layer.

    Also accepts the weight list ``[kernel, recurrent_kernel, bias]`` of an
    LSTM layer with an optional ``config`` (``return_sequences``,
    ``return_state``, ``go_backwards``, ``use_bias``).  The Keras layer must be
    built (called once or given an input shape).  Only ``merge_mode='concat'``
    maps for Bidirectional.
    """
    sub_weights: list[dict[str, np.ndarray]]
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
        cfg = _layer_config(fwd)
        _layer_config(bwd)
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
        cfg = _layer_config(layer)
        use_bias = cfg.get("use_bias", True)
        if not layer.weights:
            raise InteropError("the Keras layer has no weights yet: build it (call it once) first")
        sub_weights = [_check_weights(layer.get_weights(), use_bias, None, type(layer).__name__)]
        bidirectional = False
    else:
        raise TypeError(f"expected a Keras LSTM/Bidirectional layer or a weight list; got {type(layer_or_weights).__name__}")

    kernel = sub_weights[0]["kernel"]
    I, H = kernel.shape[0], kernel.shape[1] // 4
    if dtype is None:
        dtype = np.float64 if kernel.dtype == np.float64 else np.float32
    stack = StackedLSTM(I, H, bidirectional=bidirectional, bias=use_bias, batch_first=True, seed=0, dtype=dtype)
    for cell, w in zip(stack.layers[0], sub_weights):
        unpack(cell, KERAS_ORDER, w["kernel"].T, w["recurrent_kernel"].T, w.get("bias"))
    return KerasLSTM(
        stack,
        return_sequences=bool(cfg.get("return_sequences", False)),
        return_state=bool(cfg.get("return_state", False)),
        go_backwards=bool(cfg.get("go_backwards", False)),
    )
