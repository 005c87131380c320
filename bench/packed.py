"""Issue 20: the packed engine (nplstm._packed) measured alone, below the public API.

``python -m bench.packed`` prints, on one thread, float32, T = 100, I = 64,
at the issue's shapes:

* the machine's FMA peak, measured: 12 independent chains of 256-bit FMAs
  (the SIMD layer the engine's tiles use), GFLOP/s per core;
* the per-step recurrent product alone (the packed tiles; B >= 2 over
  [h, x], K = H + I; B = 1 the product over h, K = H) in GFLOP/s and as a
  fraction of that peak, against NumPy's matmul on the same unpacked
  shape;
* the activation pass in ns per hidden unit;
* the whole forward of one layer (weights check + packed loop) against
  onnxruntime's and torch's LSTM on the same weights, interleaved in one
  process (medians; a noisy neighbour slows all alike), and the cost of the
  per-call weight check.

``--quick``: two small shapes, few repetitions (what tests/test_bench.py runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any, Callable

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

from .suite import interleaved  # noqa: E402

SHAPES = [(1, 64), (4, 64), (16, 64), (4, 256), (16, 256), (64, 256), (4, 512), (16, 512), (256, 512)]
QUICK_SHAPES = [(1, 64), (4, 64)]
T, I = 100, 64


def _kernels() -> dict[str, Callable[..., Any]]:
    """The compiled measuring loops (built here: numba is imported only when this runs)."""
    import numba

    from nplstm import _packed as pk
    from nplstm._packed_act import activate_row
    from nplstm._packed_simd import data, vadd, vfma, vload, vstore

    flags = {"error_model": "numpy", "fastmath": {"nsz", "arcp", "contract", "afn"}}

    @numba.njit(**flags)
    def fma_peak(reps: int, buf: np.ndarray) -> None:
        p = data(buf)
        x, y = vload(p, 0), vload(p, 8)
        a0, a1, a2, a3, a4, a5 = vload(p, 16), vload(p, 24), vload(p, 32), vload(p, 40), vload(p, 48), vload(p, 56)
        a6, a7, a8, a9, a10, a11 = vload(p, 64), vload(p, 72), vload(p, 80), vload(p, 88), vload(p, 96), vload(p, 104)
        for _ in range(reps):
            a0, a1, a2, a3 = vfma(x, y, a0), vfma(x, y, a1), vfma(x, y, a2), vfma(x, y, a3)
            a4, a5, a6, a7 = vfma(x, y, a4), vfma(x, y, a5), vfma(x, y, a6), vfma(x, y, a7)
            a8, a9, a10, a11 = vfma(x, y, a8), vfma(x, y, a9), vfma(x, y, a10), vfma(x, y, a11)
        s = vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(vadd(a4, a5), vadd(a6, a7)))
        vstore(p, 0, vadd(s, vadd(vadd(a8, a9), vadd(a10, a11))))

    @numba.njit(**flags)
    def product(reps: int, n: int, K: int, ld: int, z: np.ndarray, panels: np.ndarray, G: np.ndarray, bias: np.ndarray) -> None:
        N = G.shape[1]
        for _ in range(reps):
            pk._gemm(n, K, N, data(z), ld, data(panels), ld * 2 * 8, data(G), N, data(bias), 0)

    @numba.njit(**flags)
    def activation(reps: int, G: np.ndarray, c: np.ndarray, hf: np.ndarray, H: int, scratch: np.ndarray) -> None:
        for _ in range(reps):
            for r in range(G.shape[0]):
                activate_row(G[r], c[r], hf[r], H, np.float32(40.0), scratch)

    return {"fma_peak": fma_peak, "product": product, "activation": activation}


def best_time(fn: Callable[[], object], min_time: float, reps: int) -> float:
    """Best seconds per call over ``reps`` samples of at least ``min_time`` each."""
    fn()
    n, best = 1, float("inf")
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start >= min_time:
            break
        n *= 2
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def fma_peak_gflops(k: dict[str, Callable[..., Any]], reps: int) -> float:
    buf = np.full(112, 1e-3, np.float32)
    calls = 1_000_000
    t = best_time(lambda: k["fma_peak"](calls, buf), 0.05, reps)
    return 12 * 8 * 2 * calls / t / 1e9


def ort_session(lw: Any, B: int, H: int) -> Any:
    """onnxruntime's LSTM (1 thread) on these weights (nplstm gates f, i, o, g -> ONNX i, o, f, c)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    W_xT, W_hT, b = lw.fused()
    perm = np.concatenate([np.arange(g * H, (g + 1) * H) for g in (1, 2, 0, 3)])
    W = np.ascontiguousarray(W_xT.T[perm])[None]
    R = np.ascontiguousarray(W_hT.T[perm])[None]
    Bb = np.concatenate([b[perm], np.zeros(4 * H, np.float32)])[None]
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=H)
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(Bb, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def torch_lstm(lw: Any, H: int) -> Any:
    import torch

    torch.set_num_threads(1)
    W_xT, W_hT, b = lw.fused()
    perm = np.concatenate([np.arange(g * H, (g + 1) * H) for g in (1, 0, 3, 2)])  # torch: i, f, g, o
    module = torch.nn.LSTM(I, H)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(W_xT.T[perm])))
        module.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(W_hT.T[perm])))
        module.bias_ih_l0.copy_(torch.from_numpy(b[perm]))
        module.bias_hh_l0.zero_()
    return module


