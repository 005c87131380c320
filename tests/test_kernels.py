"""The optional numba kernel computes what the NumPy step loop computes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nplstm import LSTM, kernels
from nplstm.stack import StackedLSTM
from reference import load_into, random_weights, reference_lstm

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")


@pytest.fixture
def backend():
    before = kernels.get_backend()
    yield kernels.set_backend
    kernels.set_backend(before)


def both_paths(fn, backend):
    backend("numpy")
    a = fn()
    backend("numba")
    b = fn()
    return a, b


@settings(max_examples=30, deadline=None)
@given(T=st.integers(0, 6), B=st.integers(1, 3), I=st.integers(1, 4), H=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_kernel_equals_numpy_path_float64(T, B, I, H, seed):
    rng = np.random.default_rng(seed)
    lstm = load_into(LSTM(I, H), random_weights(rng, I, H, scale=1.5))
    x, h0, c0 = rng.normal(size=(T, B, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    before = kernels.get_backend()
    try:
        a, b = both_paths(lambda: lstm.forward(x, h0, c0), kernels.set_backend)
    finally:
        kernels.set_backend(before)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)
    if T:
        ref_hs, _, ref_c = reference_lstm(x[:, 0], random_weights(np.random.default_rng(seed), I, H, scale=1.5), h0[0], c0[0])
        np.testing.assert_allclose(b[0][:, 0], ref_hs, atol=1e-12)


def test_kernel_training_trace_and_gradients_match(backend, rng):
    lstm = LSTM(3, 4, seed=0)
    x = rng.normal(size=(5, 2, 3))
    w = rng.normal(size=(5, 2, 4))

    def grads():
        lstm.forward(x, train=True)
        return lstm.backward(w)

    a, b = both_paths(grads, backend)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-12, err_msg=name)


def test_kernel_in_a_bidirectional_stack(backend, rng):
    stack = StackedLSTM(2, 3, num_layers=2, bidirectional=True, seed=1)
    x = rng.normal(size=(6, 2, 2))
    (out_a, (h_a, c_a)), (out_b, (h_b, c_b)) = both_paths(lambda: stack.forward(x), backend)
    np.testing.assert_allclose(out_a, out_b, atol=1e-12)
    np.testing.assert_allclose(c_a, c_b, atol=1e-12)


def test_kernel_float32_and_saturation(backend):
    lstm = LSTM(2, 3, seed=0, dtype=np.float32)
    lstm.Wf = np.full((3, 5), 1e38)
    lstm.Wc = np.full((3, 5), -1e38)
    x = np.array([[1.0, -1.0], [2.0, 0.5]], dtype=np.float32)
    a, b = both_paths(lambda: lstm.forward(x), backend)
    assert b[0].dtype == np.float32
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert np.isfinite(b[0]).all()


def test_backend_switch_errors():
    with pytest.raises(ValueError, match="backend must be"):
        kernels.set_backend("cuda")


def test_backend_from_environment():
    import subprocess
    import sys

    code = "from nplstm import kernels; print(kernels.get_backend())"
    env = dict(__import__("os").environ, NPLSTM_BACKEND="numpy")
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "numpy"
    env["NPLSTM_BACKEND"] = "gpu"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.stdout.strip() == "auto" and "ignoring NPLSTM_BACKEND='gpu'" in proc.stderr
