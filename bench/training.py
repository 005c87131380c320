"""Issue 19: training to a validation loss, nplstm's ``fit`` against torch from the same initial weights and data order.

    python -m bench.training [--quick] [--epochs N] [--shapes forecaster char] [--init torch|nplstm] [--profile] [--json PATH]

Two shapes, each the model of a real-data example: ``forecaster``
(examples/co2_forecast.py: 2 x LSTM(32) + Linear, 52-step windows, batch 32;
needs statsmodels) and ``char`` (examples/char_model.py: Embedding(16) ->
LSTM(64) -> softmax over ragged sentences, batch 32).  Both libraries start
from the same weights (``--init torch``: torch's default initialisation,
the LSTM's two biases summed into nplstm's one; ``--init nplstm``: nplstm's
own) and see the same batches in the same order (examples/torch_twin.py),
in float32 on 1 thread (torch.set_num_threads, threadpoolctl on the BLAS,
nplstm.kernels.set_threads).

nplstm trains in one ordinary ``fit`` call; at the end of each of its epochs
(the clock stopped) torch trains one epoch, timed on its own, so a noisy
neighbour slows both alike.  Validation losses are measured outside the
timed spans, for both models by the same code (``nplstm.training.evaluate``
on the torch model's weights read back).  Reported, as nplstm / torch:

* ``time``: training wall time until the validation loss first reaches the
  target ``(1 + tol) x`` the larger of the two libraries' best validation
  losses (a loss both reach; ``tol`` 1%);
* ``epoch``: the median over epochs of the per-epoch time ratio (the least
  noisy speed figure);
* ``final``: the last epoch's validation loss;
* ``first``: the first epoch's mean training loss (the same maths and data
  order give the same number up to float32 rounding).

Goals (issue 19): time <= 0.8, final within 1% (|final - 1| <= 0.01).
``--profile`` splits nplstm's training time for the forecaster into
forward, backward, optimizer, loss, data handling and the rest (the loop's
Python), by timing the functions ``fit`` calls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOL = 0.01
GOALS = {"time": 0.8, "final": TOL}


@dataclass
class Run:
    """One library's training: per epoch, the cumulative training seconds and the losses."""

    seconds: list[float] = field(default_factory=list)  # cumulative, at the end of each epoch
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)

    def add(self, epoch_seconds: float, train_loss: float, val_loss: float) -> None:
        self.seconds.append((self.seconds[-1] if self.seconds else 0.0) + epoch_seconds)
        self.train_loss.append(float(train_loss))
        self.val_loss.append(float(val_loss))

    def epoch_seconds(self) -> list[float]:
        return list(np.diff([0.0] + self.seconds))

    def time_to(self, target: float) -> float | None:
        """Training seconds until the validation loss first is <= ``target`` (None: never)."""
        for seconds, loss in zip(self.seconds, self.val_loss):
            if loss <= target:
                return seconds
        return None


def compare(nplstm: Run, torch: Run, tol: float = TOL) -> dict[str, Any]:
    """The ratios nplstm / torch of two runs of the same epochs (see the module's docstring)."""
    if not nplstm.val_loss or len(nplstm.val_loss) != len(torch.val_loss):
        raise ValueError(f"the runs must have the same number of epochs (>= 1); got {len(nplstm.val_loss)} and {len(torch.val_loss)}")
    target = (1 + tol) * max(min(nplstm.val_loss), min(torch.val_loss))
    t_n, t_t = nplstm.time_to(target), torch.time_to(target)
    assert t_n is not None and t_t is not None  # each reaches its own best, which is <= target
    return {
        "target_val_loss": target,
        "seconds_to_target": {"nplstm": t_n, "torch": t_t},
        "time": t_n / t_t,
        "epoch": statistics.median(n / t for n, t in zip(nplstm.epoch_seconds(), torch.epoch_seconds())),
        "final": nplstm.val_loss[-1] / torch.val_loss[-1],
        "best": min(nplstm.val_loss) / min(torch.val_loss),
        "first": nplstm.train_loss[0] / torch.train_loss[0],
    }


def goals_met(ratios: dict[str, Any]) -> dict[str, bool]:
    return {"time": ratios["time"] <= GOALS["time"], "final": abs(ratios["final"] - 1) <= GOALS["final"]}


# ------------------------------------------------------------------ shapes
@dataclass
class Shape:
    """A model and its data from one of the examples, with how each library trains and scores it."""

    name: str
    model: Any  # the nplstm SequenceModel, at its initial weights
    data: dict
    train_nplstm: Callable[..., Any]  # (model, data, epochs, seed, **fit kwargs) -> History
    loss: str
    validation: Callable[[Any], float]  # model -> validation loss


