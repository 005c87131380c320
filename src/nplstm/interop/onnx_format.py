"""Deprecated: the ONNX code is the package :mod:`nplstm.interop.onnx`; import from there.

This module only re-exports its public names, for code written against the
single-module layout.
"""

from __future__ import annotations

import warnings

from .onnx import *  # noqa: F403  (exactly the package's public names)
from .onnx import __all__  # noqa: F401

warnings.warn(
    "nplstm.interop.onnx_format is deprecated; import from nplstm.interop.onnx (or nplstm.interop)",
    DeprecationWarning,
    stacklevel=2,
)
