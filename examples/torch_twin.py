"""torch trained the way nplstm's ``fit`` trains: same weights, same data order, same loss.

Shared by the real-data examples (``co2_forecast.py``, ``char_model.py``) and
``bench/training.py``; not an example to run by itself.

* :func:`twin` builds a torch module computing what a :class:`~nplstm.SequenceModel`
  computes (embedding -> unidirectional LSTM -> one Linear), with its weights.
  nplstm has one bias per gate where ``torch.nn.LSTM`` has two
  (``bias_ih + bias_hh``); the sum goes to ``bias_ih`` and ``bias_hh`` is
  frozen at zero, so both libraries optimise the same parameters (Adam on two
  biases receiving the same gradient would move their sum twice as fast).
* :func:`train` (one epoch at a time: :class:`Trainer`) is fit's loop in torch: each epoch the batches of
  ``np.random.default_rng(seed).permutation(N)`` (fit's order with
  ``shuffle=True``), Adam, no clipping, the loss averaged over a batch's
  valid steps; each batch is padded only to its longest sequence, as a torch
  user's ``pad_sequence`` batches are.
* :func:`to_nplstm` reads the trained module back, so both libraries' models
  are scored by the same code (:func:`nplstm.training.evaluate`).
* :func:`torch_initialised` gives an nplstm model torch's default initial
  weights (with the new API: ``SequenceModel(..., init="torch")``).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

import numpy as np

from nplstm import SequenceModel
from nplstm.interop.torch import from_torch, to_torch_state_dict


def available() -> bool:
    """True when torch is installed."""
    return importlib.util.find_spec("torch") is not None


def set_threads(n: int) -> None:
    """Threads for NumPy's BLAS (through threadpoolctl, when installed), torch and nplstm's engine, from now on.

    The examples' models are small: their matrix products are too small to
    split across threads, and on a shared machine extra threads mostly wait,
    so the examples train on one thread unless told otherwise.
    """
    from nplstm import kernels

    kernels.set_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(limits=n)  # not as a context: the limit stays
    if available():
        import torch

        torch.set_num_threads(n)


def _check_supported(model: SequenceModel) -> None:
    if model.lstm.bidirectional or model.lstm.proj_size or len(model.dense) != 1 or model.go_backwards:
        raise ValueError("the torch twin covers an (embedding ->) unidirectional LSTM -> one Linear model; got " + repr(model))
    if model.output not in ("h_n", "sequence") or model.head.activation not in ("linear", "softmax"):
        raise ValueError(f"the torch twin reads output 'h_n' or 'sequence' with a linear or softmax head; got "
                         f"output={model.output!r}, activation={model.head.activation!r}")


def twin(model: SequenceModel) -> Any:
    """A ``torch.nn.Module`` with ``model``'s weights; its forward returns the head's pre-activation."""
    import torch

    _check_supported(model)
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    lstm_config = model.lstm

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            emb = model.embedding
            self.embedding = None if emb is None else torch.nn.Embedding(emb.num_embeddings, emb.embedding_dim, dtype=dtype)
            self.lstm = torch.nn.LSTM(lstm_config.input_size, lstm_config.hidden_size, num_layers=lstm_config.num_layers,
                                      batch_first=True, dropout=lstm_config.dropout, dtype=dtype)
            self.head = torch.nn.Linear(model.head.in_features, model.head.out_features, dtype=dtype)
            self.sequence = model.output == "sequence"
            self.activation = model.head.activation

        def forward(self, x: Any) -> Any:
            if self.embedding is not None:
                x = self.embedding(x)
            out, (h_n, _) = self.lstm(x)
            return self.head(out if self.sequence else h_n[-1])

    module = Twin()
    state = to_torch_state_dict(model, embedding="embedding", head=["head"])
    module.load_state_dict(state, strict=True)
    for name, p in module.lstm.named_parameters():
        if name.startswith("bias_hh"):
            p.requires_grad_(False)  # zero: nplstm's single bias is bias_ih
    return module


def to_nplstm(module: Any) -> SequenceModel:
    """The nplstm model holding a :func:`twin`'s current weights."""
    head = [module.head] + (["softmax"] if module.activation == "softmax" else [])
    return from_torch(lstm=module.lstm, head=head, embedding=module.embedding,
                      output="sequence" if module.sequence else "h_n")


