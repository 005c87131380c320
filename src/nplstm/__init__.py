"""nplstm: a fast, exact, NumPy-first LSTM.

The equations live in :mod:`nplstm.cell`; the user-facing layer is
:class:`nplstm.LSTM`.
"""

from .layer import LSTM

__all__ = ["LSTM"]
__version__ = "0.1.0"
