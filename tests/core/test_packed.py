"""The packed engine (nplstm._packed) against the project's NumPy path, and its weight cache.

Reference: :func:`nplstm.loop.run_sequence` on the "numpy" backend (the
readable step loop the whole package is tested against), on the same
DirectionParams, in the same dtype: float32 within 1e-5 and float64 within
1e-12 of it, relative to the outputs' scale.  Every batch size from 1 to 9
(the register tiles cover 1-6 rows and the remainders), hidden sizes that
are and are not multiples of the panel width, variable lengths, the LSTMP
projection, non-zero initial states, the tape backward needs, a reversed
(negative-stride) input, both product modes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nplstm import kernels
from nplstm.loop import Trace, run_sequence
from nplstm.params import DirectionParams

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(scope="module")
def pk():
    from nplstm import _packed

    return _packed


def rel_err(a, ref):
    """Largest error relative to the reference's scale (outputs are O(1))."""
    if np.size(ref) == 0:
        return 0.0
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def layer(rng, I, H, P, dtype):
    lw = DirectionParams(I, H, proj_size=P, rng=rng, dtype=np.dtype(dtype))
    lw.b[...] = rng.uniform(-0.5, 0.5, lw.b.shape)  # the constructor's biases are zero: make them count
    return lw


def sizes_for(rng, T, B):
    """Non-increasing active rows per step, the longest row running all T steps, some rows ending early."""
    lengths = np.sort(rng.integers(0, T + 1, size=B))[::-1]
    lengths[0] = T
    return np.array([(lengths > t).sum() for t in range(T)], dtype=np.int64)


def reference(lw, x, h0, c0, batch_sizes=None):
    """run_sequence on the NumPy path: outputs, trace, h, c."""
    T, B, _ = x.shape
    h, c = h0.copy(), c0.copy()
    out = np.zeros((T, B, lw.state_size), lw.dtype)
    trace = Trace.empty(T, B, lw.hidden_size, lw.state_size, lw.dtype, projection=lw.proj_size > 0, general=False)
    before = kernels.get_backend()
    kernels.set_backend("numpy")
    try:
        run_sequence(x, lw, h, c, outputs=out, trace=trace, batch_sizes=batch_sizes)
    finally:
        kernels.set_backend(before)
    return out, trace, h, c


def run_packed(pk, lw, x, h0, c0, batch_sizes=None, **options):
    T, B = (x if x is not None else options["proj"]).shape[:2]
    h, c = h0.copy(), c0.copy()
    out = np.full((T, B, lw.state_size), np.nan, lw.dtype)
    tape = Trace.empty(T, B, lw.hidden_size, lw.state_size, lw.dtype, projection=lw.proj_size > 0, general=False)
    weights = pk.packed(lw.fused_matrix(), lw.b, lw.W_hr)
    pk.forward(weights, x, h, c, outputs=out, tape=tape, batch_sizes=batch_sizes, **options)
    return out, tape, h, c


def problem(seed, T, B, I, H, P, dtype, lengths):
    rng = np.random.default_rng(seed)
    lw = layer(rng, I, H, P, dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.uniform(-1, 1, (B, lw.state_size)).astype(dtype)
    c0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
    return lw, x, h0, c0, (sizes_for(rng, T, B) if lengths else None)


def assert_matches(got, ref, dtype):
    tol = TOL[np.dtype(dtype)]
    out, tape, h, c = got
    ref_out, ref_trace, ref_h, ref_c = ref
    assert out.dtype == np.dtype(dtype)
    for name, a, b in [("outputs", out, ref_out), ("h", h, ref_h), ("c", c, ref_c), ("tape.gates", tape.gates, ref_trace.gates),
                       ("tape.c", tape.c, ref_trace.c), ("tape.h", tape.h, ref_trace.h)]:
        assert rel_err(a, b) <= tol, name
    if ref_trace.h_full is not None:
        assert rel_err(tape.h_full, ref_trace.h_full) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [7, 16, 33])
