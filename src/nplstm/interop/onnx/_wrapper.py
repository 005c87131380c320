"""The imported object: a StackedLSTM, or the :class:`OnnxLSTM` wrapper around one."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...loop import Packing
from ...shapes import check_lengths
from ...stack import StackedLSTM
from ..gates import unpack
from ._constants import _DEFAULT_ACTIVATIONS, ONNX_ORDER
from ._match import _Plan
from ._specs import _Layer


def _reverse_within(x: np.ndarray, lengths: np.ndarray | None, time_axis: int) -> np.ndarray:
    """Reverse each sequence over its own first ``lengths[b]`` steps (padding stays in place).

    ``lengths`` must come from :func:`nplstm.shapes.check_lengths`; the
    per-sequence reversal is the stack's own :meth:`Packing.reverse_each`.
    """
    if lengths is None:
        return np.flip(x, axis=time_axis).copy()
    tm = x if time_axis == 0 else x.swapaxes(0, 1)
    packing = Packing.of(lengths, tm.shape[0])
    out = packing.reverse_each(tm[:, packing.order])[:, packing.inverse]
    return out if time_axis == 0 else out.swapaxes(0, 1)


class OnnxLSTM:
    """An imported ONNX LSTM that a plain :class:`~nplstm.stack.StackedLSTM` cannot express alone.

    :func:`from_onnx` returns this wrapper only when the graph has a
    single-direction ``reverse`` LSTM, constant (non-zero) initial states or
    constant ``sequence_lens``; otherwise it returns the StackedLSTM itself.

    Attributes
    ----------
    stack : StackedLSTM
        The layers, run forward in time.
    reverse : bool
        Every node runs backwards in time: each sequence is reversed over its
        own length, run forward, and reversed back.
    initial_states : (h_0, c_0) or None
        Constant states of shape (L·D, B or 1, H) used when ``hx`` is None.
    lengths : (B,) int array or None
        Constant sequence lengths used when ``lengths`` is None.
    """

    def __init__(
        self,
        stack: StackedLSTM,
        *,
        reverse: bool = False,
        initial_states: tuple[np.ndarray, np.ndarray] | None = None,
        lengths: np.ndarray | None = None,
        source: str = "",
    ) -> None:
        self.stack = stack
        self.reverse = bool(reverse)
        self.initial_states = initial_states
        self.lengths = lengths
        self.source = source

    @property
    def batch_first(self) -> bool:
        return self.stack.batch_first

    def parameters(self) -> dict[str, np.ndarray]:
        """The stack's trainable arrays (views)."""
        return self.stack.parameters()

    def forward(
        self, x: Any, hx: tuple[Any, Any] | None = None, *, lengths: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Compute what the graph computes: ``(outputs, (h_n, c_n))`` as :meth:`StackedLSTM.forward`.

        ``x`` is (T, B, I) or (B, T, I) (batch_first), or one sequence (T,
        I); ``hx`` overrides the
        constant initial states; ``lengths`` the constant sequence lengths.
        """
        x = np.asarray(x)
        if x.ndim == 2:  # one sequence (T, I), as StackedLSTM takes it
            one = (np.asarray(hx[0])[:, None], np.asarray(hx[1])[:, None]) if hx is not None else None
            out, (h, c) = self.forward(x[None] if self.batch_first else x[:, None], one, lengths=lengths)
            return (out[0] if self.batch_first else out[:, 0]), (h[:, 0], c[:, 0])
        if x.ndim != 3:
            raise ValueError(f"x must be (T, I) or {'(B, T, I)' if self.batch_first else '(T, B, I)'}; got shape {x.shape}")
        batch = x.shape[0] if self.batch_first else x.shape[1]
        if lengths is None:
            lengths = self.lengths
        if hx is None and self.initial_states is not None:
            h0, c0 = self.initial_states
            if h0.shape[1] not in (1, batch):
                raise ValueError(f"this graph's constant initial states are for batch {h0.shape[1]}; got batch {batch}")
            hx = (np.broadcast_to(h0, (h0.shape[0], batch, h0.shape[2])), np.broadcast_to(c0, (c0.shape[0], batch, c0.shape[2])))
        time_axis = 1 if self.batch_first else 0
        if self.reverse:
            lengths = check_lengths(lengths, batch, x.shape[time_axis])
            x = _reverse_within(x, lengths, time_axis)
        seq, states = self.stack.forward(x, hx, lengths=lengths)
        assert seq is not None  # return_sequences is on
        if self.reverse:
            seq = _reverse_within(seq, lengths, time_axis)
        return seq, states

    __call__ = forward

    def __repr__(self) -> str:
        extras = []
        if self.reverse:
            extras.append("reverse=True")
        if self.initial_states is not None:
            extras.append(f"initial_states={tuple(self.initial_states[0].shape)}")
        if self.lengths is not None:
            extras.append(f"lengths={self.lengths.tolist()}")
        return f"OnnxLSTM({self.stack!r}, {', '.join(extras)})"


def _cell_options_for(layer: _Layer) -> Any:
    """CellOptions for a node, or None when the node is the plain LSTM."""
    plain = (
        tuple(a[0] for a in layer.activations) == _DEFAULT_ACTIVATIONS
        and layer.clip is None
        and not layer.input_forget
        and layer.P is None
    )
    if plain:
        return None
    from ...activations import Activation
    from ...cell import CellOptions

    f, g, h = (Activation(n, alpha, beta) for n, alpha, beta in layer.activations)
    return CellOptions(
        gate_activation=f, cell_activation=g, hidden_activation=h, clip=layer.clip, input_forget=layer.input_forget, peepholes=layer.P is not None
    )


def _same_in_float32(a: Any, b: Any) -> bool:
    """Two CellOptions that write the same (float32) ONNX attributes."""
    def key(o: Any) -> tuple[Any, ...]:
        acts = (o.gate_activation, o.cell_activation, o.hidden_activation)
        def f32(v: float | None) -> float | None:
            return None if v is None else float(np.float32(v))

        return tuple((x.name, f32(x.alpha), f32(x.beta)) for x in acts) + (f32(o.clip), o.input_forget, o.peepholes)

    return key(a) == key(b)


def _exact_options(options: Any, metadata: str | None) -> Any:
    """The exporter's full-precision CellOptions when they agree with the node's float32 attributes."""
    if options is None or metadata is None:
        return options
    import json

    from ...cell import CellOptions

    try:
        exact = CellOptions.from_config(json.loads(metadata))
    except (ValueError, TypeError):
        return options
    return exact if _same_in_float32(exact, options) else options


def _build(plan: _Plan, dtype: Any, label: str, metadata: str | None = None) -> StackedLSTM | OnnxLSTM:
    layers = plan.layers
    first = layers[0]
    D, H, I = first.num_directions, first.hidden_size, first.W.shape[2]
    if dtype is None:
        dtype = np.float64 if first.source_dtype == np.float64 else np.float32
    options = _exact_options(_cell_options_for(first), metadata)
    kwargs: dict[str, Any] = {} if options is None else {"cell": options}
    # a graph without any B input is a stack without bias (a missing B is zeros)
    kwargs["bias"] = any(layer.has_bias for layer in layers)
    stack = StackedLSTM(I, H, num_layers=len(layers), bidirectional=D == 2, batch_first=plan.batch_first, seed=0, dtype=dtype, **kwargs)
    for l, layer in enumerate(layers):
        for d, cell in enumerate(stack.layers[l]):
            unpack(cell, ONNX_ORDER, layer.W[d], layer.R[d], layer.B[d])
            if layer.P is not None:
                cell.Pi = layer.P[d, :H].reshape(H, 1)
                cell.Po = layer.P[d, H : 2 * H].reshape(H, 1)
                cell.Pf = layer.P[d, 2 * H :].reshape(H, 1)
    reverse = first.direction == "reverse"
    if not reverse and plan.initial_states is None and plan.lengths is None:
        return stack
    states = None
    if plan.initial_states is not None:
        states = (plan.initial_states[0].astype(stack.dtype), plan.initial_states[1].astype(stack.dtype))
    return OnnxLSTM(stack, reverse=reverse, initial_states=states, lengths=plan.lengths, source=label)
