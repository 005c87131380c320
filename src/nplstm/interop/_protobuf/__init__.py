"""A bounded reader of the protobuf subset of ONNX that :func:`~nplstm.interop.from_onnx` needs, without ``onnx``.

``.onnx`` files are protobuf ``ModelProto`` messages.  This module decodes
them with the standard library and NumPy only, so a NumPy-only environment
can import an ONNX LSTM.  It is a *reader*: it builds light classes with the
same attribute names and semantics as onnx's generated classes for the
fields the importer uses (:class:`ModelProto`, :class:`GraphProto`,
:class:`NodeProto`, :class:`AttributeProto`, :class:`TensorProto`,
:class:`ValueInfoProto`, :class:`TypeProto`, :class:`TensorShapeProto`,
:class:`OperatorSetIdProto`, :class:`StringStringEntryProto`, plus the
sparse / sequence / map / optional types so oneofs behave as protobuf's),
and :func:`to_array` / :func:`get_attribute_value` /
:func:`tensor_dtype_to_np_dtype` equal to onnx's helpers on what the
importer accepts.

Semantics follow protobuf (proto2, as ``onnx.proto`` is): every singular
field has presence (``HasField``), absent fields read as their default, a
repeated field accepts packed and unpacked encodings mixed, the last value
of a repeated singular scalar wins, a singular message seen twice is merged,
setting a oneof member clears the others (``WhichOneof``), an out-of-range
value of a closed enum (``AttributeProto.type``, ``data_location``) leaves
the field unset, and a known field with an unexpected wire type is skipped
like an unknown one.  Fields outside the subset (functions, training info,
quantization annotations, ...) are skipped without being decoded.

Deliberate differences from protobuf, all refusals: groups (wire types 3
and 4, obsolete since proto2) and invalid UTF-8 in a ``string`` field
(protobuf's proto2 hands back ``bytes`` there) are errors.

Every failure is one :class:`ProtobufError` (an
:class:`~nplstm.interop.gates.InteropError`) naming the field path and the
byte offset.  The decoder is bounded (:class:`Limits`): nesting depth,
messages, fields, and input bytes; every claimed length is checked against
the bytes that remain *before* anything is sliced or allocated, so memory
is proportional to the bytes actually present (about 10 times at worst,
plus some hundreds of bytes per message, capped by ``max_messages``).

The reader is split by job: :mod:`._errors` (:class:`ProtobufError`,
:class:`Limits`), :mod:`._message` (the field machinery), :mod:`._schema`
(the message classes), :mod:`._wire` (the decoder: :func:`parse`,
:func:`load_model`) and :mod:`._helpers` (:func:`to_array` and the other
onnx helper functions); this package serves them under one name.
"""

from __future__ import annotations

import types
from typing import Any, Sequence

# DEFAULT_MAX_BYTES, DATA_TYPE_NAMES and _Message stay attributes of the package, as they were of the module
from ._errors import DEFAULT_MAX_BYTES as DEFAULT_MAX_BYTES
from ._errors import Limits, ProtobufError
from ._helpers import check_model, get_attribute_value, make_empty_tensor_value_info, tensor_dtype_to_np_dtype, to_array
from ._message import _Message as _Message
from ._schema import DATA_TYPE_NAMES as DATA_TYPE_NAMES
from ._schema import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    OperatorSetIdProto,
    SparseTensorProto,
    StringStringEntryProto,
    TensorProto,
    TensorShapeProto,
    TypeProto,
    ValueInfoProto,
)
from ._wire import load_model, parse

__all__: Sequence[str] = [
    "ProtobufError",
    "Limits",
    "load_model",
    "parse",
    "to_array",
    "get_attribute_value",
    "tensor_dtype_to_np_dtype",
    "make_empty_tensor_value_info",
    "check_model",
    "READER_API",
    "onnx_api",
    "ModelProto",
    "GraphProto",
    "NodeProto",
    "AttributeProto",
    "TensorProto",
    "SparseTensorProto",
    "ValueInfoProto",
    "TypeProto",
    "TensorShapeProto",
    "OperatorSetIdProto",
    "StringStringEntryProto",
]


def _api() -> types.ModuleType:
    api = types.ModuleType("nplstm.interop._protobuf.onnx", "The names of the onnx module the importer uses, served by the reader.")
    api.load = lambda f, load_external_data=False: load_model(f)  # type: ignore[attr-defined]
    api.load_from_string = load_model  # type: ignore[attr-defined]
    api.ModelProto, api.TensorProto, api.AttributeProto, api.ValueInfoProto = (  # type: ignore[attr-defined]
        ModelProto, TensorProto, AttributeProto, ValueInfoProto)
    api.checker = types.SimpleNamespace(check_model=check_model)  # type: ignore[attr-defined]
    api.numpy_helper = types.SimpleNamespace(to_array=to_array)  # type: ignore[attr-defined]
    api.helper = types.SimpleNamespace(  # type: ignore[attr-defined]
        get_attribute_value=get_attribute_value,
        tensor_dtype_to_np_dtype=tensor_dtype_to_np_dtype,
        make_empty_tensor_value_info=make_empty_tensor_value_info,
    )
    return api


#: A stand-in for the ``onnx`` module on the import path: ``load(path, load_external_data=False)``,
#: ``load_from_string``, ``ModelProto`` (with ``CopyFrom``), ``TensorProto``, ``AttributeProto``,
#: ``ValueInfoProto``, ``checker.check_model`` (structural minimum), ``numpy_helper.to_array``,
#: ``helper.get_attribute_value / tensor_dtype_to_np_dtype / make_empty_tensor_value_info``.
READER_API = _api()


def onnx_api() -> Any:
    """The ``onnx`` module when it is importable, else :data:`READER_API` (same names, this reader behind them)."""
    try:
        import onnx
        import onnx.checker  # noqa: F401
        import onnx.helper  # noqa: F401
        import onnx.numpy_helper  # noqa: F401
    except ImportError:
        return READER_API
    return onnx
