"""The commands of the command line, one function each, and the checks of their input files."""

from __future__ import annotations

import argparse
import json
import os
import stat
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..io import WeightsFileError
from ..layer import LSTM
from ._args import os_error_message
from ._inputs import read_input

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
    from ..loading import load_model

    _existing_file(path, WEIGHTS_FORMATS)
    return load_model(path)


def _read_sequence(args: argparse.Namespace, model: Any) -> np.ndarray:
    """The input file as ``(T, I)`` or a batch, checked against the model's input size.

    A 1-D file is one feature per step, so it becomes ``(T, 1)`` when the
    model takes one feature.  NaN and inf are refused unless
    ``--allow-nonfinite``: they would flow silently into every later state.
    """
    from ..loading import describe

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
    from ..io import write_array
    from ..loading import run_model

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
    from ..io import write_array

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
    from ..loading import convert

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
    from ..loading import describe

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
    from ..datasets import adding_problem, noisy_sine
    from ..model import SequenceModel
    from ..optim import Adam
    from ..training import evaluate, fit

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
        model, X, Y, optimizer=Adam(model.parameters(), lr=1e-2), clip_norm=1.0, epochs=args.epochs, batch_size=32,
        validation_data=(Xv, Yv), seed=args.seed, progress=not args.no_progress,
    )
    path = model.save(args.out)
    print(f"{args.task}: validation MSE {evaluate(model, Xv, Yv):.5f} ({name} baseline {baseline:.5f}); saved to {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import importlib.util

    from ..loading import _onnx_extras, _onnx_wrapper, _stack_of

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("plot needs matplotlib: pip install 'nplstm[plot]'")
    from ..plot import plot_trace

    model = _load_model(args.weights)
    lstm = _stack_of(model)
    wrapper = _onnx_wrapper(model)
    if wrapper is not None:  # the trace is of the plain stack: drawing it would misstate what the graph computes
        features = ", ".join(_onnx_extras(wrapper))
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
