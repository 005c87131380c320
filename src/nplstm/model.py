"""A trainable sequence model: an :class:`~nplstm.LSTM` with a :class:`~nplstm.head.Linear` head."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .head import Linear
from .io import WeightsFileError, read_npz, require, save_npz
from .layer import LSTM, as_generator, model_dtype

FORMAT = "nplstm.SequenceModel/1"


class SequenceModel:
    """LSTM + dense head for sequence regression or classification.

    Inputs are batch-first, ``(B, T, I)``.  With ``many_to_many=False`` the
    head reads the last hidden state and predictions are ``(B, O)``; with
    ``many_to_many=True`` it reads every step, ``(B, T, O)`` (language
    models, per-step tagging).

    Parameters
    ----------
    input_size, hidden_size, output_size : int
    many_to_many : bool
    seed : int, Generator or None
    dtype : float64 or float32
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        many_to_many: bool = False,
        seed: Any = None,
        dtype: Any = np.float64,
    ) -> None:
        rng = as_generator(seed)
        self.dtype = model_dtype(dtype)
        self.lstm = LSTM(input_size, hidden_size, seed=rng, dtype=self.dtype, batch_first=True)
        self.head = Linear(hidden_size, output_size, seed=rng, dtype=self.dtype)
        self.many_to_many = bool(many_to_many)

    def parameters(self) -> dict[str, np.ndarray]:
        """All trainable arrays as views, named ``lstm.Wf`` … ``head.b``."""
        params = {f"lstm.{k}": v for k, v in self.lstm.parameters().items()}
        params.update({f"head.{k}": v for k, v in self.head.parameters().items()})
        return params

    def forward(
        self, x: Any, state: tuple[Any, Any] | None = None, *, train: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Predict for a batch ``x`` (B, T, I); returns ``(prediction, (h_T, c_T))``.

        ``state`` is an initial ``(h, c)`` of rows (B, H), e.g. the one
        returned by the previous call when feeding a long sequence in pieces.
        """
        prediction, _, state = self.run(x, state, train=train)
        return prediction, state

    def run(
        self, x: Any, state: tuple[Any, Any] | None = None, *, train: bool = False
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Like :meth:`forward`, also returning the LSTM outputs: ``(prediction, outputs, (h, c))``."""
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x must be a batch (B, T, I) with I = {self.lstm.input_size}; got shape {x.shape}")
        h0, c0 = state if state is not None else (None, None)
        outputs, h, c = self.lstm.forward(x, h0, c0, train=train)
        features = outputs if self.many_to_many else outputs[:, -1] if x.shape[1] else h
        return self.head.forward(features, train=train), outputs, (h, c)

    __call__ = forward

    def predict(self, x: Any) -> np.ndarray:
        return self.forward(x)[0]

    def backward(self, d_prediction: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of every parameter (and ``x``, ``h0``, ``c0``) for the last training forward."""
        head_grads, d_features = self.head.backward(d_prediction)
        if self.many_to_many:
            lstm_grads = self.lstm.backward(d_features)
        else:
            lstm_grads = self.lstm.backward(None, d_features)
        grads = {f"lstm.{k}": v for k, v in lstm_grads.items()}
        grads.update({f"head.{k}": v for k, v in head_grads.items()})
        return grads

    # --------------------------------------------------------------- files
    def config(self) -> dict[str, int]:
        return {
            "input_size": self.lstm.input_size,
            "hidden_size": self.lstm.hidden_size,
            "output_size": self.head.out_features,
            "many_to_many": int(self.many_to_many),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole model to ``.npz`` (no pickle), atomically."""
        cfg = self.config()
        arrays = dict(self.parameters())
        arrays["format"] = np.array(FORMAT)
        arrays["config"] = np.array([cfg[k] for k in ("input_size", "hidden_size", "output_size", "many_to_many")], dtype=np.int64)
        return save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SequenceModel:
        """Read a model written by :meth:`save`; a malformed file raises WeightsFileError."""
        return cls.from_arrays(read_npz(path), str(path))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], path: str = "arrays") -> SequenceModel:
        """Build from the arrays of a saved file, checking every one first."""
        fmt = arrays.get("format")
        if fmt is None or fmt.dtype.kind != "U" or str(fmt) != FORMAT:
            raise WeightsFileError(f"{path}: not an nplstm SequenceModel file (format tag {fmt!r})")
        cfg = arrays.get("config")
        if cfg is None or cfg.shape != (4,) or cfg.dtype.kind not in "iu":
            raise WeightsFileError(f"{path}: 'config' must be 4 integers; got {None if cfg is None else (cfg.shape, cfg.dtype)}")
        I, H, O, m2m = (int(v) for v in cfg)
        if min(I, H, O) < 1 or max(I, H, O) > 1 << 20 or m2m not in (0, 1):
            raise WeightsFileError(f"{path}: implausible config {cfg.tolist()}")
        dtype = arrays.get("lstm.Wf", np.zeros(0)).dtype
        if dtype not in (np.float32, np.float64):
            raise WeightsFileError(f"{path}: 'lstm.Wf' has dtype {dtype}; expected float32 or float64")
        model = cls(I, H, O, many_to_many=bool(m2m), seed=0, dtype=dtype)
        values = {name: require(arrays, name, p.shape, str(path)) for name, p in model.parameters().items()}
        for name, value in values.items():  # all checked before any is set: nothing partially loaded
            model.parameters()[name][...] = value
        return model
