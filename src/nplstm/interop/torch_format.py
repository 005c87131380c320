"""Deprecated: the PyTorch code is the package :mod:`nplstm.interop.torch`; import from there.

This module only re-exports its public names, for code written against the
single-module layout.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from .torch import TORCH_ORDER, from_torch, load_torch, to_torch_state_dict, torch_module

warnings.warn(
    "nplstm.interop.torch_format is deprecated; import from nplstm.interop.torch (or nplstm.interop)",
    DeprecationWarning,
    stacklevel=2,
)

__all__: Sequence[str] = ["from_torch", "to_torch_state_dict", "load_torch", "torch_module", "TORCH_ORDER"]
