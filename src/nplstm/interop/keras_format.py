"""Deprecated: the Keras code is the package :mod:`nplstm.interop.keras`; import from there.

This module only re-exports its public names, for code written against the
single-module layout.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from .keras import (
    KERAS_ACTIVATIONS,
    KERAS_DENSE_INERT_KEYS,
    KERAS_DENSE_MAPPED_KEYS,
    KERAS_DTYPES,
    KERAS_EMBEDDING_INERT_KEYS,
    KERAS_EMBEDDING_MAPPED_KEYS,
    KERAS_FIXED_KEYS,
    KERAS_HEAD_FIXED_KEYS,
    KERAS_IDENTITY_LAYERS,
    KERAS_INERT_KEYS,
    KERAS_MAPPED_KEYS,
    KERAS_MERGE_MODES,
    KERAS_ORDER,
    MAX_KERAS_CONFIG_BYTES,
    SUPPORTED_MODELS,
    KerasLSTM,
    cell_options_from_config,
    default_keras_backend,
    from_keras,
    import_keras,
    load_keras_file,
)

warnings.warn(
    "nplstm.interop.keras_format is deprecated; import from nplstm.interop.keras (or nplstm.interop)",
    DeprecationWarning,
    stacklevel=2,
)

__all__: Sequence[str] = [
    "from_keras", "load_keras_file", "KerasLSTM", "import_keras", "default_keras_backend", "cell_options_from_config",
    "KERAS_ORDER", "KERAS_ACTIVATIONS", "KERAS_DTYPES", "KERAS_INERT_KEYS", "KERAS_MAPPED_KEYS", "KERAS_FIXED_KEYS",
    "KERAS_IDENTITY_LAYERS", "KERAS_DENSE_INERT_KEYS", "KERAS_DENSE_MAPPED_KEYS", "KERAS_EMBEDDING_INERT_KEYS",
    "KERAS_EMBEDDING_MAPPED_KEYS", "KERAS_HEAD_FIXED_KEYS", "KERAS_MERGE_MODES", "SUPPORTED_MODELS", "MAX_KERAS_CONFIG_BYTES",
]