def _examples() -> Any:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import torch_twin

    return torch_twin


def forecaster(seed: int, windows: int | None = None) -> Shape | None:
    """examples/co2_forecast.py's model and data (None without statsmodels)."""
    _examples()
    import co2_forecast

    from nplstm.training import evaluate

    if not co2_forecast.statsmodels_available():
        return None
    data = co2_forecast.make_data(co2_forecast.load_series()[0])
    if windows is not None:
        data = dict(data, X_train=data["X_train"][:windows], Y_train=data["Y_train"][:windows],
                    X_val=data["X_val"][: windows // 4], Y_val=data["Y_val"][: windows // 4])
    return Shape("forecaster 2xLSTM(32)+Linear T=52 B=32", co2_forecast.build_model(seed), data, co2_forecast.train_nplstm,
                 "mse", lambda m: evaluate(m, data["X_val"], data["Y_val"]))


def char(seed: int, sentences: int | None = None) -> Shape:
    """examples/char_model.py's model and data (``sentences``: the first that many, for a quick run)."""
    _examples()
    import char_model

    found = char_model.load_sentences()
    data = char_model.make_data(found[:sentences] if sentences else found)
    return Shape(f"char Embedding(16)->LSTM({char_model.HIDDEN})->softmax ragged B=32", char_model.build_model(len(data["vocab"]),
                 seed=seed), data, char_model.train_nplstm, "cross_entropy", lambda m: char_model.validation_loss(m, data))


# ---------------------------------------------------------------- training
def race(shape: Shape, epochs: int, seed: int, init: str = "torch") -> tuple[Run, Run]:
    """Train ``shape`` with nplstm and torch from the same weights, epochs interleaved; ``(nplstm, torch)``."""
    twin = _examples()
    model = twin.torch_initialised(shape.model, seed) if init == "torch" else shape.model
    module = twin.twin(model)
    _warm_torch(twin, twin.twin(model), shape, seed)
    runs = Run(), Run()
    torch_trainer: list[Any] = []
    last = [0.0]  # when nplstm's clock last restarted

    def between_epochs(epoch: int, history: Any) -> None:
        nplstm_seconds = time.perf_counter() - last[0]
        began = time.perf_counter()
        if not torch_trainer:  # torch's setup (tensors of the data, the optimizer) counts as its training time
            torch_trainer.append(twin.Trainer(module, shape.data["X_train"], shape.data["Y_train"], loss=shape.loss,
                                              batch_size=32, lr=3e-3, seed=seed))
        torch_loss = torch_trainer[0].epoch()
        torch_seconds = time.perf_counter() - began
        runs[0].add(nplstm_seconds, history.loss[-1], shape.validation(model))
        runs[1].add(torch_seconds, torch_loss, shape.validation(twin.to_nplstm(module)))
        last[0] = time.perf_counter()

    last[0] = time.perf_counter()
    shape.train_nplstm(model, shape.data, epochs, seed, on_epoch_end=between_epochs)
    return runs


def _warm_torch(twin: Any, module: Any, shape: Shape, seed: int) -> None:
    """One throwaway epoch of torch on a few batches: its one-time setup out of the timing, as nplstm.warmup() is for nplstm."""
    n = min(64, len(shape.data["X_train"]))
    twin.Trainer(module, shape.data["X_train"][:n], shape.data["Y_train"][:n], loss=shape.loss, batch_size=32, lr=3e-3,
                 seed=seed).epoch()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Everyone on 1 thread: bench.suite's limits (torch, threadpoolctl on the BLAS, nplstm.kernels)."""
    from .suite import thread_limit

    with thread_limit(1):
        yield


# ----------------------------------------------------------------- profile
#: What ``fit`` calls, by part; timed by wrapping (names of today's nplstm.training).
PROFILED = {
    "forward": ("nplstm.model", "SequenceModel", "forward_train"),
    "backward": ("nplstm.model", "SequenceModel", "backward"),
    "optimizer": ("nplstm.optim", "Adam", "step"),
    "gradient norm": ("nplstm.training", None, "clip_grad_norm"),
    "loss": ("nplstm.training", None, "_loss"),
    "data (batches)": ("nplstm._training_data", "_Dataset", "take"),
    "epoch bookkeeping": ("nplstm.training", "_Trainer", "end_epoch"),
    "  of forward: LSTM stack": ("nplstm.stack", "StackedLSTM", "forward_train"),
    "  of backward: LSTM stack": ("nplstm.stack", "StackedLSTM", "backward"),
}


@contextlib.contextmanager
def timed_parts(parts: dict[str, tuple[str, str | None, str]]) -> Iterator[dict[str, float]]:
    """Wrap each named function with a timer; yields the seconds spent in each (restored on exit)."""
    import importlib

    spent = {name: 0.0 for name in parts}
    undo = []
    for name, (module_name, owner_name, attr) in parts.items():
        module = importlib.import_module(module_name)
        owner = module if owner_name is None else getattr(module, owner_name)
        original = getattr(owner, attr)  # AttributeError names what moved

        def wrapper(*args: Any, _f: Callable[..., Any] = original, _name: str = name, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - began

        setattr(owner, attr, wrapper)
        undo.append((owner, attr, original))
    try:
        yield spent
    finally:
        for owner, attr, original in reversed(undo):
            setattr(owner, attr, original)


def profile(shape: Shape, epochs: int, seed: int) -> dict[str, float]:
    """Seconds of nplstm's ``fit`` by part (``total`` and ``other``: the loop's own Python and the timers)."""
    model = _examples().torch_initialised(shape.model, seed)
    with timed_parts(PROFILED) as spent:
        began = time.perf_counter()
        shape.train_nplstm(model, shape.data, epochs, seed)
        total = time.perf_counter() - began
    out = dict(spent)
    out["total"] = total
    out["other"] = total - sum(v for k, v in spent.items() if not k.startswith(" "))
    return out


# -------------------------------------------------------------------- main
def machine() -> dict[str, Any]:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_1min": load, "numpy": np.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 2 epochs (a smoke test, not a measurement)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per shape (default: forecaster 20, char 6)")
    parser.add_argument("--shapes", nargs="+", choices=("forecaster", "char"), default=["forecaster", "char"])
    parser.add_argument("--init", choices=("torch", "nplstm"), default="torch", help="whose initialisation both start from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="also split nplstm's forecaster training time by part")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("the training benchmark needs torch: pip install torch", file=sys.stderr)
        return 2
    import nplstm
    from nplstm import kernels

    if kernels.available():
        nplstm.warmup()  # the compiled engine loaded before timing
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_1min']:.2f} (1 min); numpy {info['numpy']}, "
          f"torch {info['torch']}; 1 thread; float32; init {args.init}")
    results, profiled = [], None
    with one_thread():
        for name in args.shapes:
            shape = forecaster(args.seed, 256 if args.quick else None) if name == "forecaster" else char(args.seed, 200 if args.quick else None)
            if shape is None:
                print(f"{name}: skipped (its data comes with statsmodels: pip install 'nplstm[examples]')")
                continue
            epochs = args.epochs or (2 if args.quick else {"forecaster": 20, "char": 6}[name])
            runs = race(shape, epochs, args.seed, args.init)
            ratios = compare(*runs)
            met = goals_met(ratios)
            results.append({"shape": shape.name, "epochs": epochs, "nplstm": asdict(runs[0]), "torch": asdict(runs[1]),
                            "ratios": ratios, "goals_met": met})
            s = ratios["seconds_to_target"]
            print(f"\n{shape.name}, {epochs} epochs")
            print(f"  target val loss {ratios['target_val_loss']:.4f}: nplstm {s['nplstm']:.2f} s, torch {s['torch']:.2f} s "
                  f"-> time {ratios['time']:.2f}x [{'met' if met['time'] else 'MISSED'}: <= {GOALS['time']}]")
            print(f"  per-epoch time (median ratio) {ratios['epoch']:.2f}x")
            print(f"  final val loss nplstm {runs[0].val_loss[-1]:.4f}, torch {runs[1].val_loss[-1]:.4f} -> {ratios['final']:.4f}x "
                  f"[{'met' if met['final'] else 'MISSED'}: within {GOALS['final']:.0%}]; best {ratios['best']:.4f}x; "
                  f"first-epoch training loss {ratios['first']:.6f}x")
        if args.profile:
            shape = forecaster(args.seed, 256 if args.quick else None)
            if shape is not None:
                profiled = profile(shape, 2 if args.quick else 5, args.seed)
                print("\nwhere nplstm's forecaster training time goes (fit, wrapped timers):")
                for part, seconds in profiled.items():
                    print(f"  {part:28s} {seconds:7.3f} s  {seconds / profiled['total']:6.1%}")
    info["load_1min_after"] = machine()["load_1min"]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "init": args.init, "results": results, "profile": profiled}, indent=1))
        print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
