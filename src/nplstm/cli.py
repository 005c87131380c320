"""The ``nplstm`` command line (also ``python -m nplstm``).

Exit codes: 0 success, 1 a bad input or weights file, 2 a usage error.
Errors are one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import WeightsFileError
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


def _fmt(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a), precision=8, suppress_small=False, max_line_width=100)


# -------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    x = np.array([[1.0], [2.0], [3.0]])
    _print_run(f"Random weights (seed={args.seed}):", LSTM(1, 1, seed=args.seed), x)
    _print_run("Classic explicit weights (Wf=Wi=Wo=[[.5,.5]], Wc=[[.3,.3]], biases .1):", classic_weights(LSTM(1, 1)), x)
    return 0


def _load(args: argparse.Namespace):
    from .io import read_input
    from .weights import load_model

    return load_model(args.weights), read_input(args.input)


def cmd_run(args: argparse.Namespace) -> int:
    from .io import write_array
    from .weights import run_model

    model, x = _load(args)
    try:
        result = run_model(model, x)
    except (ValueError, TypeError) as exc:
        raise WeightsFileError(f"{args.input} does not fit {args.weights}: {exc}") from None
    print(f"final h = {_fmt(result['h'])}")
    print(f"final c = {_fmt(result['c'])}")
    if "prediction" in result:
        print(f"prediction = {_fmt(result['prediction'])}")
    if args.out:
        try:
            path = write_array(args.out, result["outputs"])
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"outputs {result['outputs'].shape} written to {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .weights import describe, load_model

    info = describe(load_model(args.file))
    if args.json:
        print(json.dumps(info, default=list))
        return 0
    print(f"{args.file}: {info['kind']}, {info['dtype']}, {info['parameters']} parameters")
    for key, value in info.items():
        if key not in ("kind", "dtype", "parameters", "shapes"):
            print(f"  {key} = {value}")
    for name, shape in info["shapes"].items():
        print(f"  {name:<24} {shape}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .datasets import adding_problem, noisy_sine
    from .model import SequenceModel
    from .optim import Adam
    from .training import evaluate, fit

    if args.task == "sine":
        X, Y = noisy_sine(args.sequences, 25, seed=args.seed)
        Xv, Yv = noisy_sine(max(100, args.sequences // 4), 25, seed=args.seed + 1)
        baseline = float(np.mean((Xv[:, -1] - Yv) ** 2))
        model = SequenceModel(1, args.hidden, 1, seed=args.seed)
        name = "repeat-last-value"
    else:
        X, Y = adding_problem(args.sequences, 50, seed=args.seed)
        Xv, Yv = adding_problem(500, 50, seed=args.seed + 1)
        baseline = float(np.mean((1.0 - Yv) ** 2))
        model = SequenceModel(2, args.hidden, 1, seed=args.seed)
        name = "always-1.0"
    fit(
        model, X, Y, optimizer=Adam(model.parameters(), lr=1e-2), epochs=args.epochs, batch_size=32,
        validation_data=(Xv, Yv), seed=args.seed, progress=not args.no_progress,
    )
    path = model.save(args.out)
    print(f"{args.task}: validation MSE {evaluate(model, Xv, Yv):.5f} ({name} baseline {baseline:.5f}); saved to {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_trace
    from .weights import stack_of

    model, x = _load(args)
    lstm = stack_of(model)
    if x.ndim == 3:  # a batch: draw its first sequence
        x = x[0] if lstm.batch_first else x[:, 0]
    try:
        if isinstance(lstm, LSTM):
            trace = lstm.trace(x)
        else:
            traces = lstm.trace(x)
            if not 0 <= args.layer < len(traces):
                raise UsageError(f"--layer must be in [0, {len(traces) - 1}]; got {args.layer}")
            trace = traces[args.layer][0]
    except UsageError:
        raise
    except (ValueError, TypeError) as exc:
        raise WeightsFileError(f"{args.input} does not fit {args.weights}: {exc}") from None
    try:
        plot_trace(x, trace, args.png, title=f"{Path(args.weights).name} on {Path(args.input).name}")
    except ImportError:
        raise UsageError("plot needs matplotlib: pip install 'nplstm[plot]'") from None
    print(f"wrote {args.png}")
    return 0


# ---------------------------------------------------------------- parser
class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nplstm", description="A fast, exact, NumPy-first LSTM.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the input [1, 2, 3] through a 1x1 LSTM")
    demo.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run a weights file on an input file")
    run.add_argument("--weights", required=True, help="nplstm .npz, torch .pt state dict, or .onnx")
    run.add_argument("--input", required=True, help=".npy, .npz or CSV (one time step per row)")
    run.add_argument("--out", help="write all outputs to .npy or .csv")
    run.set_defaults(func=cmd_run)

    info = sub.add_parser("info", help="shapes, parameter count and dtype of a weights file")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    train = sub.add_parser("train", help="train the sine or adding-problem example and save it")
    train.add_argument("--task", choices=["sine", "adding"], default="sine")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--hidden", type=int, default=None, help="hidden size (default 16 for sine, 32 for adding)")
    train.add_argument("--sequences", type=int, default=None, help="training sequences (default 600 / 4000)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="model.npz", help="where to save the model (default model.npz)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    plot = sub.add_parser("plot", help="draw inputs, states and gates over time to a PNG")
    plot.add_argument("--weights", required=True)
    plot.add_argument("--input", required=True)
    plot.add_argument("--png", required=True)
    plot.add_argument("--layer", type=int, default=0, help="layer of a stack to draw (default 0)")
    plot.set_defaults(func=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    if args.command == "train":
        args.hidden = args.hidden or (16 if args.task == "sine" else 32)
        args.sequences = args.sequences or (600 if args.task == "sine" else 4000)
    try:
        return int(args.func(args))
    except UsageError as exc:
        if args.debug:
            raise
        parser.print_usage(sys.stderr)
        print(f"nplstm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except WeightsFileError as exc:
        if args.debug:
            raise
        print(f"nplstm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        print(f"nplstm {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
