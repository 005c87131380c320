"""Moving weights between nplstm and other frameworks.

Every format packs the four gates into one tensor in its own order; the
mapping is written once, in :mod:`nplstm.interop.gates`, and each format
module only names its tensors and its gate order:

========== ========== =====================================================
format     gate order tensors per layer and direction
========== ========== =====================================================
PyTorch    i f g o    weight_ih (4H, I), weight_hh (4H, P), bias_ih, bias_hh, weight_hr
Keras 3    i f c o    kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)
ONNX       i o f c    W (D, 4H, I), R (D, 4H, H), B (D, 8H)
========== ========== =====================================================

The framework packages are imported only when these functions are called.
"""

from .gates import InteropError

__all__ = [
    "InteropError", "ProtobufError", "from_torch", "to_torch_state_dict", "load_torch", "from_keras", "to_onnx",
    "from_onnx", "OnnxLSTM", "verify_import",
]


def __getattr__(name: str):
    if name in ("from_torch", "to_torch_state_dict", "load_torch"):
        from . import torch

        return getattr(torch, name)
    if name == "from_keras":
        from .keras import from_keras

        return from_keras
    if name in ("to_onnx", "from_onnx", "OnnxLSTM", "verify_import"):
        from . import onnx

        return getattr(onnx, name)
    if name == "ProtobufError":
        from ._protobuf import ProtobufError

        return ProtobufError
    raise AttributeError(name)