def torch_initialised(model: SequenceModel, seed: int) -> SequenceModel:
    """A copy of ``model`` with torch's default initial weights (``torch.manual_seed(seed)``).

    The two LSTM biases torch draws are summed into nplstm's one (the same
    function of the inputs).
    """
    import torch

    torch.manual_seed(seed)
    module = twin(model)
    for part in (module.embedding, module.lstm, module.head):
        if part is not None:
            part.reset_parameters()
    return to_nplstm(module)


def _padded(X: Any, Y: Any) -> tuple[Any, Any, np.ndarray]:
    """Tensors of the training data: ``(X, Y, lengths)``, lists of sequences padded (labels with -100)."""
    import torch

    if isinstance(X, (list, tuple)):
        lengths = np.array([len(x) for x in X])
        T = int(lengths.max())
        Xp = np.zeros((len(X), T) + np.shape(X[0])[1:], dtype=np.asarray(X[0]).dtype)
        Yp = np.full((len(Y), T) + np.shape(Y[0])[1:], -100, dtype=np.asarray(Y[0]).dtype)
        for k, (x, y) in enumerate(zip(X, Y)):
            Xp[k, : len(x)] = x
            Yp[k, : len(y)] = y
        return torch.from_numpy(Xp), torch.from_numpy(Yp), lengths
    X, Y = np.asarray(X), np.asarray(Y)
    return torch.from_numpy(X), torch.from_numpy(Y), np.full(len(X), X.shape[1])


class Trainer:
    """fit's loop in torch, one epoch per :meth:`epoch` call (what :func:`train` runs; a benchmark interleaves it)."""

    def __init__(self, module: Any, X: Any, Y: Any, *, loss: str, batch_size: int, lr: float, seed: int) -> None:
        import torch

        if loss == "mse":
            self.loss_fn: Callable[[Any, Any], Any] = torch.nn.functional.mse_loss
        elif loss == "cross_entropy":
            self.loss_fn = _masked_cross_entropy
        else:
            raise ValueError(f"loss must be 'mse' or 'cross_entropy'; got {loss!r}")
        self.module, self.batch_size = module, batch_size
        self.X, self.Y, self.lengths = _padded(X, Y)
        self.ragged = bool(np.any(self.lengths != self.lengths.max()))
        self.optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
        self.rng = np.random.default_rng(seed)

    def epoch(self) -> float:
        """One pass over the data in fit's order; returns the mean training loss, as fit's history reports it.

        That is exact over the epoch: batches weighted by their rows, or, for ragged per-step labels, by their valid steps.
        """
        import torch

        self.module.train()
        running, seen = 0.0, 0
        order = self.rng.permutation(len(self.lengths))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            rows = torch.from_numpy(idx)
            xb, yb = self.X[rows], self.Y[rows]
            if self.ragged:
                T = int(self.lengths[idx].max())
                xb, yb = xb[:, :T], yb[:, :T]
            self.optimizer.zero_grad(set_to_none=True)
            value = self.loss_fn(self.module(xb), yb)
            value.backward()
            self.optimizer.step()
            weight = int((yb != -100).sum()) if self.ragged else len(idx)
            running += value.item() * weight
            seen += weight
        return running / seen


def _masked_cross_entropy(logits: Any, labels: Any) -> Any:
    """Mean cross-entropy over the steps whose label is not -100 (padding)."""
    import torch

    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def train(
    module: Any,
    X: Any,
    Y: Any,
    *,
    loss: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_epoch_end: Callable[[int, float], bool | None] | None = None,
) -> list[float]:
    """Train ``module`` (a :func:`twin`) as ``fit(model, X, Y, loss=loss, optimizer=Adam(lr), clip_norm=None, seed=seed)``.

    Returns each epoch's mean training loss (over its batches, weighted by
    batch size, as ``History.loss``).  ``on_epoch_end(epoch, train_loss)``
    returning True stops training.
    """
    trainer = Trainer(module, X, Y, loss=loss, batch_size=batch_size, lr=lr, seed=seed)
    history: list[float] = []
    for epoch in range(epochs):
        history.append(trainer.epoch())
        if on_epoch_end is not None and on_epoch_end(epoch, history[-1]):
            break
    return history
