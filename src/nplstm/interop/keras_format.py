"""Deprecated: the Keras code is the package :mod:`nplstm.interop.keras`; import from there.

This module only re-exports its public names, for code written against the
single-module layout.
"""

from __future__ import annotations

import warnings

from .keras import *  # noqa: F403  (exactly the package's public names)
from .keras import __all__  # noqa: F401

warnings.warn(
    "nplstm.interop.keras_format is deprecated; import from nplstm.interop.keras (or nplstm.interop)",
    DeprecationWarning,
    stacklevel=2,
)
