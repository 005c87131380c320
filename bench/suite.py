"""Time nplstm against torch.nn.LSTM and onnxruntime on the same weights.

Rows: inference over a sequence, one training step (forward + backward,
against torch autograd), and streaming one step at a time; each at 1 and 2
threads.  nplstm runs twice: ``nplstm`` (the compiled engine where the
"auto" policy picks it, i.e. with ``nplstm[fast]`` installed) and ``numpy``
(the NumPy-only path); the compiled engine is the packed one of issue 20
(``python -m bench.packed`` breaks it down: GFLOP/s of the product against
the machine's FMA peak).  Contenders run interleaved in one process (each
repetition visits every contender, in rotating order), so a noisy neighbour
slows all of them alike; the table reports medians and ratios to the peers
measured in the same run.  All use the same thread count:
``torch.set_num_threads``, onnxruntime's ``intra_op_num_threads``,
threadpoolctl's limit on the BLAS libraries and :func:`nplstm.kernels.set_threads`.

The floor: an LSTM forward is 8·T·B·H·(I+H) flops (a training step about
three times that), and no implementation can beat doing them all at the
machine's best float32 GEMM rate, measured in the same run with the same
thread count on large square matrices.  ``%floor`` is the fraction of that
rate nplstm achieves.

``python -m bench --baseline`` is the release run: every row at 1 and 2
threads, saved as ``bench/baseline-<date>.json``, compared with the newest
earlier baseline, and the README's performance table printed as Markdown
(``python -m bench --markdown RUN.json`` prints it again from a saved run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
NPLSTM = ("nplstm", "numpy")
PEERS = ("torch", "onnxruntime")


@dataclass
class Case:
    kind: str  # "sequence" (inference), "train" (forward + backward) or "stream" (one step)
    T: int
    B: int
    I: int
    H: int
    dtype: str = "float32"

    @property
    def name(self) -> str:
        return f"{self.kind} T={self.T} B={self.B} I={self.I} H={self.H} {self.dtype}"

    @property
    def flops(self) -> float:
        forward = 8.0 * self.T * self.B * self.H * (self.I + self.H)
        return 3 * forward if self.kind == "train" else forward


@dataclass
class Result:
    case: Case
    threads: int
    median_s: dict[str, float] = field(default_factory=dict)
    floor_gflops: float = 0.0
    peak_extra_bytes: int | None = None
    step_allocated_bytes: int | None = None
    via: str = "api"

    def ratio(self, peer: str, name: str = "nplstm") -> float | None:
        if peer not in self.median_s or name not in self.median_s:
            return None
        return self.median_s[name] / self.median_s[peer]

    def floor_fraction(self, name: str = "nplstm") -> float | None:
        if name not in self.median_s or not self.floor_gflops or self.case.kind == "stream":
            return None
        return self.case.flops / self.median_s[name] / 1e9 / self.floor_gflops


#: A forecasting server's request: one 52-step window of one series, a small model (issue 20).
SERVING = Case("sequence", 52, 1, 1, 32)


def cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("sequence", 3, 1, 1, 1),
            SERVING,
            Case("stream", 1, 1, 64, 64),
            Case("sequence", 100, 64, 64, 256),
            Case("sequence", 100, 16, 64, 64, "float64"),
            Case("train", 100, 16, 64, 64),
        ]
    out = [Case("sequence", 3, 1, 1, 1), SERVING]
    out += [Case("stream", 1, 1, H, H) for H in (16, 64, 256)]
    for H in (64, 256, 512):
        for B in (1, 4, 16, 64, 256):
            out.append(Case("sequence", 100, B, 64, H))
    for H in (64, 256):
        for B in (1, 64):
            out.append(Case("sequence", 100, B, 64, H, "float64"))
    out.append(Case("sequence", 10_000, 1, 64, 128))
    out += [Case("train", 100, 64, 64, 256), Case("train", 100, 16, 64, 64), Case("train", 100, 1, 64, 64), Case("train", 100, 16, 64, 64, "float64")]
    return out


# ---------------------------------------------------------------- timing
def calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Calls per sample so that one sample lasts at least ``min_time``."""
    fn()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or n >= 1 << 16:
            return n
        n *= max(2, int(min_time / max(elapsed, 1e-9)))


def interleaved(contenders: dict[str, Callable[[], object]], reps: int, min_time: float) -> dict[str, float]:
    """Median seconds per call of each contender, sampled in rotating order."""
    calls = {name: calibrate(fn, min_time) for name, fn in contenders.items()}
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            fn, n = contenders[name], calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(s) for name, s in samples.items()}


