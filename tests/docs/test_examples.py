"""The training examples reach their bounds (CI-sized runs of examples/*.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


def test_noisy_sine_beats_the_last_value_baseline_tenfold():
    import sine

    result = sine.run(sequences=600, epochs=15, seed=0, progress=False)
    assert result["baseline_mse"] > 10 * result["lstm_mse"]


def test_adding_problem_short_sequences_below_001():
    """A CI-sized adding problem (T = 20): the same script, a quarter of the length."""
    import adding_problem

    result = adding_problem.run(steps=20, sequences=1500, epochs=10, target=0.005, seed=0, progress=False)
    assert result["baseline_mse"] == pytest.approx(1 / 6, abs=0.03)
    assert result["lstm_mse"] < 0.01


@pytest.mark.slow
def test_adding_problem_below_001():
    """The README's claim at full size (T = 50); about a minute, run by CI with -m slow."""
    import adding_problem

    result = adding_problem.run(steps=50, sequences=4000, epochs=15, target=0.005, seed=0, progress=False)
    assert result["baseline_mse"] == pytest.approx(1 / 6, abs=0.03)
    assert result["lstm_mse"] < 0.01
