"""Small synthetic tasks, generated on the spot (no downloads).

Each returns arrays ready for :func:`nplstm.training.fit`: sequences
``X`` (N, T, I) batch-first and targets ``Y``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["noisy_sine", "adding_problem", "toy_corpus", "corpus_words", "CharVocabulary", "char_windows", "sample_text"]


def noisy_sine(
    n: int, steps: int = 30, *, period: float = 20.0, noise: float = 0.02, seed: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Next-step prediction on a noisy sine wave with random phase.

    ``X`` (n, steps, 1) are noisy samples ``sin(2πt/period + φ) + ε``; ``Y``
    (n, 1) is the next noisy sample.  ``X[:, -1]`` is the "repeat the last
    value" baseline.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 1)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    wave = np.sin(2 * np.pi * t / period + phase) + noise * rng.normal(size=(n, steps + 1))
    return wave[:, :steps, None], wave[:, steps:]


def adding_problem(n: int, steps: int = 50, *, seed: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber, 1997).

    Each step carries a value uniform in [0, 1] and a marker; exactly two
    steps are marked, one in each half of the sequence.  The target is the
    sum of the two marked values.  Always answering 1.0 scores an MSE of
    1/6 ≈ 0.167.  ``X`` (n, steps, 2), ``Y`` (n, 1).
    """
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, size=(n, steps))
    markers = np.zeros((n, steps))
    half = steps // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, steps, size=n)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    X = np.stack([values, markers], axis=2)
    Y = (values[rows, first] + values[rows, second])[:, None]
    return X, Y


_SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the bird", "a child"]
_VERBS = ["sees", "likes", "finds", "follows", "hears", "draws"]
_OBJECTS = ["the moon", "a red ball", "the river", "an apple", "the garden", "a small boat"]


def toy_corpus(sentences: int = 400, *, seed: Any = 0) -> str:
    """English-like text from a tiny grammar: "the cat sees the moon. ..."."""
    rng = np.random.default_rng(seed)
    parts = [
        f"{_SUBJECTS[rng.integers(len(_SUBJECTS))]} {_VERBS[rng.integers(len(_VERBS))]} "
        f"{_OBJECTS[rng.integers(len(_OBJECTS))]}."
        for _ in range(sentences)
    ]
    return " ".join(parts)


def corpus_words() -> set[str]:
    """Every word :func:`toy_corpus` can produce."""
    return {w for phrase in _SUBJECTS + _VERBS + _OBJECTS for w in phrase.split()}


class CharVocabulary:
    """Maps characters to one-hot rows and back."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {ch: k for k, ch in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index[ch] for ch in text], dtype=np.int64)

    def one_hot(self, ids: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        return np.eye(len(self), dtype=dtype)[ids]

    def decode(self, ids: Any) -> str:
        return "".join(self.chars[int(k)] for k in ids)


def char_windows(text: str, steps: int, vocab: CharVocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Language-model windows: ``X`` (N, steps, V) one-hot, ``Y`` (N, steps) next-char labels."""
    ids = vocab.encode(text)
    n = (len(ids) - 1) // steps
    inputs = ids[: n * steps].reshape(n, steps)
    targets = ids[1 : n * steps + 1].reshape(n, steps)
    return vocab.one_hot(inputs), targets


def sample_text(model: Any, vocab: CharVocabulary, prime: str, length: int, *, temperature: float = 1.0, seed: Any = None) -> str:
    """Sample ``length`` characters from a many-to-many character model after ``prime``.

    The prime is fed once; then each sampled character is fed back one step
    at a time with the carried ``(h, c)`` state.
    """
    if not prime:
        raise ValueError("prime must hold at least one character")
    rng = np.random.default_rng(seed)
    logits, state = model.forward(vocab.one_hot(vocab.encode(prime))[None])
    out = []
    for _ in range(length):
        z = logits[0, -1] / temperature
        p = np.exp(z - z.max())
        nxt = int(rng.choice(len(p), p=p / p.sum()))
        out.append(nxt)
        logits, state = model.forward(vocab.one_hot(np.array([[nxt]])), state)
    return prime + vocab.decode(out)
