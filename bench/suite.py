"""Time nplstm against torch.nn.LSTM and onnxruntime on the same weights.

Contenders run interleaved in one process (each repetition visits every
contender, in rotating order), so a noisy neighbour slows all of them
alike; the table reports medians and the ratio nplstm / peer.  All use the
same thread count: ``torch.set_num_threads``, onnxruntime's
``intra_op_num_threads`` and threadpoolctl's limit on NumPy's BLAS.

Achieved GFLOP/s counts an LSTM forward as 8·T·B·H·(I+H) flops and is
compared with ``numpy.matmul``'s float32 rate, measured in the same run on
the step's own GEMM shape (B, I+H) × (I+H, 4H).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Case:
    kind: str  # "sequence" or "stream"
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
        return 8.0 * self.T * self.B * self.H * (self.I + self.H)


@dataclass
class Result:
    case: Case
    threads: int
    median_s: dict[str, float] = field(default_factory=dict)
    gflops: dict[str, float] = field(default_factory=dict)
    gemm_gflops: float = 0.0
    peak_extra_bytes: int | None = None

    def ratio(self, peer: str) -> float | None:
        if peer not in self.median_s or "nplstm" not in self.median_s:
            return None
        return self.median_s["nplstm"] / self.median_s[peer]


def cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("sequence", 3, 1, 1, 1),
            Case("stream", 1, 1, 64, 64),
            Case("sequence", 100, 64, 64, 256),
            Case("sequence", 100, 16, 64, 64, "float64"),
        ]
    out = [Case("sequence", 3, 1, 1, 1)]
    out += [Case("stream", 1, 1, H, H) for H in (16, 64, 256)]
    for dtype in ("float32", "float64"):
        for H in (64, 256, 512):
            for B in (1, 16, 64, 256):
                out.append(Case("sequence", 100, B, 64, H, dtype))
    out.append(Case("sequence", 10_000, 1, 64, 128))
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


def gemm_rate(case: Case, reps: int, min_time: float) -> float:
    """numpy.matmul float32 GFLOP/s on the step's GEMM shape (B, I+H) x (I+H, 4H)."""
    rng = np.random.default_rng(0)
    a = rng.random((case.B, case.I + case.H), dtype=np.float32)
    b = rng.random((case.I + case.H, 4 * case.H), dtype=np.float32)
    out = np.empty((case.B, 4 * case.H), dtype=np.float32)
    t = interleaved({"gemm": lambda: np.matmul(a, b, out=out)}, reps, min_time)["gemm"]
    return 2.0 * case.B * (case.I + case.H) * 4 * case.H / t / 1e9


def peak_extra_memory(lstm, x: np.ndarray) -> int:
    """Peak bytes allocated by an inference-only forward beyond its final states."""
    lstm.forward(x, return_sequences=False)  # warm up
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        lstm.forward(x, return_sequences=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


# ------------------------------------------------------------ contenders
def build(case: Case, threads: int):
    """The three contenders on one set of weights: callables by name."""
    import torch

    from nplstm.interop import from_torch, to_onnx

    torch.manual_seed(0)
    tdtype = torch.float64 if case.dtype == "float64" else torch.float32
    module = torch.nn.LSTM(case.I, case.H, dtype=tdtype).eval()
    from nplstm import LSTM

    stack = from_torch(module)
    lstm = LSTM(case.I, case.H, dtype=stack.dtype)
    for name, value in stack.layers[0][0].parameters().items():
        setattr(lstm, name, value)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.T, case.B, case.I)).astype(case.dtype)
    xt = torch.from_numpy(x)
    contenders: dict[str, Callable[[], object]] = {}
    if case.kind == "stream":
        state = lstm.initial_state(batch=case.B)
        x_t = np.ascontiguousarray(x[0])
        contenders["nplstm"] = lambda: lstm.step(x_t, state)
        hx = (torch.zeros(1, case.B, case.H, dtype=tdtype), torch.zeros(1, case.B, case.H, dtype=tdtype))

        def torch_step():
            with torch.inference_mode():
                return module(xt[:1], hx)

        contenders["torch"] = torch_step
    else:
        contenders["nplstm"] = lambda: lstm.forward(x, return_sequences=True)

        def torch_forward():
            with torch.inference_mode():
                return module(xt)

        contenders["torch"] = torch_forward
    if case.dtype == "float32":  # onnxruntime's LSTM kernel is float32 only
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
        if ort is not None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            model = to_onnx(stack, with_initial_states=False)
            session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            feed = {"X": x[:1] if case.kind == "stream" else x}
            contenders["onnxruntime"] = lambda: session.run(None, feed)
    return contenders, lstm, x


def run_case(case: Case, threads: int, reps: int, min_time: float) -> Result:
    from threadpoolctl import threadpool_limits

    import torch

    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        contenders, lstm, x = build(case, threads)
        result = Result(case, threads)
        result.median_s = interleaved(contenders, reps, min_time)
        result.gemm_gflops = gemm_rate(case, reps, min_time)
        if case.kind == "sequence":
            result.gflops = {k: case.flops / v / 1e9 for k, v in result.median_s.items()}
            result.peak_extra_bytes = peak_extra_memory(lstm, x)
    return result