@pytest.mark.parametrize("B", range(1, 10))
def test_every_batch_size_matches_the_numpy_path(pk, B, H, dtype):
    lw, x, h0, c0, _ = problem(B * 100 + H, 6, B, 5, H, 0, dtype, False)
    assert_matches(run_packed(pk, lw, x, h0, c0), reference(lw, x, h0, c0), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H,P", [(9, 4), (16, 16), (20, 19), (24, 3)])
@pytest.mark.parametrize("B", range(1, 10))
def test_lengths_and_projection_match_the_numpy_path(pk, B, H, P, dtype):
    lw, x, h0, c0, sizes = problem(B * 1000 + H + P, 7, B, 4, H, P, dtype, True)
    assert_matches(run_packed(pk, lw, x, h0, c0, sizes), reference(lw, x, h0, c0, sizes), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [2, 5, 7])
def test_both_product_modes_and_given_projections_agree(pk, B, dtype):
    """fold=True ([h, x] in one product), fold=False (x W_xᵀ + b by NumPy first), and a caller's proj."""
    lw, x, h0, c0, sizes = problem(B, 5, B, 6, 21, 0, dtype, True)
    ref = reference(lw, x, h0, c0, sizes)
    assert_matches(run_packed(pk, lw, x, h0, c0, sizes, fold=True), ref, dtype)
    assert_matches(run_packed(pk, lw, x, h0, c0, sizes, fold=False), ref, dtype)
    W_xT, _, b = lw.fused()
    proj = (x @ W_xT + b).astype(dtype)
    assert_matches(run_packed(pk, lw, None, h0, c0, sizes, proj=proj), ref, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,I,H", [(2, 300, 20), (7, 250, 30), (9, 600, 17), (1, 10, 300)])
def test_long_products_run_in_blocks_of_k(pk, B, I, H, dtype):
    """K = H + I above pk.K_BLOCK: the product runs in 2-3 blocks of k, each after the first adding onto the last."""
    lw, x, h0, c0, sizes = problem(B + I, 3, B, I, H, 0, dtype, True)
    assert lw.hidden_size + lw.input_size > pk.K_BLOCK or B == 1
    assert_matches(run_packed(pk, lw, x, h0, c0, sizes), reference(lw, x, h0, c0, sizes), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_reversed_input_view_runs_backwards_in_time(pk, dtype):
    lw, x, h0, c0, _ = problem(3, 6, 4, 5, 12, 0, dtype, False)
    assert not x[::-1].flags.c_contiguous
    assert_matches(run_packed(pk, lw, x[::-1], h0, c0), reference(lw, np.ascontiguousarray(x[::-1]), h0, c0), dtype)


def reversed_view(trace):
    """The trace seen backwards in time: every buffer a negative-stride view (what a backwards direction writes into)."""
    return Trace(*(None if a is None else a[::-1] for a in (trace.gates, trace.c, trace.h, trace.h_full, trace.pre)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reversed_outputs_and_tape_as_a_backwards_direction_passes_them(pk, dtype):
    """A backwards direction may hand x[::-1], outputs[::-1] and a reversed tape: views with negative strides."""
    lw, x, h0, c0, sizes = problem(12, 5, 6, 3, 10, 4, dtype, True)
    T, B = x.shape[:2]
    out = np.zeros((T, B, lw.state_size), dtype)
    trace = Trace.empty(T, B, 10, lw.state_size, np.dtype(dtype), projection=True, general=False)
    h, c = h0.copy(), c0.copy()
    pk.forward(pk.packed(lw.fused_matrix(), lw.b, lw.W_hr), x[::-1], h, c, outputs=out[::-1], tape=reversed_view(trace), batch_sizes=sizes)
    ref_out, ref_trace, ref_h, ref_c = reference(lw, np.ascontiguousarray(x[::-1]), h0, c0, sizes)
    got = (np.ascontiguousarray(out[::-1]), reversed_view(trace), h, c)
    assert_matches(got, (ref_out, ref_trace, ref_h, ref_c), dtype)


def test_long_float32_sequence_at_the_benchmark_sizes(pk):
    """T = 100 at the issue's widths (64 inputs, H = 64 and 80): float32 stays within 1e-5 of the NumPy path."""
    for B, H in [(1, 64), (4, 80), (7, 64)]:
        lw, x, h0, c0, _ = problem(B, 100, B, 64, H, 0, np.float32, False)
        lw.WT[...] *= 0.5  # keep the state away from saturation, where every step's rounding counts
        assert_matches(run_packed(pk, lw, x, h0, c0), reference(lw, x, h0, c0), np.float32)


def test_projection_mode_in_chunks_is_the_same(pk, monkeypatch):
    """One row: the input projections are computed a chunk of steps at a time; the chunking changes nothing.

    (Up to rounding: BLAS may sum a one-step product in another order than a many-step one.)
    """
    lw, x, h0, c0, sizes = problem(11, 9, 1, 3, 10, 4, np.float64, False)
    whole = run_packed(pk, lw, x, h0, c0)
    monkeypatch.setattr(pk, "PROJECTION_CHUNK_BYTES", 1)
    chunked = run_packed(pk, lw, x, h0, c0)
    for a, b in [(whole[0], chunked[0]), (whole[2], chunked[2]), (whole[3], chunked[3]), (whole[1].gates, chunked[1].gates)]:
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize("T", [0, 3])
def test_no_steps_and_finished_rows_keep_their_state(pk, T):
    lw, x, h0, c0, _ = problem(5, T, 3, 2, 6, 0, np.float64, False)
    sizes = np.array([2, 0, 0][:T], dtype=np.int64)
    out, _, h, c = run_packed(pk, lw, x, h0, c0, sizes)
    ref_out, _, ref_h, ref_c = reference(lw, x, h0, c0, sizes)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, ref_h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, ref_c, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(h[2], h0[2])  # never active


# --------------------------------------------------------------- the cache
def test_every_kind_of_weight_write_is_seen(pk):
    """Assignment, in-place writes through a gate view, the bias, W_hr, and an optimiser-style update all repack."""
    rng = np.random.default_rng(2)
    lw, x, h0, c0, _ = problem(2, 4, 3, 5, 8, 3, np.float64, False)
    first = pk.packed(lw.fused_matrix(), lw.b, lw.W_hr)
    assert pk.packed(lw.fused_matrix(), lw.b, lw.W_hr) is first and first.version == 1  # unchanged: cached, not repacked
    writes = [
        lambda: setattr(lw, "Wf", rng.standard_normal(lw.Wf.shape)),
        lambda: lw.Wc.__setitem__((0, 0), 3.0),  # through a view
        lambda: lw.Wo.__setitem__((7, 5), 0.0),
        lambda: lw.Wo.__setitem__((7, 5), -0.0),  # a sign-only change (bits, not values, are compared)
        lambda: setattr(lw, "bi", np.ones(8)),
        lambda: lw.W_hr.__isub__(0.1),
        lambda: lw.WT.__imul__(0.9),
    ]
    for k, write in enumerate(writes):
        write()
        weights = pk.packed(lw.fused_matrix(), lw.b, lw.W_hr)
        assert weights is first and weights.version == k + 2
        assert_matches(run_packed(pk, lw, x, h0, c0), reference(lw, x, h0, c0), np.float64)


def test_each_weight_storage_has_its_own_packing(pk):
    rng = np.random.default_rng(4)
    a, b = layer(rng, 3, 5, 0, np.float32), layer(rng, 3, 5, 0, np.float32)
    pa, pb = pk.packed(a.fused_matrix(), a.b), pk.packed(b.fused_matrix(), b.b)
    assert pa is not pb
    frozen = a.snapshot()  # a copy: another storage, another packing, same numbers
    pf = pk.packed(frozen.fused_matrix(), frozen.b)
    assert pf is not pa
    np.testing.assert_array_equal(pf.panels, pa.panels)
    key = id(frozen.WT)
    del frozen, pf
    import gc

    gc.collect()
    assert key not in pk._cache  # the packing goes with its weights


def test_packing_layout(pk):
    """Panels of NR columns, k-major, aligned, zero-padded to a multiple of NR."""
    W = np.arange(3 * 20, dtype=np.float32).reshape(3, 20)
    panels, Npad = pk.pack_panels(W, 16)
    assert Npad == 32 and panels.ctypes.data % 64 == 0
    p = panels.reshape(2, 3, 16)
    np.testing.assert_array_equal(p[0], W[:, :16])
    np.testing.assert_array_equal(p[1, :, :4], W[:, 16:])
    assert not p[1, :, 4:].any()


# ---------------------------------------------------------- hostile values
@pytest.mark.parametrize("dtype,big", [(np.float64, 1e300), (np.float32, 1e30), (np.float32, np.inf)])
def test_extreme_pre_activations_saturate_without_warnings(pk, dtype, big):
    lw, x, h0, c0, _ = problem(8, 3, 5, 2, 4, 0, dtype, False)
    lw.b[...] = (np.sign(np.random.default_rng(1).standard_normal(lw.b.shape)) * big).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, tape, h, c = run_packed(pk, lw, x, h0, c0)
    assert np.isfinite(out).all() and np.isfinite(tape.gates).all()
    ref_out, _, _, ref_c = reference(lw, x, h0, c0)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-6)
    np.testing.assert_allclose(c, ref_c, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_stays_nan(pk, dtype):
    """A NaN input poisons its row, as on the NumPy path: never a finite number in its place."""
    lw, x, h0, c0, _ = problem(9, 3, 4, 2, 5, 0, dtype, False)
    x[1, 2, 0] = np.nan
    out, _, h, c = run_packed(pk, lw, x, h0, c0)
    with np.errstate(invalid="ignore"):
        ref_out, _, ref_h, _ = reference(lw, x, h0, c0)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref_out))
    assert np.isnan(out[1:, 2]).all() and np.isfinite(out[:, [0, 1, 3]]).all()


# ------------------------------------------------ the accuracy contract, through the public API
# The engine forced on ("numba" backend) against the NumPy path ("numpy"), both in the model's dtype, on the same
# model: every batch size from 1 to 9, a hidden size that is not a multiple of the panel width (13), variable
# lengths, the projection, both directions, two layers; forward outputs and final states, and every gradient.
API_TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture
def engine_calls(monkeypatch):
    """Counts of the engine's forward and backward calls (to know the "numba" runs did go through it)."""
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        original = getattr(kernels, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernels, name, spy)
    before = kernels.get_backend()
    yield calls
    kernels.set_backend(before)


def both_paths(run):
    """``run()`` with the engine forced on, then on the NumPy path."""
    kernels.set_backend("numba")
    fast = run()
    kernels.set_backend("numpy")
    return fast, run()


def assert_close(fast, ref, tol, what):
    if isinstance(ref, dict):
        assert fast.keys() == ref.keys()
        for k in ref:
            assert_close(fast[k], ref[k], tol, f"{what}[{k}]")
        return
    if isinstance(ref, (tuple, list)):
        for k, (f, r) in enumerate(zip(fast, ref)):
            assert_close(f, r, tol, f"{what}[{k}]")
        return
    if ref is None:
        assert fast is None, what
        return
    assert np.asarray(fast).dtype == np.asarray(ref).dtype, what
    assert rel_err(fast, np.asarray(ref, np.float64)) <= tol, what


def random_lengths(rng, T, B):
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    return lengths


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", range(1, 10))
def test_stacked_lstm_forward_and_gradients_match_the_numpy_path(B, dtype, engine_calls):
    from nplstm import StackedLSTM

    rng = np.random.default_rng(100 + B)
    T, I, H = 7, 5, 13
    tol = API_TOL[np.dtype(dtype)]
    for options, lengths in [({}, None), ({"bidirectional": True, "proj_size": 6}, random_lengths(rng, T, B)),
                             ({"proj_size": 4}, None), ({"bidirectional": True}, random_lengths(rng, T, B))]:
        stack = StackedLSTM(I, H, num_layers=2, seed=B, dtype=dtype, **options)
        for p in stack.parameters().values():
            p[...] = rng.uniform(-0.6, 0.6, p.shape)
        x = rng.normal(size=(T, B, I)).astype(dtype)
        P = options.get("proj_size") or H
        D = 2 if options.get("bidirectional") else 1
        h0, c0 = rng.normal(size=(2 * D, B, P)).astype(dtype), rng.normal(size=(2 * D, B, H)).astype(dtype)
        d_out = rng.normal(size=(T, B, D * P)).astype(dtype)
        d_h, d_c = rng.normal(size=h0.shape).astype(dtype), rng.normal(size=c0.shape).astype(dtype)

        def run():
            inference = stack.forward(x, (h0, c0), lengths=lengths)
            out, state, tape = stack.forward_train(x, (h0, c0), lengths=lengths)
            return inference, (out, state), stack.backward(tape, d_out, d_h, d_c)

        calls = dict(engine_calls)
        fast, ref = both_paths(run)
        assert engine_calls["forward"] > calls["forward"] and engine_calls["backward"] > calls["backward"]
        assert_close(fast, ref, tol, str(options))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 2, 3, 5, 8, 9])
def test_lstm_layer_forward_and_backward_match_the_numpy_path(B, dtype, engine_calls):
    from nplstm import LSTM

    rng = np.random.default_rng(B)
    T, I, H = 9, 3, 21
    lstm = LSTM(I, H, seed=B, dtype=dtype, batch_first=True)
    for p in lstm.engine.parameters().values():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = random_lengths(rng, T, B)
    d_out = rng.normal(size=(B, T, H)).astype(dtype)

    def run():
        first = lstm.forward(x, lengths=lengths)
        last = lstm.forward(x, lengths=lengths, return_sequences=False)
        out, h, c, tape = lstm.forward_train(x, lengths=lengths)
        return first, last, (out, h, c), lstm.backward(d_out, tape=tape)

    fast, ref = both_paths(run)
    assert engine_calls["forward"] and engine_calls["backward"]
    assert_close(fast, ref, API_TOL[np.dtype(dtype)], "LSTM")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequence_model_training_matches_the_numpy_path(dtype, engine_calls):
    """fit (Adam, mini-batches of 1-9 rows, lengths, two bidirectional projected layers): the same weights after it."""
    from nplstm import SequenceModel, fit

    rng = np.random.default_rng(4)
    N, T, I = 45, 6, 3
    X = rng.normal(size=(N, T, I)).astype(dtype)
    Y = rng.normal(size=(N, 2)).astype(dtype)
    lengths = random_lengths(rng, T, N)

    def run():
        model = SequenceModel(I, 11, 2, num_layers=2, bidirectional=True, proj_size=5, seed=0, dtype=dtype)
        grads = []
        for B in range(1, 10):  # one backward per batch size, then a few epochs whose last batch is a remainder
            _, _, tape = model.forward_train(X[:B], lengths=lengths[:B])
            grads.append(model.backward(tape, np.ones((B, 2), dtype)))
        fit(model, X, Y, lengths=lengths, epochs=3, batch_size=7, seed=1, progress=False)
        return grads, dict(model.parameters()), model.predict(X, lengths=lengths)

    fast, ref = both_paths(run)
    assert engine_calls["forward"] and engine_calls["backward"]
    # float32: three epochs of Adam compound rounding differences of ~1e-7 per step, so the weights are held to 1e-4
    assert_close(fast[0], ref[0], API_TOL[np.dtype(dtype)], "gradients")
    assert_close(fast[1:], ref[1:], 1e-4 if dtype == np.float32 else 1e-10, "after fit")
