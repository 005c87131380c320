"""The subset of ``onnx.proto`` the importer reads, as light message classes."""

from __future__ import annotations

from typing import Sequence

from ._message import _f, _Message, _msg


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
