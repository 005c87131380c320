"""Write the NumPy-only deployment fixtures: two torch models, their ONNX exports, nplstm files and torch's outputs.

Run from the repository root with torch, onnx and nplstm installed:
``python tests/interop/onnx/deploy/make_fixtures.py``.  The files it writes (a few KB each)
are committed; ``tests/interop/onnx/test_deploy.py`` checks, on a machine with NumPy alone,
that nplstm reproduces the outputs torch computed here.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from nplstm.cli import main

HERE = Path(__file__).resolve().parent


class Classifier(nn.Module):
    """Token ids -> Embedding -> 2-layer LSTM -> Linear, ReLU, Linear -> log-probabilities of 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.fc1 = nn.Linear(16, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.emb(ids))
        return torch.log_softmax(self.fc2(torch.relu(self.fc1(h[-1]))), dim=-1)


class Forecaster(nn.Module):
    """(B, T, 3) features -> bidirectional LSTM -> the last step's output -> Linear -> one value."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 10, batch_first=True, bidirectional=True)
        self.head = nn.Linear(20, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def export(model: nn.Module, example: torch.Tensor, name: str) -> None:
    torch.onnx.export(model, (example,), str(HERE / f"{name}.onnx"), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch"}})


def make() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    classifier, forecaster = Classifier().eval(), Forecaster().eval()
    ids = rng.integers(1, 50, size=(4, 9))
    x = rng.normal(size=(5, 11, 3)).astype(np.float32)
    with torch.no_grad():
        expected = {
            "classifier_x": ids,
            "classifier_y": classifier(torch.from_numpy(ids)).numpy(),
            "forecaster_x": x,
            "forecaster_y": forecaster(torch.from_numpy(x)).numpy(),
        }
    np.savez(HERE / "expected.npz", **expected)
    export(classifier, torch.from_numpy(ids[:2, :5]), "classifier")
    export(forecaster, torch.from_numpy(x[:2, :5]), "forecaster")
    torch.save(classifier.state_dict(), HERE / "classifier.pt")
    # the conversion a user runs on the machine that has torch; the .pt itself is not kept
    assert main(["convert", str(HERE / "classifier.pt"), str(HERE / "classifier.npz"), "--batch-first",
                 "--lstm", "lstm", "--embedding", "emb", "--head", "fc1,relu,fc2,log_softmax", "--output", "h_n"]) == 0
    (HERE / "classifier.pt").unlink()


if __name__ == "__main__":
    make()
