"""Deprecated: this module is now :mod:`nplstm.loading`; import from there.

"weights" named four things (this module, ``LayerWeights``, ``LSTM.weights``,
``Tape.weights``); the module that opens any model file by its suffix is
``nplstm.loading``.  This alias only re-exports its names.
"""

from __future__ import annotations

import warnings

from .loading import Model, convert, describe, load_model, run_model

warnings.warn("nplstm.weights is deprecated; import from nplstm.loading", DeprecationWarning, stacklevel=2)

__all__ = ["load_model", "convert", "describe", "run_model", "Model"]
