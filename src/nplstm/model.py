"""A trainable sequence model: any :class:`~nplstm.StackedLSTM` with a :class:`~nplstm.head.Linear` head."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .head import Linear
from .modelfile import load_model_of_kind, register, save_model
from .params import as_generator, model_dtype, positive_int
from .shapes import as_real_array
from .stack import StackedLSTM, Tape, stack_parameter_shapes


@dataclass
class ModelTape:
    """What :meth:`SequenceModel.forward_train` recorded: the stack's tape and the head's input."""

    model: SequenceModel
    stack_tape: Tape
    features: np.ndarray
    lengths: np.ndarray | None
    x_shape: tuple[int, ...]


def pad_sequences(sequences: Sequence[Any], *, dtype: Any = np.float64, name: str = "sequences") -> tuple[np.ndarray, np.ndarray]:
    """Pad a list of ``(T_k, I)`` (or ``(T_k,)``) sequences with trailing zeros.

    Returns ``(X (N, max T, I), lengths (N,))`` for ``forward(..., lengths=...)``.
    Each sequence is checked like any input array (real numbers, no masked
    arrays); errors name it ``name[k]``.
    """
    arrays = [as_real_array(s, f"{name}[{k}]", np.dtype(dtype)) for k, s in enumerate(sequences)]
    if not arrays:
        raise ValueError("no sequences to pad")
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    widths = {a.shape[1:] for a in arrays}
    if any(a.ndim != 2 for a in arrays) or len(widths) != 1:
        raise ValueError(f"every sequence must be (T, I) with the same I; got shapes {sorted({a.shape for a in arrays})[:5]}")
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    if lengths.min() < 1:
        raise ValueError(f"sequence {int(np.argmin(lengths))} is empty; every sequence needs at least one step")
    X = np.zeros((len(arrays), int(lengths.max()), arrays[0].shape[1]), dtype=dtype)
    for k, a in enumerate(arrays):
        X[k, : len(a)] = a
    return X, lengths


class SequenceModel:
    """A stack of LSTM layers plus a dense head, for sequence regression or classification.

    Inputs are batch-first, ``(B, T, I)``.  With ``many_to_many=False`` the
    head reads the final hidden state of the last layer (both directions
    concatenated; each sequence's last valid step with ``lengths``) and
    predictions are ``(B, O)``; with ``many_to_many=True`` it reads every
    step, ``(B, T, O)`` (language models, per-step tagging).

    Parameters
    ----------
    input_size, hidden_size, output_size : int
    num_layers, bidirectional, dropout, proj_size
        As for :class:`~nplstm.StackedLSTM`.
    many_to_many : bool
    seed : int, Generator or None
    dtype : float64 or float32

    Attributes
    ----------
    lstm : StackedLSTM
    head : Linear
    """

    KIND = "SequenceModel"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        proj_size: int = 0,
        many_to_many: bool = False,
        seed: Any = None,
        dtype: Any = np.float64,
    ) -> None:
        rng = as_generator(seed)
        self.dtype = model_dtype(dtype)
        self.lstm = StackedLSTM(
            input_size, hidden_size, num_layers, batch_first=True, dropout=dropout,
            bidirectional=bidirectional, proj_size=proj_size, seed=rng, dtype=self.dtype,
        )
        self.head = Linear(self.lstm.output_size, output_size, seed=rng, dtype=self.dtype)
        self.many_to_many = bool(many_to_many)

    def parameters(self) -> dict[str, np.ndarray]:
        """All trainable arrays as views, named ``lstm.l0.Wf`` … ``head.b``."""
        params = {f"lstm.{k}": v for k, v in self.lstm.parameters().items()}
        params.update({f"head.{k}": v for k, v in self.head.parameters().items()})
        return params

    def __repr__(self) -> str:
        return (
            f"SequenceModel(input_size={self.lstm.input_size}, hidden_size={self.lstm.hidden_size}, "
            f"output_size={self.head.out_features}, num_layers={self.lstm.num_layers}, "
            f"bidirectional={self.lstm.bidirectional}, many_to_many={self.many_to_many}, dtype={self.dtype.name})"
        )

    # -------------------------------------------------------------- forward
    def _check_x(self, x: Any) -> None:
        if np.ndim(x) != 3:
            raise ValueError(f"x must be a batch (B, T, I) with I = {self.lstm.input_size}; got shape {np.shape(x)}")

    def _features(self, outputs: np.ndarray | None, h_n: np.ndarray) -> np.ndarray:
        """What the head reads: every step's outputs, or the last layer's final states."""
        if self.many_to_many:
            assert outputs is not None
            return outputs
        D = self.lstm.num_directions
        return np.concatenate(list(h_n[-D:]), axis=-1)

    def run(
        self, x: Any, state: tuple[Any, Any] | None = None, *, lengths: Any = None, return_sequences: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
        """Like :meth:`forward`, also returning the LSTM outputs: ``(prediction, outputs, (h_n, c_n))``.

        ``outputs`` is None for a many-to-one model unless ``return_sequences=True``.
        """
        self._check_x(x)
        keep = self.many_to_many if return_sequences is None else bool(return_sequences) or self.many_to_many
        outputs, (h_n, c_n) = self.lstm.forward(x, state, lengths=lengths, return_sequences=keep)
        return self.head.forward(self._features(outputs, h_n)), outputs, (h_n, c_n)

    def forward(
        self, x: Any, state: tuple[Any, Any] | None = None, *, lengths: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Predict for a batch ``x`` (B, T, I); returns ``(prediction, (h_n, c_n))``.

        ``state`` is an initial ``(h_0, c_0)`` of shapes ``(L·D, B, P)`` and
        ``(L·D, B, H)``, e.g. the one returned by the previous call when
        feeding a long sequence in pieces.  ``lengths`` (B,) gives each
        sequence's length for a padded batch.  Many-to-one memory stays
        O(B·H) however long the sequence (for a unidirectional stack).
        """
        prediction, _, state = self.run(x, state, lengths=lengths)
        return prediction, state

    __call__ = forward

    def predict(self, x: Any, *, lengths: Any = None) -> np.ndarray:
        return self.forward(x, lengths=lengths)[0]

    def forward_train(
        self, x: Any, state: tuple[Any, Any] | None = None, *, lengths: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], ModelTape]:
        """Training forward (dropout on): ``(prediction, (h_n, c_n), tape)`` for :meth:`backward`."""
        self._check_x(x)
        outputs, (h_n, c_n), stack_tape = self.lstm.forward_train(x, state, lengths=lengths)
        features = self._features(outputs, h_n)
        packing = stack_tape.packing
        tape = ModelTape(self, stack_tape, features, packing.lengths[packing.inverse] if packing else None, np.shape(x))
        return self.head.forward(features), (h_n, c_n), tape

    def backward(self, tape: ModelTape, d_prediction: Any) -> dict[str, np.ndarray]:
        """Gradients of every parameter (named as :meth:`parameters`) and of ``x``, ``h_0``, ``c_0``."""
        if not isinstance(tape, ModelTape) or tape.model is not self:
            raise ValueError("backward needs the tape this model's forward_train returned")
        d_prediction = as_real_array(d_prediction, "d_prediction", self.dtype)
        expected = tape.features.shape[:-1] + (self.head.out_features,)
        if d_prediction.shape != expected:
            raise ValueError(f"d_prediction must have the prediction's shape {expected}; got {d_prediction.shape}")
        head_grads, d_features = self.head.backward(tape.features, d_prediction)
        if self.many_to_many:
            lstm_grads = self.lstm.backward(tape.stack_tape, d_features)
        else:
            L, D, P = self.lstm.num_layers, self.lstm.num_directions, self.lstm.state_size
            B = d_features.shape[0]
            d_h_n = np.zeros((L * D, B, P), dtype=self.dtype)
            d_h_n[-D:] = d_features.reshape(B, D, P).transpose(1, 0, 2)
            lstm_grads = self.lstm.backward(tape.stack_tape, None, d_h_n)
        grads = {f"lstm.{k}": v for k, v in lstm_grads.items() if k not in ("x", "h_0", "c_0")}
        grads.update({f"head.{k}": v for k, v in head_grads.items()})
        grads.update({k: lstm_grads[k] for k in ("x", "h_0", "c_0")})
        return grads

    # --------------------------------------------------------------- files
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (weights aside), JSON-able."""
        s = self.lstm
        return {
            "input_size": s.input_size, "hidden_size": s.hidden_size, "output_size": self.head.out_features,
            "num_layers": s.num_layers, "bidirectional": s.bidirectional, "dropout": s.dropout,
            "proj_size": s.proj_size, "many_to_many": self.many_to_many,
        }

    def save(self, path: str | os.PathLike) -> Any:
        """Write the whole model to ``.npz`` (no pickle), atomically."""
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> SequenceModel:
        """Read a model written by :meth:`save`; a malformed file raises WeightsFileError."""
        return load_model_of_kind(path, cls, **kwargs)


# ------------------------------------------------------------ weight files
def _model_parameter_shapes(config: dict[str, Any], max_count: int | None = None) -> dict[str, tuple[int, ...]]:
    stack_cfg = {
        "input_size": config["input_size"], "hidden_size": config["hidden_size"],
        "num_layers": config.get("num_layers", 1), "bidirectional": config.get("bidirectional", False),
        "proj_size": config.get("proj_size", 0), "dropout": config.get("dropout", 0.0), "bias": True,
    }
    output_size = positive_int(config["output_size"], "output_size")
    if not isinstance(config.get("many_to_many", False), bool):
        raise TypeError(f"many_to_many must be true or false; got {config['many_to_many']!r}")
    shapes = {f"lstm.{k}": v for k, v in stack_parameter_shapes(stack_cfg, max_count).items()}
    features = (2 if stack_cfg["bidirectional"] else 1) * (stack_cfg["proj_size"] or stack_cfg["hidden_size"])
    shapes["head.W"] = (output_size, features)
    shapes["head.b"] = (output_size,)
    return shapes


def _model_from_config(config: dict[str, Any], dtype: Any) -> SequenceModel:
    cfg = dict(config)
    return SequenceModel(cfg.pop("input_size"), cfg.pop("hidden_size"), cfg.pop("output_size"), **cfg, seed=0, dtype=dtype)


register(SequenceModel, shapes=_model_parameter_shapes, build=_model_from_config)
