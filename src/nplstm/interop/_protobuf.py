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
"""

from __future__ import annotations

import copy
import os
import struct
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np

from .gates import InteropError, open_framework_file

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

#: Largest input :func:`load_model` reads by default (2 GiB, nplstm.io's limit for one file).
DEFAULT_MAX_BYTES = 1 << 31


class ProtobufError(InteropError):
    """A malformed or over-limit protobuf input; the message names the field path and the byte offset.

    Attributes
    ----------
    path : str
        Where the decoder was, e.g. ``ModelProto.graph.node[3].attribute[0]``.
    offset : int
        Byte offset in the input.
    """

    def __init__(self, message: str, path: str = "", offset: int = -1) -> None:
        where = f" (at {path}, byte {offset})" if path else ""
        super().__init__(f"{message}{where}")
        self.path = path
        self.offset = offset


@dataclass(frozen=True)
class Limits:
    """Hard bounds of one decode.

    Attributes
    ----------
    max_bytes : int
        Largest input.
    max_depth : int
        Deepest message nesting (protobuf's own default is 100).
    max_messages : int
        Most messages decoded in total (each costs a Python object).
    max_fields : int
        Most field tags read in total (an element of a packed field is not a tag).
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = 100
    max_messages: int = 1 << 20
    max_fields: int = 1 << 22


# --------------------------------------------------------------------------- schema

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_MASK64 = (1 << 64) - 1
_MAX_FIELD_NUMBER = (1 << 29) - 1

#: kind -> (wire type of one element, NumPy dtype of a repeated field, default)
_SCALAR_KINDS: dict[str, tuple[int, Any, Any]] = {
    "int64": (_VARINT, np.int64, 0),
    "int32": (_VARINT, np.int32, 0),
    "uint64": (_VARINT, np.uint64, 0),
    "enum": (_VARINT, np.int32, 0),
    "float": (_I32, np.float32, 0.0),
    "double": (_I64, np.float64, 0.0),
}


@dataclass(frozen=True)
class _Field:
    number: int
    name: str
    kind: str  # a _SCALAR_KINDS key, "string", "bytes" or "message"
    repeated: bool = False
    sub: str = ""  # message class name
    enum: frozenset[int] = frozenset()
    oneof: str = ""


class _Numbers:
    """A repeated numeric field: a NumPy array while parsed, a Python list (as protobuf gives) from first access on."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        array = obj._arrays.get(self.name)
        value = [] if array is None else array.tolist()
        obj.__dict__[self.name] = value  # later reads hit the instance dict (a non-data descriptor)
        return value


_CLASSES: dict[str, type[_Message]] = {}


class _Message:
    """Base of the light read-only message classes (proto2 semantics)."""

    _SCHEMA: ClassVar[tuple[_Field, ...]] = ()
    _BY_NUMBER: ClassVar[dict[int, _Field]] = {}
    _BY_NAME: ClassVar[dict[str, _Field]] = {}
    _ONEOFS: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self) -> None:
        self.__dict__["_present"] = set()
        self.__dict__["_arrays"] = {}

    _present: set[str]
    _arrays: dict[str, np.ndarray]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._BY_NUMBER = {f.number: f for f in cls._SCHEMA}
        cls._BY_NAME = {f.name: f for f in cls._SCHEMA}
        oneofs: dict[str, list[str]] = {}
        for f in cls._SCHEMA:
            if f.oneof:
                oneofs.setdefault(f.oneof, []).append(f.name)
            if f.repeated and f.kind in _SCALAR_KINDS:
                setattr(cls, f.name, _Numbers(f.name))
            elif not f.repeated and f.kind in _SCALAR_KINDS:
                setattr(cls, f.name, _SCALAR_KINDS[f.kind][2])
            elif not f.repeated and f.kind == "string":
                setattr(cls, f.name, "")
            elif not f.repeated and f.kind == "bytes":
                setattr(cls, f.name, b"")
        cls._ONEOFS = {k: tuple(v) for k, v in oneofs.items()}
        _CLASSES[cls.__qualname__] = cls

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set: absent messages and repeated string/message fields.
        f = type(self)._BY_NAME.get(name)
        if f is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!s} has no field {name!r}")
        if f.repeated:
            value: Any = []
            self.__dict__[name] = value
            return value
        return _CLASSES[f.sub]()  # a default instance, as protobuf reads an absent message (not stored: HasField stays False)

    def __setattr__(self, name: str, value: Any) -> None:
        # Assigning a singular field makes it present (and clears its oneof siblings), as in protobuf;
        # the importer assigns raw_data and data_location when it inlines external data.
        f = type(self)._BY_NAME.get(name)
        if f is not None and not f.repeated:
            if f.oneof:
                for other in type(self)._ONEOFS[f.oneof]:
                    if other != name and other in self._present:
                        self._present.discard(other)
                        self.__dict__.pop(other, None)
            self._present.add(name)
        object.__setattr__(self, name, value)

    def HasField(self, name: str) -> bool:  # noqa: N802 (protobuf's name)
        """Whether a singular field (or a oneof, by its name) is present, as protobuf's ``HasField``."""
        if name in type(self)._ONEOFS:
            return self.WhichOneof(name) is not None
        f = type(self)._BY_NAME.get(name)
        if f is None:
            raise ValueError(f'Protocol message {type(self).__name__} has no field "{name}"')
        if f.repeated:
            raise ValueError(f'Protocol message has no singular "{name}" field.')
        return name in self._present

    def WhichOneof(self, group: str) -> str | None:  # noqa: N802 (protobuf's name)
        """The name of the oneof member that is set, or None."""
        members = type(self)._ONEOFS.get(group)
        if members is None:
            raise ValueError(f'Protocol message has no oneof "{group}" field.')
        return next((m for m in members if m in self._present), None)

    def __repr__(self) -> str:
        shown = []
        for f in type(self)._SCHEMA:
            if f.repeated:
                value = self.__dict__.get(f.name, self._arrays.get(f.name))
                if value is not None and len(value):
                    shown.append(f"{f.name}=[{len(value)}]")
            elif f.name in self._present:
                value = getattr(self, f.name)
                text = repr(value) if not isinstance(value, (bytes, _Message)) else f"<{type(value).__name__}>"
                shown.append(f"{f.name}={text[:40]}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def CopyFrom(self, other: _Message) -> None:  # noqa: N802 (protobuf's name)
        """Make this message a deep copy of ``other`` (of the same class), as protobuf's ``CopyFrom``."""
        if type(other) is not type(self):
            raise TypeError(f"CopyFrom needs a {type(self).__name__}; got {type(other).__name__}")
        if other is not self:
            state = copy.deepcopy(other.__dict__)
            self.__dict__.clear()
            self.__dict__.update(state)

    @classmethod
    def FromString(cls, data: bytes | bytearray | memoryview, limits: Limits | None = None) -> Any:  # noqa: N802
        """Decode ``data`` as this message type (see :func:`parse`)."""
        return parse(cls, data, limits)


def _f(number: int, name: str, kind: str, *, repeated: bool = False, sub: str = "", enum: Iterable[int] = (), oneof: str = "") -> _Field:
    return _Field(number, name, kind, repeated, sub, frozenset(enum), oneof)


def _msg(number: int, name: str, sub: str, *, repeated: bool = False, oneof: str = "") -> _Field:
    return _Field(number, name, "message", repeated, sub, frozenset(), oneof)


class StringStringEntryProto(_Message):
    """``onnx.StringStringEntryProto``: ``key``, ``value``."""

    key: str
    value: str
    _SCHEMA = (_f(1, "key", "string"), _f(2, "value", "string"))


class OperatorSetIdProto(_Message):
    """``onnx.OperatorSetIdProto``: ``domain``, ``version``."""

    domain: str
    version: int
    _SCHEMA = (_f(1, "domain", "string"), _f(2, "version", "int64"))


class TensorShapeProto(_Message):
    """``onnx.TensorShapeProto``: ``dim`` (a list of :class:`TensorShapeProto.Dimension`)."""

    class Dimension(_Message):
        """One axis: ``dim_value`` or ``dim_param`` (oneof ``value``), ``denotation``."""

        dim_value: int
        dim_param: str
        denotation: str
        _SCHEMA = (
            _f(1, "dim_value", "int64", oneof="value"),
            _f(2, "dim_param", "string", oneof="value"),
            _f(3, "denotation", "string"),
        )

    dim: list[Dimension]
    _SCHEMA = (_msg(1, "dim", "TensorShapeProto.Dimension", repeated=True),)


class TypeProto(_Message):
    """``onnx.TypeProto``: ``tensor_type`` (and the other members of oneof ``value``), ``denotation``."""

    class Tensor(_Message):
        """``elem_type`` (a TensorProto data type) and ``shape``."""

        elem_type: int
        shape: TensorShapeProto
        _SCHEMA = (_f(1, "elem_type", "int32"), _msg(2, "shape", "TensorShapeProto"))

    class SparseTensor(_Message):
        """``elem_type`` and ``shape``."""

        elem_type: int
        shape: TensorShapeProto
        _SCHEMA = (_f(1, "elem_type", "int32"), _msg(2, "shape", "TensorShapeProto"))

    class Sequence(_Message):
        """``elem_type`` (a TypeProto)."""

        elem_type: TypeProto
        _SCHEMA = (_msg(1, "elem_type", "TypeProto"),)

    class Optional(_Message):
        """``elem_type`` (a TypeProto)."""

        elem_type: TypeProto
        _SCHEMA = (_msg(1, "elem_type", "TypeProto"),)

    class Map(_Message):
        """``key_type`` and ``value_type``."""

        key_type: int
        value_type: TypeProto
        _SCHEMA = (_f(1, "key_type", "int32"), _msg(2, "value_type", "TypeProto"))

    class Opaque(_Message):
        """``domain`` and ``name``."""

        domain: str
        name: str
        _SCHEMA = (_f(1, "domain", "string"), _f(2, "name", "string"))

    tensor_type: Tensor
    sequence_type: Sequence
    map_type: Map
    optional_type: Optional
    sparse_tensor_type: SparseTensor
    opaque_type: Opaque
    denotation: str
    _SCHEMA = (
        _msg(1, "tensor_type", "TypeProto.Tensor", oneof="value"),
        _msg(4, "sequence_type", "TypeProto.Sequence", oneof="value"),
        _msg(5, "map_type", "TypeProto.Map", oneof="value"),
        _msg(9, "optional_type", "TypeProto.Optional", oneof="value"),
        _msg(8, "sparse_tensor_type", "TypeProto.SparseTensor", oneof="value"),
        _msg(7, "opaque_type", "TypeProto.Opaque", oneof="value"),
        _f(6, "denotation", "string"),
    )


class ValueInfoProto(_Message):
    """``onnx.ValueInfoProto``: ``name``, ``type``, ``doc_string``, ``metadata_props``."""

    name: str
    type: TypeProto
    doc_string: str
    metadata_props: list[StringStringEntryProto]
    _SCHEMA = (
        _f(1, "name", "string"),
        _msg(2, "type", "TypeProto"),
        _f(3, "doc_string", "string"),
        _msg(4, "metadata_props", "StringStringEntryProto", repeated=True),
    )


#: TensorProto.DataType names by value (onnx 1.23).
DATA_TYPE_NAMES: dict[int, str] = dict(
    enumerate(
        (
            "UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING", "BOOL", "FLOAT16",
            "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ",
            "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1", "FLOAT8E8M0", "UINT2", "INT2",
            "FLOAT6E2M3", "FLOAT6E3M2",
        )
    )
)


class TensorProto(_Message):
    """``onnx.TensorProto``: dims, data_type, the typed data fields, raw_data, external data.

    The ``DataType`` and ``DataLocation`` values are class attributes
    (``TensorProto.FLOAT``, ``TensorProto.EXTERNAL``), as on onnx's class.
    """

    class Segment(_Message):
        """``begin`` and ``end`` (refused by :func:`to_array`, as onnx does)."""

        begin: int
        end: int
        _SCHEMA = (_f(1, "begin", "int64"), _f(2, "end", "int64"))

    UNDEFINED, FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL, FLOAT16, DOUBLE = range(12)
    UINT32, UINT64, COMPLEX64, COMPLEX128, BFLOAT16 = range(12, 17)
    DEFAULT, EXTERNAL = 0, 1

    dims: list[int]
    data_type: int
    segment: Segment
    float_data: list[float]
    int32_data: list[int]
    string_data: list[bytes]
    int64_data: list[int]
    name: str
    doc_string: str
    raw_data: bytes
    external_data: list[StringStringEntryProto]
    data_location: int
    double_data: list[float]
    uint64_data: list[int]
    metadata_props: list[StringStringEntryProto]
    _SCHEMA = (
        _f(1, "dims", "int64", repeated=True),
        _f(2, "data_type", "int32"),
        _msg(3, "segment", "TensorProto.Segment"),
        _f(4, "float_data", "float", repeated=True),
        _f(5, "int32_data", "int32", repeated=True),
        _f(6, "string_data", "bytes", repeated=True),
        _f(7, "int64_data", "int64", repeated=True),
        _f(8, "name", "string"),
        _f(12, "doc_string", "string"),
        _f(9, "raw_data", "bytes"),
        _msg(13, "external_data", "StringStringEntryProto", repeated=True),
        _f(14, "data_location", "enum", enum=(0, 1)),
        _f(10, "double_data", "double", repeated=True),
        _f(11, "uint64_data", "uint64", repeated=True),
        _msg(16, "metadata_props", "StringStringEntryProto", repeated=True),
    )


class SparseTensorProto(_Message):
    """``onnx.SparseTensorProto``: ``values``, ``indices``, ``dims`` (decoded, never converted)."""

    values: TensorProto
    indices: TensorProto
    dims: list[int]
    _SCHEMA = (_msg(1, "values", "TensorProto"), _msg(2, "indices", "TensorProto"), _f(3, "dims", "int64", repeated=True))


class AttributeProto(_Message):
    """``onnx.AttributeProto``; the ``AttributeType`` values are class attributes (``AttributeProto.INTS``)."""

    UNDEFINED, FLOAT, INT, STRING, TENSOR, GRAPH, FLOATS, INTS, STRINGS, TENSORS, GRAPHS = range(11)
    SPARSE_TENSOR, SPARSE_TENSORS, TYPE_PROTO, TYPE_PROTOS = range(11, 15)

    name: str
    ref_attr_name: str
    doc_string: str
    type: int
    f: float
    i: int
    s: bytes
    t: TensorProto
    g: GraphProto
    sparse_tensor: SparseTensorProto
    tp: TypeProto
    floats: list[float]
    ints: list[int]
    strings: list[bytes]
    tensors: list[TensorProto]
    graphs: list[GraphProto]
    sparse_tensors: list[SparseTensorProto]
    type_protos: list[TypeProto]
    _SCHEMA = (
        _f(1, "name", "string"),
        _f(21, "ref_attr_name", "string"),
        _f(13, "doc_string", "string"),
        _f(20, "type", "enum", enum=range(15)),
        _f(2, "f", "float"),
        _f(3, "i", "int64"),
        _f(4, "s", "bytes"),
        _msg(5, "t", "TensorProto"),
        _msg(6, "g", "GraphProto"),
        _msg(22, "sparse_tensor", "SparseTensorProto"),
        _msg(14, "tp", "TypeProto"),
        _f(7, "floats", "float", repeated=True),
        _f(8, "ints", "int64", repeated=True),
        _f(9, "strings", "bytes", repeated=True),
        _msg(10, "tensors", "TensorProto", repeated=True),
        _msg(11, "graphs", "GraphProto", repeated=True),
        _msg(23, "sparse_tensors", "SparseTensorProto", repeated=True),
        _msg(15, "type_protos", "TypeProto", repeated=True),
    )


class NodeProto(_Message):
    """``onnx.NodeProto``: input, output, name, op_type, domain, overload, attribute, doc_string, metadata_props."""

    input: list[str]
    output: list[str]
    name: str
    op_type: str
    domain: str
    overload: str
    attribute: list[AttributeProto]
    doc_string: str
    metadata_props: list[StringStringEntryProto]
    _SCHEMA = (
        _f(1, "input", "string", repeated=True),
        _f(2, "output", "string", repeated=True),
        _f(3, "name", "string"),
        _f(4, "op_type", "string"),
        _f(7, "domain", "string"),
        _f(8, "overload", "string"),
        _msg(5, "attribute", "AttributeProto", repeated=True),
        _f(6, "doc_string", "string"),
        _msg(9, "metadata_props", "StringStringEntryProto", repeated=True),
    )


class GraphProto(_Message):
    """``onnx.GraphProto``: node, name, initializer, sparse_initializer, doc_string, input, output, value_info, metadata_props."""

    node: list[NodeProto]
    name: str
    initializer: list[TensorProto]
    sparse_initializer: list[SparseTensorProto]
    doc_string: str
    input: list[ValueInfoProto]
    output: list[ValueInfoProto]
    value_info: list[ValueInfoProto]
    metadata_props: list[StringStringEntryProto]
    _SCHEMA = (
        _msg(1, "node", "NodeProto", repeated=True),
        _f(2, "name", "string"),
        _msg(5, "initializer", "TensorProto", repeated=True),
        _msg(15, "sparse_initializer", "SparseTensorProto", repeated=True),
        _f(10, "doc_string", "string"),
        _msg(11, "input", "ValueInfoProto", repeated=True),
        _msg(12, "output", "ValueInfoProto", repeated=True),
        _msg(13, "value_info", "ValueInfoProto", repeated=True),
        _msg(16, "metadata_props", "StringStringEntryProto", repeated=True),
    )


class ModelProto(_Message):
    """``onnx.ModelProto``: ir_version, opset_import, producer_name/version, domain, model_version, doc_string, graph, metadata_props.

    ``training_info``, ``functions`` and ``configuration`` are skipped
    undecoded (the importer refuses operators it does not know anyway).
    """

    ir_version: int
    opset_import: list[OperatorSetIdProto]
    producer_name: str
    producer_version: str
    domain: str
    model_version: int
    doc_string: str
    graph: GraphProto
    metadata_props: list[StringStringEntryProto]
    _SCHEMA = (
        _f(1, "ir_version", "int64"),
        _msg(8, "opset_import", "OperatorSetIdProto", repeated=True),
        _f(2, "producer_name", "string"),
        _f(3, "producer_version", "string"),
        _f(4, "domain", "string"),
        _f(5, "model_version", "int64"),
        _f(6, "doc_string", "string"),
        _msg(7, "graph", "GraphProto"),
        _msg(14, "metadata_props", "StringStringEntryProto", repeated=True),
    )


# --------------------------------------------------------------------------- wire format


class _State:
    """The input and the running counts of one decode."""

    __slots__ = ("buf", "limits", "messages", "fields")

    def __init__(self, buf: bytes, limits: Limits) -> None:
        self.buf = buf
        self.limits = limits
        self.messages = 0
        self.fields = 0


def _varint(buf: bytes, pos: int, end: int, path: str) -> tuple[int, int]:
    """One varint at ``pos`` (at most 10 bytes, truncated to 64 bits as protobuf does) and the next position."""
    start = pos
    result = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint", path, start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes", path, start)


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _convert(kind: str, raw: int) -> int:
    if kind == "int64":
        return _signed(raw, 64)
    if kind in ("int32", "enum"):
        return _signed(raw, 32)
    return raw  # uint64


#: Largest packed-varint span decoded in one NumPy pass (bounds the temporaries to a few times this).
_PACKED_CHUNK = 1 << 20


def _packed_varints(buf: bytes, a: int, b: int, path: str) -> np.ndarray:
    """The varints of a packed field in ``buf[a:b]`` as uint64 (vectorised; temporaries bounded per chunk)."""
    raw = np.frombuffer(buf, dtype=np.uint8, count=b - a, offset=a)
    parts = []
    start = 0
    while start < raw.size:
        stop = min(raw.size, start + _PACKED_CHUNK)
        window = raw[start:stop]
        ends = np.flatnonzero(window < 0x80)
        if ends.size == 0:
            raise ProtobufError("truncated or over-long varint in a packed field", path, a + start)
        if stop < raw.size:  # cut after the window's last complete varint
            window = window[: int(ends[-1]) + 1]
        elif int(ends[-1]) != window.size - 1:
            raise ProtobufError("truncated varint at the end of a packed field", path, a + start + int(ends[-1]) + 1)
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lengths = ends - starts + 1
        longest = int(lengths.max())
        if longest > 10:
            at = int(starts[int(np.argmax(lengths))])
            raise ProtobufError("varint longer than 10 bytes in a packed field", path, a + start + at)
        out = np.zeros(ends.size, dtype=np.uint64)
        for k in range(longest):
            rows = np.flatnonzero(lengths > k)
            out[rows] |= (window[starts[rows] + k].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * k)
        parts.append(out)
        start += window.size
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _packed(buf: bytes, a: int, b: int, f: _Field, path: str) -> np.ndarray:
    """A packed repeated scalar field's elements, in the field's storage dtype."""
    wire, dtype, _ = _SCALAR_KINDS[f.kind]
    if wire == _VARINT:
        values = _packed_varints(buf, a, b, path)
        if f.kind == "int64":
            return values.view(np.int64)
        if f.kind in ("int32", "enum"):
            return (values & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
        return values
    size = 4 if wire == _I32 else 8
    if (b - a) % size:
        raise ProtobufError(f"packed field of {b - a} bytes is not a whole number of {size}-byte values", path, a)
    return np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<"), count=(b - a) // size, offset=a).astype(dtype)


def _text(buf: bytes, a: int, b: int, path: str) -> str:
    try:
        return buf[a:b].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtobufError("string field is not valid UTF-8", path, a + exc.start) from None


def _parse_into(msg: _Message, state: _State, pos: int, end: int, path: str, depth: int) -> None:
    """Decode the fields in ``buf[pos:end]`` into ``msg`` (merging, as protobuf parses a repeated occurrence)."""
    limits = state.limits
    if depth > limits.max_depth:
        raise ProtobufError(f"messages nested deeper than max_depth={limits.max_depth}", path, pos)
    state.messages += 1
    if state.messages > limits.max_messages:
        raise ProtobufError(f"more than max_messages={limits.max_messages} messages", path, pos)
    buf = state.buf
    cls = type(msg)
    by_number = cls._BY_NUMBER
    values = msg.__dict__
    present = msg._present
    pending: dict[str, list[Any]] = {}  # repeated numeric fields: chunks (arrays, or lists of unpacked values)
    while pos < end:
        tag_at = pos
        key, pos = _varint(buf, pos, end, path)
        state.fields += 1
        if state.fields > limits.max_fields:
            raise ProtobufError(f"more than max_fields={limits.max_fields} fields", path, tag_at)
        number, wire = key >> 3, key & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            raise ProtobufError(f"invalid field number {number}", path, tag_at)
        f = by_number.get(number)
        where = f"{path}.{f.name}" if f is not None else f"{path}.<field {number}>"
        if wire == _VARINT:
            raw, pos = _varint(buf, pos, end, where)
            a = b = 0
        elif wire == _I64 or wire == _I32:
            size = 8 if wire == _I64 else 4
            if end - pos < size:
                raise ProtobufError(f"truncated {size * 8}-bit field: {end - pos} bytes remain", where, pos)
            a, b = pos, pos + size
            pos = b
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end, where)
            if length > end - pos:
                raise ProtobufError(f"length {length} runs past the end: {end - pos} bytes remain", where, pos)
            a, b = pos, pos + length
            pos = b
        elif wire in (_SGROUP, _EGROUP):
            raise ProtobufError(f"group wire type {wire} of field {number} is not supported", where, tag_at)
        else:
            raise ProtobufError(f"invalid wire type {wire} of field {number}", where, tag_at)
        if f is None:
            continue  # unknown field: skipped
        kind = f.kind
        if kind in _SCALAR_KINDS:
            element_wire = _SCALAR_KINDS[kind][0]
            if f.repeated and wire == _LEN:
                pending.setdefault(f.name, []).append(_packed(buf, a, b, f, where))
                continue
            if wire != element_wire:
                continue  # protobuf keeps it as an unknown field
            if element_wire == _VARINT:
                value: Any = _convert(kind, raw)
                if kind == "enum" and value not in f.enum:
                    continue  # a closed enum's unknown value: protobuf leaves the field unset
            elif element_wire == _I32:
                value = struct.unpack_from("<f", buf, a)[0]
            else:
                value = struct.unpack_from("<d", buf, a)[0]
            if f.repeated:
                chunks = pending.setdefault(f.name, [])
                if not chunks or not isinstance(chunks[-1], list):
                    chunks.append([])
                chunks[-1].append(value)
                continue
        elif wire != _LEN:
            continue  # protobuf keeps it as an unknown field
        elif kind == "string":
            value = _text(buf, a, b, where)
            if f.repeated:
                getattr(msg, f.name).append(value)
                continue
        elif kind == "bytes":
            value = buf[a:b]
            if f.repeated:
                getattr(msg, f.name).append(value)
                continue
        else:  # message
            sub_cls = _CLASSES[f.sub]
            if f.repeated:
                items = getattr(msg, f.name)
                child = sub_cls()
                _parse_into(child, state, a, b, f"{where}[{len(items)}]", depth + 1)
                items.append(child)
                continue
            if f.name in present:
                child = values[f.name]  # seen before: merged
            else:
                child = sub_cls()
            _parse_into(child, state, a, b, where, depth + 1)
            value = child
        if f.oneof:
            for other in cls._ONEOFS[f.oneof]:
                if other != f.name and other in present:
                    present.discard(other)
                    del values[other]
        values[f.name] = value
        present.add(f.name)
    for name, chunks in pending.items():
        dtype = _SCALAR_KINDS[cls._BY_NAME[name].kind][1]
        arrays = [np.asarray(c, dtype=dtype) if isinstance(c, list) else c for c in chunks]
        if name in msg._arrays:  # a merged second occurrence of this message
            arrays.insert(0, msg._arrays[name])
        msg._arrays[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def parse(cls: type[Any], data: bytes | bytearray | memoryview, limits: Limits | None = None) -> Any:
    """Decode ``data`` as a message of type ``cls`` (e.g. :class:`ModelProto`), within ``limits``.

    Raises
    ------
    ProtobufError
        Malformed input or a bound exceeded; the message names the field path and the byte offset.
    """
    limits = limits or Limits()
    if not (isinstance(cls, type) and issubclass(cls, _Message)):
        raise TypeError(f"expected one of the message classes of {__name__}; got {cls!r}")
    if len(data) > limits.max_bytes:
        raise ProtobufError(f"{len(data)} bytes is over the max_bytes={limits.max_bytes} limit")
    buf = bytes(data)
    msg = cls()
    try:
        _parse_into(msg, _State(buf, limits), 0, len(buf), cls.__qualname__, 1)
    except RecursionError:  # a max_depth set beyond what the interpreter's stack allows
        raise ProtobufError(f"messages nested too deep for this interpreter (max_depth={limits.max_depth})") from None
    return msg


def load_model(path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview, max_bytes: int = DEFAULT_MAX_BYTES,
               limits: Limits | None = None) -> ModelProto:
    """Read an ONNX model (a ``.onnx`` path or its bytes) into a light :class:`ModelProto`.

    Like ``onnx.load(path, load_external_data=False)``: tensors kept in
    external files keep their ``external_data`` references (the importer
    resolves them within its own bounds).

    Parameters
    ----------
    path_or_bytes
        A file path (opened with nplstm's regular-file check), or the bytes.
    max_bytes : int
        Largest file or byte string accepted; a larger file is refused
        before it is read.
    limits : Limits, optional
        The other decode bounds (its ``max_bytes`` is replaced by ``max_bytes``).

    Raises
    ------
    ProtobufError
        Malformed, over a limit, or not a file (an :class:`InteropError`).
    """
    base = limits or Limits()
    limits = Limits(max_bytes=max_bytes, max_depth=base.max_depth, max_messages=base.max_messages, max_fields=base.max_fields)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return parse(ModelProto, path_or_bytes, limits)
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise TypeError(f"expected a path or bytes; got {type(path_or_bytes).__name__}")
    label = os.fspath(path_or_bytes)
    with open_framework_file(path_or_bytes) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise ProtobufError(f"{label}: {size} bytes is over the max_bytes={max_bytes} limit")
        data = fh.read(size + 1)  # the file's size, not max_bytes: read(n) allocates n bytes up front
    if len(data) != size:  # changed while being read
        raise ProtobufError(f"{label}: changed while being read")
    if len(data) > max_bytes:  # pragma: no cover (checked above)
        raise ProtobufError(f"{label}: over the max_bytes={max_bytes} limit")
    try:
        return parse(ModelProto, data, limits)
    except ProtobufError as exc:
        raise ProtobufError(f"{label} is not a valid ONNX model: {exc}") from None


# --------------------------------------------------------------------------- onnx helpers

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
