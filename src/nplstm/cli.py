"""The ``nplstm`` command line (also ``python -m nplstm``).

Exit codes: 0 success, 1 a bad input or weights file, 2 a usage error.
Errors are one line on stderr (``nplstm <command>: error: ...``);
``--debug``, before or after the command, shows the traceback instead.

Every numeric option and every output path is checked while the arguments
are parsed, so a mistake is reported before any file is read or any work
is done.  Every file problem, whether nplstm's own check or the OS refusing
(a name over 255 bytes, a symlink loop, a directory, no permission, a full
disk), goes through one handler (:func:`_classify`) and is one line naming
the path: exit code 2 for an output option refused while parsing, else 1.

``run`` and ``info`` take every model :func:`nplstm.weights.load_model`
returns, including an :class:`~nplstm.interop.onnx.OnnxLSTM` (a
reverse-only ONNX LSTM, or one with constant initial states or lengths);
``plot`` draws a plain forward stack and refuses such an OnnxLSTM by name.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

import numpy as np

from .io import WeightsFileError
from .layer import LSTM

#: Upper bounds of ``train``'s sizes: beyond them a laptop runs out of memory or patience.
MAX_EPOCHS = 10_000
MAX_HIDDEN = 1024
MAX_SEQUENCES = 100_000

INPUT_FORMATS = ".npy, .npz or .csv"
WEIGHTS_FORMATS = ".npz, .pt or .onnx"
CONVERT_FORMATS = ".pt, .onnx, .keras or .npz"


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


class InputError(Exception):
    """An input or weights file the command cannot use (exit code 1)."""


def classic_weights(lstm: LSTM) -> LSTM:
    """Set the well-known explicit weights: Wf=Wi=Wo=[[.5,.5]], Wc=[[.3,.3]], biases .1."""
    lstm.Wf = lstm.Wi = lstm.Wo = [[0.5, 0.5]]
    lstm.Wc = [[0.3, 0.3]]
    lstm.bf = lstm.bi = lstm.bc = lstm.bo = [[0.1]]
    return lstm


def _print_run(title: str, lstm: LSTM, x: np.ndarray) -> None:
    outputs, final_h, final_c = lstm.forward(x, np.zeros((1, 1)), np.zeros((1, 1)))
    assert outputs is not None  # return_sequences defaults to True
    print(title)
    for t, h in enumerate(outputs):
        print(f"  h[{t}] = {h[0, 0]: .10f}")
    print(f"  final h = {final_h[0, 0]: .10f}")
    print(f"  final c = {final_c[0, 0]: .10f}")


def _fmt(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a), precision=8, suppress_small=False, max_line_width=100)


def _one_line(text: object) -> str:
    """``text`` with every run of whitespace, newlines included, as one space."""
    return " ".join(str(text).split())


# ------------------------------------------------------ argument types
def int_option(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number in ``[low, high]``, else a message naming the range."""
    if high is not None:
        wanted = f"an integer from {low} to {high}"
    else:
        wanted = "a non-negative integer" if low == 0 else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}")
        return value

    return parse


def output_path(*suffixes: str) -> Callable[[str], Path]:
    """An argparse ``type=``: a file to write, with one of ``suffixes``, in an existing writable folder.

    An existing directory is refused rather than written into, so the file
    written is always the one named.
    """
    wanted = " or ".join(suffixes)

    def parse(text: str) -> Path:
        path = Path(text)
        try:
            return check(text, path)
        except OSError as exc:  # a name too long, a symlink loop ...: one line, a usage error
            raise argparse.ArgumentTypeError(os_error_message(exc, text)) from None

    def check(text: str, path: Path) -> Path:
        try:
            mode: int | None = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):  # a new file; its folder is checked below
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name ending in {wanted}")
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: output must end in {wanted}")
        if mode is not None and not stat.S_ISREG(mode):
            raise argparse.ArgumentTypeError(f"{text} exists and is not a regular file; nplstm does not save over it")
        folder = path.parent
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: folder {str(folder)!r} does not exist")
        try:  # a real probe: saves write a temp file in this folder, and this meets what they will meet
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"{text}: folder {str(folder)!r} is not writable ({exc.strerror})") from None
        return path

    return parse


