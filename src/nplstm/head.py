"""The layers around the LSTM in a model: token :class:`Embedding` in front, :class:`Dense` layers on top.

Each layer has ``forward`` and, side by side, the ``backward`` that gives
exact gradients of its parameters and of its input.  The head's
activations live in one table, :data:`HEAD_ACTIVATIONS`, each with its
derivative written next to it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .activations import sigmoid
from .params import as_generator, checked_array, glorot_uniform, init_scheme, model_dtype, positive_int
from .shapes import as_real_array, refuse_masked

__all__ = ["Dense", "Linear", "Embedding", "HEAD_ACTIVATIONS"]


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(a: np.ndarray) -> np.ndarray:
    shifted = a - a.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# name: (f(a), dL/da from (a, y = f(a), dL/dy)); softmax and log_softmax act on the last axis
_Derivative = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
_ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], _Derivative]] = {
    "linear": (lambda a: a, lambda a, y, dy: dy),
    "relu": (lambda a: np.maximum(a, 0), lambda a, y, dy: dy * (a > 0)),
    "tanh": (np.tanh, lambda a, y, dy: dy * (1 - y * y)),
    "sigmoid": (sigmoid, lambda a, y, dy: dy * y * (1 - y)),
    "softmax": (_softmax, lambda a, y, dy: y * (dy - (dy * y).sum(axis=-1, keepdims=True))),
    "log_softmax": (_log_softmax, lambda a, y, dy: dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)),
}

#: The activations a :class:`Dense` layer can apply (softmax and log_softmax over the last axis).
HEAD_ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)


def _check_activation(activation: Any, name: str = "activation") -> str:
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(f"{name} must be one of {list(HEAD_ACTIVATIONS)}; got {activation!r}")
    return activation


class _CheckedArray:
    """A parameter exposed as its array: assigning copies in after a shape, dtype and finiteness check.

    The array itself never changes identity, so optimizers holding it stay attached.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, "_" + name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj: Any, value: Any) -> None:
        target = getattr(obj, self.slot)
        target[...] = checked_array(value, self.name, target.shape, obj.dtype)