def run(shapes: list[tuple[int, int]], reps: int, min_time: float) -> list[dict[str, Any]]:
    import torch

    from nplstm import _packed as pk
    from nplstm.params import DirectionParams

    k = _kernels()
    peak = fma_peak_gflops(k, reps)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {cpu}; 1 thread; float32, T={T}, I={I}; load average {load:.2f} at start")
    print(f"FMA peak (12 chains of 256-bit FMAs): {peak:.1f} GFLOP/s per core")
    print(f"{'B':>4} {'H':>4} {'product':>9} {'%peak':>6} {'np.matmul':>10} {'act ns/u':>8} {'packed':>10} {'ort':>10} {'torch':>10} "
          f"{'/ort':>5} {'/torch':>6} {'check':>8} {'max|d| ort':>10}")
    rows = []
    rng = np.random.default_rng(0)
    for B, H in shapes:
        lw = DirectionParams(I, H, rng=rng, dtype=np.dtype(np.float32))
        lw.b[...] = rng.uniform(-0.1, 0.1, lw.b.shape)
        weights = pk.packed(lw.fused_matrix(), lw.b, None)
        K = H + I
        Kuse = H if B == 1 else K  # one row, projection mode (pk.forward's default): the W_h rows only
        z = rng.standard_normal((B, K)).astype(np.float32)
        G = np.empty((B, weights.Npad), np.float32)
        flops = 2.0 * B * Kuse * 4 * H
        calls = max(1, int(2e7 / flops))
        t_prod = best_time(lambda: k["product"](calls, B, Kuse, K, z, weights.panels, G, weights.bias), min_time, reps) / calls
        WT = np.ascontiguousarray(lw.fused_matrix()[:Kuse])
        zz = np.ascontiguousarray(z[:, :Kuse])
        out_np = np.empty((B, 4 * H), np.float32)
        t_np = best_time(lambda: np.matmul(zz, WT, out=out_np), min_time, reps)
        c, hf, scratch = np.zeros((B, H), np.float32), np.empty((B, H), np.float32), np.empty(4 * H, np.float32)
        Ga = rng.standard_normal((B, weights.Npad)).astype(np.float32)
        t_act = best_time(lambda: k["activation"](calls, Ga, c, hf, H, scratch), min_time, reps) / calls

        x = rng.standard_normal((T, B, I)).astype(np.float32)
        out = np.empty((T, B, H), np.float32)

        def ours() -> None:
            w = pk.packed(lw.fused_matrix(), lw.b, None)
            pk.forward(w, x, np.zeros((B, H), np.float32), np.zeros((B, H), np.float32), outputs=out)

        session = ort_session(lw, B, H)
        feed = {"X": x}
        module = torch_lstm(lw, H)
        xt = torch.from_numpy(x)

        def torch_forward() -> object:
            with torch.inference_mode():
                return module(xt)

        ours()
        err = float(np.abs(out - session.run(None, feed)[0][:, 0]).max())
        med = interleaved({"packed": ours, "onnxruntime": lambda: session.run(None, feed), "torch": torch_forward,
                           "check": lambda: pk.packed(lw.fused_matrix(), lw.b, None)}, reps, min_time)
        row = {"B": B, "H": H, "product_s": t_prod, "product_gflops": flops / t_prod / 1e9, "peak_gflops": peak,
               "numpy_matmul_gflops": 2.0 * B * Kuse * 4 * H / t_np / 1e9, "activation_ns_per_unit": t_act / (B * H) * 1e9,
               "median_s": med, "max_abs_diff_onnxruntime": err}
        rows.append(row)
        print(f"{B:>4} {H:>4} {row['product_gflops']:>7.1f}GF {100 * row['product_gflops'] / peak:>5.0f}% {row['numpy_matmul_gflops']:>8.1f}GF "
              f"{row['activation_ns_per_unit']:>8.2f} {med['packed'] * 1e3:>8.3f}ms {med['onnxruntime'] * 1e3:>8.3f}ms "
              f"{med['torch'] * 1e3:>8.3f}ms {med['packed'] / med['onnxruntime']:>5.2f} {med['packed'] / med['torch']:>6.2f} "
              f"{med['check'] * 1e6:>6.1f}us {err:>10.1e}", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} at the end (2 cores: above ~1 another process shared this core some of the time)")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.packed", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small shapes, few repetitions")
    parser.add_argument("--reps", type=int, default=None, help="samples per contender (default 9; quick 3)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per sample (default 0.05; quick 0.01)")
    parser.add_argument("--shape", nargs="+", default=None, metavar="B,H", help="shapes to run (default: the issue's table)")
    args = parser.parse_args(argv)
    from nplstm import kernels

    if not kernels.available():
        print("the packed engine needs numba: pip install 'nplstm[fast]'")
        return 2
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shape] if args.shape else (QUICK_SHAPES if args.quick else SHAPES)
    run(shapes, args.reps or (3 if args.quick else 9), args.min_time or (0.01 if args.quick else 0.05))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
