"""The compiled engine: its interface, and the policy deciding when it runs.

The loop over time (:mod:`nplstm.loop`) runs one layer and direction either
step by step in NumPy (the readable reference, :func:`nplstm.cell.step_`)
or through this engine, the same equations compiled with numba when numba
and scipy are installed (``pip install 'nplstm[fast]'``).  The loop is the
only module that calls it.

The engine's interface, which any compiled implementation provides:

* :func:`forward` ``(WT, b, W_hr, x, h, c, *, proj, outputs, tape, batch_sizes)``:
  the standard cell over all steps of ``x`` with the fused weights
  ``WT = [W_h; W_x]ᵀ`` (P + I, 4H) and bias ``b``, gates in
  :data:`nplstm.layout.GATE_ORDER`, updating ``h``, ``c`` in place, writing
  ``outputs`` (zeros for inactive rows) and the ``tape`` (gates, c, h,
  h_full of the active rows).
* :func:`backward` ``(tape, W_hT, W_hr, c0, d_outputs, dh, dc, d_pre, *, dW_hr, batch_sizes)``:
  every step of that run backwards, leaving dL/d(pre-activation) in ``d_pre``
  (the loop turns it into weight and input gradients with one GEMM each).
* Lengths: ``batch_sizes[t]`` rows are active at step t (non-increasing,
  rows sorted longest first); the others keep their state.
* The pre-activation clip of the exp-based sigmoid is
  :data:`nplstm.layout.PREACT_LIMIT` of the dtype.
* :func:`variant` names what makes a call need another compiled
  specialisation; the "auto" policy sends only loaded ones to the engine.

The implementation is the packed engine (:mod:`nplstm._packed`, backwards
:mod:`nplstm._packed_grad`): the weights packed once per weight version into
register-tile panels, ``[h_{t-1}, x_t]`` times the fused weights in one
product per step starting from the bias, one activation pass per row.
With several threads (:func:`set_threads`) the forward of a large enough
batch is split into slices of rows, each running the whole loop
(``nogil``) in a thread of one pool while BLAS is held to one thread
(:func:`_slices`, thresholds measured below); the backward runs on one
thread, its weight-gradient GEMMs (the loop's, after the steps) on BLAS's.

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
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .checks import thread_count

__all__ = [
    "available", "set_backend", "get_backend", "set_threads", "get_threads", "variant", "use_kernel",
    "engine_state", "exercised", "load_engine", "forward", "backward", "LOAD_AFTER_SECONDS",
    "LOADER_PACING", "MIN_ROWS_PER_THREAD", "MIN_WORK_PER_THREAD", "SLICE_MAX_WEIGHTS", "FOLD_ONE_ROW_MAX_BYTES", "folds_inputs",
]


# numba and scipy are optional, and importing numba takes a while: look, don't import.
# numba's np.dot calls BLAS through scipy, so the engine needs both.
_HAVE_NUMBA = importlib.util.find_spec("numba") is not None and importlib.util.find_spec("scipy") is not None

#: Fused weight bytes up to which one row (B = 1) folds its input into the
#: step's product as several rows do (they stay in L2 between steps); larger
#: weights project the inputs up front unless I <= P/4.  Measured on the EPYC
#: VM, float32, T=100, one row, folded/projected time: I=1 H=32 0.94, I=64 H=64
#: 0.93, H=256 0.98, H=512 0.82 (I=64), but I=H=512 (8 MiB of weights) 1.33.
FOLD_ONE_ROW_MAX_BYTES = 1 << 20

#: "auto" starts loading the engine (in a background thread) once the calls run
#: on the NumPy path in this process are estimated to have cost this long: about
#: what loading costs from numba's cache (importing numba and the packed engine,
#: then its first specialisation: 0.53-0.55 s measured on the 2-core EPYC VM), so a process never
#: spends more than about twice the best possible time before it runs compiled.
LOAD_AFTER_SECONDS = 0.5

#: Rows and recurrent flops per thread below which splitting the batch over
#: threads does not pay (a thread hand-off costs 20-90 µs on the 2-core VM).
#: Measured (EPYC Zen 4 VM, 2 cores shared with other jobs, float32, T=100,
#: I=64, forward, 2-thread time / 1-thread time): H=64 B=16 1.11 (26 Mflop
#: per thread: not split), B=64 0.54, B=256 0.53; H=256 B=16 0.58, B=64
#: 0.51, B=256 0.49; H=512 B=16 1.13, B=64 0.93, B=256 1.18.
MIN_ROWS_PER_THREAD = 8
MIN_WORK_PER_THREAD = 5e7
#: Recurrent weights (H·P) above which the batch is not split over threads:
#: from H = 512 the fused weights (4.7 MiB) no longer stay in a core's L2 and
#: two threads streaming them gained nothing (numbers above).
SLICE_MAX_WEIGHTS = 256 * 256

_backend = "auto"
_threads: int | None = None
_pool: ThreadPoolExecutor | None = None

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
#: The specialisations calls have asked for while not loaded.
_wanted: set[tuple[Any, ...]] = set()
#: Once every wanted specialisation is loaded, the background loader pauses this many times as
#: long as it took between the remaining ones: numba loads its cache holding the GIL, and a
#: serving thread's compiled calls would otherwise wait for it (0.1-0.3 ms per call measured).
#: 0 while someone waits for the engine (load_engine / warmup).
LOADER_PACING = 4.0
_pacing = LOADER_PACING


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
    _threads = thread_count(n)


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


def folds_inputs(B: int, I: int, P: int, H: int, itemsize: int) -> bool:
    """Whether the engine folds ``x_t`` into each step's product (``[h, x] @ [W_h; W_x]ᵀ``) rather than projecting all steps first.

    Several rows always fold; one row folds while its fused weights fit
    :data:`FOLD_ONE_ROW_MAX_BYTES` or the inputs are narrow (I <= P/4).
    """
    return B > 1 or 4 * I <= P or (P + I) * 4 * H * itemsize <= FOLD_ONE_ROW_MAX_BYTES


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
    wanted = (np.dtype(dtype).char, training, key)
    if wanted in _loaded:
        return True
    if _state == "loading":
        _wanted.add(wanted)  # the loader goes at full speed until these are loaded
    if _state == "cold":
        _wanted.add(wanted)
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
    start = time.perf_counter()
    try:
        run()
        _loaded.update(_forced.keys)
    finally:
        _forced.on = False
    if _pacing and threading.current_thread() is _loader and _wanted <= _loaded:
        time.sleep(_pacing * (time.perf_counter() - start))


def _load() -> None:
    """Compile the kernels and run the API once per specialisation, in this (background) thread."""
    global _state
    try:
        _packed_modules()  # imports numba; numba compiles (or loads its cache) on the exercise's calls
        if _exercise is not None:
            _exercise()
    except Exception as exc:  # numba present but unusable here: the NumPy path is still right
        _state = "failed"
        warnings.warn(f"nplstm: the compiled engine could not be loaded ({type(exc).__name__}: {exc}); staying on NumPy", RuntimeWarning, stacklevel=1)
    else:
        _state = "ready"


def load_engine(*, wait: bool = True, timeout: float | None = None) -> bool:
    """Load the compiled engine now (see :func:`nplstm.warmup`); True when it is ready."""
    global _pacing
    if not _HAVE_NUMBA:
        return False
    if wait:
        _pacing = 0.0  # someone is waiting: no pauses
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
# The interface the layer calls.


def _slices(T: int, B: int, H: int, P: int, batch_sizes: np.ndarray | None) -> list[tuple[int, int]]:
    """Row ranges for the threads: contiguous, and balanced by active steps when lengths vary.

    Handing a slice to another thread and waiting for it costs tens of µs,
    so a call is split only when every thread gets enough rows and work
    (:data:`MIN_ROWS_PER_THREAD`, :data:`MIN_WORK_PER_THREAD`) and the
    recurrent weights are at most :data:`SLICE_MAX_WEIGHTS`.
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


