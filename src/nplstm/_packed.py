"""The packed engine: one layer and direction over time, with its recurrent weights packed once (numba).

Where :mod:`nplstm.kernels` hands the per-step product ``h_{t-1} W_hᵀ`` to
BLAS (which repacks the whole weight on every call, once per step), this
module packs the weights once per weight version and runs its own
register-blocked product over the packed copy (issue 20):

* **Panels.**  A (K, N) right-hand side is stored as N/NR panels of NR
  columns (NR = two vectors: 16 float32, 8 float64), each panel k-major and
  contiguous, 64-byte aligned; N is padded with zero columns to a multiple
  of NR (so any H works: the padded columns compute zeros nobody reads).
* **Tiles.**  The product is cut in MR rows x NP panels; each tile keeps
  MR·2·NP vector accumulators in registers (8-12 of the 16 ymm registers),
  streams its panels once over k and broadcasts one left-hand value per
  row and k: one FMA per loaded weight vector and row.  One row (B = 1)
  runs 1x4-panel tiles (eight independent FMA chains).  Every tile sums
  over k in the same order, so a row's result does not depend on the batch
  it is in.  Tiles are written with explicit vectors
  (:mod:`nplstm._packed_simd`), generated from one template below.
* **[h; x] in one product.**  nplstm stores the fused weight as
  ``[W_h; W_x]ᵀ`` (K = P + I rows, h first), so with z = [h_{t-1}, x_t]
  one product gives all four gates, its accumulators starting from the
  bias: no (T, B, 4H) projection buffer and no separate bias pass
  ("fold" mode).  One row with large weights streams them from memory at
  every step, so there (:func:`nplstm.kernels.folds_inputs` decides) the
  input projection of all steps is one packed GEMM up front and the
  per-step product reads only the W_h rows of the panels ("projection"
  mode, also what a caller that has the projections already uses).
* **One activation pass per row** (:mod:`nplstm._packed_act`: exp-based σ with the pre-activation
  clip, Eigen's float32 tanh, the float64 tanh through exp: the formulas of
  :mod:`nplstm.kernels`), writing c in place and h straight into the next
  step's z row; a projection (LSTMP) is one more packed product.

The packing is cached per weight array and kept equal to the weights the
caller passes: every call compares the weights bit for bit with the copy
the panels were made from (one vectorised pass over both, a few µs at
H = 64; see :func:`packed`) and repacks when anything changed, so a write
into a weight view, an assignment, or an optimiser step is always seen.

This module imports numba at import time: import it only once the engine
is chosen.  Both dtypes; no peepholes or other cell variants (the caller
keeps those on its general path).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from llvmlite import binding as _llvm

from ._packed_act import activate_row
from ._packed_simd import at, data, lanes, vbroadcast, vfma, vload, vstore
from .layout import PREACT_LIMIT

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"nsz", "arcp", "contract", "afn"})
_INLINE: dict[str, Any] = dict(_JIT, inline="always")

#: Panel alignment in bytes (a cache line).
ALIGN = 64
#: Packed weights per block of panels that all row blocks visit before the next (fits L2 with the rows).
PANEL_BLOCK_BYTES = 192 << 10
#: Whether the host has 32 vector registers (AVX-512VL), so 4x2 and 6x2-panel tiles keep their accumulators in registers.
WIDE_TILES = bool(_llvm.get_host_cpu_features().get("avx512vl", False))
#: Most k (rows of the packed weights) a tile runs over at once: 256 k of a panel are 16 KiB, in L1 with the rows.
K_BLOCK = 256
#: Bytes of input projections computed per NumPy GEMM in projection mode (bounds memory at large T).
PROJECTION_CHUNK_BYTES = 4 << 20


def panel_width(dtype: np.dtype) -> int:
    """Columns per panel: two 256-bit vectors (16 float32, 8 float64)."""
    return 64 // np.dtype(dtype).itemsize


# ------------------------------------------------------------------ tiles
# The tile template: MR rows x NP panels.  Accumulator a{r}_{q} holds row r,
# columns q·L .. q·L+L-1 of the tile (2 vectors per panel), initialised from
# ``ini`` (a bias row with ldi = 0, or the output itself with ldi = ldo).
def _tile_source(MR: int, NP: int) -> str:
    Q = 2 * NP
    lines = [f"def _tile_{MR}_{NP}(K, h, ldh, w, ps, out, ldo, ini, ldi):", "    L = lanes(w)", "    NR = 2 * L"]
    for r in range(MR):
        for q in range(Q):
            lines.append(f"    a{r}_{q} = vload(ini, {r} * ldi + {q} * L)")
    lines.append("    for k in range(K):")
    for q in range(Q):
        lines.append(f"        b{q} = vload(w, {q // 2} * ps + k * NR + {q % 2} * L)")
    for r in range(MR):
        lines.append(f"        x = vbroadcast(h, {r} * ldh + k)")
        for q in range(Q):
            lines.append(f"        a{r}_{q} = vfma(x, b{q}, a{r}_{q})")
    for r in range(MR):
        for q in range(Q):
            lines.append(f"    vstore(out, {r} * ldo + {q} * L, a{r}_{q})")
    return "\n".join(lines)


#: (MR, NP) tiles compiled: the row tiles of :func:`_config` and the remainder tiles (see :func:`_gemm`).
TILES = ((1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1), (5, 1), (6, 1), (4, 2), (6, 2))
_namespace: dict[str, Any] = {"lanes": lanes, "vload": vload, "vbroadcast": vbroadcast, "vfma": vfma, "vstore": vstore}
exec("\n\n".join(_tile_source(m, n) for m, n in TILES), _namespace)  # noqa: S102 - generated from the template above
_tile_1_1, _tile_1_2, _tile_1_3, _tile_1_4, _tile_2_1, _tile_2_2, _tile_3_1, _tile_4_1, _tile_5_1, _tile_6_1, _tile_4_2, _tile_6_2 = (
    numba.njit(**dict(_INLINE, cache=False))(_namespace[f"_tile_{m}_{n}"]) for m, n in TILES  # inlined: cached in their callers
)


@numba.njit(**_JIT)
def _tile(mr, np_, K, h, ldh, w, ps, out, ldo, ini, ldi):  # pragma: no cover - compiled
    """Dispatch to the compiled (mr, np_) tile; wider than compiled: one panel at a time."""
    if mr == 6:
        q = 0
        while q + 2 <= np_:
            _tile_6_2(K, h, ldh, at(w, q * ps), ps, at(out, q * 2 * lanes(w)), ldo, at(ini, q * 2 * lanes(w)), ldi)
            q += 2
        if q < np_:
            _tile_6_1(K, h, ldh, at(w, q * ps), ps, at(out, q * 2 * lanes(w)), ldo, at(ini, q * 2 * lanes(w)), ldi)
    elif mr == 5:
        for q in range(np_):
            _tile_5_1(K, h, ldh, at(w, q * ps), ps, at(out, q * 2 * lanes(w)), ldo, at(ini, q * 2 * lanes(w)), ldi)
    elif mr == 4:
        q = 0
        while q + 2 <= np_:
            _tile_4_2(K, h, ldh, at(w, q * ps), ps, at(out, q * 2 * lanes(w)), ldo, at(ini, q * 2 * lanes(w)), ldi)
            q += 2
        if q < np_:
            _tile_4_1(K, h, ldh, at(w, q * ps), ps, at(out, q * 2 * lanes(w)), ldo, at(ini, q * 2 * lanes(w)), ldi)
    elif mr == 3:
        for q in range(np_):
            _tile_3_1(K, h, ldh, at(w, q * ps), ps, at(out, q * 2 * lanes(w)), ldo, at(ini, q * 2 * lanes(w)), ldi)
    elif mr == 2:
        if np_ == 2:
            _tile_2_2(K, h, ldh, w, ps, out, ldo, ini, ldi)
        else:
            _tile_2_1(K, h, ldh, w, ps, out, ldo, ini, ldi)
    elif np_ == 4:
        _tile_1_4(K, h, ldh, w, ps, out, ldo, ini, ldi)
    elif np_ == 3:
        _tile_1_3(K, h, ldh, w, ps, out, ldo, ini, ldi)
    elif np_ == 2:
        _tile_1_2(K, h, ldh, w, ps, out, ldo, ini, ldi)
    else:
        _tile_1_1(K, h, ldh, w, ps, out, ldo, ini, ldi)


@numba.njit(**_JIT)
def _config(n):  # pragma: no cover - compiled
    """(MR, NP, blocked) for n rows: the tile shapes measured best on Zen 3 (issue 20's sweep); two panels
    per tile where the CPU has 32 vector registers (AVX-512VL: 16-24 accumulators do not spill)."""
    if n == 2:
        return 2, 2, False
    if n < 6:
        return (5 if n == 5 else 4), (2 if WIDE_TILES and n != 5 else 1), False
    return 6, (2 if WIDE_TILES else 1), True


@numba.njit(**_JIT)
def _gemm(n, K, N, h, ldh, w, ps, out, ldo, ini, ldi):  # pragma: no cover - compiled
    """out[:n, :N] = ini[:n] + h[:n, :K] @ W, W packed in panels of stride ps; all pointers, leading dims in elements.

    ``ldi = 0``: one init row (a bias, or zeros) for every row.  N is a
    multiple of the panel width.  k runs in blocks of at most
    :data:`K_BLOCK` (a panel's block plus the rows' stay in L1), each block
    after the first accumulating onto the output.
    """
    blocks = -(-K // K_BLOCK)
    kc = -(-K // blocks)
    NR = 2 * lanes(w)
    for k0 in range(0, K, kc):
        if k0 == 0:
            _gemm_block(n, min(kc, K), N, h, ldh, w, ps, out, ldo, ini, ldi)
        else:
            _gemm_block(n, min(kc, K - k0), N, at(h, k0), ldh, at(w, k0 * NR), ps, out, ldo, out, ldo)


@numba.njit(**_INLINE)
def _gemm_block(n, K, N, h, ldh, w, ps, out, ldo, ini, ldi):  # pragma: no cover - compiled
    """:func:`_gemm` for one block of k: rows in blocks of MR; the n % MR rows left use a tile of 1-2 rows over 2-4 panels."""
    L = lanes(w)
    NR = 2 * L
    P = N // NR
    MR, NP, blocked = _config(n)
    full = (n // MR) * MR
    if full:
        block = P
        if blocked:  # L2-sized blocks of panels, every row block per block (B = 64, H = 256: 1.2x faster)
            item = 4 if L == 8 else 8
            block = max(NP, (PANEL_BLOCK_BYTES // (K * NR * item)) // NP * NP)
        for p0 in range(0, P, block):
            p1 = min(P, p0 + block)
            for r in range(0, full, MR):
                for p in range(p0, p1, NP):
                    _tile(MR, min(NP, p1 - p), K, at(h, r * ldh), ldh, at(w, p * ps), ps,
                          at(out, r * ldo + p * NR), ldo, at(ini, r * ldi + p * NR), ldi)
    mr = n - full
    if mr:
        npr = 4 if mr == 1 else (2 if mr == 2 else 1)
        for p in range(0, P, npr):
            _tile(mr, min(npr, P - p), K, at(h, full * ldh), ldh, at(w, p * ps), ps,
                  at(out, full * ldo + p * NR), ldo, at(ini, full * ldi + p * NR), ldi)


def _align_empty(n: int, dtype: np.dtype) -> np.ndarray:
    """n elements of dtype starting on an ALIGN-byte boundary."""
    item = np.dtype(dtype).itemsize
    raw = np.empty(n * item + ALIGN, dtype=np.uint8)
    offset = (-raw.ctypes.data) % ALIGN
    return raw[offset : offset + n * item].view(dtype)


def pack_panels(W: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """(K, N) weights as panels: flat, aligned, panel p = columns [p·width, (p+1)·width) k-major; and padded N."""
    K, N = W.shape
    Npad = -(-N // width) * width
    out = _align_empty(K * Npad, W.dtype)
    panels = out.reshape(Npad // width, K, width)
    full = N // width
    panels[:full] = W[:, : full * width].reshape(K, full, width).transpose(1, 0, 2)
    if Npad > N:
        panels[full] = 0
        panels[full, :, : N - full * width] = W[:, full * width :]
    return out, Npad


def padded(v: np.ndarray, n: int) -> np.ndarray:
    """``v`` followed by zeros up to n elements, aligned."""
    out = _align_empty(n, v.dtype)
    out[: v.size] = v
    out[v.size :] = 0
    return out


# ------------------------------------------------------------ the time loop
@numba.njit(**_JIT)
def _run(x, proj, z, G, hf, hp, c, outputs, gates_t, c_t, h_t, hfull_t, batch_sizes, row0,
         panels, bias, hr_panels, zero, P, H, Npad, Ppad, fold, limit):  # pragma: no cover - compiled
    """Steps 0..T-1 of one layer and direction for rows row0 .. row0 + B - 1; see :func:`forward`.

    z (B, K = P + I) holds [h_{t-1}, x_t] per row (h first, as the fused
    weights); G (B, Npad) the pre-activations; hf (B, H) o ⊙ tanh(c) (h
    itself without a projection, then copied into z); hp (B, Ppad) the
    projected h; c (B, H) the slice's cell states.  x, outputs, the tape and
    batch_sizes are the whole batch's (row0 picks the slice: one thread's
    rows keep the arrays' types).  ``fold``: the product covers [h, x] from
    the bias; otherwise only h, from proj[t] (which holds x_t W_xᵀ + b, rows
    of this slice only).
    """
    T = x.shape[0] if fold else proj.shape[0]
    B, K = z.shape
    H4 = 4 * H
    NR = 2 * lanes(data(G))
    ps = K * NR
    ps_hr = H * NR
    Kuse = K if fold else P
    scratch = np.empty(H4, dtype=G.dtype)
    zp, Gp, wp, bp = data(z), data(G), data(panels), data(bias)
    r1 = row0 + B
    for t in range(T):
        n = B if batch_sizes is None else min(B, max(0, batch_sizes[t] - row0))
        e = row0 + n
        if fold:
            z[:n, P:] = x[t, row0:e]
            _gemm(n, Kuse, Npad, zp, K, wp, ps, Gp, Npad, bp, 0)
        elif proj.shape[2] == Npad:  # padded projections (from _project): the product starts from them
            _gemm(n, Kuse, Npad, zp, K, wp, ps, Gp, Npad, data(proj[t]), Npad)
        else:  # the caller's (T, B, 4H)
            G[:n, :H4] = proj[t, :n]
            _gemm(n, Kuse, Npad, zp, K, wp, ps, Gp, Npad, Gp, Npad)
        for r in range(n):
            activate_row(G[r], c[r], hf[r], H, limit, scratch if gates_t is None else gates_t[t, row0 + r])
        if hr_panels is None:
            z[:n, :P] = hf[:n]
        else:
            _gemm(n, H, Ppad, data(hf), H, data(hr_panels), ps_hr, data(hp), Ppad, data(zero), 0)
            z[:n, :P] = hp[:n, :P]
        if outputs is not None:
            outputs[t, row0:e] = z[:n, :P]
            outputs[t, e:r1] = 0
        if c_t is not None:
            c_t[t, row0:e] = c[:n]
        if h_t is not None:
            h_t[t, row0:e] = z[:n, :P]
        if hfull_t is not None:
            hfull_t[t, row0:e] = hf[:n]


@numba.njit(**_JIT)
def _project(x, panels, bias, P, out):  # pragma: no cover - compiled
    """out (rows, Npad) = x (rows, I) @ W_xᵀ + b: the packed tiles over the W_x rows of the panels (k = P .. P + I)."""
    rows, I = x.shape
    Npad = out.shape[1]
    NR = 2 * lanes(data(out))
    _gemm(rows, I, Npad, data(x), I, at(data(panels), P * NR), (P + I) * NR, data(out), Npad, data(bias), 0)


# ------------------------------------------------------------ packing and its cache
@numba.njit(**_JIT)
def _same_bits(a, b, c, ref):  # pragma: no cover - compiled
    """Whether ref is a, b, c concatenated (1-d unsigned arrays: the bits of float arrays, so NaN == NaN, -0 != +0)."""
    diff = ref[0] ^ ref[0]
    for j in range(a.size):
        diff |= a[j] ^ ref[j]
    for j in range(b.size):
        diff |= b[j] ^ ref[a.size + j]
    for j in range(c.size):
        diff |= c[j] ^ ref[a.size + b.size + j]
    return diff == 0


@dataclass
class PackedWeights:
    """One layer-direction's weights packed for :func:`forward`, with the copy they were packed from.

    ``WT`` (P + I, 4H): the fused ``[W_h; W_x]ᵀ`` as
    :meth:`nplstm.params.DirectionParams.fused_matrix` gives it; ``b`` (4H,);
    ``W_hr`` (P, H) or None.  ``version`` counts the packings (1 after
    the first; each detected change adds one).
    """

    P: int
    I: int
    H: int
    Npad: int
    Ppad: int
    panels: np.ndarray
    bias: np.ndarray
    hr_panels: np.ndarray | None
    zero: np.ndarray
    bits: np.ndarray
    source: tuple[np.ndarray, np.ndarray, np.ndarray | None]
    version: int = 0
    #: Per thread: the row buffers of the last batch size it ran (see :func:`_buffers`).
    local: threading.local = field(default_factory=threading.local)

    @property
    def dtype(self) -> np.dtype:
        return self.panels.dtype

    def matches(self, WT: np.ndarray, b: np.ndarray, W_hr: np.ndarray | None) -> bool:
        """Whether the packed copy holds exactly these weights (bit for bit)."""
        sWT, _, shr = self.source
        if WT.shape != sWT.shape or WT.dtype != sWT.dtype or (W_hr is None) != (shr is None):
            return False
        hr = _bits(W_hr) if W_hr is not None else self.bits[:0]
        return bool(_same_bits(_bits(WT), _bits(b), hr, self.bits))

    @classmethod
    def of(cls, WT: np.ndarray, b: np.ndarray, W_hr: np.ndarray | None) -> PackedWeights:
        """Pack these weights (a new packing, not cached)."""
        H4 = WT.shape[1]
        P = W_hr.shape[0] if W_hr is not None else H4 // 4
        empty = np.empty(0, dtype=WT.dtype)
        new = cls(P, WT.shape[0] - P, H4 // 4, 0, 0, empty, empty, None, empty, empty, (empty, empty, None))
        new.repack(WT, b, W_hr)
        return new

    def repack(self, WT: np.ndarray, b: np.ndarray, W_hr: np.ndarray | None) -> None:
        """Pack these weights (and keep a copy of them to compare against)."""
        WT, b = _contiguous(WT), _contiguous(b)
        H4 = 4 * self.H
        width = panel_width(WT.dtype)
        self.panels, self.Npad = pack_panels(WT, width)
        self.bias = padded(b.reshape(H4), self.Npad)
        self.hr_panels = None
        if W_hr is not None:
            self.hr_panels, self.Ppad = pack_panels(np.ascontiguousarray(W_hr.T), width)
        self.zero = np.zeros(max(self.Npad, self.Ppad), dtype=WT.dtype)
        # one flat copy of the bits packed (WT, b, W_hr), compared by matches(); source views it as floats
        parts = [WT, b.reshape(H4)] + ([] if W_hr is None else [_contiguous(W_hr)])
        self.bits = np.concatenate([_bits(v) for v in parts])
        floats = self.bits.view(WT.dtype)
        n1, n2 = WT.size, WT.size + H4
        self.source = (floats[:n1].reshape(WT.shape), floats[n1:n2], None if W_hr is None else floats[n2:].reshape(W_hr.shape))
        self.version += 1


def _bits(a: np.ndarray) -> np.ndarray:
    """A float array's bits as a 1-d unsigned array (a view when contiguous)."""
    return _contiguous(a).reshape(-1).view(np.uint32 if a.itemsize == 4 else np.uint64)


def _contiguous(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _root(a: np.ndarray) -> Any:
    """The array that owns ``a``'s memory (views of one weight storage share it)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


#: id(weight storage) -> (weak reference to it, its packing); an entry leaves with its storage.
_cache: dict[int, tuple[weakref.ref[Any], PackedWeights]] = {}
_cache_lock = threading.Lock()


def packed(WT: np.ndarray, b: np.ndarray, W_hr: np.ndarray | None = None) -> PackedWeights:
    """The packed form of these weights: cached per weight storage, repacked whenever a value changed.

    Parameters
    ----------
    WT : (P + I, 4H) array
        The fused ``[W_h; W_x]ᵀ`` (:meth:`nplstm.params.DirectionParams.fused_matrix`), gates f, i, o, g.
    b : (4H,) or (4, H, 1) array
        The fused bias.
    W_hr : (P, H) array, optional
        The LSTMP projection.

    The cache is keyed by the array owning ``WT``'s memory (weakly: it goes
    with the weights).  Every call compares the weights with the copy they
    were packed from, bit for bit (one vectorised pass: about as costly as
    reading them twice); a difference repacks.  So writes through views,
    assignments and optimiser steps are all seen, and nothing needs to
    tell this cache.
    """
    key = _root(WT)
    with _cache_lock:
        found = _cache.get(id(key))
        entry = found[1] if found is not None and found[0]() is key else None
        if entry is not None and entry.matches(WT, b, W_hr):
            return entry
        if entry is None or entry.source[0].shape != WT.shape or entry.dtype != WT.dtype or (W_hr is None) != (entry.hr_panels is None):
            entry = PackedWeights.of(WT, b, W_hr)
            _cache[id(key)] = (weakref.ref(key), entry)
            weakref.finalize(key, _cache.pop, id(key), None)
        else:
            entry.repack(WT, b, W_hr)
    return entry


def forward(
    weights: PackedWeights,
    x: np.ndarray | None,
    h: np.ndarray,
    c: np.ndarray,
    *,
    proj: np.ndarray | None = None,
    outputs: np.ndarray | None = None,
    tape: Any = None,
    batch_sizes: np.ndarray | None = None,
    fold: bool | None = None,
    rows: tuple[int, int] | None = None,
) -> None:
    """Run one layer and direction over all steps of ``x``, updating ``h`` and ``c`` in place.

    Parameters
    ----------
    weights : PackedWeights
        From :func:`packed` (called right before, so it matches the weights).
    x : (T, B, I) array, or None with ``proj``
        Inputs in the weights' dtype; any strides (``x[::-1]`` runs backwards in time).
    h : (B, P) C-contiguous array
    c : (B, H) C-contiguous array
        Initial states on entry, final states on exit (a row's state stops at its last active step).
    proj : (T, B, 4H) array, optional
        ``x_t W_xᵀ + b`` already computed: then only ``h W_hᵀ`` is a per-step product.
    outputs : (T, B, P) array, optional
        Receives h_t (0 for rows inactive at t).
    tape : object with ``gates`` (T, B, 4H), ``c`` (T, B, H), ``h`` (T, B, P), ``h_full`` (T, B, H) or None, optional
        Receives, for active rows, the activations f, i, o, g, the cell
        states, h, and (with a projection) o ⊙ tanh(c): what backward needs.
    batch_sizes : (T,) int64 array, optional
        Non-increasing active rows per step (rows sorted by length).
    fold : bool, optional
        Fold the input projection into the step (default: when B >= 2 and no ``proj``;
        :func:`nplstm.kernels.forward` decides by :func:`nplstm.kernels.folds_inputs`).
    rows : (start, stop), optional
        Run only these rows of the batch (one thread's share; folded mode only).
        ``h`` and ``c`` are still the whole batch's.
    """
    dt = weights.dtype
    row0, row1 = (0, h.shape[0]) if rows is None else rows
    B = row1 - row0
    P, H, I = weights.P, weights.H, weights.I
    if fold is None:
        fold = proj is None and B >= 2
    if proj is None and not fold:
        assert x is not None
        T = x.shape[0]
        chunk = max(1, min(T, PROJECTION_CHUNK_BYTES // max(1, B * weights.Npad * dt.itemsize)))
        if chunk < T:  # bounded memory: the loop runs chunk by chunk
            for t0 in range(0, T, chunk):
                sl = slice(t0, min(T, t0 + chunk))
                forward(weights, x[sl], h, c, outputs=None if outputs is None else outputs[sl], tape=_tape_slice(tape, sl),
                        batch_sizes=None if batch_sizes is None else batch_sizes[sl], fold=False)
            return
        proj = _align_empty(T * B * weights.Npad, dt).reshape(T, B, weights.Npad)
        _project(np.ascontiguousarray(x).reshape(T * B, I), weights.panels, weights.bias, P, proj.reshape(T * B, weights.Npad))
    if row0 and not fold:
        raise ValueError("a slice of rows runs only with the input projection folded into the step")
    z, G, hf, hp, nothing, limit = _buffers(weights, B)
    z[:, :P] = h[row0:row1]
    if batch_sizes is not None:
        batch_sizes = np.ascontiguousarray(batch_sizes, dtype=np.int64)
    gates_t = c_t = h_t = hfull_t = None
    if tape is not None:
        gates_t, c_t, h_t = tape.gates, tape.c, tape.h
        hfull_t = tape.h_full if weights.hr_panels is not None else None
    _run(x if fold else nothing, nothing if fold else proj, z, G, hf, hp, c[row0:row1], outputs, gates_t, c_t, h_t, hfull_t,
         batch_sizes, row0, weights.panels, weights.bias, weights.hr_panels, weights.zero, P, H, weights.Npad, weights.Ppad, fold, limit)
    h[row0:row1] = z[:, :P]


def _buffers(weights: PackedWeights, B: int) -> tuple[Any, ...]:
    """This thread's row buffers for B rows: z (B, P + I), G (B, Npad, aligned), hf (B, H), hp (B, Ppad), an empty
    stand-in, and the clip limit; kept on the weights per thread, so repeated calls of one size allocate nothing."""
    found = getattr(weights.local, "buffers", None)
    if found is not None and found[0].shape[0] == B:
        return found
    dt = weights.dtype
    found = (np.zeros((B, weights.P + weights.I), dtype=dt), _align_empty(B * weights.Npad, dt).reshape(B, weights.Npad),
             np.empty((B, weights.H), dtype=dt), np.empty((B, weights.Ppad), dtype=dt), np.empty((0, 0, 0), dtype=dt),
             dt.type(PREACT_LIMIT[dt]))
    weights.local.buffers = found
    return found


def _tape_slice(tape: Any, sl: slice) -> Any:
    if tape is None:
        return None
    return type(tape)(tape.gates[sl], tape.c[sl], tape.h[sl], None if tape.h_full is None else tape.h_full[sl])
