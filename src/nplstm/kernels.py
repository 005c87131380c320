"""The compiled fused engine (numba): one direction of one layer, forward and backward.

The NumPy step loop in :mod:`nplstm.cell` / :mod:`nplstm.backward` is the
readable reference; this module computes the same equations faster when
numba and scipy are installed (``pip install 'nplstm[fast]'``).  Where the
time goes, and so how this is built:

* The recurrent GEMM ``h_{t-1} W_hᵀ`` is most of the work.  For batches of
  at most :data:`SMALL_BATCH` rows a compiled loop beats a BLAS call's fixed
  cost.  Mid-size products go to BLAS through numba's ``np.dot`` (scipy's
  cython BLAS) inside the compiled time loop.  Large products are faster in
  NumPy's own OpenBLAS, so there the time loop runs in Python, one compiled
  call per step (:func:`_steps_from_python`).
* Everything else of a step (adding the input projection, the clip, the four
  activations, ``c``, ``h``) is one compiled pass per row over contiguous
  memory, with no temporaries, instead of a dozen NumPy ufunc calls.
* NumPy's exp/tanh cost 1-4 ns per element; the hand-written float32
  versions below (Cody-Waite exp, Eigen's rational tanh) vectorise to
  0.3-0.5 ns.  They are within a few ulp; float64 uses an exp accurate to
  ~1 ulp, so the float64 engine matches the reference to 1e-12.
* Otherwise the whole time loop is one compiled call (the caller passes
  chunks of steps), so Python runs once per chunk, not once per step.
* Rows of a batch are independent through time, so with several threads a
  batch with small recurrent weights is split into slices that each run
  the whole loop (``nogil``) in their own thread with single-threaded BLAS;
  larger products are left to the BLAS's own threads (:func:`_slices`).
* A register-blocked numba microkernel for the per-step product was tried
  and reached at most half of OpenBLAS's rate (``python -m bench.microkernel``).

numba compiles with ``error_model="numpy"`` (no division checks) and
fastmath flags WITHOUT ``reassoc`` (reassociation could undo the exp's range
reduction) and without ``nnan``/``ninf`` (the float32-overflow case must
behave like the NumPy path), so its loops vectorise to AVX2/AVX-512.

``import nplstm`` never imports numba, and with the default "auto" backend
no call ever waits for it: :func:`use_kernel` sends every call to the
NumPy path until the engine is loaded, counts the time those calls cost,
and once that reaches about what loading costs (:data:`LOAD_AFTER_SECONDS`)
loads the engine in a background thread; every call after that runs
compiled.  A short script never pays for numba; a server making many short
calls ends up compiled within its first second or so.  :func:`warmup`
loads it up front (and waits) for servers that want it from the first call.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from . import layout

# numba and scipy are optional, and importing numba takes a while: look, don't import.
# numba's np.dot calls BLAS through scipy, so the engine needs both.
_HAVE_NUMBA = importlib.util.find_spec("numba") is not None and importlib.util.find_spec("scipy") is not None

#: Batches of at most this many active rows use a compiled loop for the
#: recurrent product instead of a BLAS call (measured: T=100, H=64, 1 thread,
#: B=4 0.58 ms looped against 0.45-1.0 ms with BLAS; B=4, H=256 8.4 ms against 20-35 ms).
SMALL_BATCH = 4

#: Recurrent flops per step from which the time loop runs in Python with
#: NumPy's GEMM (see _steps_from_python).
PY_STEP_MIN_FLOPS = 4e6

#: "auto" starts loading the engine (in a background thread) once the calls run
#: on the NumPy path in this process are estimated to have cost this long: about
#: what loading costs from numba's cache (importing numba and the first two
#: signatures: 0.55-0.61 s measured on the 2-core EPYC VM), so a process never
#: spends more than about twice the best possible time before it runs compiled.
LOAD_AFTER_SECONDS = 0.5

#: Rows and recurrent flops per thread below which splitting the batch over
#: threads does not pay (a thread hand-off costs 20-90 µs on the 2-core VM).
MIN_ROWS_PER_THREAD = 8
MIN_WORK_PER_THREAD = 8e6
#: Recurrent weights (H·P) above which the batch is not split over threads.
#: 0: never split, the default.  Splitting won alone (2 threads, T=100,
#: B=64, H=64: 2.5 ms split against 5.1 ms), but lost 3.5x in the benchmark
#: (41 ms against the NumPy path's 11.5): the caller's input projection runs
#: in NumPy's OpenBLAS, whose idle threads spin on the cores the slices need.
SLICE_MAX_WEIGHTS = 0

_backend = "auto"
_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_compile_lock = threading.Lock()
_compiled = False

# The "auto" policy's state: "cold" (NumPy path; counting its time), "loading"
# (a background thread compiles and exercises the engine), "ready", or "failed"
# (numba could not compile here: stay on NumPy, warn once).
_state = "cold"
_numpy_seconds = 0.0
_loader: threading.Thread | None = None
_state_lock = threading.Lock()
#: Called by the loader after compiling, with the engine forced on in its
#: thread, to load every specialisation the API uses (registered by nplstm.warmup).
_exercise: Callable[[], None] | None = None
_forced = threading.local()
#: The specialisations (dtype, training, variant) the loader has run: "auto" sends only these to the engine.
_loaded: set[tuple[Any, ...]] = set()


def available() -> bool:
    """Whether the compiled engine can run here (numba and scipy installed)."""
    return _HAVE_NUMBA


def set_backend(name: str) -> None:
    """Choose the engine: "numpy", "numba" (raises if missing) or "auto"."""
    global _backend
    if name not in ("numpy", "numba", "auto"):
        raise ValueError(f"backend must be 'numpy', 'numba' or 'auto'; got {name!r}")
    if name == "numba" and not _HAVE_NUMBA:
        raise RuntimeError("the numba backend needs numba and scipy: pip install 'nplstm[fast]'")
    _backend = name


def get_backend() -> str:
    """The engine chosen by :func:`set_backend` (or ``NPLSTM_BACKEND``)."""
    return _backend


def set_threads(n: int | None) -> None:
    """Threads the engine may use (None: the CPUs this process may run on)."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"threads must be an integer >= 1 or None; got {n!r}")
    _threads = None if n is None else int(n)


