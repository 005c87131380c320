"""The parser of the command line, :func:`main`, and the one handler of every failure."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ..io import WeightsFileError
from ._args import Parser, _column_list, _one_line, int_option, os_error_message, output_path
from ._commands import (
    CONVERT_FORMATS,
    INPUT_FORMATS,
    WEIGHTS_FORMATS,
    InputError,
    UsageError,
    cmd_convert,
    cmd_demo,
    cmd_info,
    cmd_plot,
    cmd_predict,
    cmd_run,
    cmd_train,
)

#: Upper bounds of ``train``'s sizes: beyond them a laptop runs out of memory or patience.
MAX_EPOCHS = 10_000
MAX_HIDDEN = 1024
MAX_SEQUENCES = 100_000


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nplstm",
        description="A fast, exact, NumPy-first LSTM.",
        epilog="Exit codes: 0 success, 1 a bad input or weights file, 2 a usage error. "
        "Errors are one line; --debug (before or after the command) shows the traceback.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, summary: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        # SUPPRESS: without the flag here, the value parsed before the command stays.
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        cmd.set_defaults(func=func, parser=cmd)
        return cmd

    def model_and_input(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--weights", required=True, help="an nplstm .npz, a torch state dict .pt, or an .onnx model")
        cmd.add_argument(
            "--input", required=True,
            help=f"{INPUT_FORMATS}: one time step per row, (T, features); a 1-D array is one feature per step; "
            "a 3-D array is a batch, (B, T, features) for a SequenceModel, (T, B, features) for a stack "
            "unless it is batch_first",
        )
        cmd.add_argument(
            "--allow-nonfinite", action="store_true", help="run inputs holding NaN or inf (refused by default)"
        )

    def csv_options(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--skip-header", action="store_true", help="the CSV's first row is a header of column names")
        cmd.add_argument("--columns", type=_column_list,
                         help="read only these CSV columns, in this order: 0-based indices or header names, e.g. 1,2 or price,volume")

    demo = command("demo", "run the input [1, 2, 3] through a 1x1 LSTM", cmd_demo)
    demo.add_argument("--seed", type=int_option(0), default=0, help="seed of the random weights, >= 0 (default 0)")

    run = command("run", "run a weights file on an input file", cmd_run)
    model_and_input(run)
    run.add_argument("--out", type=output_path(".npy", ".csv"), help="write all outputs to this .npy or .csv file")

    predict = command("predict", "write a model's predictions (not its hidden states) for an input file", cmd_predict)
    model_and_input(predict)
    predict.add_argument("--out", type=output_path(".npy", ".csv"), required=True,
                         help="where to write the predictions, a .npy or .csv file")
    csv_options(predict)

    convert = command("convert", "turn a .pt, .onnx or .keras model into an nplstm .npz file (reads with NumPy alone)",
                      cmd_convert)
    convert.add_argument("src", help=f"the model to convert ({CONVERT_FORMATS})")
    convert.add_argument("dst", type=output_path(".npz"), help="the nplstm file to write, ending in .npz")
    layout = convert.add_mutually_exclusive_group()
    layout.add_argument("--batch-first", dest="batch_first", action="store_true", default=None,
                        help="a .pt state dict's LSTM was built with batch_first=True (a state dict cannot say)")
    layout.add_argument("--time-major", dest="batch_first", action="store_false",
                        help="a .pt state dict's LSTM was built with batch_first=False")
    convert.add_argument("--lstm", help="a whole torch model's state dict: the LSTM's key prefix (e.g. lstm)")
    convert.add_argument("--embedding", help="... the nn.Embedding's key prefix (e.g. emb)")
    convert.add_argument("--head", help="... the dense layers' prefixes and activations in order, e.g. fc1,relu,fc2")
    convert.add_argument("--output", choices=["h_n", "last", "sequence"],
                         help="... what the head reads, as the torch forward does: h_n (h_n[-1]), last (out[:, -1]) "
                         "or sequence (every step)")

    info = command("info", "shapes, parameter count and dtype of a weights file", cmd_info)
    info.add_argument("file", help=f"weights file ({WEIGHTS_FORMATS})")
    info.add_argument("--json", action="store_true", help="print JSON")

    train = command("train", "train the sine or adding-problem example and save it", cmd_train)
    train.add_argument(
        "--task", choices=["sine", "adding"], default="sine",
        help="sine: predict the next sample of a noisy sine; adding: the adding problem (default sine)",
    )
    train.add_argument(
        "--epochs", type=int_option(1, MAX_EPOCHS), default=15, help=f"passes over the data, 1 to {MAX_EPOCHS} (default 15)"
    )
    train.add_argument(
        "--hidden", type=int_option(1, MAX_HIDDEN), default=None,
        help=f"hidden size, 1 to {MAX_HIDDEN} (default 16 for sine, 32 for adding)",
    )
    train.add_argument(
        "--sequences", type=int_option(1, MAX_SEQUENCES), default=None,
        help=f"training sequences, 1 to {MAX_SEQUENCES} (default 600 for sine, 4000 for adding)",
    )
    train.add_argument("--seed", type=int_option(0), default=0, help="seed of data, weights and shuffling, >= 0 (default 0)")
    train.add_argument(
        "--out", type=output_path(".npz"), default="model.npz",
        help="where to save the model, an .npz file in an existing folder (default model.npz)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    plot = command("plot", "draw inputs, states and gates over time to a PNG", cmd_plot)
    model_and_input(plot)
    plot.add_argument(
        "--png", type=output_path(".png"), required=True,
        help="the image to write, a file ending in .png (an existing directory is refused)",
    )
    plot.add_argument(
        "--layer", type=int_option(0), default=0, help="layer of a stack to draw, from 0 (default 0, the first); its forward direction"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported by the command's parser, so the message names the command
            args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse has printed the help or its one-line error
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return int(args.func(args))
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        code, message = _classify(exc)
        print(f"nplstm {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return code



def _classify(exc: BaseException) -> tuple[int, str]:
    """Exit code and message of an error raised by a command: the one handler of every failure."""
    if isinstance(exc, UsageError):
        return 2, str(exc)
    if isinstance(exc, (InputError, WeightsFileError)):  # InteropError is a WeightsFileError
        return 1, str(exc)
    if isinstance(exc, OSError):  # a save or a read the OS refused: ENOSPC, EACCES, ELOOP, ENAMETOOLONG ...
        return 1, os_error_message(exc)
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    # The library's ValueError, TypeError, MemoryError, RuntimeError ...: still one line.
    return 1, f"{type(exc).__name__}: {exc or 'no message'} (--debug shows the traceback)"
