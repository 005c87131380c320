"""The ``nplstm`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np

from .layer import LSTM


def classic_weights(lstm: LSTM) -> LSTM:
    """Set the well-known explicit weights: Wf=Wi=Wo=[[.5,.5]], Wc=[[.3,.3]], biases .1."""
    lstm.Wf = lstm.Wi = lstm.Wo = [[0.5, 0.5]]
    lstm.Wc = [[0.3, 0.3]]
    lstm.bf = lstm.bi = lstm.bc = lstm.bo = [[0.1]]
    return lstm


def _print_run(title: str, lstm: LSTM, x: np.ndarray) -> None:
    outputs, final_h, final_c = lstm.forward(x, np.zeros((1, 1)), np.zeros((1, 1)))
    print(title)
    for t, h in enumerate(outputs):
        print(f"  h[{t}] = {h[0, 0]: .10f}")
    print(f"  final h = {final_h[0, 0]: .10f}")
    print(f"  final c = {final_c[0, 0]: .10f}")


def cmd_demo(args: argparse.Namespace) -> int:
    x = np.array([[1.0], [2.0], [3.0]])
    _print_run(f"Random weights (seed={args.seed}):", LSTM(1, 1, seed=args.seed), x)
    _print_run("Classic explicit weights (Wf=Wi=Wo=[[.5,.5]], Wc=[[.3,.3]], biases .1):", classic_weights(LSTM(1, 1)), x)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nplstm", description="A fast, exact, NumPy-first LSTM.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the input [1, 2, 3] through a 1x1 LSTM")
    demo.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
