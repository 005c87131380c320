"""Next-step prediction of a noisy sine wave.

    python examples/sine.py [--sequences 2000 --epochs 40]

Prints the validation MSE of the LSTM and of the "repeat the last value"
baseline; the LSTM should be more than 10x better.
"""

from __future__ import annotations

import argparse

import numpy as np

from nplstm.datasets import noisy_sine
from nplstm.model import SequenceModel
from nplstm.optim import Adam
from nplstm.training import evaluate, fit


def run(sequences: int = 2000, epochs: int = 40, hidden: int = 16, seed: int = 0, progress: bool = True) -> dict:
    X, Y = noisy_sine(sequences, 25, seed=seed)
    Xv, Yv = noisy_sine(max(200, sequences // 4), 25, seed=seed + 1)
    model = SequenceModel(1, hidden, 1, seed=seed)
    fit(model, X, Y, epochs=epochs, batch_size=32, validation_data=(Xv, Yv), early_stopping=5, seed=seed, progress=progress,
        optimizer=Adam(model.parameters(), lr=1e-2), clip_norm=1.0)
    return {
        "model": model,
        "lstm_mse": evaluate(model, Xv, Yv),
        "baseline_mse": float(np.mean((Xv[:, -1] - Yv) ** 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=16)
    args = parser.parse_args()
    result = run(args.sequences, args.epochs, args.hidden)
    ratio = result["baseline_mse"] / result["lstm_mse"]
    print(f"validation MSE: LSTM {result['lstm_mse']:.5f}, last-value baseline {result['baseline_mse']:.5f} ({ratio:.0f}x better)")


if __name__ == "__main__":
    main()
