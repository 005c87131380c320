"""Next-week forecasts of the Mauna Loa CO2 series (real data shipped with statsmodels).

    python examples/co2_forecast.py [--epochs 15 --seed 0 --threads 1 --no-torch]

Weekly atmospheric CO2 (ppm) at Mauna Loa, 1958-2001, from
``statsmodels.datasets.co2`` (``pip install 'nplstm[examples]'``); the 59
missing weeks are filled by linear interpolation.  The series trends
upwards, so the later (validation) years lie above every training value; the
model therefore reads the week-to-week changes: from the last 52 changes it
predicts the next one, and the forecast is ``y[t] + predicted change``.  Its
error in ppm is the error of the predicted change.  Changes are scaled with
the mean and standard deviation of the training part only; the split is
chronological (the last 20% of windows validate).

Model: 2 x LSTM(32) + Linear, Adam lr 3e-3, batch 32, float32.  Printed:
the validation MSE of nplstm, of the persistence forecast ``y[t+1] = y[t]``
and, when torch is installed, of torch trained from the same initial
weights on the same batches in the same order (both scored by the same code).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nplstm import SequenceModel
from nplstm.optim import Adam
from nplstm.training import evaluate, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_twin  # noqa: E402

STEPS, HIDDEN, LAYERS, BATCH, LR = 52, 32, 2, 32, 3e-3


def statsmodels_available() -> bool:
    return importlib.util.find_spec("statsmodels") is not None


def load_series() -> tuple[np.ndarray, np.ndarray]:
    """Weekly CO2 in ppm with gaps interpolated, and the weeks' dates (numpy datetime64)."""
    from statsmodels.datasets import co2

    frame = co2.load_pandas().data
    ppm = np.array(frame["co2"].to_numpy(dtype=np.float64), copy=True)
    gaps = np.isnan(ppm)
    weeks = np.arange(len(ppm))
    ppm[gaps] = np.interp(weeks[gaps], weeks[~gaps], ppm[~gaps])
    return ppm, frame.index.to_numpy()


def make_data(ppm: np.ndarray, steps: int = STEPS, train_fraction: float = 0.8, dtype: Any = np.float32) -> dict:
    """52-change windows and the next change, scaled with the training part's statistics, split in time.

    Window ``k`` reads changes ``d[k : k + steps]`` (``d[t] = y[t+1] - y[t]``)
    and its target is ``d[k + steps]``.
    """
    d = np.diff(ppm)
    n_windows = len(d) - steps
    n_train = int(train_fraction * n_windows)
    seen = d[: n_train + steps]  # every change a training window reads or predicts
    mean, std = float(seen.mean()), float(seen.std())
    z = (d - mean) / std
    X = np.lib.stride_tricks.sliding_window_view(z[:-1], steps)[..., None].astype(dtype)
    Y = z[steps:, None].astype(dtype)
    return {
        "X_train": X[:n_train], "Y_train": Y[:n_train], "X_val": X[n_train:], "Y_val": Y[n_train:],
        "mean": mean, "std": std, "changes_val": d[steps + n_train:], "first_val_week": n_train + steps + 1,
    }


def build_model(seed: int = 0, dtype: Any = np.float32) -> SequenceModel:
    """2 x LSTM(32) + Linear reading the final hidden state."""
    return SequenceModel(1, HIDDEN, 1, num_layers=LAYERS, seed=seed, dtype=dtype)


def train_nplstm(model: SequenceModel, data: dict, epochs: int, seed: int, progress: bool = False, **kwargs: Any) -> Any:
    """``fit`` as this example trains: Adam 3e-3, batch 32, no clipping, shuffled with ``seed``."""
    return fit(model, data["X_train"], data["Y_train"], optimizer=Adam(model.parameters(), lr=LR), epochs=epochs,
               batch_size=BATCH, clip_norm=None, seed=seed, progress=progress, **kwargs)


def train_torch(module: Any, data: dict, epochs: int, seed: int, **kwargs: Any) -> SequenceModel:
    """torch's twin ``module`` trained as :func:`train_nplstm` trains; returns the result as an nplstm model."""
    torch_twin.train(module, data["X_train"], data["Y_train"], loss="mse", epochs=epochs, batch_size=BATCH, lr=LR,
                     seed=seed, **kwargs)
    return torch_twin.to_nplstm(module)


def run(epochs: int = 15, seed: int = 0, torch_baseline: bool | None = None, progress: bool = True) -> dict:
    """Train and score; MSEs in ppm^2 and in scaled units (``None`` for torch when it is not run)."""
    ppm, dates = load_series()
    data = make_data(ppm)
    ppm2 = data["std"] ** 2
    model = build_model(seed)
    if torch_baseline is None:
        torch_baseline = torch_twin.available()
    module = torch_twin.twin(model) if torch_baseline else None  # copies the initial weights
    began = time.perf_counter()
    train_nplstm(model, data, epochs, seed, progress)
    seconds = time.perf_counter() - began
    scaled = evaluate(model, data["X_val"], data["Y_val"])
    persistence = float(np.mean(data["changes_val"] ** 2))
    result = {
        "weeks": len(ppm), "train_windows": len(data["X_train"]), "val_windows": len(data["X_val"]),
        "first_val_date": str(dates[data["first_val_week"]])[:10], "model": model,
        "nplstm_mse_ppm2": scaled * ppm2, "nplstm_mse_scaled": scaled, "nplstm_seconds": seconds,
        "persistence_mse_ppm2": persistence, "persistence_mse_scaled": persistence / ppm2,
        "torch_mse_ppm2": None, "torch_mse_scaled": None, "torch_seconds": None,
    }
    if module is not None:
        began = time.perf_counter()
        trained = train_torch(module, data, epochs, seed)
        result["torch_seconds"] = time.perf_counter() - began
        result["torch_mse_scaled"] = evaluate(trained, data["X_val"], data["Y_val"])
        result["torch_mse_ppm2"] = result["torch_mse_scaled"] * ppm2
    return result


def report(result: dict) -> str:
    def row(label: str, ppm2: float, scaled: float, note: str = "") -> str:
        return f"  {label:<26}{ppm2:8.4f}  {scaled:8.4f}{note}"

    lines = [
        f"weekly CO2 at Mauna Loa (statsmodels.datasets.co2): {result['weeks']} weeks; next-week forecasts from 52-week windows",
        f"{result['train_windows']} training windows, {result['val_windows']} validation windows (targets from {result['first_val_date']})",
        f"  {'validation MSE':<26}{'ppm^2':>8}  {'scaled':>8}",
        row("nplstm 2xLSTM(32)+Linear", result["nplstm_mse_ppm2"], result["nplstm_mse_scaled"], f"   ({result['nplstm_seconds']:.1f} s)"),
    ]
    if result["torch_mse_ppm2"] is not None:
        lines.append(row("torch, same start", result["torch_mse_ppm2"], result["torch_mse_scaled"],
                         f"   ({result['torch_seconds']:.1f} s; same initial weights and batches)"))
    else:
        lines.append("  torch                     (not installed)")
    lines.append(row("persistence y[t+1]=y[t]", result["persistence_mse_ppm2"], result["persistence_mse_scaled"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    parser.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS, torch and nplstm (default 1)")
    args = parser.parse_args(argv)
    torch_twin.set_threads(args.threads)
    if not statsmodels_available():
        print("co2_forecast: skipped, the data comes with statsmodels (pip install 'nplstm[examples]')")
        return 0
    print(report(run(args.epochs, args.seed, False if args.no_torch else None)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
