"""One Keras LSTM or Bidirectional(LSTM) layer: its checks, its weights, and :class:`KerasLSTM`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ...model import _gather_steps, _prefix_lengths, _returned_index, _reverse_each
from ...stack import StackedLSTM
from ..gates import InteropError, unpack
from ._config import (
    _BIDIRECTIONAL_KEYS,
    _DIRECTION_KEYS,
    KERAS_MERGE_MODES,
    KERAS_ORDER,
    _activation_name,
    _check_dtype,
    _check_lstm_config,
    _check_weights,
    _dtype_name,
    _is_keras,
    _unknown_keys,
    cell_options_from_config,
)


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
            # Keras met the padding first (zero output) reading backwards, and repeats the last valid output
            # over masked steps reading forwards
            if self.go_backwards or (not self.zero_output_for_mask and not self.stack.bidirectional):
                seq = _gather_steps(seq, _returned_index(lengths, T, go_backwards=self.go_backwards))
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


def _keras_rate(cfg: Mapping[str, Any], key: str, what: str) -> float:
    """A Keras LSTM's dropout rate as Keras applies it: clipped to [0, 1], and only a rate in (0, 1) drops."""
    value = cfg.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise InteropError(f"{what}: {key} must be a number; got {value!r}")
    return float(value) if 0 < value < 1 else 0.0


def _dropout_rates(recs: list[_Recurrent]) -> tuple[float, float]:
    """Keras' ``(dropout, recurrent_dropout)``: the stack's ``input_dropout`` and ``recurrent_dropout``.

    Training only (inference never drops).  One stack holds one rate of each:
    when the layers (or a Bidirectional's two directions) disagree, the stack
    imports without dropout and a warning says so.  Keras 3 draws a mask per
    gate once ``recurrent_dropout`` is set; nplstm's four gates share one.
    """
    configs = []
    for rec in recs:
        configs.append((rec.what if rec.layer is not None else "config", rec.cfg))
        if rec.bidirectional and rec.layer is not None:
            configs.append((f"{rec.what} backward_layer", rec.layer.backward_layer.get_config()))
    found = {what: (_keras_rate(cfg, "dropout", what), _keras_rate(cfg, "recurrent_dropout", what)) for what, cfg in configs}
    if len(set(found.values())) > 1:
        warnings.warn(
            f"the Keras LSTM layers have different dropout/recurrent_dropout {found}; nplstm's stack holds one rate "
            "of each, so it imports without dropout (set the stack's input_dropout / recurrent_dropout to train with some)",
            UserWarning, stacklevel=4,
        )
        return 0.0, 0.0
    return next(iter(found.values()))


def _build_stack(recs: list[_Recurrent], dtype: Any) -> StackedLSTM:
    """One StackedLSTM holding every layer of ``recs`` (already checked to agree)."""
    first = recs[0]
    options = cell_options_from_config(first.cfg)
    kernel = first.weights[0]["kernel"]
    I, H = kernel.shape[0], first.units
    if first.cfg.get("units", H) != H:
        raise InteropError(f"the config says units={first.cfg['units']!r} but the weights are for {H} units")
    kwargs: dict[str, Any] = {} if options is None else {"cell": options}
    rate, recurrent = _dropout_rates(recs)
    stack = StackedLSTM(I, H, len(recs), bidirectional=first.bidirectional, bias=first.cfg.get("use_bias", True),
                        batch_first=True, seed=0, dtype=dtype, input_dropout=rate, recurrent_dropout=recurrent, **kwargs)
    for pair, rec in zip(stack.layers, recs):
        for cell, w in zip(pair, rec.weights):
            unpack(cell, KERAS_ORDER, w["kernel"].T, w["recurrent_kernel"].T, w.get("bias"))
    return stack