def best_gemm_rate(reps: int, min_time: float) -> float:
    """The machine's best float32 GEMM rate (GFLOP/s): numpy.matmul on large square matrices."""
    rng = np.random.default_rng(0)
    best = 0.0
    for n in (512, 1024, 2048):
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        out = np.empty((n, n), dtype=np.float32)
        t = interleaved({"gemm": lambda: np.matmul(a, b, out=out)}, max(3, reps // 2), min_time)["gemm"]
        best = max(best, 2.0 * n**3 / t / 1e9)
    return best


def peak_extra_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by one call (after a warm-up call), as tracemalloc sees them.

    Allocations inside numba-compiled code bypass tracemalloc; the engine's
    (its per-call row buffers, O(B·H)) are not counted.
    """
    fn()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


# ------------------------------------------------------------ contenders
def api_uses_engine() -> bool:
    """Whether the public API runs the compiled engine (nplstm.kernels.forward) when asked to."""
    from nplstm import kernels
    from nplstm.stack import StackedLSTM

    if not kernels.available():
        return True  # nothing to integrate: the API is the NumPy path
    calls = []
    original = kernels.forward
    before = kernels.get_backend()

    def counting(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        original(*args, **kwargs)

    kernels.forward = counting  # type: ignore[assignment]
    try:
        kernels.set_backend("numba")
        StackedLSTM(2, 3, seed=0).forward(np.zeros((2, 1, 2)))
    except Exception:
        return False
    finally:
        kernels.forward = original  # type: ignore[assignment]
        kernels.set_backend(before)
    return bool(calls)


def on_backend(name: str, fn: Callable[[], object]) -> Callable[[], object]:
    from nplstm import kernels

    def run() -> object:
        kernels.set_backend(name)
        return fn()

    return run


def build(case: Case, threads: int, via: str) -> tuple[dict[str, Callable[[], object]], dict[str, Any]]:
    """The contenders on one set of weights: callables by name, plus extras for the memory checks."""
    import torch

    from nplstm import kernels
    from nplstm.interop import from_torch, to_onnx

    torch.manual_seed(0)
    tdtype = torch.float64 if case.dtype == "float64" else torch.float32
    module = torch.nn.LSTM(case.I, case.H, dtype=tdtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.T, case.B, case.I)).astype(case.dtype)
    d_out = rng.standard_normal((case.T, case.B, case.H)).astype(case.dtype)
    xt, d_out_t = torch.from_numpy(x), torch.from_numpy(d_out)
    fast = "auto" if kernels.available() else "numpy"
    ours: dict[str, Callable[[], object]] = {}
    extras: dict[str, Any] = {}
    if via == "api":
        stack = from_torch(module)
        if case.kind == "stream":
            from nplstm import LSTM

            lstm = LSTM(case.I, case.H, dtype=stack.dtype)  # the single-layer class streams
            for name, value in stack.layers[0][0].parameters().items():
                setattr(lstm, name, value)
            state = lstm.initial_state(batch=case.B)
            x_t = np.ascontiguousarray(x[0])
            ours["step"] = lambda: lstm.step(x_t, state)
        elif case.kind == "sequence":
            ours["step"] = lambda: stack.forward(x)
            extras["memory"] = lambda: stack.forward(x, return_sequences=False)  # what inference keeps beyond its outputs
        else:

            def train() -> object:
                _, _, tape = stack.forward_train(x)
                return stack.backward(tape, d_out)

            ours["step"] = train
    else:
        from .adapter import Layer

        if case.kind == "stream":
            return {}, {}
        layer = Layer(module, case.dtype)
        ours["step"] = (lambda: layer.forward(x)) if case.kind == "sequence" else (lambda: layer.train_step(x, d_out))
    contenders: dict[str, Callable[[], object]] = {"nplstm": on_backend(fast, ours["step"]), "numpy": on_backend("numpy", ours["step"])}
    if not kernels.available():
        del contenders["numpy"]  # the same path twice
    extras["step"] = contenders["nplstm"]

    if case.kind == "stream":
        hx = (torch.zeros(1, case.B, case.H, dtype=tdtype), torch.zeros(1, case.B, case.H, dtype=tdtype))

        def torch_step() -> object:
            with torch.inference_mode():
                return module(xt[:1], hx)

        contenders["torch"] = torch_step
    elif case.kind == "sequence":

        def torch_forward() -> object:
            with torch.inference_mode():
                return module(xt)

        contenders["torch"] = torch_forward
    else:

        def torch_train() -> object:
            module.zero_grad(set_to_none=True)
            xg = xt.detach().requires_grad_()
            out, _ = module(xg)
            out.backward(d_out_t)
            return xg.grad

        contenders["torch"] = torch_train
    if case.dtype == "float32" and case.kind != "train":  # onnxruntime's LSTM kernel is float32 only
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
        if ort is not None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            model = to_onnx(from_torch(module), with_initial_states=False)
            session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            feed = {"X": x[:1] if case.kind == "stream" else x}
            contenders["onnxruntime"] = lambda: session.run(None, feed)
    return contenders, extras


@contextlib.contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """All contenders on ``threads`` threads (BLAS through threadpoolctl when it is installed)."""
    import torch

    from nplstm import kernels

    torch.set_num_threads(threads)
    kernels.set_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limiter: Any = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(limits=threads)
    try:
        with limiter:
            yield
    finally:
        kernels.set_threads(None)


def run_case(case: Case, threads: int, reps: int, min_time: float, via: str, floor: float) -> Result | None:
    from nplstm import kernels

    before = kernels.get_backend()
    try:
        with thread_limit(threads):
            contenders, extras = build(case, threads, via)
            if not contenders:
                return None
            result = Result(case, threads, via=via, floor_gflops=floor)
            result.median_s = interleaved(contenders, reps, min_time)
            if "memory" in extras:
                result.peak_extra_bytes = peak_extra_memory(extras["memory"])
            if case.kind == "stream":
                result.step_allocated_bytes = peak_extra_memory(extras["step"])
    finally:
        kernels.set_backend(before)
    return result


# --------------------------------------------------------------- report
def machine() -> dict:
    import torch

    from nplstm import kernels

    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i['internal_api']} {i['version']} ({i.get('architecture')})" for i in threadpool_info() if i["user_api"] == "blas"]
    except ImportError:
        blas = []
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "torch": torch.__version__,
        "numba_kernel": kernels.available(),
        "backend": kernels.get_backend(),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


HEADER = (
    f"{'case':<40} {'thr':>3} {'nplstm':>10} {'numpy':>10} {'torch':>10} {'ort':>10} "
    f"{'/torch':>6} {'/ort':>5} {'np/torch':>8} {'%floor':>6} {'peak KiB':>8}"
)


def row(r: Result) -> str:
    ms = {k: f"{v * 1e3:.3f}ms" for k, v in r.median_s.items()}
    frac = r.floor_fraction()
    peak = r.peak_extra_bytes if r.peak_extra_bytes is not None else r.step_allocated_bytes
    return (
        f"{r.case.name:<40} {r.threads:>3} {ms.get('nplstm', '-'):>10} {ms.get('numpy', '-'):>10} {ms.get('torch', '-'):>10} "
        f"{ms.get('onnxruntime', '-'):>10} {_fmt(r.ratio('torch'), '.2f'):>6} {_fmt(r.ratio('onnxruntime'), '.2f'):>5} "
        f"{_fmt(r.ratio('torch', 'numpy'), '.2f'):>8} {_fmt(None if frac is None else 100 * frac, '.0f'):>6} "
        f"{_fmt(None if peak is None else peak / 1024, '.0f'):>8}"
    )


def targets(results: list[Result], fast: bool) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met.

    ``fast``: whether the compiled engine is installed; its targets are only
    checked then (without it "nplstm" is the NumPy path).
    """
    found = []

    def add(name: str, value: float | None, goal: str, ok: bool) -> None:
        found.append({"target": name, "value": value, "goal": goal, "met": ok})

    def at_most(name: str, value: float | None, limit: float) -> None:
        add(name, value, f"<= {limit}", value is not None and value <= limit)

    for r in results:
        c, thr = r.case, f"({r.threads} thr)"
        shape = f"T={c.T} B={c.B} H={c.H} {c.dtype}"
        compiled = fast and c.dtype == "float32"
        if c.kind == "sequence" and (c.T, c.B, c.I, c.H) == (SERVING.T, SERVING.B, SERVING.I, SERVING.H) and compiled:
            at_most(f"serving {shape} vs onnxruntime per call {thr}", r.ratio("onnxruntime"), 1.2)
        elif c.kind == "sequence" and c.T >= 100 and c.I == 64:
            if compiled:
                at_most(f"inference {shape} vs torch {thr}", r.ratio("torch"), 0.8)
                if r.ratio("onnxruntime") is not None:
                    at_most(f"inference {shape} vs onnxruntime {thr}", r.ratio("onnxruntime"), 0.9 if c.B <= 4 else 1.0)
                if c.B >= 64:
                    frac = r.floor_fraction()
                    add(f"inference {shape} fraction of the floor {thr}", frac, ">= 0.85", frac is not None and frac >= 0.85)
            numpy_name = "numpy" if fast else "nplstm"
            if c.B >= 64:
                at_most(f"NumPy-only inference {shape} vs torch {thr}", r.ratio("torch", numpy_name), 1.5)
            if c.B == 1 and c.H == 64 and c.dtype == "float32":
                at_most(f"NumPy-only inference {shape} vs torch {thr}", r.ratio("torch", numpy_name), 2.5)
        if c.kind == "train" and compiled:
            at_most(f"training step {shape} vs torch autograd {thr}", r.ratio("torch"), 0.8)
        if c.kind == "stream" and c.H <= 64:
            at_most(f"step H={c.H} vs one torch call {thr}", r.ratio("torch"), 0.2)
            if r.step_allocated_bytes is not None:
                # tracemalloc also sees the few Python objects (argument tuples) any call makes; one (B, 4H)
                # float temporary would already show as 4H·itemsize, and tests/core/test_stream.py checks at H = 1024
                add(f"step H={c.H} allocates no array {thr}", r.step_allocated_bytes, "< 4 KiB transient",
                    r.step_allocated_bytes < 4096)
        if c.kind == "sequence" and (c.T, c.B, c.H) == (3, 1, 1):
            add(f"tiny seed case vs torch {thr}", r.ratio("torch"), "< 1.0", (r.ratio("torch") or 2.0) < 1.0)
        if c.kind == "sequence" and r.peak_extra_bytes is not None and c.T >= 1000:
            per_bh = r.peak_extra_bytes / (c.B * c.H * np.dtype(c.dtype).itemsize)
            add(f"{c.name} peak extra memory / (B·H·itemsize)", per_bh, "O(1) in T (<= 1024)", per_bh <= 1024)
    return found


def compare(old: dict, new: dict) -> str:
    """Per-row speedups (old time / new time) of every nplstm contender present in both runs."""
    def key(r: dict) -> tuple[str, int]:
        c = r["case"]
        return Case(c["kind"], c["T"], c["B"], c["I"], c["H"], c.get("dtype", "float32")).name, r["threads"]

    before = {key(r): r for r in old["results"]}
    lines = [f"{'case':<40} {'thr':>3} " + " ".join(f"{n + ' x':>10}" for n in NPLSTM) + f" {'vs torch then/now':>18}"]
    for r in new["results"]:
        o = before.get(key(r))
        if o is None:
            continue
        speedups = []
        for n in NPLSTM:
            a, b = o["median_s"].get(n), r["median_s"].get(n)
            speedups.append(f"{a / b:.2f}x" if a and b else "-")
        rt_old = o["median_s"].get("nplstm", 0) / o["median_s"]["torch"] if o["median_s"].get("torch") else None
        rt_new = r["median_s"].get("nplstm", 0) / r["median_s"]["torch"] if r["median_s"].get("torch") else None
        lines.append(f"{key(r)[0]:<40} {r['threads']:>3} " + " ".join(f"{s:>10}" for s in speedups) + f" {_fmt(rt_old, '.2f'):>8} / {_fmt(rt_new, '.2f'):<7}")
    if len(lines) == 1:
        lines.append("(no rows in common)")
    return "\n".join(lines)


def markdown(payload: dict) -> str:
    """The README's performance table from a run's JSON: every row, with the CPU, libraries and the floor named."""
    info = payload["machine"]
    floors = ", ".join(f"{n} thread(s) {g:.0f} GFLOP/s" for n, g in payload.get("floor_gflops", {}).items())
    lines = [
        f"Measured on {info['cpu']} ({info['cores']} cores), numpy {info['numpy']} ({', '.join(info.get('blas') or ['?'])}), "
        f"torch {info['torch']}; the floor is the best float32 GEMM rate measured in the same run ({floors}). "
        "Times are medians of interleaved runs; ratios are nplstm's time over the peer's (lower is better).",
        "",
        "| case | threads | nplstm | / torch | / onnxruntime | % of the floor | NumPy-only / torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        c = r["case"]
        case = Case(c["kind"], c["T"], c["B"], c["I"], c["H"], c.get("dtype", "float32"))
        med = r["median_s"]
        label = {"sequence": "inference", "train": "training step", "stream": "one step"}[case.kind]
        if (case.T, case.B, case.I, case.H, case.kind) == (SERVING.T, SERVING.B, SERVING.I, SERVING.H, SERVING.kind):
            label = "serving (per call)"
        name = f"{label} T={case.T} B={case.B} I={case.I} H={case.H}" + ("" if case.dtype == "float32" else f" {case.dtype}")
        np_torch = med["numpy"] / med["torch"] if "numpy" in med and "torch" in med else None
        frac = r.get("floor_fraction")
        lines.append(
            f"| {name} | {r['threads']} | {_duration(med.get('nplstm'))} | {_fmt(r.get('ratio_torch'), '.2f')} | "
            f"{_fmt(r.get('ratio_onnxruntime'), '.2f')} | {_fmt(None if frac is None else 100 * frac, '.0f')} | {_fmt(np_torch, '.2f')} |"
        )
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


_FRESH_SERVING = """
import time, numpy as np
from nplstm import StackedLSTM, kernels
stack = StackedLSTM({I}, {H}, seed=0, dtype=np.float32)
x = np.random.default_rng(0).standard_normal(({T}, {B}, {I})).astype(np.float32)
start = time.perf_counter()
while time.perf_counter() - start < 1.0:  # the process's first second, on the "auto" policy's own terms
    stack.forward(x)
times = []
for _ in range({reps}):
    t = time.perf_counter()
    for _ in range(200):
        stack.forward(x)
    times.append((time.perf_counter() - t) / 200)
print(sorted(times)[len(times) // 2], kernels.engine_state())
"""


def fresh_serving(reps: int) -> tuple[float, str] | None:
    """Seconds per serving call in a new process after its first second (default "auto" backend, no warmup), and the engine's state then."""
    import subprocess

    code = _FRESH_SERVING.format(T=SERVING.T, B=SERVING.B, I=SERVING.I, H=SERVING.H, reps=max(3, reps))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NPLSTM_NUM_THREADS="1")
    env.pop("NPLSTM_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        print(f"fresh serving process failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    seconds, state = proc.stdout.split()
    return float(seconds), state


def latest_baseline(exclude: Path | None = None) -> Path | None:
    """The newest saved baseline (bench/baseline-<date>.json), other than ``exclude``."""
    found = sorted(p for p in Path(__file__).resolve().parent.glob("baseline-*.json") if p != exclude)
    return found[-1] if found else None


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.ratio("torch")]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    labels = [f"{r.case.name} ({r.threads} thr)" for r in rows]
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r.ratio("torch") for r in rows], height=0.4, label="vs torch")
    ax.barh(y + 0.2, [r.ratio("onnxruntime") or 0 for r in rows], height=0.4, label="vs onnxruntime")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("nplstm time / peer time (lower is better)")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few shapes, 1 thread, under a minute")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default 1 2; quick: 1)")
    parser.add_argument("--reps", type=int, default=None, help="samples per contender (default 9; quick: 3)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per sample (default 0.05; quick 0.01)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results (default bench/results/<time>.json)")
    parser.add_argument("--png", type=Path, default=None, help="where to draw the ratio plot (default bench/results/, named as the JSON)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--only", nargs="+", default=None, metavar="TEXT", help="run only the cases whose name contains one of these (e.g. 'B=64 ' train)")
    parser.add_argument("--via", choices=("auto", "api", "adapter"), default="auto", help="public API, or the engine called directly (bench/adapter.py)")
    parser.add_argument(
        "--compare", type=Path, nargs="+", metavar="JSON", default=None,
        help="OLD.json: run, then print per-row speedups against it; OLD.json NEW.json: compare two saved runs without running",
    )
    parser.add_argument("--markdown", type=Path, nargs="?", const=True, default=None, metavar="JSON",
                        help="print the README's table: from JSON without running, or (no argument) after this run")
    parser.add_argument("--baseline", action="store_true",
                        help="the release run: full, saved as bench/baseline-<date>.json, compared with the previous baseline, table printed")
    args = parser.parse_args(argv)
    if isinstance(args.markdown, Path):
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    if args.baseline:
        if args.quick or args.only:
            parser.error("--baseline is the full run: no --quick or --only")
        args.json = args.json or Path(__file__).resolve().parent / f"baseline-{time.strftime('%Y-%m-%d')}.json"
        previous = latest_baseline(exclude=args.json)
        args.compare = [previous] if previous is not None and not args.compare else args.compare
        args.markdown = True
    if args.compare and len(args.compare) > 2:
        parser.error("--compare takes OLD.json, or OLD.json NEW.json")
    if args.compare and len(args.compare) == 2:
        old, new = (json.loads(p.read_text()) for p in args.compare)
        print(compare(old, new))
        return 0
    try:
        import torch  # noqa: F401
    except ImportError:
        print("the benchmark needs torch: pip install 'nplstm[bench]' torch", file=sys.stderr)
        return 2
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        print("note: threadpoolctl is not installed, so BLAS thread counts are not limited (pip install 'nplstm[bench]')", file=sys.stderr)

    from nplstm import kernels

    threads = args.threads or ([1] if args.quick else [1, 2])
    reps = args.reps or (3 if args.quick else 9)
    min_time = args.min_time or (0.01 if args.quick else 0.05)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.json or RESULTS / f"{'quick' if args.quick else 'full'}-{stamp}.json"
    png_path = args.png or RESULTS / json_path.with_suffix(".png").name  # a saved baseline's plot stays out of the repository
    via = args.via
    if via == "auto":
        via = "api" if api_uses_engine() else "adapter"
    if kernels.available():
        import nplstm

        # steady state: what a process runs once "auto" has loaded the engine (a server after
        # its first second, or after nplstm.warmup()); also loads scipy's BLAS before the thread limits
        nplstm.warmup()

    info = machine() | {"via": via}
    print(f"machine: {info['cpu']}, {info['cores']} cores; numpy {info['numpy']} ({', '.join(info['blas'])}); torch {info['torch']}; numba engine: {info['numba_kernel']}; via {via}")
    results: list[Result] = []
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    floors = {}
    for n in threads:
        with thread_limit(n):
            floors[n] = best_gemm_rate(reps, min_time)
        print(f"floor at {n} thread(s): best float32 GEMM {floors[n]:.1f} GFLOP/s", flush=True)
        for case in cases(args.quick):
            if args.only and not any(text in case.name + " " for text in args.only):
                continue
            result = run_case(case, n, reps, min_time, via, floors[n])
            if result is None:
                continue
            results.append(result)
            print(row(result), flush=True)
    fresh = fresh_serving(reps) if 1 in threads and (not args.only or any(t in SERVING.name + " " for t in args.only)) else None
    serving_ort = next((r.median_s.get("onnxruntime") for r in results if r.case == SERVING and r.threads == 1), None)
    found = targets(results, kernels.available())
    if fresh is not None:
        print(f"\nserving, a new process on the default backend, per call after its first second: {fresh[0] * 1e6:.0f} µs "
              f"(engine {fresh[1]}; onnxruntime {_duration(serving_ort)} in the run above)")
        if kernels.available() and serving_ort:
            found.append({"target": "serving after the first second of a new process vs onnxruntime (1 thr)",
                          "value": fresh[0] / serving_ort, "goal": "<= 1.2", "met": fresh[0] / serving_ort <= 1.2})
    print("\ntargets:")
    for t in found:
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {value} (goal {t['goal']})")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": info,
        "quick": args.quick,
        "floor_gflops": floors,
        "fresh_serving_s": None if fresh is None else fresh[0],
        "results": [
            asdict(r) | {"ratio_torch": r.ratio("torch"), "ratio_onnxruntime": r.ratio("onnxruntime"), "floor_fraction": r.floor_fraction()}
            for r in results
        ],
        "targets": found,
    }
    json_path.write_text(json.dumps(payload, indent=1))
    print(f"\nJSON: {json_path}")
    if args.compare:
        print(f"\nspeedups against {args.compare[0]}:")
        print(compare(json.loads(args.compare[0].read_text()), payload))
    if args.markdown:
        print("\nREADME table (Markdown):\n")
        print(markdown(payload))
    if not args.no_plot:
        try:
            png_path.parent.mkdir(parents=True, exist_ok=True)
            plot(results, png_path)
            print(f"plot: {png_path}")
        except ImportError:
            print("plot: skipped (pip install 'nplstm[bench]' for matplotlib)", file=sys.stderr)
    return 0
