"""The real-data examples (examples/co2_forecast.py, examples/char_model.py) and the torch twin they compare with."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

NUMBER = r"([-+]?\d+\.\d+)"


def run_example(name, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def scores(out, label):
    line = next(line for line in out.splitlines() if line.strip().startswith(label))
    return [float(v) for v in re.findall(NUMBER, line.split(label, 1)[1])]


# ------------------------------------------------------------------ CO2
def test_co2_forecast_prints_finite_scores_and_the_persistence_baseline():
    pytest.importorskip("statsmodels")
    from statsmodels.datasets import co2

    out = run_example("co2_forecast.py", "--epochs", "1")
    nplstm = scores(out, "nplstm")
    assert len(nplstm) >= 2 and all(math.isfinite(v) and v > 0 for v in nplstm[:2])
    if "torch, same start" in out:
        torch = scores(out, "torch, same start")
        assert all(math.isfinite(v) and v > 0 for v in torch[:2])
        assert torch[1] == pytest.approx(nplstm[1], rel=1e-3)  # the same training, float32 rounding apart
    # persistence, computed here independently with pandas: the last 20% of the 52-week windows' next-week changes
    weekly = co2.load_pandas().data["co2"].interpolate().to_numpy()
    changes = np.diff(weekly)
    windows = len(changes) - 52
    persistence = float(np.mean(changes[52 + int(0.8 * windows):] ** 2))
    assert scores(out, "persistence y[t+1]=y[t]")[0] == pytest.approx(persistence, abs=1e-4)


def test_co2_forecast_scaling_uses_the_training_part_only():
    import co2_forecast

    ppm = np.cumsum(np.r_[300.0, np.arange(1.0, 200.0)])  # changes 1, 2, ..., 199
    data = co2_forecast.make_data(ppm, steps=4, train_fraction=0.5)
    # 199 changes, 195 windows, 97 training windows read changes 1 .. 101
    assert len(data["X_train"]) == 97 and len(data["X_val"]) == 98
    assert data["mean"] == pytest.approx(51.0) and data["std"] == pytest.approx(np.std(np.arange(1.0, 102.0)))
    z = (np.array([98.0, 99, 100, 101, 102]) - 51.0) / data["std"]
    np.testing.assert_allclose(data["X_val"][0, :, 0], z[:4], rtol=1e-6)
    np.testing.assert_allclose(data["Y_val"][0, 0], z[4], rtol=1e-6)
    np.testing.assert_array_equal(data["changes_val"][:2], [102.0, 103.0])


def test_co2_forecast_without_statsmodels_says_so_and_exits_0(monkeypatch, capsys):
    import co2_forecast

    monkeypatch.setattr(co2_forecast, "statsmodels_available", lambda: False)
    assert co2_forecast.main(["--epochs", "1"]) == 0
    assert "skipped" in capsys.readouterr().out


# ------------------------------------------------------------ characters
def test_char_model_prints_finite_scores():
    out = run_example("char_model.py", "--epochs", "1", "--hidden", "32")
    nplstm = scores(out, "nplstm Embedding -> LSTM(32) -> softmax")[0]
    unigram = scores(out, "unigram")[0]
    assert math.isfinite(nplstm) and 0 < nplstm < math.log(128)
    assert 2.5 < unigram < 3.5  # English characters: about 4.1-4.5 bits, 2.9-3.1 nats
    if "torch, same initial weights" in out:
        assert scores(out, "torch, same initial weights and batches")[0] == pytest.approx(nplstm, rel=1e-3)


def test_char_model_sentences_are_ragged_ascii_prose():
    import char_model

    sentences = char_model.load_sentences()
    assert len(sentences) > 500
    lengths = [len(s) for s in sentences]
    assert min(lengths) >= 20 and max(lengths) <= 200 and len(set(lengths)) > 100
    assert all(s.isascii() for s in sentences)
    data = char_model.make_data(sentences)
    assert len(data["X_val"]) == -(-len(sentences) // 10)
    x, y = data["X_train"][0], data["Y_train"][0]
    np.testing.assert_array_equal(x[1:], y[:-1])


def test_unigram_cross_entropy_by_hand():
    import char_model

    from nplstm.datasets import CharVocabulary

    data = {"vocab": CharVocabulary("ab"), "Y_train": [np.array([0, 0, 1])], "Y_val": [np.array([0]), np.array([1])]}
    # add-one counts (3, 2): p = (0.6, 0.4)
    assert char_model.unigram_cross_entropy(data) == pytest.approx(-(math.log(0.6) + math.log(0.4)) / 2, rel=1e-12)


# ------------------------------------------------------------ torch twin
def test_torch_twin_trains_as_fit_trains_step_for_step():
    """Same weights, same batches, same maths: fit's epoch losses are torch's (float64), and so are the weights."""
    pytest.importorskip("torch")
    import torch_twin

    from nplstm import SequenceModel
    from nplstm.optim import Adam
    from nplstm.training import fit

    rng = np.random.default_rng(0)
    X = rng.normal(size=(70, 12, 1))
    Y = X[:, -3:, 0].sum(axis=1, keepdims=True)
    seqs = [rng.integers(0, 7, size=rng.integers(3, 15)) for _ in range(50)]
    cases = [
        (torch_twin.torch_initialised(SequenceModel(1, 8, 1, num_layers=2, seed=1), 3), X, Y, "mse"),
        (SequenceModel(4, 8, 7, num_embeddings=7, many_to_many=True, activation="softmax", seed=2),
         [s[:-1] for s in seqs], [s[1:] for s in seqs], "cross_entropy"),
    ]
    for model, X_, Y_, loss in cases:
        module = torch_twin.twin(model)
        history = fit(model, X_, Y_, loss=loss, optimizer=Adam(model.parameters(), lr=3e-3), epochs=3, batch_size=16,
                      clip_norm=None, seed=5, progress=False)
        losses = torch_twin.train(module, X_, Y_, loss=loss, epochs=3, batch_size=16, lr=3e-3, seed=5)
        np.testing.assert_allclose(history.loss, losses, rtol=1e-12)
        trained = torch_twin.to_nplstm(module).parameters()
        for name, value in model.parameters().items():
            np.testing.assert_allclose(trained[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


def test_torch_twin_refuses_what_it_does_not_build():
    pytest.importorskip("torch")
    import torch_twin

    from nplstm import SequenceModel

    with pytest.raises(ValueError, match="unidirectional LSTM -> one Linear"):
        torch_twin.twin(SequenceModel(1, 4, 1, bidirectional=True, seed=0))
    with pytest.raises(ValueError, match="output 'h_n' or 'sequence'"):
        torch_twin.twin(SequenceModel(1, 4, 1, output="last", seed=0))
