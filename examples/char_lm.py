"""A character-level language model on generated English-like text.

    python examples/char_lm.py [--sentences 2000 --epochs 20 --hidden 128]

Trains on text from a tiny grammar (shipped as code, nothing downloaded)
and prints a sample.
"""

from __future__ import annotations

import argparse

from nplstm.datasets import CharVocabulary, char_windows, corpus_words, sample_text, toy_corpus
from nplstm.model import SequenceModel
from nplstm.optim import Adam
from nplstm.training import fit


def run(sentences: int = 2000, epochs: int = 20, hidden: int = 128, steps: int = 25, sample_length: int = 300,
        seed: int = 0, progress: bool = True) -> dict:
    text = toy_corpus(sentences, seed=seed)
    vocab = CharVocabulary(text)
    X, Y = char_windows(text, steps, vocab)
    model = SequenceModel(len(vocab), hidden, len(vocab), many_to_many=True, seed=seed)
    history = fit(model, X, Y, loss="cross_entropy", epochs=epochs, batch_size=16, seed=seed, progress=progress,
                  optimizer=Adam(model.parameters(), lr=1e-2), clip_norm=1.0)
    sample = sample_text(model, vocab, "the ", sample_length, temperature=0.8, seed=seed)
    words = [w.strip(".") for w in sample.split()][1:-1]  # the last word may be cut off
    known = sum(w in corpus_words() for w in words) / max(len(words), 1)
    return {"model": model, "vocab": vocab, "history": history, "sample": sample, "known_word_fraction": known}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    result = run(args.sentences, args.epochs, args.hidden)
    print(result["sample"])
    print(f"\n{result['known_word_fraction']:.0%} of the sampled words are words of the corpus")


if __name__ == "__main__":
    main()
