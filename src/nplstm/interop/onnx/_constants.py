"""Constants shared by the ONNX modules: gate order, opset, the plumbing operators, the LSTM activations."""

from __future__ import annotations

import numpy as np

from ...activations import ACTIVATIONS, takes

ONNX_ORDER = "iofc"
OPSET = 17
#: Model metadata key holding the exported stack's CellOptions at full precision.
CELL_METADATA = "nplstm.cell_options"
#: Default bound on the bytes read from external-data files (when allowed).
DEFAULT_MAX_EXTERNAL_BYTES = 1 << 30

#: Operators that only move, reshape or select values, or compute shapes.
PLUMBING = frozenset(
    {
        "Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice", "Gather", "Split",
        "Shape", "Cast", "Expand", "ConstantOfShape", "Constant", "Add", "Sub", "Mul", "Div",
    }
)
#: Plumbing operators whose every input may carry data; for the others only input 0 may.
_ALL_DATA_INPUTS = {"Concat"}
#: Arithmetic is accepted on shape values only (never on data).
_SHAPE_ONLY = {"Add", "Sub", "Mul", "Div"}

#: The ONNX LSTM activations (nplstm.activations.ACTIVATIONS), and whether each takes (alpha, beta).
ACTIVATION_PARAMS: dict[str, tuple[bool, bool]] = {name: takes(name) for name in ACTIVATIONS}
#: Defaults on which the ONNX operators and onnxruntime agree; a missing
#: alpha/beta of another parametrised activation is ambiguous and refused.
_AGREED_DEFAULTS: dict[str, tuple[float | None, float | None]] = {
    "LeakyRelu": (0.01, None),
    "HardSigmoid": (0.2, 0.5),
    "Elu": (1.0, None),
}
_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
