"""PyTorch: ``torch.nn.LSTM`` modules, state dicts and ``.pt`` files."""

from __future__ import annotations

from ._export import to_torch_state_dict, torch_module
from ._file import load_torch
from ._model import from_torch
from ._state import TORCH_ORDER

__all__ = ["from_torch", "to_torch_state_dict", "load_torch", "torch_module", "TORCH_ORDER"]
