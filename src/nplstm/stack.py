"""Multi-layer and bidirectional LSTMs with torch.nn.LSTM's options and shapes.

Every layer and direction is an :class:`~nplstm.LSTM`, run through the one
step loop in :mod:`nplstm.cell`; this module only wires them together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .cell import named_activations
from .layer import LSTM, _positive_int, as_generator, model_dtype
from .shapes import as_real_array, as_time_major


class StackedLSTM:
    """An LSTM of ``num_layers`` layers, optionally bidirectional, like ``torch.nn.LSTM``.

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int
    bias : bool
        Without bias the gate biases stay zero and are not parameters.
    batch_first : bool
        Batched ``x`` and outputs are ``(B, T, ·)`` instead of ``(T, B, ·)``.
    dropout : float
        Dropout on the outputs of every layer but the last, in training only.
    bidirectional : bool
    proj_size : int
        LSTMP projection size (0: none).
    seed, dtype
        As for :class:`~nplstm.LSTM`.

    Attributes
    ----------
    layers : list of list of LSTM
        ``layers[l][d]``: layer ``l``, direction ``d`` (1 = reverse).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        seed: Any = None,
        dtype: Any = np.float64,
    ) -> None:
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.num_layers = _positive_int(num_layers, "num_layers")
        self.proj_size = _positive_int(proj_size, "proj_size", minimum=0)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dtype = model_dtype(dtype)
        self._rng = as_generator(seed)
        D, P = self.num_directions, self.proj_size or self.hidden_size
        self.layers = [
            [
                LSTM(self.input_size if l == 0 else D * P, hidden_size, seed=self._rng, dtype=self.dtype, proj_size=proj_size)
                for _ in range(D)
            ]
            for l in range(self.num_layers)
        ]
        self._cache: dict[str, Any] | None = None

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def state_size(self) -> int:
        return self.proj_size or self.hidden_size

    def cells(self):
        """Yield ``(k, layer, direction, LSTM)`` with k = layer·D + direction, torch's h_n index."""
        for l, pair in enumerate(self.layers):
            for d, cell in enumerate(pair):
                yield l * self.num_directions + d, l, d, cell

    def parameters(self) -> dict[str, np.ndarray]:
        """Trainable arrays (views) named ``l{layer}[_reverse].{Wf,...}``."""
        params = {}
        for _, l, d, cell in self.cells():
            for name, value in cell.parameters().items():
                if self.bias or not name.startswith("b"):
                    params[f"l{l}{'_reverse' if d else ''}.{name}"] = value
        return params

    def __repr__(self) -> str:
        return (
            f"StackedLSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
            f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
            f"bidirectional={self.bidirectional}, proj_size={self.proj_size}, dtype={self.dtype.name})"
        )

    # --------------------------------------------------------------- files
    FORMAT = "nplstm.StackedLSTM/1"
    _CONFIG = ("input_size", "hidden_size", "num_layers", "bidirectional", "bias", "proj_size", "batch_first")

    def save(self, path: Any) -> Any:
        """Write to ``.npz`` (no pickle, atomically), tensors named as in a torch state dict."""
        from .interop.torch_format import to_torch_state_dict
        from .io import save_npz

        arrays = to_torch_state_dict(self, as_numpy=True)
        arrays["format"] = np.array(self.FORMAT)
        arrays["config"] = np.array([int(getattr(self, k)) for k in self._CONFIG], dtype=np.int64)
        return save_npz(path, arrays)

    @classmethod
    def load(cls, path: Any) -> StackedLSTM:
        """Read a stack written by :meth:`save`; a malformed file raises WeightsFileError."""
        from .io import read_npz

        return cls.from_arrays(read_npz(path), str(path))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "arrays") -> StackedLSTM:
        from .interop.gates import InteropError
        from .interop.torch_format import from_torch
        from .io import WeightsFileError

        arrays = dict(arrays)
        fmt, cfg = arrays.pop("format", None), arrays.pop("config", None)
        if fmt is None or fmt.dtype.kind != "U" or str(fmt) != cls.FORMAT:
            raise WeightsFileError(f"{source}: not an nplstm StackedLSTM file (format tag {fmt!r})")
        if cfg is None or cfg.shape != (len(cls._CONFIG),) or cfg.dtype.kind not in "iu":
            raise WeightsFileError(f"{source}: 'config' must be {len(cls._CONFIG)} integers")
        config = dict(zip(cls._CONFIG, (int(v) for v in cfg)))
        try:
            stack = from_torch(arrays, batch_first=bool(config["batch_first"]))
        except InteropError as exc:
            raise WeightsFileError(f"{source}: {exc}") from None
        found = {k: int(getattr(stack, k)) for k in cls._CONFIG}
        if found != config:
            raise WeightsFileError(f"{source}: config {config} does not match the arrays, which imply {found}")
        return stack

    # ------------------------------------------------------------- forward
    def _initial_states(self, hx: Any, batch: int, batched: bool, check_finite: bool) -> tuple[np.ndarray, np.ndarray]:
        LD = self.num_layers * self.num_directions
        shapes = {"h_0": (LD, batch, self.state_size), "c_0": (LD, batch, self.hidden_size)}
        if hx is None:
            return tuple(np.zeros(s, dtype=self.dtype) for s in shapes.values())  # type: ignore[return-value]
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("hx must be a pair (h_0, c_0)")
        states = []
        for (name, shape), value in zip(shapes.items(), hx):
            arr = as_real_array(value, name, self.dtype, check_finite)
            expected = shape if batched else (shape[0], shape[2])
            if arr.shape != expected:
                raise ValueError(f"{name} must have shape {expected}; got {arr.shape}")
            states.append(arr.reshape(shape))
        return states[0], states[1]

    def forward(
        self, x: Any, hx: tuple[Any, Any] | None = None, *, train: bool = False, check_finite: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Run the stack; returns ``(outputs, (h_n, c_n))`` with torch's shapes.

        ``x`` is ``(T, B, I)`` (``(B, T, I)`` with batch_first) or unbatched
        ``(T, I)``; ``hx = (h_0, c_0)`` of shapes ``(L·D, B, P)`` and
        ``(L·D, B, H)`` (no B when unbatched), zeros if omitted.  ``outputs``
        is ``(T, B, D·P)``; ``train=True`` applies dropout and keeps what
        :meth:`backward` needs.
        """
        outputs, states, cache = self._run(x, hx, record=train, dropout=train, check_finite=check_finite)
        self._cache = cache if train else None
        return outputs, states

    __call__ = forward

    def trace(self, x: Any, hx: tuple[Any, Any] | None = None) -> list[list[dict[str, np.ndarray]]]:
        """Gate activations and states of every layer and direction (no dropout).

        ``result[l][d]`` is ``{"f", "i", "g", "o", "c", "h"}``, each
        ``(T, B, ·)`` time-major (``(T, ·)`` for unbatched ``x``), indexed by
        original time also for the reverse direction.
        """
        _, _, cache = self._run(x, hx, record=True, dropout=False, check_finite=False)
        return [
            [{k: (v if cache["batched"] else v[:, 0]).copy() for k, v in named_activations(t).items()} for t in layer]
            for layer in cache["traces"]
        ]

    def _run(
        self, x: Any, hx: Any, *, record: bool, dropout: bool, check_finite: bool
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, Any] | None]:
        x3, batched = as_time_major(x, self.input_size, self.dtype, self.batch_first, check_finite)
        T, B, _ = x3.shape
        h0, c0 = self._initial_states(hx, B, batched, check_finite)
        D, P, H = self.num_directions, self.state_size, self.hidden_size
        h_n = np.empty((self.num_layers * D, B, P), dtype=self.dtype)
        c_n = np.empty((self.num_layers * D, B, H), dtype=self.dtype)
        layer_input = x3
        inputs, traces, masks = [], [], []
        for l, pair in enumerate(self.layers):
            out = np.empty((T, B, D * P), dtype=self.dtype)
            layer_traces = []
            for d, cell in enumerate(pair):
                k = l * D + d
                trace = cell.new_trace(T, B) if record else None
                h_n[k], c_n[k] = cell.run_time_major(
                    layer_input, h0[k], c0[k], outputs=out[:, :, d * P : (d + 1) * P], trace=trace, reverse=d == 1
                )
                layer_traces.append(trace)
            inputs.append(layer_input)
            traces.append(layer_traces)
            mask = None
            if dropout and self.dropout and l < self.num_layers - 1:
                mask = (self._rng.random(out.shape) >= self.dropout) / (1.0 - self.dropout)
                out *= mask
            masks.append(mask)
            layer_input = out
        cache = (
            {"inputs": inputs, "traces": traces, "masks": masks, "h0": h0, "c0": c0, "batched": batched, "x_shape": np.shape(x)}
            if record
            else None
        )
        outputs = layer_input
        if not batched:
            return outputs[:, 0], (h_n[:, 0], c_n[:, 0]), cache
        if self.batch_first:
            outputs = np.ascontiguousarray(outputs.transpose(1, 0, 2))
        return outputs, (h_n, c_n), cache

    # ------------------------------------------------------------ backward
    def backward(self, d_outputs: Any = None, d_h_n: Any = None, d_c_n: Any = None) -> dict[str, np.ndarray]:
        """Gradients for the last ``forward(..., train=True)``.

        Arguments are shaped like what forward returned (None: zero).  Returns
        the gradients named as in :meth:`parameters`, plus ``x``, ``h_0`` and
        ``c_0``.
        """
        if self._cache is None:
            raise RuntimeError("backward needs a preceding forward(..., train=True)")
        cache = self._cache
        batched = cache["batched"]
        T, B = cache["inputs"][0].shape[:2]
        D, P = self.num_directions, self.state_size
        LD = self.num_layers * D

        H = self.hidden_size

        def given(value: Any, name: str, user_shape: tuple[int, ...], internal: tuple[int, ...]) -> np.ndarray | None:
            if value is None:
                return None
            arr = as_real_array(value, name, self.dtype)
            if arr.shape != user_shape:
                raise ValueError(f"{name} must have the shape forward returned, {user_shape}; got {arr.shape}")
            if batched and self.batch_first and name == "d_outputs":
                return arr.transpose(1, 0, 2)
            return arr.reshape(internal)

        if batched:
            out_user = (B, T, D * P) if self.batch_first else (T, B, D * P)
            h_user, c_user = (LD, B, P), (LD, B, H)
        else:
            out_user, h_user, c_user = (T, D * P), (LD, P), (LD, H)
        d_out = given(d_outputs, "d_outputs", out_user, (T, B, D * P))
        d_h = given(d_h_n, "d_h_n", h_user, (LD, B, P))
        d_c = given(d_c_n, "d_c_n", c_user, (LD, B, H))

        grads: dict[str, np.ndarray] = {}
        dh0 = np.zeros_like(cache["h0"])
        dc0 = np.zeros_like(cache["c0"])
        for l in range(self.num_layers - 1, -1, -1):
            layer_input = cache["inputs"][l]
            mask = cache["masks"][l]
            if d_out is not None and mask is not None:
                d_out = d_out * mask
            d_input = np.zeros(layer_input.shape, dtype=self.dtype)
            for d, cell in enumerate(self.layers[l]):
                k = l * D + d
                g = cell.backward_time_major(
                    layer_input,
                    cache["h0"][k],
                    cache["c0"][k],
                    cache["traces"][l][d],
                    d_out[:, :, d * P : (d + 1) * P] if d_out is not None else None,
                    d_h[k] if d_h is not None else None,
                    d_c[k] if d_c is not None else None,
                    reverse=d == 1,
                )
                d_input += g.x
                dh0[k], dc0[k] = g.h0, g.c0
                for name, value in cell.named_gradients(g).items():
                    if self.bias or not name.startswith("b"):
                        grads[f"l{l}{'_reverse' if d else ''}.{name}"] = value
            d_out = d_input
        dx = d_out
        if batched and self.batch_first:
            dx = dx.transpose(1, 0, 2)
        grads["x"] = np.ascontiguousarray(dx).reshape(cache["x_shape"])
        grads["h_0"] = dh0 if batched else dh0[:, 0]
        grads["c_0"] = dc0 if batched else dc0[:, 0]
        return grads