# ------------------------------------------------------------ inputs
def _column_list(text: str) -> list[str]:
    columns = [c.strip() for c in text.split(",")]
    if not all(columns):
        raise argparse.ArgumentTypeError(f"expected column indices or names separated by commas; got {text!r}")
    return columns


def _existing_file(path: str, expected: str) -> None:
    """Refuse a missing path or a directory before a reader guesses a format from its name."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:  # a symlink loop, a name too long, no permission ...: say which
        raise InputError(os_error_message(exc, path)) from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path} is a directory; expected a {expected} file")


def _load_model(path: str) -> Any:
    from .weights import load_model

    _existing_file(path, WEIGHTS_FORMATS)
    return load_model(path)


def _read_sequence(args: argparse.Namespace, model: Any) -> np.ndarray:
    """The input file as ``(T, I)`` or a batch, checked against the model's input size.

    A 1-D file is one feature per step, so it becomes ``(T, 1)`` when the
    model takes one feature.  NaN and inf are refused unless
    ``--allow-nonfinite``: they would flow silently into every later state.
    """
    from .io import read_input
    from .weights import describe

    _existing_file(args.input, INPUT_FORMATS)
    x = read_input(args.input)
    info = describe(model)
    features = int(info["input_size"])
    where = f"{args.input} does not fit {args.weights}"
    if x.size == 0:
        raise InputError(f"{args.input} holds no numbers (shape {x.shape}); expected one time step per row")
    if x.ndim == 1:
        if features != 1:
            raise InputError(
                f"{where}: a 1-D input {x.shape} is one feature per time step, but the model takes {features}; "
                f"expected (T, {features})"
            )
        x = x[:, None]
    if x.ndim not in (2, 3):
        raise InputError(f"{where}: input has {x.ndim}-D shape {x.shape}; expected (T, {features}) or a 3-D batch")
    if x.shape[-1] != features:
        raise InputError(f"{where}: {x.shape[-1]} features per time step (shape {x.shape}); expected {features}")
    if not args.allow_nonfinite:
        bad = ~np.isfinite(x)
        if bad.any():
            first = tuple(int(k) for k in np.argwhere(bad)[0])
            raise InputError(
                f"{args.input} holds {int(bad.sum())} NaN or inf value(s), the first at index {first}; "
                "pass --allow-nonfinite to run it anyway"
            )
        model_dtype = np.dtype(info["dtype"])
        biggest = float(np.abs(x).max())
        limit = float(np.finfo(model_dtype).max) if model_dtype.kind == "f" else np.inf
        if biggest > limit:  # the cast to the model's dtype would make it inf
            raise InputError(
                f"{args.input} holds values up to {biggest:.3g}, beyond the range of the model's "
                f"{model_dtype} (±{limit:.3g}); pass --allow-nonfinite to run it anyway"
            )
    return x


@contextmanager
def _must_fit(args: argparse.Namespace) -> Iterator[None]:
    """Turn the library's shape and type refusals into 'input does not fit weights' (exit 1).

    With ``--allow-nonfinite`` NumPy's overflow and invalid-value warnings
    are silenced: the user asked for those numbers.
    """
    try:
        with np.errstate(all="ignore") if args.allow_nonfinite else nullcontext():
            yield
    except WeightsFileError:
        raise
    except (ValueError, TypeError) as exc:
        raise InputError(f"{args.input} does not fit {args.weights}: {exc}") from None


def _check_finite(args: argparse.Namespace, arrays: Any) -> None:
    """Refuse NaN or inf that the model made from a finite input (e.g. huge inputs times huge weights)."""
    if not args.allow_nonfinite and not all(np.isfinite(a).all() for a in arrays):
        raise InputError(
            f"{args.weights} on {args.input} gave NaN or inf although the input is finite (values too large?); "
            "pass --allow-nonfinite to see them"
        )


# -------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    x = np.array([[1.0], [2.0], [3.0]])
    _print_run(f"Random weights (seed={args.seed}):", LSTM(1, 1, seed=args.seed), x)
    _print_run("Classic explicit weights (Wf=Wi=Wo=[[.5,.5]], Wc=[[.3,.3]], biases .1):", classic_weights(LSTM(1, 1)), x)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .io import write_array
    from .weights import run_model

    model = _load_model(args.weights)
    x = _read_sequence(args, model)
    with _must_fit(args):
        result = run_model(model, x)
    _check_finite(args, result.values())
    print(f"final h = {_fmt(result['h'])}")
    print(f"final c = {_fmt(result['c'])}")
    if "prediction" in result:
        print(f"prediction = {_fmt(result['prediction'])}")
    if args.out:
        path = write_array(args.out, result["outputs"])
        print(f"outputs {result['outputs'].shape} written to {path}")
    return 0


def _model_input(args: argparse.Namespace, model: Any) -> tuple[np.ndarray, bool]:
    """The ``--input`` file as a batch for ``model.predict``, and whether it was one sequence.

    For a model reading token ids: a column or a 1-D array is one sequence,
    a 2-D ``.npy`` a batch ``(B, T)``.  For float inputs: ``(T, I)`` is one
    sequence (a 1-D array is one feature per step), ``(B, T, I)`` a batch.
    """
    from .io import read_input

    _existing_file(args.input, INPUT_FORMATS)
    x = read_input(args.input, skip_header=args.skip_header, columns=args.columns)
    where = f"{args.input} does not fit {args.weights}"
    if x.size == 0:
        raise InputError(f"{args.input} holds no numbers (shape {x.shape}); expected one time step per row")
    if model.embedding is not None:
        csv = Path(args.input).suffix.lower() in (".csv", ".txt")
        if x.ndim == 2 and csv:
            if x.shape[1] != 1:
                raise InputError(f"{where}: the model reads one token id per step; the CSV has {x.shape[1]} columns "
                                 "(choose one with --columns)")
            x = x[:, 0]
        if x.ndim not in (1, 2):
            raise InputError(f"{where}: token ids must be one sequence (T,) or a batch (B, T); got shape {x.shape}")
        return (x[None], True) if x.ndim == 1 else (x, False)
    features = model.input_size
    if x.ndim == 1:
        if features != 1:
            raise InputError(f"{where}: a 1-D input {x.shape} is one feature per step, but the model takes {features}")
        x = x[:, None]
    if x.ndim not in (2, 3):
        raise InputError(f"{where}: input has {x.ndim}-D shape {x.shape}; expected (T, {features}) or (B, T, {features})")
    if x.shape[-1] != features:
        raise InputError(f"{where}: {x.shape[-1]} features per time step (shape {x.shape}); expected {features}")
    if not args.allow_nonfinite and not np.isfinite(x).all():
        first = tuple(int(k) for k in np.argwhere(~np.isfinite(x))[0])
        raise InputError(f"{args.input} holds NaN or inf, the first at index {first}; pass --allow-nonfinite to run it anyway")
    return (x[None], True) if x.ndim == 2 else (x, False)


def cmd_predict(args: argparse.Namespace) -> int:
    from .io import write_array

    model = _load_model(args.weights)
    if not callable(getattr(model, "predict", None)) or not hasattr(model, "embedding"):
        raise InputError(
            f"{args.weights} is a {type(model).__name__}: it has no output layer to predict with; "
            "`nplstm run` gives its hidden states"
        )
    x, one = _model_input(args, model)
    with _must_fit(args):
        prediction = model.predict(x)
    _check_finite(args, [prediction])
    if one:
        prediction = prediction[0]
    path = write_array(args.out, prediction)
    print(f"predictions {prediction.shape} written to {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .weights import convert

    _existing_file(args.src, CONVERT_FORMATS)
    layout = {"batch_first": args.batch_first} if args.batch_first is not None else {}
    parts = {k: getattr(args, k) for k in ("lstm", "embedding", "output") if getattr(args, k) is not None}
    if args.head is not None:
        parts["head"] = [p.strip() for p in args.head.split(",") if p.strip()]
    model, path = convert(args.src, args.dst, **layout, **parts)
    print(f"{args.src} -> {path}: {type(model).__name__}")
    print(repr(model))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .weights import describe

    info = describe(_load_model(args.file))
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

    sine = args.task == "sine"
    hidden = args.hidden if args.hidden is not None else (16 if sine else 32)
    sequences = args.sequences if args.sequences is not None else (600 if sine else 4000)
    if sine:
        X, Y = noisy_sine(sequences, 25, seed=args.seed)
        Xv, Yv = noisy_sine(max(100, sequences // 4), 25, seed=args.seed + 1)
        baseline = float(np.mean((Xv[:, -1] - Yv) ** 2))
        model = SequenceModel(1, hidden, 1, seed=args.seed)
        name = "repeat-last-value"
    else:
        X, Y = adding_problem(sequences, 50, seed=args.seed)
        Xv, Yv = adding_problem(500, 50, seed=args.seed + 1)
        baseline = float(np.mean((1.0 - Yv) ** 2))
        model = SequenceModel(2, hidden, 1, seed=args.seed)
        name = "always-1.0"
    fit(
        model, X, Y, optimizer=Adam(model.parameters(), lr=1e-2), epochs=args.epochs, batch_size=32,
        validation_data=(Xv, Yv), seed=args.seed, progress=not args.no_progress,
    )
    path = model.save(args.out)
    print(f"{args.task}: validation MSE {evaluate(model, Xv, Yv):.5f} ({name} baseline {baseline:.5f}); saved to {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import importlib.util

    from .weights import onnx_extras, onnx_wrapper, stack_of

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("plot needs matplotlib: pip install 'nplstm[plot]'")
    from .plot import plot_trace

    model = _load_model(args.weights)
    lstm = stack_of(model)
    wrapper = onnx_wrapper(model)
    if wrapper is not None:  # the trace is of the plain stack: drawing it would misstate what the graph computes
        features = ", ".join(onnx_extras(wrapper))
        if features:
            raise InputError(
                f"{args.weights}: plot draws a plain forward stack, and this ONNX model also has {features}; "
                "use nplstm run for its numbers"
            )
        lstm = wrapper.stack
    layers = 1 if isinstance(lstm, LSTM) else int(lstm.num_layers)
    if args.layer >= layers:
        raise UsageError(f"--layer {args.layer} is out of range: {args.weights} has {layers} layer(s), numbered from 0")
    x = _read_sequence(args, model)
    note = ""
    if x.ndim == 3:  # a batch: draw its first sequence
        note = f" (sequence 0 of a batch of {x.shape[0] if lstm.batch_first else x.shape[1]})"
        x = x[0] if lstm.batch_first else x[:, 0]
    with _must_fit(args):
        trace = lstm.trace(x) if isinstance(lstm, LSTM) else lstm.trace(x)[args.layer][0]
    _check_finite(args, trace.values())
    path = plot_trace(x, trace, args.png, title=f"{Path(args.weights).name} on {Path(args.input).name}")
    print(f"wrote {path}{note}")
    return 0


# ---------------------------------------------------------------- parser
class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the command (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


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


def os_error_message(exc: OSError, path: object = None) -> str:
    """``<path>: <what the OS said>`` for any OSError (no ``[Errno N]``, the user's path named once)."""
    name = exc.filename if exc.filename is not None else path
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{name}: {what}" if name is not None else what


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


if __name__ == "__main__":
    sys.exit(main())
