"""bench/training.py: its ratios on hand-made runs, its profiler's wrapping, and a tiny race against torch."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import training  # noqa: E402


def make_run(epoch_seconds, val_loss, train_loss=None):
    run = training.Run()
    for k, (s, v) in enumerate(zip(epoch_seconds, val_loss)):
        run.add(s, (train_loss or val_loss)[k], v)
    return run


def test_ratios_by_hand():
    nplstm = make_run([1.0, 1.0, 2.0, 1.0], [3.0, 2.0, 1.5, 1.2], train_loss=[4.0, 3, 2, 1])
    torch = make_run([2.0, 2.0, 2.0, 2.0], [2.5, 1.8, 1.0, 0.99], train_loss=[5.0, 3, 2, 1])
    assert nplstm.seconds == [1.0, 2.0, 4.0, 5.0]
    ratios = training.compare(nplstm, torch, tol=0.01)
    # the larger best is nplstm's 1.2: target 1.212, which nplstm first reaches at epoch 4 (5 s), torch at epoch 3 (6 s)
    assert ratios["target_val_loss"] == pytest.approx(1.212)
    assert ratios["seconds_to_target"] == {"nplstm": 5.0, "torch": 6.0}
    assert ratios["time"] == pytest.approx(5 / 6)
    assert ratios["epoch"] == pytest.approx(0.5)  # median of 0.5, 0.5, 1.0, 0.5
    assert ratios["final"] == pytest.approx(1.2 / 0.99)
    assert ratios["best"] == pytest.approx(1.2 / 0.99)
    assert ratios["first"] == pytest.approx(4 / 5)
    assert training.goals_met(ratios) == {"time": False, "final": False}
    assert training.goals_met(dict(ratios, time=0.8, final=0.995)) == {"time": True, "final": True}


def test_time_to_target_is_the_first_epoch_at_or_below_it():
    run = make_run([1.0, 1.0, 1.0], [2.0, 1.0, 0.5])
    assert run.time_to(1.0) == 2.0 and run.time_to(0.4) is None and run.time_to(5.0) == 1.0


def test_compare_refuses_runs_of_different_lengths():
    with pytest.raises(ValueError, match="same number of epochs"):
        training.compare(make_run([1.0], [1.0]), make_run([1.0, 1.0], [1.0, 1.0]))


def test_timed_parts_times_and_restores():
    import nplstm.optim as optim

    original = optim.Adam.step
    params = {"w": np.zeros(3)}
    with training.timed_parts({"optimizer": ("nplstm.optim", "Adam", "step")}) as spent:
        optim.Adam(params, lr=0.1).step({"w": np.ones(3)})
    assert optim.Adam.step is original
    assert spent["optimizer"] > 0
    np.testing.assert_allclose(params["w"], -0.1)  # the wrapped step still stepped: Adam's first step is lr * sign(g)


def test_tiny_race_trains_both_alike():
    """Two epochs of the character shape on 40 sentences: the same first-epoch loss and validation losses (float32)."""
    pytest.importorskip("torch")
    shape = training.char(seed=0, sentences=40)
    with training.one_thread():
        nplstm, torch = training.race(shape, epochs=2, seed=0)
    ratios = training.compare(nplstm, torch)
    assert ratios["first"] == pytest.approx(1.0, abs=1e-5)
    assert ratios["final"] == pytest.approx(1.0, abs=1e-4)
    assert all(s > 0 for s in nplstm.epoch_seconds() + torch.epoch_seconds())
    assert ratios["time"] > 0 and ratios["epoch"] > 0
