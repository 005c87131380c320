"""nplstm: a fast, exact, NumPy-first LSTM.

The equations live in :mod:`nplstm.cell`; the user-facing layer is
:class:`nplstm.LSTM`.
"""

from .callbacks import Callback, EarlyStopping, ModelCheckpoint
from .head import Dense, Embedding, Linear
from .io import WeightsFileError
from .layer import LSTM
from .model import SequenceModel
from .optim import SGD, Adam, AdamW, RMSprop, clip_grad_norm, clip_grad_value
from .schedules import Constant, CosineWarmup, ExponentialLR, OneCycleLR, ReduceLROnPlateau, Schedule, StepLR
from .stack import StackedLSTM
from .training import History, evaluate, fit, truncated_bptt
from .warmup import warmup

__all__ = [
    "LSTM",
    "StackedLSTM",
    "Linear",
    "Dense",
    "Embedding",
    "SequenceModel",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "clip_grad_norm",
    "clip_grad_value",
    "Schedule",
    "Constant",
    "StepLR",
    "ExponentialLR",
    "CosineWarmup",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "fit",
    "evaluate",
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "truncated_bptt",
    "History",
    "WeightsFileError",
    "warmup",
]
__version__ = "0.2.0"