def forward(
    WT: np.ndarray,
    b: np.ndarray,
    W_hr: np.ndarray | None,
    x: np.ndarray | None,
    h: np.ndarray,
    c: np.ndarray,
    *,
    proj: np.ndarray | None = None,
    outputs: np.ndarray | None = None,
    tape: Any = None,
    batch_sizes: np.ndarray | None = None,
) -> None:
    """Run one direction of one layer over all steps of ``x``, in place.

    Parameters
    ----------
    WT : (P + I, 4H) array
        The fused weights ``[W_h; W_x]ᵀ`` (:meth:`nplstm.params.DirectionParams.fused_matrix`).
    b : (4H,) array
        The fused bias.
    W_hr : (P, H) array or None
        LSTMP projection, ``h = h_full @ W_hrᵀ``.
    x : (T, B, I) array, or None with ``proj``
        Inputs (any strides).
    h : (B, P) C-contiguous array
    c : (B, H) C-contiguous array
        Initial state on entry, final state on exit.
    proj : (T, B, 4H) array, optional
        ``x_t W_xᵀ + b`` already computed (then only the first P rows of ``WT`` are read).
    outputs : (T, B, P) array, optional
        Receives h_t; rows inactive at step t get 0.
    tape : object with ``gates``, ``c``, ``h``, ``h_full`` arrays, optional
        Filled for active rows (what :func:`backward` needs).
    batch_sizes : (T,) int64 array, optional
        Non-increasing active row counts per step; inactive rows keep h, c.
    """
    packed = _packed_modules()[0]
    weights = packed.packed(WT, b, W_hr)
    if batch_sizes is not None:
        batch_sizes = np.ascontiguousarray(batch_sizes, dtype=np.int64)
    B = h.shape[0]
    fold = proj is None and folds_inputs(B, weights.I, weights.P, weights.H, h.itemsize)
    slices = _slices(x.shape[0], B, weights.H, weights.P, batch_sizes) if fold and B >= 2 * MIN_ROWS_PER_THREAD else [(0, B)]  # type: ignore[union-attr]
    if len(slices) == 1:
        packed.forward(weights, x, h, c, proj=proj, outputs=outputs, tape=tape, batch_sizes=batch_sizes, fold=fold)
        return
    _run_sliced(lambda a, z: packed.forward(weights, x, h, c, outputs=outputs, tape=tape, batch_sizes=batch_sizes,
                                            fold=True, rows=(a, z)), slices)


@functools.lru_cache(maxsize=1)
def _packed_modules() -> tuple[Any, Any]:
    """The packed engine's modules (importing them imports numba: only once the engine runs)."""
    from . import _packed, _packed_grad

    return _packed, _packed_grad


def backward(
    tape: Any,
    W_hT: np.ndarray,
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
    W_hT : (P, 4H) array
        The recurrent weight, transposed (the first P rows of the fused matrix).
    W_hr : (P, H) array or None
    c0 : (B, H) array
        The initial cell state of the forward run.
    d_outputs : (T, B, P) array or None
        dL/dh_t.
    dh, dc : (B, P), (B, H) C-contiguous arrays
        dL/dh_T, dL/dc_T on entry (per row: at its last active step); dL/dh_0, dL/dc_0 on exit.
    d_pre : (T, B, 4H) C-contiguous array
        Receives dL/d(pre-activation), 0 for inactive rows.
    dW_hr : (P, H) array, optional
        Accumulates dL/dW_hr (needed with a projection).
    batch_sizes : (T,) int64 array, optional
        As given to :func:`forward`.
    """
    _packed_modules()[1].backward(tape, W_hT, W_hr, c0, d_outputs, dh, dc, d_pre, dW_hr, batch_sizes)


_backend_from_environment()
