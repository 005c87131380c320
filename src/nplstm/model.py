"""A whole sequence model: optional token :class:`~nplstm.head.Embedding`, an LSTM stack, dense layers on top.

The data flow, written once in :meth:`SequenceModel._forward` and undone
in :meth:`SequenceModel.backward`::

    ids or x ──Embedding──▶ (B, T, I) ──[go_backwards: reverse each]──▶ StackedLSTM
        ──select (h_n | last valid step | every step)──▶ Dense … Dense ──▶ prediction

Padding is given as ``lengths``, or read from the inputs like Keras does
(``mask_zero`` on the embedding, ``mask_value`` for a Masking layer):
trailing padding only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ._model_file import _model_from_config, _model_parameter_shapes
from .head import Dense, Embedding, _check_activation
from .modelfile import load_model_of_kind, register, save_model
from .params import as_generator, init_scheme, model_dtype, positive_int
from .shapes import as_real_array, check_lengths
from .stack import StackedLSTM, Tape, _stack_from_config

__all__ = ["SequenceModel", "ModelTape", "pad_sequences", "OUTPUTS"]

#: What the dense layers read from the stack.
OUTPUTS = ("h_n", "last", "sequence")
_MASKED_OUTPUTS = ("zero", "repeat")


@dataclass
class ModelTape:
    """What :meth:`SequenceModel.forward_train` recorded, for :meth:`SequenceModel.backward`."""

    model: SequenceModel
    stack_tape: Tape
    ids: np.ndarray | None  # token ids when the model has an embedding
    lengths: np.ndarray | None  # per sequence, in the caller's row order
    T: int
    dense_inputs: list[np.ndarray] = field(default_factory=list)
    pre_activation: np.ndarray | None = None  # of the output layer
    prediction: np.ndarray | None = None


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


def _prefix_lengths(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's count of valid steps in a (B, T) mask, and the rows whose valid steps are not a prefix."""
    lengths = valid.sum(axis=1)
    prefix = np.arange(valid.shape[1])[None, :] < lengths[:, None]
    return lengths, np.flatnonzero(np.any(valid != prefix, axis=1))


def _trailing_lengths(valid: np.ndarray, what: str) -> np.ndarray:
    """Lengths from a (B, T) mask of valid steps that must be a prefix of each row (trailing padding only)."""
    lengths, bad = _prefix_lengths(valid)
    if bad.size:
        raise ValueError(
            f"sequence {int(bad[0])} has padding ({what}) before valid steps; nplstm reads padding as each "
            "sequence's length and needs it at the end of each sequence only"
        )
    if valid.size and np.any(lengths == 0):
        raise ValueError(f"sequence {int(np.flatnonzero(lengths == 0)[0])} is all padding ({what}); it has no length")
    return lengths.astype(np.int64)


def _returned_index(lengths: np.ndarray, T: int, *, go_backwards: bool) -> np.ndarray:
    """(B, T): the stack step each step Keras returns shows, -1 for a zero output.

    Reading backwards, Keras meets the padding first (zero outputs), then the
    valid steps; reading forwards it repeats the last valid output over the
    padding (without ``zero_output_for_mask``).
    """
    steps = np.arange(T)[None, :]
    n = lengths[:, None]
    if go_backwards:
        return np.where(steps >= T - n, steps - (T - n), -1)
    return np.minimum(steps, n - 1)


