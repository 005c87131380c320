"""The ``onnx.helper`` / ``numpy_helper`` / ``checker`` functions the importer uses."""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

from ..gates import InteropError
from ._message import _Message
from ._schema import DATA_TYPE_NAMES, AttributeProto, TensorProto, ValueInfoProto

#: TensorProto data type -> NumPy dtype, for the types NumPy has natively (as onnx.helper maps them).
_NP_DTYPES: dict[int, np.dtype] = {
    k: np.dtype(v)
    for k, v in {
        1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64, 8: object,
        9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64, 14: np.complex64, 15: np.complex128,
    }.items()
}


def _type_name(data_type: int) -> str:
    return f"{DATA_TYPE_NAMES.get(data_type, 'unknown')} ({data_type})"


def tensor_dtype_to_np_dtype(data_type: int) -> np.dtype:
    """``onnx.helper.tensor_dtype_to_np_dtype`` for the types NumPy has natively; others refused by name."""
    try:
        return _NP_DTYPES[int(data_type)]
    except KeyError:
        raise InteropError(f"ONNX data type {_type_name(data_type)} has no NumPy dtype here") from None


#: The data types :func:`to_array` converts: NumPy dtype and the typed field used without raw_data.
_TO_ARRAY: dict[int, tuple[Any, str]] = {
    TensorProto.FLOAT: (np.float32, "float_data"),
    TensorProto.DOUBLE: (np.float64, "double_data"),
    TensorProto.FLOAT16: (np.float16, "int32_data"),
    TensorProto.INT64: (np.int64, "int64_data"),
    TensorProto.INT32: (np.int32, "int32_data"),
    TensorProto.INT8: (np.int8, "int32_data"),
    TensorProto.UINT8: (np.uint8, "int32_data"),
    TensorProto.BOOL: (np.bool_, "int32_data"),
}


def _numbers(msg: Any, name: str) -> np.ndarray:
    """A repeated numeric field as an array in its storage dtype (without building a Python list)."""
    dtype = {"float_data": np.float32, "double_data": np.float64, "int32_data": np.int32, "int64_data": np.int64}[name]
    if not isinstance(msg, _Message):  # onnx's own TensorProto
        return np.asarray(getattr(msg, name), dtype=dtype)
    if name in msg.__dict__:  # read (or set) as a list
        return np.asarray(msg.__dict__[name], dtype=dtype)
    array = msg._arrays.get(name)
    return np.zeros(0, dtype=dtype) if array is None else array


def to_array(tensor: Any) -> np.ndarray:
    """``onnx.numpy_helper.to_array`` for float32/64, float16, int64/32, int8, uint8 and bool tensors.

    ``tensor`` is this module's :class:`TensorProto` or onnx's.

    ``raw_data`` is little-endian; without it the typed field is read as
    onnx does (float16, int8, uint8, bool from ``int32_data``).  The claimed
    size (dims times item size) must equal the bytes or values present,
    checked before any array is made.  Other data types, segments and
    external data not yet loaded are refused by name.

    Raises
    ------
    InteropError
        Naming the tensor and the reason.
    """
    where = f"tensor {tensor.name!r}"
    if tensor.HasField("segment"):
        raise InteropError(f"{where} is a segment of a larger tensor, which is not supported")
    spec = _TO_ARRAY.get(tensor.data_type)
    if spec is None:
        supported = ", ".join(DATA_TYPE_NAMES[k] for k in _TO_ARRAY)
        raise InteropError(f"{where} has data type {_type_name(tensor.data_type)}; supported: {supported}")
    dtype, field_name = np.dtype(spec[0]), spec[1]
    if tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL:
        raise InteropError(f"{where} keeps its data in an external file that was not loaded")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise InteropError(f"{where} has a negative dimension {dims}")
    count = 1
    for d in dims:
        count *= d  # Python ints: no overflow
    if tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != count * dtype.itemsize:
            raise InteropError(f"{where} has dims {dims} ({count} values of {dtype}) but {len(raw)} bytes of raw_data")
        array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
        if sys.byteorder == "big":  # pragma: no cover (little-endian hosts)
            array = array.astype(dtype)
        return array.reshape(dims)
    data = _numbers(tensor, field_name)
    if data.size != count:
        raise InteropError(f"{where} has dims {dims} ({count} values) but {data.size} values in {field_name}")
    if tensor.data_type == TensorProto.FLOAT16:
        return data.view(np.uint32).astype(np.uint16).view(np.float16).reshape(dims)
    if tensor.data_type == TensorProto.BOOL:
        return data.view(np.uint32).astype(np.uint8).view(np.bool_).reshape(dims)
    return data.astype(dtype).reshape(dims)


_ATTRIBUTE_FIELDS: dict[int, tuple[str, Callable[[Any], Any]]] = {
    AttributeProto.FLOAT: ("f", lambda v: v),
    AttributeProto.INT: ("i", lambda v: v),
    AttributeProto.STRING: ("s", lambda v: v),
    AttributeProto.TENSOR: ("t", lambda v: v),
    AttributeProto.SPARSE_TENSOR: ("sparse_tensor", lambda v: v),
    AttributeProto.GRAPH: ("g", lambda v: v),
    AttributeProto.TYPE_PROTO: ("tp", lambda v: v),
    AttributeProto.FLOATS: ("floats", list),
    AttributeProto.INTS: ("ints", list),
    AttributeProto.STRINGS: ("strings", list),
    AttributeProto.TENSORS: ("tensors", list),
    AttributeProto.SPARSE_TENSORS: ("sparse_tensors", list),
    AttributeProto.GRAPHS: ("graphs", list),
    AttributeProto.TYPE_PROTOS: ("type_protos", list),
}


def get_attribute_value(attr: AttributeProto) -> Any:
    """``onnx.helper.get_attribute_value``: the field ``attr.type`` names (lists as lists; UNDEFINED is None)."""
    if attr.ref_attr_name:
        raise InteropError(f"attribute {attr.name!r} refers to a function attribute {attr.ref_attr_name!r}; it has no value here")
    if attr.type == AttributeProto.UNDEFINED:
        return None
    name, convert = _ATTRIBUTE_FIELDS[attr.type]  # a closed enum: every decoded value is a key
    return convert(getattr(attr, name))


def make_empty_tensor_value_info(name: str) -> ValueInfoProto:
    """``onnx.helper.make_empty_tensor_value_info``: a ValueInfoProto with only a name."""
    vi = ValueInfoProto()
    vi.name = name
    return vi


def check_model(model: Any, full_check: bool = False) -> None:
    """The structural minimum of ``onnx.checker.check_model`` (which this reader cannot replace).

    A graph, an IR version of at least 3 and an import of the default
    operator set; nothing about the nodes (the importer checks the nodes it
    accepts itself).
    """
    if not model.HasField("graph"):
        raise InteropError("the model has no graph")
    if model.ir_version < 3:
        raise InteropError(f"the model's ir_version {model.ir_version} is not set properly (3 or more)")
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        raise InteropError("the model imports no version of the default ONNX operator set")
