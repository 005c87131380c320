"""Deprecated: the ONNX code is the package :mod:`nplstm.interop.onnx`; import from there.

This module only re-exports its public names, for code written against the
single-module layout.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from .onnx import (
    ACTIVATION_PARAMS,
    CELL_METADATA,
    DEFAULT_MAX_EXTERNAL_BYTES,
    MAX_CHECK_ELEMENTS,
    MAX_PLUMBING_BYTES,
    ONNX_ORDER,
    OPSET,
    PLUMBING,
    VERIFY_ATOL,
    VERIFY_MAX_ELEMENTS,
    VERIFY_RTOL,
    OnnxLSTM,
    from_onnx,
    to_onnx,
    verify_import,
)

warnings.warn(
    "nplstm.interop.onnx_format is deprecated; import from nplstm.interop.onnx (or nplstm.interop)",
    DeprecationWarning,
    stacklevel=2,
)

__all__: Sequence[str] = [
    "to_onnx", "from_onnx", "verify_import", "OnnxLSTM", "PLUMBING", "ACTIVATION_PARAMS", "ONNX_ORDER", "OPSET",
    "CELL_METADATA", "DEFAULT_MAX_EXTERNAL_BYTES", "MAX_CHECK_ELEMENTS", "MAX_PLUMBING_BYTES", "VERIFY_MAX_ELEMENTS",
    "VERIFY_ATOL", "VERIFY_RTOL",
]