def _gather_steps(seq: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Batch-first ``seq`` re-read at :func:`_returned_index` steps (zeros where it is -1)."""
    out = np.take_along_axis(seq, np.maximum(index, 0)[..., None], axis=1)
    out[index < 0] = 0
    return out


def _reverse_each(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """Batch-first ``x`` with each row's first ``lengths[b]`` steps reversed (its own inverse)."""
    if lengths is None:
        return x[:, ::-1]
    steps = np.arange(x.shape[1])[None, :]
    index = np.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    return np.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


class SequenceModel:
    """An LSTM stack with dense layers on top, optionally reading token ids through an embedding.

    The constructor builds a fresh model; :meth:`from_parts` assembles one
    from existing layers (what the importers return).

    Inputs are batch-first: ``(B, T, I)`` floats, or ``(B, T)`` integer
    token ids for a model with an embedding.  Predictions are ``(B, O)``,
    or ``(B, T, O)`` when ``output="sequence"``.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        ``input_size`` is the embedding's dimension when ``num_embeddings`` is given.
    num_layers, bidirectional, dropout, proj_size
        As for :class:`~nplstm.StackedLSTM` (``dropout`` is torch's, between layers).
    input_dropout, recurrent_dropout : float
        Keras' ``dropout`` and ``recurrent_dropout`` inside the stack, as for
        :class:`~nplstm.StackedLSTM`: one mask per sequence, the same at every
        step, in :meth:`forward_train` only (never in ``forward``/``predict``).
    many_to_many : bool
        Shorthand for ``output="sequence"``.
    output : {"h_n", "last", "sequence"}, optional
        What the dense layers read: the last layer's final hidden state
        (both directions concatenated, forward first); the stack's output at
        each sequence's last valid step (torch's ``out[:, -1]``; differs from
        ``h_n`` only for a bidirectional stack); or every step.
    hidden_layers : sequence of (units, activation)
        Dense layers between the stack and the output layer.
    activation : str
        The output layer's activation (one of :data:`~nplstm.head.HEAD_ACTIVATIONS`).
    num_embeddings : int, optional
        Read token ids through an :class:`~nplstm.head.Embedding` of this many rows.
    padding_idx, mask_zero
        As for :class:`~nplstm.head.Embedding`.
    mask_value : float, optional
        As Keras' ``Masking``: a step whose features all equal it is padding.
    go_backwards : bool
        As Keras' ``go_backwards``: each sequence is read reversed; a
        ``"sequence"`` output comes back in that reversed order.
    masked_outputs : {"zero", "repeat"}
        A ``"sequence"`` output at padded steps: zero (torch), or the last
        valid output repeated (Keras without ``zero_output_for_mask``).
    seed : int, Generator or None
        Source of the initial weights (and of dropout masks when
        :meth:`forward_train` is not given an ``rng``).
    dtype : float64 or float32
    init : {"torch", "keras", "textbook"}
        How every layer's weights start (:data:`nplstm.params.INIT_SCHEMES`).
        The default is "torch", the start a model meant for training needs:
        with zero gate biases ("textbook", the textbook :class:`nplstm.LSTM`'s
        contract and this model's start before ``init`` existed) a character
        model trained here reached validation cross-entropy 1.93-1.96 where
        torch reached 1.76, and 1.77 from torch's initial weights (issue 19):
        the gap was the start, not the maths.  "torch" is the start of a fresh
        ``torch.nn.LSTM`` / ``nn.Linear`` / ``nn.Embedding`` (uniform weights
        and biases), "keras" that of Keras' ``LSTM`` / ``Dense`` /
        ``Embedding`` (orthogonal recurrent kernel, forget bias 1).

    Attributes
    ----------
    embedding : Embedding or None
    lstm : StackedLSTM (batch-first)
    dense : tuple of Dense
        Every dense layer; ``head`` is the last one, the output layer.
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
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        proj_size: int = 0,
        many_to_many: bool = False,
        output: str | None = None,
        hidden_layers: Sequence[tuple[int, str]] = (),
        activation: str = "linear",
        num_embeddings: int | None = None,
        padding_idx: int | None = None,
        mask_zero: bool = False,
        mask_value: float | None = None,
        go_backwards: bool = False,
        masked_outputs: str = "zero",
        seed: Any = None,
        dtype: Any = np.float64,
        init: str = "torch",
    ) -> None:
        rng = as_generator(seed)
        init = init_scheme(init)
        dtype = model_dtype(dtype)
        if output is None:
            output = "sequence" if many_to_many else "h_n"
        elif many_to_many and output != "sequence":
            raise ValueError(f"many_to_many=True means output='sequence'; got output={output!r}")
        embedding = None
        if num_embeddings is not None:
            embedding = Embedding(num_embeddings, input_size, padding_idx=padding_idx, mask_zero=mask_zero, seed=rng, dtype=dtype,
                                  init=init)
        elif padding_idx is not None or mask_zero:
            raise ValueError("padding_idx and mask_zero belong to an embedding: give num_embeddings too")
        lstm = StackedLSTM(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout,
                           bidirectional=bidirectional, proj_size=proj_size, seed=rng, dtype=dtype, init=init,
                           input_dropout=input_dropout, recurrent_dropout=recurrent_dropout)
        if isinstance(hidden_layers, (str, bytes)) or not all(
            isinstance(spec, (tuple, list)) and len(spec) == 2 for spec in hidden_layers
        ):
            raise TypeError(f"hidden_layers must be a sequence of (units, activation) pairs; got {hidden_layers!r}")
        dense, width = [], lstm.output_size
        for k, (units, act) in enumerate(hidden_layers):
            dense.append(Dense(width, positive_int(units, f"hidden_layers[{k}] units"),
                               _check_activation(act, f"hidden_layers[{k}] activation"), seed=rng, dtype=dtype, init=init))
            width = dense[-1].out_features
        dense.append(Dense(width, output_size, activation, seed=rng, dtype=dtype, init=init))
        self._assemble(lstm, dense, embedding, output, mask_value, go_backwards, masked_outputs)

    @classmethod
    def from_parts(
        cls,
        lstm: StackedLSTM,
        head: Sequence[Dense],
        *,
        embedding: Embedding | None = None,
        output: str = "h_n",
        mask_value: float | None = None,
        go_backwards: bool = False,
        masked_outputs: str = "zero",
    ) -> SequenceModel:
        """A model of existing layers (used as they are, not copied; a stack is kept batch-first).

        ``head`` lists the dense layers in order, at least one; the others'
        arguments are those of the constructor.  Every part must share the
        stack's dtype, and each layer's input width must be what feeds it.
        """
        if not isinstance(lstm, StackedLSTM):
            raise TypeError(f"lstm must be a StackedLSTM; got {type(lstm).__name__}")
        model = cls.__new__(cls)
        model._assemble(_batch_first(lstm), list(head), embedding, output, mask_value, go_backwards, masked_outputs)
        return model

    def _assemble(
        self, lstm: StackedLSTM, dense: list[Dense], embedding: Embedding | None, output: str,
        mask_value: float | None, go_backwards: bool, masked_outputs: str,
    ) -> None:
        self.dtype = lstm.dtype
        if not dense or not all(isinstance(layer, Dense) for layer in dense):
            raise TypeError(f"head must be a non-empty sequence of Dense layers; got {[type(d).__name__ for d in dense]}")
        if embedding is not None and not isinstance(embedding, Embedding):
            raise TypeError(f"embedding must be an Embedding or None; got {type(embedding).__name__}")
        parts: list[tuple[str, Embedding | Dense]] = [("embedding", embedding)] if embedding is not None else []
        parts += [(f"dense[{k}]", layer) for k, layer in enumerate(dense)]
        for name, part in parts:
            if part.dtype != self.dtype:
                raise ValueError(f"{name} is {part.dtype.name} but the stack is {self.dtype.name}: give every part one dtype")
        if embedding is not None and embedding.embedding_dim != lstm.input_size:
            raise ValueError(f"the embedding gives {embedding.embedding_dim} features; the stack reads {lstm.input_size}")
        width = lstm.output_size
        for k, layer in enumerate(dense):
            if layer.in_features != width:
                raise ValueError(f"dense[{k}] reads {layer.in_features} features; what feeds it gives {width}")
            width = layer.out_features
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}; got {output!r}")
        if masked_outputs not in _MASKED_OUTPUTS:
            raise ValueError(f"masked_outputs must be one of {list(_MASKED_OUTPUTS)}; got {masked_outputs!r}")
        if mask_value is not None:
            if isinstance(mask_value, (bool, np.bool_)) or not isinstance(mask_value, (int, float, np.integer, np.floating)):
                raise TypeError(f"mask_value must be a number or None; got {mask_value!r}")
            if embedding is not None:
                raise ValueError("mask_value masks float inputs; a model with an embedding masks with mask_zero")
            mask_value = float(mask_value)
        if not isinstance(go_backwards, (bool, np.bool_)):
            raise TypeError(f"go_backwards must be true or false; got {go_backwards!r}")
        self.embedding, self.lstm, self.dense = embedding, lstm, tuple(dense)
        self.output, self.mask_value, self.go_backwards, self.masked_outputs = output, mask_value, bool(go_backwards), masked_outputs

    # ---------------------------------------------------------- structure
    @property
    def head(self) -> Dense:
        """The output layer (the last dense layer)."""
        return self.dense[-1]

    @property
    def many_to_many(self) -> bool:
        """True when the model predicts at every step (``output="sequence"``)."""
        return self.output == "sequence"

    @property
    def input_size(self) -> int:
        """Features per step of float inputs (the embedding's dimension for a model reading ids)."""
        return self.lstm.input_size

    @property
    def output_size(self) -> int:
        return self.head.out_features

    def _dense_names(self) -> list[str]:
        return [f"dense.{k}" for k in range(len(self.dense) - 1)] + ["head"]

    def parameters(self) -> dict[str, np.ndarray]:
        """All trainable arrays as views: ``embedding.W``, ``lstm.l0.Wf`` …, ``dense.0.W`` …, ``head.W``, ``head.b``."""
        params = {"embedding.W": self.embedding.W} if self.embedding is not None else {}
        params.update({f"lstm.{k}": v for k, v in self.lstm.parameters().items()})
        for name, layer in zip(self._dense_names(), self.dense):
            params.update({f"{name}.{k}": v for k, v in layer.parameters().items()})
        return params

    def __repr__(self) -> str:
        lines = [f"SequenceModel(output={self.output!r}, dtype={self.dtype.name}"]
        if self.embedding is not None:
            lines.append(f"  {self.embedding!r}")
        if self.mask_value is not None:
            lines.append(f"  Masking(mask_value={self.mask_value!r})")
        lines.append(f"  {self.lstm!r}" + (" reading each sequence backwards" if self.go_backwards else ""))
        if self.masked_outputs != "zero":
            lines.append(f"  masked_outputs={self.masked_outputs!r}")
        lines += [f"  {layer!r}" for layer in self.dense]
        return ",\n".join(lines) + "\n)"

    # -------------------------------------------------------------- forward
    def _inputs(self, x: Any, lengths: Any) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """``(ids or None, (B, T, I) floats, lengths or None)`` from the caller's input."""
        ids = None
        if self.embedding is not None:
            if np.ndim(x) != 2:
                raise ValueError(f"x must be a batch of token ids (B, T) for this model's embedding; got shape {np.shape(x)}")
            ids = self.embedding.check_ids(x)
            features = self.embedding.W[ids]
            valid = ids != 0 if self.embedding.mask_zero else None
            what = "token id 0, mask_zero"
        else:
            if np.ndim(x) != 3:
                raise ValueError(f"x must be a batch (B, T, I) with I = {self.lstm.input_size}; got shape {np.shape(x)}")
            features = as_real_array(x, "x", self.dtype)
            if features.shape[2] != self.lstm.input_size:
                raise ValueError(f"x must be a batch (B, T, I) with I = {self.lstm.input_size}; got shape {features.shape}")
            valid = np.any(features != self.mask_value, axis=-1) if self.mask_value is not None else None
            what = f"steps equal to mask_value={self.mask_value}"
        B, T = features.shape[:2]
        checked = check_lengths(lengths, B, T)
        if valid is not None:
            masked = _trailing_lengths(valid, what)
            given = None if lengths is None else (np.full(B, T) if checked is None else checked)
            if given is not None and not np.array_equal(given, masked):
                raise ValueError(f"lengths {given.tolist()} disagree with the padding the inputs show ({what}): "
                                 f"{masked.tolist()}; this model reads padding from its inputs, lengths are not needed")
            checked = masked
        if checked is not None and np.all(checked == T):
            checked = None
        if self.go_backwards:
            features = _reverse_each(features, checked)
        return ids, features, checked

    def mask_lengths(self, x: Any) -> np.ndarray | None:
        """Each sequence's length as the model's mask reads it from ``x`` (None for a model without a mask)."""
        if self.mask_value is None and not (self.embedding is not None and self.embedding.mask_zero):
            return None
        return self._inputs(x, None)[2]

    def _select(self, seq: np.ndarray | None, h_n: np.ndarray, lengths: np.ndarray | None, T: int) -> np.ndarray:
        """What the dense layers read, from the stack's outputs and final states."""
        D = self.lstm.num_directions
        if self.output == "h_n" or (self.output == "last" and D == 1):
            return np.concatenate(list(h_n[-D:]), axis=-1)
        assert seq is not None
        if self.output == "last":
            last = np.full(seq.shape[0], T - 1) if lengths is None else lengths - 1
            return seq[np.arange(seq.shape[0]), last]
        return self._as_returned(seq, lengths, T)

    def _returned_steps(self, lengths: np.ndarray | None, T: int) -> np.ndarray | None:
        """Which stack step each returned step shows (None: each its own), see :func:`_returned_index`."""
        if lengths is None or not (self.go_backwards or self.masked_outputs == "repeat"):
            return None
        return _returned_index(lengths, T, go_backwards=self.go_backwards)

    def _as_returned(self, seq: np.ndarray, lengths: np.ndarray | None, T: int) -> np.ndarray:
        """Every step's output as the source framework returns it (padded steps, reading order)."""
        index = self._returned_steps(lengths, T)
        return seq if index is None else _gather_steps(seq, index)

    def _needs_sequence(self) -> bool:
        return self.output == "sequence" or (self.output == "last" and self.lstm.bidirectional)

    def run(
        self, x: Any, state: tuple[Any, Any] | None = None, *, lengths: Any = None, return_sequences: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
        """Like :meth:`forward`, also returning the stack's outputs: ``(prediction, outputs, (h_n, c_n))``.

        ``outputs`` (in the stack's reading order) is None unless the model
        needs them or ``return_sequences=True``.
        """
        return self._run(x, state, lengths, bool(return_sequences), logits=False)

    def _run(
        self, x: Any, state: Any, lengths: Any, return_sequences: bool, logits: bool
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
        _, features, checked = self._inputs(x, lengths)
        keep = self._needs_sequence() or return_sequences
        seq, (h_n, c_n) = self.lstm.forward(features, state, lengths=checked, return_sequences=keep)
        h = self._select(seq, h_n, checked, features.shape[1])
        for layer in self.dense[:-1]:
            h = layer.forward(h)
        h = self.head.pre_activation(h) if logits else self.head.forward(h)
        return h, seq, (h_n, c_n)

    def forward(
        self, x: Any, state: tuple[Any, Any] | None = None, *, lengths: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Predict for a batch ``x``; returns ``(prediction, (h_n, c_n))``.

        ``state`` is an initial ``(h_0, c_0)`` of shapes ``(L·D, B, P)`` and
        ``(L·D, B, H)``, e.g. the one returned by the previous call when
        feeding a long sequence in pieces.  ``lengths`` (B,) gives each
        sequence's length for a padded batch.  With ``output="h_n"`` memory
        stays O(B·H) however long the sequence (for a unidirectional stack).
        """
        prediction, _, state = self.run(x, state, lengths=lengths)
        return prediction, state

    __call__ = forward

    def _pad_list(self, x: Any, lengths: Any, name: str = "x") -> tuple[np.ndarray, np.ndarray] | None:
        """A list of sequences padded as ``(X, lengths)``; None when ``x`` is not such a list.

        Float sequences are ``(T_k, I)`` (or ``(T_k,)`` for one feature),
        padded with zeros; token-id sequences ``(T_k,)`` for a model with an
        embedding, padded with id 0.  The one reading of lists that
        :func:`~nplstm.fit`, :func:`~nplstm.training.evaluate` and
        :meth:`predict` share.
        """
        if not isinstance(x, (list, tuple)) or not x:
            return None
        if self.embedding is not None:
            if not all(np.ndim(s) == 1 for s in x):
                return None
            if lengths is not None:
                raise ValueError(f"give either a list of sequences or padded {name} with lengths, not both")
            sequences = [self.embedding.check_ids(s, f"{name}[{k}]") for k, s in enumerate(x)]
            found = np.array([len(s) for s in sequences], dtype=np.int64)
            if found.min() < 1:
                raise ValueError(f"sequence {int(np.argmin(found))} is empty; every sequence needs at least one step")
            ids = np.zeros((len(sequences), int(found.max())), dtype=np.int64)
            for k, s in enumerate(sequences):
                ids[k, : len(s)] = s
            return ids, found
        if not all(np.ndim(s) in (1, 2) for s in x):
            return None
        if lengths is not None:
            raise ValueError(f"give either a list of sequences or padded {name} with lengths, not both")
        return pad_sequences(x, dtype=self.dtype, name=name)

    def _ragged_out(self, x: Any, lengths: Any, logits: bool) -> np.ndarray | list[np.ndarray]:
        padded = self._pad_list(x, lengths)
        if padded is None:
            return self._run(x, None, lengths, False, logits=logits)[0]
        X, found = padded
        out = self._run(X, None, found, False, logits=logits)[0]
        if not self.many_to_many:
            return out
        return [out[k, :n] for k, n in enumerate(found)]  # each sequence's own steps, as fit's loss reads them

    def predict(self, x: Any, *, lengths: Any = None) -> Any:
        """The model's output for ``x``: ``(B, O)``, or ``(B, T, O)`` with ``output="sequence"``.

        ``x`` may also be a list of sequences of different lengths, as
        :func:`~nplstm.fit` takes them (``(T_k, I)`` arrays, or ``(T_k,)``
        token ids): they are padded and run with their lengths; the result
        is ``(N, O)``, or with ``output="sequence"`` a list of ``(T_k, O)``
        arrays, each sequence's own steps (what fit's loss compares with
        the targets).
        """
        return self._ragged_out(x, lengths, logits=False)

    def logits(self, x: Any, *, lengths: Any = None) -> Any:
        """The output layer's pre-activation for ``x`` (the class scores before a softmax); ``x`` as for :meth:`predict`."""
        return self._ragged_out(x, lengths, logits=True)

    def forward_train(
        self, x: Any, state: tuple[Any, Any] | None = None, *, lengths: Any = None,
        rng: int | np.random.Generator | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], ModelTape]:
        """Training forward (dropout on): ``(prediction, (h_n, c_n), tape)`` for :meth:`backward`.

        ``rng`` (a Generator or an int seed) draws the dropout masks, the
        model's own generator by default; see :meth:`StackedLSTM.forward_train`.
        """
        ids, features, checked = self._inputs(x, lengths)
        seq, (h_n, c_n), stack_tape = self.lstm.forward_train(features, state, lengths=checked, rng=rng)
        T = features.shape[1]
        tape = ModelTape(self, stack_tape, ids, checked, T)
        h = self._select(seq, h_n, checked, T)
        for layer in self.dense:
            tape.dense_inputs.append(h)
            tape.pre_activation = layer.pre_activation(h)
            h = layer.activate(tape.pre_activation)  # the product once, not again inside layer.forward
        tape.prediction = h
        return h, (h_n, c_n), tape

    def backward(self, tape: ModelTape, d_prediction: Any, *, of_pre_activation: bool = False) -> dict[str, np.ndarray]:
        """Gradients of every parameter (named as :meth:`parameters`) and of ``x`` (not for ids), ``h_0``, ``c_0``.

        ``d_prediction`` is dL/d(prediction); with ``of_pre_activation=True``
        it is dL/d(the output layer's pre-activation) instead (the stable way
        to train a softmax output with cross-entropy).
        """
        if not isinstance(tape, ModelTape) or tape.model is not self:
            raise ValueError("backward needs the tape this model's forward_train returned")
        assert tape.prediction is not None
        d = as_real_array(d_prediction, "d_prediction", self.dtype)
        if d.shape != tape.prediction.shape:
            raise ValueError(f"d_prediction must have the prediction's shape {tape.prediction.shape}; got {d.shape}")
        grads: dict[str, np.ndarray] = {}
        last = len(self.dense) - 1
        for k in range(last, -1, -1):
            layer, h = self.dense[k], tape.dense_inputs[k]
            if k == last:
                layer_grads, d = layer.backward(h, d, a=tape.pre_activation, y=tape.prediction,
                                                of_pre_activation=of_pre_activation)
            else:
                layer_grads, d = layer.backward(h, d, y=tape.dense_inputs[k + 1])
            grads = {**{f"{self._dense_names()[k]}.{n}": v for n, v in layer_grads.items()}, **grads}
        lstm_grads = self._stack_backward(tape, d)
        d_x = lstm_grads["x"]
        if self.go_backwards:
            d_x = _reverse_each(d_x, tape.lengths)
        out: dict[str, np.ndarray] = {}
        if self.embedding is not None:
            assert tape.ids is not None
            out["embedding.W"] = self.embedding.backward(tape.ids, d_x)["W"]
        out.update({f"lstm.{k}": v for k, v in lstm_grads.items() if k not in ("x", "h_0", "c_0")})
        out.update(grads)
        if self.embedding is None:
            out["x"] = d_x
        out.update({k: lstm_grads[k] for k in ("h_0", "c_0")})
        return out

    def _stack_backward(self, tape: ModelTape, d_features: np.ndarray) -> dict[str, np.ndarray]:
        """Undo :meth:`_select`: dL/d(what the dense layers read) to the stack's gradients."""
        L, D, P = self.lstm.num_layers, self.lstm.num_directions, self.lstm.state_size
        B, T, lengths = d_features.shape[0], tape.T, tape.lengths
        if self.output == "h_n" or (self.output == "last" and D == 1):
            d_h_n = np.zeros((L * D, B, P), dtype=self.dtype)
            d_h_n[-D:] = d_features.reshape(B, D, P).transpose(1, 0, 2)
            return self.lstm.backward(tape.stack_tape, None, d_h_n)
        d_seq = np.zeros((B, T, D * P), dtype=self.dtype)
        if self.output == "last":
            last = np.full(B, T - 1) if lengths is None else lengths - 1
            d_seq[np.arange(B), last] = d_features
        else:
            index = self._returned_steps(lengths, T)
            if index is None:
                d_seq[...] = d_features
            else:  # the transpose of _gather_steps: each returned step's gradient goes to the step it shows
                shown = index >= 0
                np.add.at(d_seq, (np.nonzero(shown)[0], index[shown]), d_features[shown])
        return self.lstm.backward(tape.stack_tape, d_seq)

    # --------------------------------------------------------------- files
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (weights aside), JSON-able."""
        emb = self.embedding
        return {
            "lstm": self.lstm.config(),
            "embedding": None if emb is None else {
                "num_embeddings": emb.num_embeddings, "padding_idx": emb.padding_idx, "mask_zero": emb.mask_zero,
            },
            "dense": [[layer.out_features, layer.activation] for layer in self.dense],
            "output": self.output, "mask_value": self.mask_value, "go_backwards": self.go_backwards,
            "masked_outputs": self.masked_outputs,
        }

    def save(self, path: str | os.PathLike) -> Any:
        """Write the whole model to ``.npz`` (no pickle), atomically."""
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> SequenceModel:
        """Read a model written by :meth:`save`; a malformed file raises WeightsFileError."""
        return load_model_of_kind(path, cls, **kwargs)


def _batch_first(lstm: StackedLSTM) -> StackedLSTM:
    """``lstm`` itself when batch-first, else a batch-first stack sharing nothing but equal weights."""
    if lstm.batch_first:
        return lstm
    config = dict(lstm.config(), batch_first=True)
    twin = _stack_from_config(config, lstm.dtype)
    twin._rng = lstm._rng
    for name, value in lstm.parameters().items():
        twin.parameters()[name][...] = value
    return twin


register(SequenceModel, shapes=_model_parameter_shapes, build=lambda config, dtype: _model_from_config(SequenceModel, config, dtype))
