"""Issue 11, item 4: can a numba microkernel beat BLAS on the per-step recurrent GEMM?

``python -m bench.microkernel`` times, on one thread, the per-step shape
(B, P) x (P, 4H) through three numba microkernels written for it, against
numba's ``np.dot`` (scipy's OpenBLAS, what the engine's compiled loop calls)
and ``numpy.matmul`` (NumPy's OpenBLAS, what its Python-driven loop calls).
The engine keeps BLAS: on the 2-core AVX-512 VM the microkernels reached at
best about half of OpenBLAS's rate (see the report printed at the end).

Variants (W prepacked where it helps):

* ``axpy``: rows of W added into 4 output rows at a time (the output rows
  are the accumulators, in L1).
* ``dot``: 4 rows x 2 columns of dot products over contiguous k, compiled
  with reassociation so the sums vectorise.
* ``block``: a generated 4 x 32 register block over W packed in 32-column
  panels (scalar code unless numba's SLP vectoriser is on:
  ``NUMBA_SLP_VECTORIZE=1``, which then emits gathers).
"""

from __future__ import annotations

import time

import numpy as np

SHAPES = [(16, 64, 256), (64, 64, 256), (16, 256, 1024), (64, 256, 1024), (256, 512, 2048)]
FLAGS = {"nsz", "arcp", "contract", "afn"}
MR, NR = 4, 32


def _block_source() -> str:
    """A MR x NR register block, written out (numba has no vector types to hold the accumulators)."""
    lines = ["def block(h, wp, out, r0, j0, K):"]
    lines += [f"    a{r}_{c} = 0.0" for r in range(MR) for c in range(NR)]
    lines += ["    for k in range(K):", "        w = wp[k]"]
    lines += [f"        w{c} = w[{c}]" for c in range(NR)]
    for r in range(MR):
        lines.append(f"        x{r} = h[r0 + {r}, k]")
        lines += [f"        a{r}_{c} += x{r} * w{c}" for c in range(NR)]
    lines += [f"    out[r0 + {r}, j0 + {c}] = a{r}_{c}" for r in range(MR) for c in range(NR)]
    return "\n".join(lines)


def build() -> dict:
    import numba

    jit = numba.njit(nogil=True, error_model="numpy", fastmath=FLAGS)

    @jit
    def axpy(h, W_T, out):
        B, K = h.shape
        N = W_T.shape[1]
        for r0 in range(0, B, 4):
            for r in range(r0, r0 + 4):
                out[r, :] = 0.0
            for k in range(K):
                w = W_T[k]
                a0, a1, a2, a3 = h[r0, k], h[r0 + 1, k], h[r0 + 2, k], h[r0 + 3, k]
                o0, o1, o2, o3 = out[r0], out[r0 + 1], out[r0 + 2], out[r0 + 3]
                for j in range(N):
                    o0[j] += a0 * w[j]
                    o1[j] += a1 * w[j]
                    o2[j] += a2 * w[j]
                    o3[j] += a3 * w[j]

    @numba.njit(nogil=True, error_model="numpy", fastmath=FLAGS | {"reassoc"})
    def dot(h, W, out):
        B, K = h.shape
        N = W.shape[0]
        for r0 in range(0, B, 4):
            h0, h1, h2, h3 = h[r0], h[r0 + 1], h[r0 + 2], h[r0 + 3]
            for j in range(0, N, 2):
                w0, w1 = W[j], W[j + 1]
                a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = np.float32(0)
                for k in range(K):
                    x0, x1 = w0[k], w1[k]
                    a00 += h0[k] * x0
                    a01 += h0[k] * x1
                    a10 += h1[k] * x0
                    a11 += h1[k] * x1
                    a20 += h2[k] * x0
                    a21 += h2[k] * x1
                    a30 += h3[k] * x0
                    a31 += h3[k] * x1
                out[r0, j], out[r0, j + 1] = a00, a01
                out[r0 + 1, j], out[r0 + 1, j + 1] = a10, a11
                out[r0 + 2, j], out[r0 + 2, j + 1] = a20, a21
                out[r0 + 3, j], out[r0 + 3, j + 1] = a30, a31

    namespace: dict = {}
    exec(_block_source(), namespace)
    block_fn = numba.njit(nogil=True, error_model="numpy", fastmath=FLAGS, inline="always")(namespace["block"])

    @jit
    def block(h, Wp, out):
        B, K = h.shape
        for p in range(Wp.shape[0]):
            for r0 in range(0, B, MR):
                block_fn(h, Wp[p], out, r0, p * NR, K)

    @jit
    def numba_dot(h, W_T, out):
        np.dot(h, W_T, out)

    return {"axpy": axpy, "dot": dot, "block": block, "numba np.dot": numba_dot}


def rate(fn, args, flops: float) -> float:
    fn(*args)
    reps = max(5, int(5e8 / flops))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn(*args)
        best = min(best, (time.perf_counter() - start) / reps)
    return flops / best / 1e9


def main() -> None:
    from threadpoolctl import threadpool_limits

    kernels = build()
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        print(f"{'B x P x 4H':<18}" + "".join(f"{name:>14}" for name in [*kernels, "numpy.matmul"]) + "   (GFLOP/s, 1 thread)")
        for B, K, N in SHAPES:
            h = rng.random((B, K), dtype=np.float32)
            W_T = rng.random((K, N), dtype=np.float32)
            W = np.ascontiguousarray(W_T.T)
            Wp = np.ascontiguousarray(W_T.reshape(K, N // NR, NR).transpose(1, 0, 2))
            out = np.empty((B, N), np.float32)
            operand = {"axpy": W_T, "dot": W, "block": Wp, "numba np.dot": W_T}
            flops = 2.0 * B * K * N
            rates = []
            for name, fn in kernels.items():
                rates.append(rate(fn, (h, operand[name], out), flops))
                np.testing.assert_allclose(out, h @ W_T, rtol=1e-4)
            rates.append(rate(lambda a, b, o: np.matmul(a, b, out=o), (h, W_T, out), flops))
            print(f"{f'{B} x {K} x {N}':<18}" + "".join(f"{r:>14.1f}" for r in rates))


if __name__ == "__main__":
    main()