# --------------------------------------------------------------- report
def machine() -> dict:
    import torch

    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i['internal_api']} {i['version']} ({i.get('architecture')})" for i in threadpool_info() if i["user_api"] == "blas"]
    except Exception:  # pragma: no cover
        blas = []
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from nplstm import kernels

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


def table(results: list[Result]) -> str:
    head = f"{'case':<42} {'thr':>3} {'nplstm':>10} {'torch':>10} {'ort':>10} {'/torch':>7} {'/ort':>6} {'GF/s':>6} {'%GEMM':>6} {'peak KiB':>9}"
    lines = [head, "-" * len(head)]
    for r in results:
        ms = {k: f"{v * 1e3:.3f}ms" for k, v in r.median_s.items()}
        rt, ro = r.ratio("torch"), r.ratio("onnxruntime")
        gf = r.gflops.get("nplstm")
        lines.append(
            f"{r.case.name:<42} {r.threads:>3} {ms.get('nplstm', '-'):>10} {ms.get('torch', '-'):>10} {ms.get('onnxruntime', '-'):>10} "
            f"{(f'{rt:.2f}' if rt else '-'):>7} {(f'{ro:.2f}' if ro else '-'):>6} {(f'{gf:.1f}' if gf else '-'):>6} "
            f"{(f'{100 * gf / r.gemm_gflops:.0f}%' if gf else '-'):>6} "
            f"{(f'{r.peak_extra_bytes / 1024:.0f}' if r.peak_extra_bytes is not None else '-'):>9}"
        )
    return "\n".join(lines)


def targets(results: list[Result]) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met."""
    found = []

    def add(name: str, value: float | None, goal: str, ok: bool | None) -> None:
        found.append({"target": name, "value": value, "goal": goal, "met": ok})

    for r in results:
        c = r.case
        if c.kind == "sequence" and (c.T, c.B, c.I, c.H, c.dtype) == (100, 64, 64, 256, "float32"):
            rt, ro = r.ratio("torch"), r.ratio("onnxruntime")
            add(f"T=100 B=64 H=256 f32 vs torch ({r.threads} thr)", rt, "<= 0.8", rt is not None and rt <= 0.8)
            add(f"T=100 B=64 H=256 f32 vs onnxruntime ({r.threads} thr)", ro, "<= 1.0", ro is not None and ro <= 1.0)
        if c.kind == "sequence" and c.B >= 256 and c.dtype == "float32":
            frac = r.gflops["nplstm"] / r.gemm_gflops
            add(f"{c.name} GEMM fraction ({r.threads} thr)", frac, ">= 0.60", frac >= 0.6)
        if c.kind == "stream" and c.H <= 64:
            rt = r.ratio("torch")
            add(f"step H={c.H} vs one torch call ({r.threads} thr)", rt, "<= 0.2", rt is not None and rt <= 0.2)
        if c.kind == "sequence" and (c.T, c.B, c.H) == (3, 1, 1):
            rt = r.ratio("torch")
            add(f"tiny seed case vs torch ({r.threads} thr)", rt, "< 1.0", rt is not None and rt < 1.0)
        if c.kind == "sequence" and r.peak_extra_bytes is not None and c.T >= 1000:
            per_bh = r.peak_extra_bytes / (c.B * c.H * np.dtype(c.dtype).itemsize)
            add(f"{c.name} peak extra memory / (B·H·itemsize)", per_bh, "O(1) in T (<= 1024)", per_bh <= 1024)
    return found


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
    parser.add_argument("--png", type=Path, default=None, help="where to draw the ratio plot (default next to the JSON)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    threads = args.threads or ([1] if args.quick else [1, 2])
    reps = args.reps or (3 if args.quick else 9)
    min_time = args.min_time or (0.01 if args.quick else 0.05)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.json or RESULTS / f"{'quick' if args.quick else 'full'}-{stamp}.json"
    png_path = args.png or json_path.with_suffix(".png")

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; numpy {info['numpy']} ({', '.join(info['blas'])}); torch {info['torch']}; numba kernel: {info['numba_kernel']}")
    results = []
    for n in threads:
        for case in cases(args.quick):
            results.append(run_case(case, n, reps, min_time))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    found = targets(results)
    print("\ntargets:")
    for t in found:
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {value} (goal {t['goal']})")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "quick": args.quick, "results": [asdict(r) | {"ratio_torch": r.ratio("torch"), "ratio_onnxruntime": r.ratio("onnxruntime")} for r in results], "targets": found}
    json_path.write_text(json.dumps(payload, indent=1))
    print(f"\nJSON: {json_path}")
    if not args.no_plot:
        try:
            plot(results, png_path)
            print(f"plot: {png_path}")
        except ImportError:
            print("plot: skipped (pip install 'nplstm[bench]' for matplotlib)", file=sys.stderr)
    return 0
