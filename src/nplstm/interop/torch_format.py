"""Deprecated: the PyTorch code is the package :mod:`nplstm.interop.torch`; import from there.

This module only re-exports its public names, for code written against the
single-module layout.
"""

from __future__ import annotations

import warnings

from .torch import *  # noqa: F403  (exactly the package's public names)
from .torch import __all__  # noqa: F401

warnings.warn(
    "nplstm.interop.torch_format is deprecated; import from nplstm.interop.torch (or nplstm.interop)",
    DeprecationWarning,
    stacklevel=2,
)
