"""A character model of real English: the Python language reference that ships with Python.

    python examples/char_model.py [--epochs 4 --hidden 64 --seed 0 --threads 1 --no-torch]

The text is ``pydoc_data.topics`` (the reference's topics, what ``help()``
shows; always installed with Python, so its exact content follows the Python
version).  Its prose paragraphs are cut into sentences of 20-200 ASCII
characters, a ragged list: each sentence is one sequence of its own length,
given to ``fit`` as a list (nplstm pads and masks).  Every tenth sentence
validates.  The model reads characters through an embedding and predicts the
next character at every step: Embedding(16) -> LSTM -> Dense softmax,
cross-entropy, Adam lr 3e-3, batch 32, float32.

Printed: the validation cross-entropy (nats per character) of nplstm, of the
unigram model (the training text's character frequencies) and, when torch is
installed, of torch trained from the same initial weights on the same
batches in the same order (both scored by the same code).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nplstm import SequenceModel
from nplstm.datasets import CharVocabulary
from nplstm.optim import Adam
from nplstm.training import evaluate, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_twin  # noqa: E402

EMBEDDING, HIDDEN, BATCH, LR = 16, 64, 32, 3e-3


def load_sentences(min_length: int = 20, max_length: int = 200) -> list[str]:
    """Sentences of the language reference's prose (indented code, grammar and headings left out)."""
    from pydoc_data.topics import topics

    sentences = []
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            lines = paragraph.split("\n")
            if any(line.startswith(" ") or (line.strip() and set(line.strip()) <= set("*=-")) for line in lines):
                continue  # code, grammar or a heading's underline
            text = " ".join(line.strip() for line in lines if line.strip())
            for sentence in re.split(r'(?<=[.!?])\s+(?=[A-Z"])', text):
                if min_length <= len(sentence) <= max_length and sentence.isascii():
                    sentences.append(sentence)
    return sentences


def make_data(sentences: list[str], validate_every: int = 10) -> dict:
    """Next-character data: ``X[k]`` a sentence's ids but the last, ``Y[k]`` its ids but the first."""
    vocab = CharVocabulary("".join(sentences))  # the alphabet (every character seen), not its statistics
    ids = [vocab.encode(s) for s in sentences]
    val = [k % validate_every == 0 for k in range(len(ids))]
    pick = lambda want: [s for s, v in zip(ids, val) if v == want]  # noqa: E731
    train, valid = pick(False), pick(True)
    return {
        "vocab": vocab,
        "X_train": [s[:-1] for s in train], "Y_train": [s[1:] for s in train],
        "X_val": [s[:-1] for s in valid], "Y_val": [s[1:] for s in valid],
    }


def unigram_cross_entropy(data: dict) -> float:
    """Cross-entropy (nats per character) on the validation targets of the training targets' character frequencies (add-one)."""
    V = len(data["vocab"])
    counts = np.bincount(np.concatenate(data["Y_train"]), minlength=V) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-np.mean(log_p[np.concatenate(data["Y_val"])]))


def build_model(vocab_size: int, hidden: int = HIDDEN, seed: int = 0, dtype: Any = np.float32) -> SequenceModel:
    """Embedding(16) -> LSTM(hidden) -> Dense softmax at every step."""
    return SequenceModel(EMBEDDING, hidden, vocab_size, num_embeddings=vocab_size, many_to_many=True,
                         activation="softmax", seed=seed, dtype=dtype)


def train_nplstm(model: SequenceModel, data: dict, epochs: int, seed: int, progress: bool = False, **kwargs: Any) -> Any:
    """``fit`` as this example trains: cross-entropy, Adam 3e-3, batch 32, no clipping, shuffled with ``seed``."""
    return fit(model, data["X_train"], data["Y_train"], loss="cross_entropy", optimizer=Adam(model.parameters(), lr=LR),
               epochs=epochs, batch_size=BATCH, clip_norm=None, seed=seed, progress=progress, **kwargs)


def train_torch(module: Any, data: dict, epochs: int, seed: int, **kwargs: Any) -> SequenceModel:
    """torch's twin ``module`` trained as :func:`train_nplstm` trains; returns the result as an nplstm model."""
    torch_twin.train(module, data["X_train"], data["Y_train"], loss="cross_entropy", epochs=epochs, batch_size=BATCH,
                     lr=LR, seed=seed, **kwargs)
    return torch_twin.to_nplstm(module)


def validation_loss(model: SequenceModel, data: dict) -> float:
    """Mean cross-entropy per validation character (nats), all sentences in one batch."""
    return evaluate(model, data["X_val"], data["Y_val"], loss="cross_entropy", batch_size=len(data["X_val"]))


def run(epochs: int = 4, hidden: int = HIDDEN, seed: int = 0, torch_baseline: bool | None = None, progress: bool = True) -> dict:
    """Train and score; cross-entropies in nats per character (``None`` for torch when it is not run)."""
    data = make_data(load_sentences())
    model = build_model(len(data["vocab"]), hidden, seed)
    if torch_baseline is None:
        torch_baseline = torch_twin.available()
    module = torch_twin.twin(model) if torch_baseline else None  # copies the initial weights
    began = time.perf_counter()
    train_nplstm(model, data, epochs, seed, progress)
    result = {
        "model": model, "vocab": data["vocab"], "sentences": len(data["X_train"]) + len(data["X_val"]),
        "train_sentences": len(data["X_train"]), "train_characters": int(sum(len(y) for y in data["Y_train"])),
        "nplstm_seconds": time.perf_counter() - began, "nplstm_cross_entropy": validation_loss(model, data),
        "unigram_cross_entropy": unigram_cross_entropy(data), "torch_cross_entropy": None, "torch_seconds": None,
    }
    if module is not None:
        began = time.perf_counter()
        trained = train_torch(module, data, epochs, seed)
        result["torch_seconds"] = time.perf_counter() - began
        result["torch_cross_entropy"] = validation_loss(trained, data)
    return result


def report(result: dict) -> str:
    lines = [
        f"the Python language reference (pydoc_data.topics, Python {sys.version.split()[0]}): {result['sentences']} sentences, "
        f"{len(result['vocab'])} characters; training on {result['train_sentences']} ({result['train_characters']} characters)",
        "  validation cross-entropy, nats per character",
        f"  {'nplstm Embedding -> LSTM(' + str(result['model'].lstm.hidden_size) + ') -> softmax':<44}"
        f"{result['nplstm_cross_entropy']:.4f}   ({result['nplstm_seconds']:.1f} s)",
    ]
    if result["torch_cross_entropy"] is not None:
        lines.append(f"  {'torch, same initial weights and batches':<44}{result['torch_cross_entropy']:.4f}   ({result['torch_seconds']:.1f} s)")
    else:
        lines.append("  torch                                       (not installed)")
    lines.append(f"  {'unigram (training character frequencies)':<44}{result['unigram_cross_entropy']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    parser.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS, torch and nplstm (default 1)")
    args = parser.parse_args(argv)
    torch_twin.set_threads(args.threads)
    print(report(run(args.epochs, args.hidden, args.seed, False if args.no_torch else None)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
