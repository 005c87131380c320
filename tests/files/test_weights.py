"""Weight files of every kind through one loader; trace() and plots."""

import numpy as np
import pytest

from nplstm import LSTM, SequenceModel, StackedLSTM, WeightsFileError
from nplstm.loading import describe, load_model, run_model

from reference import load_into, random_weights


def test_stack_npz_round_trip(tmp_path, rng):
    stack = StackedLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, batch_first=True, seed=0)
    for p in stack.parameters().values():
        p += rng.normal(scale=0.1, size=p.shape)
    path = stack.save(tmp_path / "stack.npz")
    again = load_model(path)
    assert isinstance(again, StackedLSTM) and again.batch_first and again.proj_size == 2
    x = rng.normal(size=(2, 5, 3))
    np.testing.assert_array_equal(again.forward(x)[0], stack.forward(x)[0])
    info = describe(again)
    assert info["parameters"] == sum(p.size for p in stack.parameters().values())
    assert info["shapes"]["l1_reverse.W_hr"] == (2, 4)


def test_stack_npz_config_must_match_arrays(tmp_path):
    path = StackedLSTM(3, 4, seed=0).save(tmp_path / "s.npz")
    import json

    from nplstm.io import read_npz, save_npz

    arrays = read_npz(path)
    config = json.loads(str(arrays["config"]))
    config["hidden_size"] = 8  # claims hidden_size 8; the tensors are for 4
    arrays["config"] = np.array(json.dumps(config))
    save_npz(path, arrays)
    with pytest.raises(WeightsFileError, match=r"'l0.Wf' has shape \(4, 7\); expected \(8, 11\)"):
        load_model(path)


def test_sequence_model_runs_from_file(tmp_path, rng):
    model = SequenceModel(2, 3, 1, seed=0)
    path = model.save(tmp_path / "m.npz")
    x = rng.normal(size=(6, 2))
    result = run_model(load_model(path), x)
    np.testing.assert_allclose(result["prediction"], model.predict(x[None])[0])
    assert result["outputs"].shape == (6, 3) and result["h"].shape == (1, 3)  # h_n of the one layer


def test_unknown_suffix_and_foreign_npz(tmp_path):
    with pytest.raises(WeightsFileError, match="no such file"):
        load_model(tmp_path / "w.bin")
    (tmp_path / "w.bin").write_bytes(b"weights")
    with pytest.raises(WeightsFileError, match="unknown weights format '.bin'"):
        load_model(tmp_path / "w.bin")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(WeightsFileError, match="not an nplstm weights file"):
        load_model(tmp_path / "other.npz")


def test_trace_is_what_the_equations_say(rng):
    W = random_weights(rng, 2, 3)
    lstm = load_into(LSTM(2, 3), W)
    x = rng.normal(size=(5, 2))
    tr = lstm.trace(x)
    assert set(tr) == {"f", "i", "g", "o", "c", "h"} and all(v.shape == (5, 3) for v in tr.values())
    h_prev, c_prev = np.zeros(3), np.zeros(3)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    for t in range(5):
        z = np.concatenate([h_prev, x[t]])
        np.testing.assert_allclose(tr["f"][t], sig(W["Wf"] @ z + W["bf"][:, 0]), atol=1e-13)
        np.testing.assert_allclose(tr["g"][t], np.tanh(W["Wc"] @ z + W["bc"][:, 0]), atol=1e-13)
        np.testing.assert_allclose(tr["c"][t], tr["f"][t] * c_prev + tr["i"][t] * tr["g"][t], atol=1e-13)
        np.testing.assert_allclose(tr["h"][t], tr["o"][t] * np.tanh(tr["c"][t]), atol=1e-13)
        h_prev, c_prev = tr["h"][t], tr["c"][t]
    np.testing.assert_array_equal(tr["h"], lstm.forward(x)[0])


def test_stack_trace_per_layer_and_direction(rng):
    stack = StackedLSTM(2, 3, num_layers=2, bidirectional=True, dropout=0.5, seed=0)
    x = rng.normal(size=(4, 2))
    traces = stack.trace(x)
    out, _ = stack.forward(x)
    assert len(traces) == 2 and len(traces[1]) == 2
    np.testing.assert_allclose(np.concatenate([traces[1][0]["h"], traces[1][1]["h"]], axis=1), out, atol=1e-14)


def test_plot_writes_a_png_of_the_expected_size(tmp_path, rng):
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg

    from nplstm.plot import plot_trace

    lstm = LSTM(2, 6, seed=0)
    x = rng.normal(size=(20, 2))
    path = tmp_path / "gates.png"
    plot_trace(x, lstm.trace(x), path, width_px=800, height_px=900)
    image = mpimg.imread(path)
    assert image.shape[:2] == (900, 800)
    assert image[..., :3].std() > 0.05  # not a blank canvas