class Dense:
    """Affine map with an activation over the last axis: ``y = f(h Wᵀ + b)``.

    Weights start uniform(-1/√in, 1/√in) as in PyTorch, the bias at zero
    (``init="textbook"``; see ``init``).  ``W`` (out, in) and ``b`` (out,) are checked views: assigning copies in
    after a shape, dtype and finiteness check, so optimizers holding them
    stay attached.

    Parameters
    ----------
    in_features, out_features : int
    activation : str
        One of :data:`HEAD_ACTIVATIONS`; ``"linear"`` (none) by default.
    seed : int, Generator or None
    dtype : float64 or float32
    init : {"textbook", "torch", "keras"}
        How ``W`` and ``b`` start (:data:`nplstm.params.INIT_SCHEMES`):
        "textbook" as above; "torch" as ``nn.Linear`` (``b`` uniform(-1/√in,
        1/√in) too); "keras" as ``Dense`` (glorot_uniform ``W``, zero ``b``).
    """

    def __init__(
        self, in_features: int, out_features: int, activation: str = "linear", *, seed: Any = None, dtype: Any = np.float64,
        init: str = "textbook",
    ) -> None:
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.activation = _check_activation(activation)
        self.dtype = model_dtype(dtype)
        bound = 1.0 / np.sqrt(self.in_features)
        rng = as_generator(seed)
        shape = (self.out_features, self.in_features)
        if init_scheme(init) == "keras":
            self._W = glorot_uniform(rng, self.in_features, self.out_features, shape).astype(self.dtype)
        else:
            self._W = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        self._b = np.zeros(self.out_features, dtype=self.dtype)
        if init == "torch":
            self._b[...] = rng.uniform(-bound, bound, size=self.out_features)

    W = _CheckedArray()
    b = _CheckedArray()

    def parameters(self) -> dict[str, np.ndarray]:
        return {"W": self._W, "b": self._b}

    def pre_activation(self, h: Any) -> np.ndarray:
        """``h Wᵀ + b`` for ``h (..., in)``."""
        h = as_real_array(h, "h", self.dtype)
        if h.shape[-1:] != (self.in_features,):
            raise ValueError(f"{type(self).__name__} expects (..., {self.in_features}); got {h.shape}")
        return h @ self._W.T + self._b

    def activate(self, a: np.ndarray) -> np.ndarray:
        """The layer's activation of its pre-activation ``a`` (from :meth:`pre_activation`)."""
        return _ACTIVATIONS[self.activation][0](a)

    def forward(self, h: Any) -> np.ndarray:
        """``h (..., in) -> (..., out)``."""
        return self.activate(self.pre_activation(h))

    __call__ = forward

    def backward(
        self, h: np.ndarray, dy: np.ndarray, *, a: np.ndarray | None = None, y: np.ndarray | None = None,
        of_pre_activation: bool = False,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``({"W": dW, "b": db}, dL/dh)`` for a forward on input ``h``.

        ``dy`` is dL/d(output), or dL/d(pre-activation) with
        ``of_pre_activation=True``; ``a`` and ``y`` (the pre-activation and
        output of that forward) are recomputed when not given.
        """
        if not of_pre_activation and self.activation != "linear":
            if a is None:
                a = self.pre_activation(h)
            if y is None:
                y = _ACTIVATIONS[self.activation][0](a)
            dy = _ACTIVATIONS[self.activation][1](a, y, dy)
        h2 = h.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        return {"W": dy2.T @ h2, "b": dy2.sum(axis=0)}, dy @ self._W

    def __repr__(self) -> str:
        act = "" if self.activation == "linear" else f", activation={self.activation!r}"
        return f"{type(self).__name__}(in_features={self.in_features}, out_features={self.out_features}{act}, dtype={self.dtype.name})"


#: The earlier name of :class:`Dense` (a dense layer without activation by default).
Linear = Dense


class Embedding:
    """A lookup table from token ids to vectors: ``ids (B, T) -> W[ids] (B, T, dim)``.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    padding_idx : int or None
        torch's meaning: that row gets no gradient (the lookup is unchanged).
    mask_zero : bool
        Keras' meaning: id 0 is padding; a model reads each sequence up to
        its last non-zero id (trailing padding only).
    seed : int, Generator or None
        Source of the initial weights.
    dtype : float64 or float32
    init : {"textbook", "torch", "keras"}
        How the weights start (:data:`nplstm.params.INIT_SCHEMES`): standard
        normal as in torch ("textbook", "torch"), or uniform(-0.05, 0.05) as
        Keras' ``Embedding`` ("keras").  The ``padding_idx`` row starts at zero.
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, *, padding_idx: int | None = None, mask_zero: bool = False,
        seed: Any = None, dtype: Any = np.float64, init: str = "textbook",
    ) -> None:
        self.num_embeddings = positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim")
        if padding_idx is not None:
            padding_idx = positive_int(padding_idx, "padding_idx", minimum=0)
            if padding_idx >= self.num_embeddings:
                raise ValueError(f"padding_idx must lie in [0, {self.num_embeddings}); got {padding_idx}")
        self.padding_idx = padding_idx
        if not isinstance(mask_zero, (bool, np.bool_)):
            raise TypeError(f"mask_zero must be true or false; got {mask_zero!r}")
        self.mask_zero = bool(mask_zero)
        self.dtype = model_dtype(dtype)
        shape, rng = (self.num_embeddings, self.embedding_dim), as_generator(seed)
        if init_scheme(init) == "keras":
            self._W = rng.uniform(-0.05, 0.05, size=shape).astype(self.dtype)
        else:
            self._W = rng.standard_normal(shape).astype(self.dtype)
        if padding_idx is not None:
            self._W[padding_idx] = 0

    W = _CheckedArray()

    def parameters(self) -> dict[str, np.ndarray]:
        return {"W": self._W}

    def check_ids(self, ids: Any, name: str = "x") -> np.ndarray:
        """``ids`` as int64, refusing non-integers and ids outside ``[0, num_embeddings)`` by value."""
        refuse_masked(ids, name)
        arr = np.asarray(ids)
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            pass  # whole floats, e.g. read from a CSV file
        elif arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and arr.size == 0):
            raise TypeError(f"{name} must hold integer token ids for the embedding; got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_embeddings):
            raise ValueError(
                f"{name} must hold token ids in [0, {self.num_embeddings}); got values from {arr.min():g} to {arr.max():g}"
            )
        return arr.astype(np.int64)

    def forward(self, ids: Any) -> np.ndarray:
        """``ids (...) -> (..., embedding_dim)``."""
        return self._W[self.check_ids(ids)]

    __call__ = forward

    def backward(self, ids: np.ndarray, d_out: np.ndarray) -> dict[str, np.ndarray]:
        """``{"W": dW}`` for a forward on ``ids``: rows summed per id, the padding row zero."""
        dW = np.zeros_like(self._W)
        np.add.at(dW, ids.reshape(-1), d_out.reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            dW[self.padding_idx] = 0
        return {"W": dW}

    def __repr__(self) -> str:
        extras = "".join(
            f", {k}={v!r}" for k, v in (("padding_idx", self.padding_idx), ("mask_zero", self.mask_zero)) if v not in (None, False)
        )
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{extras}, dtype={self.dtype.name})"