def get_threads() -> int:
    """Threads the engine uses: :func:`set_threads`, else ``NPLSTM_NUM_THREADS``, else the CPU count."""
    if _threads is not None:
        return _threads
    env = os.environ.get("NPLSTM_NUM_THREADS")
    if env and env.isdigit() and int(env) >= 1:
        return int(env)
    return _cpu_count()


@functools.lru_cache(maxsize=1)
def _cpu_count() -> int:
    """CPUs this process may run on (asked once: it is a system call, and forward asks on every call)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _backend_from_environment() -> None:
    name = os.environ.get("NPLSTM_BACKEND")
    if name:
        try:
            set_backend(name)
        except (ValueError, RuntimeError) as exc:
            warnings.warn(f"ignoring NPLSTM_BACKEND={name!r}: {exc}", RuntimeWarning, stacklevel=2)


def variant(*arrays: np.ndarray | None) -> tuple[Any, ...]:
    """What decides which compiled specialisation a call needs: each optional array's presence, rank and contiguity.

    numba compiles one specialisation per combination of argument types; an
    omitted (None) argument, or a strided view instead of a C-contiguous
    array, is another type.
    """
    return tuple(None if a is None else (a.dtype.char, a.ndim, a.flags.c_contiguous) for a in arrays)


def use_kernel(T: int, B: int, H: int, P: int, I: int, dtype: np.dtype, *, training: bool, key: tuple[Any, ...] = ()) -> bool:
    """Whether a run of this shape should go through the compiled engine.

    "numpy" and a missing numba say no; "numba" says yes (the first call
    compiles, or loads numba's cache, and waits for it).  "auto" says yes
    once the engine is loaded, at every size (it is faster at every measured
    shape).  Until then it says no, adds the NumPy path's estimated time for
    this call (about 20 µs of ufunc overhead per step, twice that when
    training, plus the products at 20 GFLOP/s) to the process's total, and
    once the total reaches :data:`LOAD_AFTER_SECONDS` starts loading the
    engine in a background thread: no call waits for numba.  ``key`` (from
    :func:`variant`) names the specialisation the call needs; "auto" uses
    the engine only for those the loader has already loaded, so an unusual
    call stays on NumPy rather than wait for a compilation.
    """
    global _numpy_seconds
    if _backend == "numpy" or not _HAVE_NUMBA:
        return False
    if getattr(_forced, "on", False):
        _forced.keys.add((np.dtype(dtype).char, training, key))
        return True
    if _backend == "numba":
        return True
    if (np.dtype(dtype).char, training, key) in _loaded:
        return True
    if _state == "cold":
        per_step = (40e-6 if training else 20e-6) + 8.0 * B * H * (I + P) / 20e9 * (3 if training else 1)
        _numpy_seconds += T * per_step
        if _numpy_seconds >= LOAD_AFTER_SECONDS:
            _start_loading()
    return False


def engine_state() -> str:
    """The "auto" policy's state: "cold", "loading", "ready" or "failed"."""
    return _state


def _start_loading() -> threading.Thread | None:
    """Start the background loader once per process; returns it (None when already ready or failed)."""
    global _state, _loader
    with _state_lock:
        if _state == "cold":
            _state = "loading"
            _loader = threading.Thread(target=_load, name="nplstm-engine-loader", daemon=True)
            _loader.start()
        return _loader if _state == "loading" else None


def exercised(run: Callable[[], object]) -> None:
    """Run ``run`` with the engine forced on in this thread; then let "auto" use what it loaded."""
    _forced.on, _forced.keys = True, set()
    try:
        run()
        _loaded.update(_forced.keys)
    finally:
        _forced.on = False


def _load() -> None:
    """Compile the kernels and run the API once per specialisation, in this (background) thread."""
    global _state
    try:
        _compile()
        if _exercise is not None:
            _exercise()
    except Exception as exc:  # numba present but unusable here: the NumPy path is still right
        _state = "failed"
        warnings.warn(f"nplstm: the compiled engine could not be loaded ({type(exc).__name__}: {exc}); staying on NumPy", RuntimeWarning, stacklevel=1)
    else:
        _state = "ready"


def load_engine(*, wait: bool = True, timeout: float | None = None) -> bool:
    """Load the compiled engine now (see :func:`nplstm.warmup`); True when it is ready."""
    if not _HAVE_NUMBA:
        return False
    loader = _start_loading()
    if wait and loader is not None:
        loader.join(timeout)
    return _state == "ready"


def _reset_in_child() -> None:
    """A forked child has no loader thread: start over (cold) unless the engine was ready."""
    global _state, _loader, _numpy_seconds
    if _state == "loading":
        _state, _loader, _numpy_seconds = "cold", None, 0.0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


# --------------------------------------------------------------------------
# Compiled code.  The functions below are plain Python (readable, and
# runnable uncompiled for debugging); _compile() replaces each one marked
# @_jit by its numba-compiled version in this module's namespace, which is
# where numba resolves the calls between them.

_JIT_NAMES: list[str] = []


def split_gates(a, H):
    """:func:`nplstm.layout.split_gates`; _compile() binds its compiled version here."""
    return layout.split_gates(a, H)

_INLINE_NAMES: set[str] = set()


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    _JIT_NAMES.append(fn.__name__)
    return fn


def _jit_inline(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Per-element helpers: inlined by numba, so the loops around them vectorise."""
    _INLINE_NAMES.add(fn.__name__)
    return _jit(fn)


# The constants are typed per precision: a Python float in a float32 loop
# would promote the whole loop to float64 (half the vector width, plus conversions).
#
# exp: Cody-Waite reduction x = n·ln2 + r, |r| <= ln2/2 (ln2 split in a part
# exact in few bits and a correction), a polynomial for e^r, and 2^n built
# from its bit pattern.  float32: Cephes' degree-5 minimax polynomial (about
# 1 ulp).  float64: Taylor's series to degree 13 (remainder < 4e-18 relative).
_F32 = np.float32
_ONE32, _HALF32, _TWO32 = _F32(1.0), _F32(0.5), _F32(2.0)
_LOG2E_32, _LN2_HI_32, _LN2_LO_32 = _F32(1.44269504088896341), _F32(0.693359375), _F32(-2.12194440e-4)
_EP0, _EP1, _EP2, _EP3, _EP4, _EP5 = (_F32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_LOG2E_64, _LN2_HI_64, _LN2_LO_64 = 1.4426950408889634, 6.93145751953125e-1, 1.42860682030941723212e-6
# Eigen's rational tanh for float32 (odd p(x)/q(x), a few ulp); beyond ±7.905 tanh is ±1 to float32 precision.
_TANH_CLAMP_32, _NINE32 = _F32(7.90531110763549805), _F32(9.0)
_TA13, _TA11, _TA9, _TA7, _TA5, _TA3, _TA1 = (_F32(v) for v in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_TB6, _TB4, _TB2, _TB0 = (_F32(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))


@_jit_inline
def _exp32_parts(x, mantissa, bits, j):  # pragma: no cover - compiled
    """float32 e^x (x clipped to ±88) as mantissa[j] · 2^n, with 2^n's bit pattern in bits[j].

    Split in two so that both halves are plain arithmetic that vectorises;
    the caller reads 2^n back through a float view of ``bits``.
    """
    n = np.floor(x * _LOG2E_32 + _HALF32)
    r = x - n * _LN2_HI_32
    r = r - n * _LN2_LO_32
    p = _EP0
    p = p * r + _EP1
    p = p * r + _EP2
    p = p * r + _EP3
    p = p * r + _EP4
    p = p * r + _EP5
    mantissa[j] = p * r * r + r + _ONE32
    bits[j] = (np.int32(n) + np.int32(127)) << np.int32(23)


@_jit_inline
def _exp64_parts(x, mantissa, bits, j):  # pragma: no cover - compiled
    """float64 e^x (x clipped to ±708) as mantissa[j] · 2^n, like :func:`_exp32_parts`."""
    n = np.floor(x * _LOG2E_64 + 0.5)
    r = x - n * _LN2_HI_64
    r = r - n * _LN2_LO_64
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    mantissa[j] = p * r + 1.0
    bits[j] = (np.int64(n) + 1023) << 52


@_jit_inline
def _tanh32(x):  # pragma: no cover - compiled
    """Eigen's float32 tanh: odd rational approximation on the clamped input.

    Beyond ±9, where float32 tanh rounds to exactly ±1, it returns ±1 (the
    clamped rational stops 4 ulp short), as the NumPy path does when saturated.
    """
    if x >= _NINE32:
        return _ONE32
    if x <= -_NINE32:
        return -_ONE32
    x = min(max(x, -_TANH_CLAMP_32), _TANH_CLAMP_32)
    x2 = x * x
    p = _TA13
    p = p * x2 + _TA11
    p = p * x2 + _TA9
    p = p * x2 + _TA7
    p = p * x2 + _TA5
    p = p * x2 + _TA3
    p = p * x2 + _TA1
    q = _TB6
    q = q * x2 + _TB4
    q = q * x2 + _TB2
    q = q * x2 + _TB0
    return x * p / q


@_jit_inline
def _sigmoid_(a, n, limit, mantissa, bits, scale):  # pragma: no cover - compiled
    """a[:n] = σ(clip(a[:n])) in place, as 1 / (1 + e^-a): accurate in relative terms near 0 and near 1."""
    if a.itemsize == 4:
        for j in range(n):
            _exp32_parts(-min(max(a[j], -limit), limit), mantissa, bits, j)
        for j in range(n):
            a[j] = _ONE32 / (_ONE32 + mantissa[j] * scale[j])
    else:
        for j in range(n):
            _exp64_parts(-min(max(a[j], -limit), limit), mantissa, bits, j)
        for j in range(n):
            a[j] = 1.0 / (1.0 + mantissa[j] * scale[j])


@_jit_inline
def _tanh_(a, n, limit, mantissa, bits, scale):  # pragma: no cover - compiled
    """a[:n] = tanh(clip(a[:n])) in place (one array, so LLVM vectorises without alias checks).

    float32: Eigen's rational form.  float64: 1 - 2/(1 + e^{2x}), whose
    absolute error (~2e-16) is what the 1e-12 contract needs.
    """
    if a.itemsize == 4:
        for j in range(n):
            a[j] = _tanh32(a[j])
    else:
        for j in range(n):
            _exp64_parts(2.0 * min(max(a[j], -limit), limit), mantissa, bits, j)
        for j in range(n):
            a[j] = 1.0 - 2.0 / (1.0 + mantissa[j] * scale[j])


@_jit
def _recurrent_product(h, W_T, out, n):  # pragma: no cover - compiled
    """out[:n] = h[:n] @ W_T: BLAS, or for a few rows a loop over rows of W_T.

    For a handful of rows the BLAS call's fixed cost dominates.  The loop
    adds four rows of W_T at a time into each output row, so every load and
    store of ``out`` carries four multiply-adds, all over contiguous memory.
    """
    if n > SMALL_BATCH:
        np.dot(h[:n], W_T, out[:n])
        return
    K, N = W_T.shape
    for r in range(n):
        out[r, :] = 0.0
    k = 0
    while k + 4 <= K:
        w0 = W_T[k]
        w1 = W_T[k + 1]
        w2 = W_T[k + 2]
        w3 = W_T[k + 3]
        for r in range(n):
            h0 = h[r, k]
            h1 = h[r, k + 1]
            h2 = h[r, k + 2]
            h3 = h[r, k + 3]
            o = out[r]
            for j in range(N):
                o[j] += h0 * w0[j] + h1 * w1[j] + h2 * w2[j] + h3 * w3[j]
        k += 4
    for k in range(k, K):
        w = W_T[k]
        for r in range(n):
            hk = h[r, k]
            o = out[r]
            for j in range(N):
                o[j] += hk * w[j]


@_jit
def _active(batch_sizes, t, row0, row1):  # pragma: no cover - compiled
    """Active rows at step t among rows [row0, row1), counted from row0."""
    if batch_sizes is None:
        return row1 - row0
    return min(row1, max(row0, batch_sizes[t])) - row0


@_jit
def _forward_loop(proj, W_hT, h_all, c_all, outputs, gates_t, c_t, h_t, hfull_t, W_hrT, batch_sizes, limit, row0, row1, t_begin, t_end, product_given, act, hfull, work, bits):  # pragma: no cover - compiled
    """Steps [t_begin, t_end) of :func:`forward` for rows [row0, row1) (one thread's slice).

    Rows are addressed by slicing inside (not by the caller) so that every
    slice stays C-contiguous for BLAS.  act (rows, 4H) holds pre-activations
    then activations; with ``product_given`` the caller has already put the
    first step's recurrent product h @ W_hT there.  hfull (rows, H) is
    scratch for the projection, work (2, 4H) for the exp, bits an integer
    view of work[1].
    """
    H4 = proj.shape[2]
    H = H4 // 4
    h = h_all[row0:row1]
    c = c_all[row0:row1]
    mantissa = work[0]  # the exp's mantissas and 2^n (bits is an integer view of scale) for one row
    scale = work[1]
    hf = h if W_hrT is None else hfull  # no projection: o ⊙ tanh(c) is h itself
    for t in range(t_begin, t_end):
        n = _active(batch_sizes, t, row0, row1)
        if not (product_given and t == t_begin):
            _recurrent_product(h, W_hT, act, n)
        proj_t = proj[t, row0:row1]
        for r in range(n):
            ar = act[r]
            pr = proj_t[r]
            for j in range(H4):
                ar[j] += pr[j]
            # f, i, o = σ(a), g = tanh(a) (gate order f, i, o, g)
            _sigmoid_(ar, 3 * H, limit, mantissa, bits, scale)
            g_pre = ar[3 * H :]
            _tanh_(g_pre, H, limit, mantissa, bits, scale)
            f, i, o, g = split_gates(ar, H)
            cr = c[r]
            for j in range(H):
                cr[j] = f[j] * cr[j] + i[j] * g[j]
            hr = hf[r]
            hr[:] = cr
            _tanh_(hr, H, limit, mantissa, bits, scale)
            for j in range(H):
                hr[j] *= o[j]
        if W_hrT is not None:
            np.dot(hfull[:n], W_hrT, h[:n])
        if outputs is not None:
            out_t = outputs[t, row0:row1]
            out_t[:n] = h[:n]
            out_t[n:] = 0.0
        if gates_t is not None:
            gates_t[t, row0 : row0 + n] = act[:n]
            c_t[t, row0 : row0 + n] = c[:n]
            h_t[t, row0 : row0 + n] = h[:n]
            if hfull_t is not None:
                hfull_t[t, row0 : row0 + n] = hfull[:n]


@_jit
def _backward_loop(gates_t, c_t, hfull_t, W_h, W_hr, c0, d_outputs, dh_all, dc_all, d_pre, dW_hr, batch_sizes, limit, row0, row1, t_begin, t_end, product_left, dhf, tanh_c, work, bits):  # pragma: no cover - compiled
    """Steps t_end-1 down to t_begin of :func:`backward` for rows [row0, row1).

    dW_hr (P, H) is accumulated (the caller zeroes it).  With ``product_left``
    the last step's recurrent product dh = d_pre[t_begin] @ W_h is left to the
    caller.  dhf (rows, H), tanh_c (H,), work (2, 4H) are scratch.
    """
    H4 = d_pre.shape[2]
    H = H4 // 4
    dh = dh_all[row0:row1]
    dc = dc_all[row0:row1]
    mantissa = work[0]
    scale = work[1]
    dhfull = dh if W_hr is None else dhf
    for t in range(t_end - 1, t_begin - 1, -1):
        n = _active(batch_sizes, t, row0, row1)
        if d_outputs is not None:
            dh[:n] += d_outputs[t, row0 : row0 + n]
        if W_hr is not None:
            # h = h_full W_hrᵀ: dW_hr += dhᵀ h_full, dL/dh_full = dh W_hr
            dW_hr += np.dot(dh[:n].T, hfull_t[t, row0 : row0 + n])
            np.dot(dh[:n], W_hr, dhf[:n])
        d_pre_t = d_pre[t, row0:row1]
        gates_tt = gates_t[t, row0:row1]
        c_tt = c_t[t, row0:row1]
        c_prev_t = c0[row0:row1] if t == 0 else c_t[t - 1, row0:row1]
        for r in range(n):
            f, i, o, g = split_gates(gates_tt[r], H)
            d_f, d_i, d_o, d_g = split_gates(d_pre_t[r], H)
            c_prev = c_prev_t[r]
            tanh_c[:] = c_tt[r]
            _tanh_(tanh_c, H, limit, mantissa, bits, scale)
            dhr = dhfull[r]
            dcr = dc[r]
            for j in range(H):
                tc = tanh_c[j]
                oj = o[j]
                d_o[j] = dhr[j] * tc * oj * (1.0 - oj)
                dcj = dcr[j] + dhr[j] * oj * (1.0 - tc * tc)
                fj = f[j]
                ij = i[j]
                gj = g[j]
                d_f[j] = dcj * c_prev[j] * fj * (1.0 - fj)
                d_i[j] = dcj * gj * ij * (1.0 - ij)
                d_g[j] = dcj * ij * (1.0 - gj * gj)
                dcr[j] = dcj * fj  # dL/dc_{t-1}
        d_pre_t[n:] = 0.0
        if not (product_left and t == t_begin):
            _recurrent_product(d_pre_t, W_h, dh, n)  # dL/dh_{t-1} for the active rows


def _compile() -> None:
    """Import numba and compile (or load from its cache) the kernels, once per process."""
    global _compiled
    if _compiled:
        return
    with _compile_lock:
        if _compiled:
            return
        import numba
        import scipy.linalg.cython_blas  # noqa: F401 - numba's np.dot calls BLAS through it; load it now so threadpoolctl sees it

        namespace = globals()
        # the project's one gate-slice helper (plain slicing, compiles as is)
        namespace["split_gates"] = numba.njit(inline="always")(layout.split_gates)
        flags = {"nsz", "arcp", "contract", "afn"}  # no reassoc, no nnan/ninf: see the module docstring
        for name in _JIT_NAMES:
            jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=flags, inline="always" if name in _INLINE_NAMES else "never")
            namespace[name] = jit(namespace[name])
        _compiled = True


# --------------------------------------------------------------------------
# The interface the layer calls.


def _slices(T: int, B: int, H: int, P: int, batch_sizes: np.ndarray | None) -> list[tuple[int, int]]:
    """Row ranges for the threads: contiguous, and balanced by active steps when lengths vary.

    Handing a slice to another thread and waiting for it costs tens of µs,
    so a call is split only when every thread gets enough rows and work.
    And only for small recurrent weights: a larger per-step product is better
    parallelised by the BLAS itself (measured alone on 2 threads, T=100:
    B=64, H=512 took 85 ms unsplit with 2 BLAS threads against 115 ms
    split, B=16, H=256 8.2 against 14.1; B=64, H=64 took 2.5 ms split
    against 5.1 ms unsplit).
    """
    work = 8.0 * T * B * H * P  # flops of the recurrent products
    threads = min(get_threads(), B // MIN_ROWS_PER_THREAD, int(work // MIN_WORK_PER_THREAD))
    if threads <= 1 or H * P > SLICE_MAX_WEIGHTS:
        return [(0, B)]
    if batch_sizes is None:
        bounds = [round(k * B / threads) for k in range(threads + 1)]
    else:
        # row r is active for (#steps with batch_sizes > r) steps: split that work evenly
        steps = np.searchsorted(-np.asarray(batch_sizes), -np.arange(B), side="left")
        cum = np.concatenate([[0], np.cumsum(steps)])
        bounds = [int(np.searchsorted(cum, k * cum[-1] / threads)) for k in range(threads + 1)]
        bounds[0], bounds[-1] = 0, B
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _run_sliced(job: Callable[[int, int], None], slices: list[tuple[int, int]]) -> None:
    """Run ``job(start, stop)`` for every slice, in parallel threads when there are several."""
    global _pool
    if len(slices) == 1:
        job(*slices[0])
        return
    if _pool is None or _pool._max_workers < len(slices):
        _pool = ThreadPoolExecutor(max_workers=len(slices), thread_name_prefix="nplstm")
    with _single_threaded_blas():
        futures = [_pool.submit(job, a, b) for a, b in slices[1:]]
        job(*slices[0])
        for fut in futures:
            fut.result()


_blas_controller: Any = None


class _single_threaded_blas:
    """Limit BLAS to one thread while the slices run (they are the parallelism), if threadpoolctl is there."""

    def __enter__(self) -> None:
        global _blas_controller
        self._limit = None
        if _blas_controller is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                _blas_controller = False
            else:
                _blas_controller = ThreadpoolController()
        if _blas_controller:
            self._limit = _blas_controller.limit(limits=1, user_api="blas")

    def __exit__(self, *exc: object) -> None:
        if self._limit is not None:
            self._limit.restore_original_limits()


def _steps_from_python(rows: int, H: int, P: int) -> bool:
    """Whether to run the time loop in Python, one compiled call per step, so the recurrent GEMM can be NumPy's.

    NumPy's bundled OpenBLAS runs the per-step (rows, P) x (P, 4H) product
    faster than scipy's (which numba's np.dot calls) on this shape; once a
    step's product is large, that gain beats the ~5 µs of a compiled call
    per step.  Small products stay in the compiled loop on one thread.  On
    several threads every BLAS-sized product goes to NumPy: one BLAS thread
    pool, the one the caller's input projection uses, because scipy's pool
    spinning next to NumPy's on 2 cores cost up to 5x in the benchmark.
    Batches split over threads never loop in Python (they would queue on
    the GIL).  Measured alone on 2 threads: B=16, H=256 8.2 ms (against 11.5
    compiled, 14.1 split).
    """
    if rows <= SMALL_BATCH:
        return False
    return get_threads() > 1 or 8.0 * rows * H * P >= PY_STEP_MIN_FLOPS


def _active_rows(batch_sizes: np.ndarray | None, t: int, start: int, stop: int) -> int:
    """Active rows at step t among rows [start, stop) (as the compiled _active)."""
    if batch_sizes is None:
        return stop - start
    return min(stop, max(start, int(batch_sizes[t]))) - start


def _exp_work(n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Scratch for :func:`_exp_parts`: (2, n) floats and an integer view of its second row."""
    work = np.empty((2, n), dtype=dtype)
    return work, work[1].view(np.int64 if dtype.itemsize == 8 else np.int32)


def forward(
    proj: np.ndarray,
    W_hT: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    *,
    outputs: np.ndarray | None = None,
    tape: Any = None,
    W_hrT: np.ndarray | None = None,
    batch_sizes: np.ndarray | None = None,
    limit: float,
) -> None:
    """Run one direction of one layer over a chunk of steps, in place.

    Parameters
    ----------
    proj : (T, B, 4H) C-contiguous array
        ``x_t W_xᵀ + b`` for each step, gate blocks f, i, o, g.  Overwritten (scratch).
    W_hT : (P, 4H) C-contiguous array
        Recurrent weight, transposed.
    h : (B, P) array
    c : (B, H) array
        Initial state on entry, final state on exit.
    outputs : (T, B, P) array, optional
        Receives h_t; rows inactive at step t get 0.
    tape : object with ``gates``, ``c``, ``h``, ``h_full`` arrays, optional
        Filled for active rows (what :func:`backward` needs).
    W_hrT : (H, P) array, optional
        LSTMP projection, ``h = h_full @ W_hrT``.
    batch_sizes : (T,) int64 array, optional
        Non-increasing active row counts per step; inactive rows keep h, c.
    limit : float
        Pre-activation clip.
    """
    _compile()
    B = proj.shape[1]
    dt = proj.dtype
    if W_hrT is not None:
        W_hrT = np.ascontiguousarray(W_hrT)  # callers pass W_hr.T; BLAS wants one layout, and it is small
    if batch_sizes is not None:
        batch_sizes = np.ascontiguousarray(batch_sizes, dtype=np.int64)
    gates_t = c_t = h_t = hfull_t = None
    if tape is not None:
        gates_t, c_t, h_t = tape.gates, tape.c, tape.h
        hfull_t = tape.h_full if W_hrT is not None else None

    T, _, H4 = proj.shape
    H, P = H4 // 4, W_hT.shape[0]
    W_hT = np.ascontiguousarray(W_hT)

    slices = _slices(T, B, H, P, batch_sizes)
    python_loop = len(slices) == 1 and _steps_from_python(B, H, P)

    def job(start: int, stop: int) -> None:
        rows = stop - start
        act, hfull = np.empty((rows, H4), dtype=dt), np.empty((rows, H), dtype=dt)
        work, bits = _exp_work(H4, dt)
        args = (proj, W_hT, h, c, outputs, gates_t, c_t, h_t, hfull_t, W_hrT, batch_sizes, dt.type(limit), start, stop)
        if not python_loop:
            _forward_loop(*args, 0, T, False, act, hfull, work, bits)
            return
        h_rows = h[start:stop]
        for t in range(T):
            n = _active_rows(batch_sizes, t, start, stop)
            np.matmul(h_rows[:n], W_hT, out=act[:n])
            _forward_loop(*args, t, t + 1, True, act, hfull, work, bits)

    _run_sliced(job, slices)


def backward(
    tape: Any,
    W_h: np.ndarray,
    W_hr: np.ndarray | None,
    c0: np.ndarray,
    d_outputs: np.ndarray | None,
    dh: np.ndarray,
    dc: np.ndarray,
    d_pre: np.ndarray,
    *,
    dW_hr: np.ndarray | None = None,
    batch_sizes: np.ndarray | None = None,
) -> None:
    """Backpropagate through one run of :func:`forward`, in place.

    Parameters
    ----------
    tape : the tape :func:`forward` filled
    W_h : (4H, P) array
    W_hr : (P, H) array or None
    c0 : (B, H) array
        The initial cell state of the forward run.
    d_outputs : (T, B, P) array or None
        dL/dh_t.
    dh, dc : (B, P), (B, H) arrays
        dL/dh_T, dL/dc_T on entry (per row: at its last active step); dL/dh_0, dL/dc_0 on exit.
    d_pre : (T, B, 4H) array
        Receives dL/d(pre-activation), 0 for inactive rows.
    dW_hr : (P, H) array, optional
        Accumulates dL/dW_hr when projecting.
    batch_sizes : (T,) int64 array, optional
        As given to :func:`forward`.
    """
    _compile()
    B = d_pre.shape[1]
    dt = d_pre.dtype
    limit = _limit_of(dt)
    if batch_sizes is not None:
        batch_sizes = np.ascontiguousarray(batch_sizes, dtype=np.int64)
    T, _, H4 = d_pre.shape
    slices = _slices(T, B, H4 // 4, W_h.shape[1], batch_sizes)
    python_loop = len(slices) == 1 and _steps_from_python(B, H4 // 4, W_h.shape[1])
    partial_dW = [None if W_hr is None else np.zeros_like(W_hr) for _ in slices]
    index = {s: k for k, s in enumerate(slices)}
    hfull_t = tape.h_full if W_hr is not None else None
    W_h = np.ascontiguousarray(W_h)
    W_hr = None if W_hr is None else np.ascontiguousarray(W_hr)
    H = H4 // 4

    def job(start: int, stop: int) -> None:
        rows = stop - start
        dhf, tanh_c = np.empty((rows, H), dtype=dt), np.empty(H, dtype=dt)
        work, bits = _exp_work(H4, dt)
        args = (tape.gates, tape.c, hfull_t, W_h, W_hr, c0, d_outputs, dh, dc, d_pre, partial_dW[index[(start, stop)]], batch_sizes, dt.type(limit), start, stop)
        if not python_loop:
            _backward_loop(*args, 0, T, False, dhf, tanh_c, work, bits)
            return
        dh_rows = dh[start:stop]
        for t in range(T - 1, -1, -1):
            _backward_loop(*args, t, t + 1, True, dhf, tanh_c, work, bits)
            n = _active_rows(batch_sizes, t, start, stop)
            np.matmul(d_pre[t, start : start + n], W_h, out=dh_rows[:n])  # dL/dh_{t-1}

    _run_sliced(job, slices)
    if dW_hr is not None and W_hr is not None:
        for part in partial_dW:
            dW_hr += part


def _limit_of(dtype: np.dtype) -> float:
    """The pre-activation clip of the exp-based sigmoid (:data:`nplstm.layout.PREACT_LIMIT`)."""
    return layout.PREACT_LIMIT[np.dtype(dtype)]


_backend_from_environment()
