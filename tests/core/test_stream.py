"""Streaming: step() one input at a time equals forward() over the sequence."""

import tracemalloc

import numpy as np
import pytest

from nplstm import LSTM, kernels

BACKENDS = ["numpy"] + (["numba"] if kernels.available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    before = kernels.get_backend()
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend(before)


@pytest.mark.parametrize("proj_size", [0, 2])
def test_steps_equal_forward_batched(backend, proj_size, rng):
    lstm = LSTM(3, 5, seed=0, proj_size=proj_size)
    lstm.bi = rng.normal(size=5)
    x = rng.normal(size=(7, 4, 3))
    h0, c0 = rng.normal(size=(4, lstm.state_size)), rng.normal(size=(4, 5))
    outputs, h, c = lstm.forward(x, h0, c0)
    state = lstm.initial_state(h0, c0)
    for t in range(7):
        np.testing.assert_allclose(lstm.step(x[t], state), outputs[t], rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.cell, c, rtol=0, atol=1e-12)


def test_single_sequence_orientations(backend, rng):
    lstm = LSTM(2, 3, seed=1)
    x = rng.normal(size=(4, 2))
    outputs, h, c = lstm.forward(x, np.zeros((3, 1)), np.zeros((3, 1)))
    col = lstm.initial_state(np.zeros((3, 1)), np.zeros((3, 1)))
    vec = lstm.initial_state()
    for t in range(4):
        h_col = lstm.step(x[t][:, None], col)
        h_vec = lstm.step(x[t], vec)
    assert h_col.shape == (3, 1) and h_vec.shape == (3,)
    np.testing.assert_allclose(h_col, h, atol=1e-12)
    np.testing.assert_allclose(h_vec, h[:, 0], atol=1e-12)
    np.testing.assert_allclose(col.cell, c, atol=1e-12)


def test_weight_edits_reach_a_running_stream(backend, rng):
    lstm = LSTM(2, 3, seed=2)
    state = lstm.initial_state()
    x = rng.normal(size=2)
    lstm.Wo = np.zeros((3, 5))
    lstm.bo[:] = -1e6  # output gate shut: σ(-1e6) underflows, so h is 0 to within 1e-150
    assert np.all(np.abs(lstm.step(x, state)) < 1e-150)


def test_no_allocation_per_step(backend):
    H = 1024  # any per-step temporary of (1, H) float64 would show as 8 KiB or more
    lstm = LSTM(8, H, seed=0)
    state = lstm.initial_state()
    x = np.ones(8)
    for _ in range(3):
        lstm.step(x, state)  # warm up (compilation, caches)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(50):
            lstm.step(x, state)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 4096, f"{peak - base} bytes at peak during steps"
    assert current - base < 1024


def test_step_errors():
    lstm = LSTM(2, 3, seed=0)
    state = lstm.initial_state(batch=4)
    with pytest.raises(ValueError, match=r"x_t must have shape \(4, 2\) for this stream; got \(2,\)"):
        lstm.step(np.zeros(2), state)
    with pytest.raises(ValueError, match="belongs to another LSTM"):
        LSTM(2, 3).step(np.zeros((4, 2)), state)
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        lstm.initial_state(batch=0)
