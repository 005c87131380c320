"""nplstm.dask on a real distributed LocalCluster with two worker processes."""

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")

from nplstm import LSTM, StackedLSTM  # noqa: E402
from nplstm.dask import forward  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_stack_over_chunks_equals_in_memory_forward(client):
    x = np.random.default_rng(0).normal(size=(45, 6, 3))
    xs = da.from_array(x, chunks=(10, 3, 3))  # split along T too: forward rechunks
    stack = StackedLSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    outputs, (h_n, c_n) = forward(stack, xs)
    assert isinstance(outputs, da.Array) and outputs.shape == (45, 6, 8) and h_n.shape == (4, 45, 4)
    outputs, h_n, c_n = dask.compute(outputs, h_n, c_n)
    ref_out, (ref_h, ref_c) = stack.forward(x.transpose(1, 0, 2))
    np.testing.assert_allclose(outputs, ref_out.transpose(1, 0, 2), rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_n, ref_h, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c_n, ref_c, rtol=0, atol=1e-14)


def test_single_layer_float32(client):
    x = np.random.default_rng(1).normal(size=(30, 5, 2)).astype(np.float32)
    lstm = LSTM(2, 3, seed=1, dtype=np.float32)
    outputs, (h_n, c_n) = forward(lstm, da.from_array(x, chunks=(7, 5, 2)))
    outputs, h_n, c_n = dask.compute(outputs, h_n, c_n)
    ref_out, ref_h, ref_c = lstm.forward(x.transpose(1, 0, 2))
    assert outputs.dtype == np.float32 and h_n.shape == (1, 30, 3)
    np.testing.assert_allclose(outputs, ref_out.transpose(1, 0, 2), atol=1e-6)
    np.testing.assert_allclose(c_n[0], ref_c, atol=1e-6)


def test_bad_arguments():
    lstm = LSTM(2, 3, seed=0)
    with pytest.raises(TypeError, match="must be a dask array"):
        forward(lstm, np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match=r"xs must be \(N, T, 2\); got \(4, 5, 3\)"):
        forward(lstm, da.zeros((4, 5, 3)))
