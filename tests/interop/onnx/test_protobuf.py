"""The bounded protobuf reader (nplstm.interop._protobuf) against onnx's own parse, and on hostile input.

The peer is onnx (protobuf's upb decoder): on real files (torch's legacy
and dynamo exports of an LSTM and an LSTM + Linear, nplstm's to_onnx, the
ONNX project's LSTM operator test cases) every field of the reader's schema
must equal onnx's, every tensor ``numpy_helper.to_array``, every attribute
``helper.get_attribute_value``.  Hostile input (every prefix of a file,
fuzzed bytes, 2**62 lengths, deep nesting, a tiny file claiming a huge
tensor) must give ProtobufError and nothing else, within memory and time
bounds.  A subprocess with onnx blocked parses a file, and runs from_onnx
unmodified on the reader's classes, compared with torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_cases import onnx_lstm_cases

from nplstm.cell import CellOptions
from nplstm.interop import InteropError
from nplstm.interop import _protobuf as pb
from nplstm.stack import StackedLSTM

try:
    import onnx
    from onnx import helper, numpy_helper
except ImportError:  # pragma: no cover - the comparisons skip, the hostile tests still run
    onnx = None

needs_onnx = pytest.mark.skipif(onnx is None, reason="onnx is the peer of these comparisons")
SRC = str(Path(__file__).resolve().parents[3] / "src")


# --------------------------------------------------------------------------- helpers


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire: int, payload: bytes = b"") -> bytes:
    key = varint((number << 3) | wire)
    return key + varint(len(payload)) + payload if wire == 2 else key + payload


def small_model_bytes() -> bytes:
    """A small but complete model: nplstm's export of a 2-layer bidirectional stack with clip (metadata too)."""
    from nplstm.interop.onnx import to_onnx

    if onnx is None:  # pragma: no cover
        return hand_model_bytes()
    stack = StackedLSTM(2, 3, 2, bidirectional=True, cell=CellOptions(clip=2.5), seed=0)
    return to_onnx(stack, with_lengths=True).SerializeToString()


def hand_model_bytes() -> bytes:
    """A one-LSTM model written field by field (for environments without onnx)."""
    def tensor(name: str, shape: tuple[int, ...]) -> bytes:
        values = np.arange(int(np.prod(shape)), dtype="<f4") / 10
        return b"".join(field(1, 0, varint(d)) for d in shape) + field(2, 0, b"\x01") + field(8, 2, name.encode()) + field(9, 2, values.tobytes())

    def dims(*ds: object) -> bytes:
        return b"".join(field(1, 2, field(2, 2, d.encode()) if isinstance(d, str) else field(1, 0, varint(d))) for d in ds)

    def value_info(name: str, *ds: object) -> bytes:
        return field(1, 2, name.encode()) + field(2, 2, field(1, 2, field(1, 0, b"\x01") + field(2, 2, dims(*ds))))

    attrs = field(5, 2, field(1, 2, b"hidden_size") + field(20, 0, b"\x02") + field(3, 0, b"\x03"))
    attrs += field(5, 2, field(1, 2, b"direction") + field(20, 0, b"\x03") + field(4, 2, b"bidirectional"))
    attrs += field(5, 2, field(1, 2, b"clip") + field(20, 0, b"\x01") + field(2, 5, np.float32(2.5).tobytes()))
    node = b"".join(field(1, 2, n) for n in (b"X", b"W", b"R", b"B")) + field(2, 2, b"Y") + field(4, 2, b"LSTM") + attrs
    graph = field(1, 2, node) + field(2, 2, b"g")
    graph += field(5, 2, tensor("W", (2, 12, 2))) + field(5, 2, tensor("R", (2, 12, 3))) + field(5, 2, tensor("B", (2, 24)))
    graph += field(11, 2, value_info("X", "T", "B", 2)) + field(12, 2, value_info("Y", "T", 2, "B", 3))
    return field(1, 0, b"\x08") + field(2, 2, b"hand") + field(7, 2, graph) + field(8, 2, field(2, 0, b"\x11"))


def assert_same(ours: pb._Message, theirs, path: str = "model") -> None:
    """Every field of the reader's schema equal to onnx's: presence, values and Python types (repr), recursively."""
    for f in type(ours)._SCHEMA:
        where = f"{path}.{f.name}"
        if f.repeated:
            a, b = list(getattr(ours, f.name)), list(getattr(theirs, f.name))
            assert len(a) == len(b), where
            if f.kind == "message":
                for k, (x, y) in enumerate(zip(a, b)):
                    assert_same(x, y, f"{where}[{k}]")
            else:
                assert [repr(x) for x in a] == [repr(y) for y in b], where
        else:
            assert ours.HasField(f.name) == theirs.HasField(f.name), where
            if f.kind == "message":
                if ours.HasField(f.name):
                    assert_same(getattr(ours, f.name), getattr(theirs, f.name), where)
            else:
                assert repr(getattr(ours, f.name)) == repr(getattr(theirs, f.name)), where
    for group in type(ours)._ONEOFS:
        assert ours.WhichOneof(group) == theirs.WhichOneof(group), f"{path}.{group}"


def tensors_of(model):
    """(where, tensor) for every initializer and tensor attribute, subgraphs included."""
    out = []

    def graph(g, path):
        out.extend((f"{path}.initializer[{k}]", t) for k, t in enumerate(g.initializer))
        for n, node in enumerate(g.node):
            for a, attr in enumerate(node.attribute):
                where = f"{path}.node[{n}].attribute[{a}]"
                if attr.HasField("t"):
                    out.append((where + ".t", attr.t))
                out.extend((f"{where}.tensors[{k}]", t) for k, t in enumerate(attr.tensors))
                if attr.HasField("g"):
                    graph(attr.g, where + ".g")
                for k, sub in enumerate(attr.graphs):
                    graph(sub, f"{where}.graphs[{k}]")

    graph(model.graph, "graph")
    return out


def assert_arrays_and_attributes(ours, theirs) -> int:
    """to_array equal to numpy_helper.to_array on every tensor (dtype, shape, bits); attribute values equal."""
    count = 0
    for (where, t_ours), (_, t_theirs) in zip(tensors_of(ours), tensors_of(theirs)):
        if t_theirs.data_location == onnx.TensorProto.EXTERNAL:
            with pytest.raises(InteropError, match="external file"):
                pb.to_array(t_ours)
            continue
        want = numpy_helper.to_array(t_theirs)
        got = pb.to_array(t_ours)
        assert got.dtype == want.dtype and got.shape == want.shape, where
        assert got.tobytes() == want.tobytes(), where
        count += 1
    for node_ours, node_theirs in zip(ours.graph.node, theirs.graph.node):
        for a_ours, a_theirs in zip(node_ours.attribute, node_theirs.attribute):
            want = helper.get_attribute_value(a_theirs)
            got = pb.get_attribute_value(a_ours)
            if isinstance(want, onnx.TensorProto):
                assert_same(got, want)
            else:
                assert repr(got) == repr(want), (node_ours.name, a_ours.name)
    return count


def compare_file(path: Path) -> int:
    """The reader and onnx on one file (external data not followed by either); returns the tensors compared."""
    ours = pb.load_model(path)
    theirs = onnx.load(str(path), load_external_data=False)
    assert_same(ours, theirs)
    assert ours.graph.node, "the file has nodes"
    assert_same(pb.load_model(path.read_bytes()), theirs)
    return assert_arrays_and_attributes(ours, theirs)


# --------------------------------------------------------------------------- real files


class LSTMLinear:
    """An LSTM and a Linear on its last step (built lazily: torch is optional)."""

    @staticmethod
    def make(torch, batch_first: bool):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = torch.nn.LSTM(3, 5, num_layers=2, batch_first=batch_first)
                self.head = torch.nn.Linear(5, 2)

            def forward(self, x):
                out, _ = self.lstm(x)
                return self.head(out[:, -1] if batch_first else out[-1])

        return Net()


def torch_export(tmp_path: Path, name: str, dynamo: bool, linear: bool) -> tuple[Path, object, np.ndarray]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    if linear:
        module = LSTMLinear.make(torch, batch_first=True)
        x = torch.randn(2, 4, 3)
    else:
        module = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
        x = torch.randn(4, 2, 3)
    module.eval()
    path = tmp_path / f"{name}.onnx"
    if dynamo:
        pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (x,), str(path), dynamo=dynamo)
        except Exception as exc:  # pragma: no cover - depends on the exporter working here
            if not dynamo:
                raise
            pytest.skip(f"the dynamo exporter fails in this environment: {type(exc).__name__}")
    return path, module, x.numpy()


@needs_onnx
@pytest.mark.parametrize("linear", [False, True], ids=["lstm", "lstm_linear"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_torch_exports_parse_as_onnx_does(dynamo, linear, tmp_path):
    path, _, _ = torch_export(tmp_path, "m", dynamo, linear)
    assert compare_file(path) > 0 or pb.load_model(path).graph.initializer


@needs_onnx
@pytest.mark.parametrize(
    "kwargs, export",
    [
        (dict(), dict()),
        (dict(num_layers=2, bidirectional=True, batch_first=True), dict(with_lengths=True)),
        (dict(cell=CellOptions(clip=3.0, input_forget=True, peepholes=True)), dict(with_initial_states=False)),
        (dict(num_layers=2), dict(dtype=np.float64)),
    ],
    ids=["default", "bidir_lengths", "options_metadata", "float64"],
)
def test_nplstm_exports_parse_as_onnx_does(kwargs, export, tmp_path):
    from nplstm.interop.onnx import to_onnx

    path = tmp_path / "s.onnx"
    to_onnx(StackedLSTM(3, 4, seed=1, **kwargs), path, **export)
    assert compare_file(path) > 0
    if "cell" in kwargs:
        assert {p.key for p in pb.load_model(path).metadata_props} == {"nplstm.cell_options"}


CASES = onnx_lstm_cases()


@needs_onnx
@pytest.mark.skipif(not CASES, reason="the onnx wheel has no LSTM backend cases")
@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_lstm_operator_cases_parse_as_onnx_does(name):
    node, inputs, outputs = CASES[name]
    present = [n for n in node.input if n]
    values = dict(zip(present, inputs))
    x = present[0]
    inits = [numpy_helper.from_array(v, n) for n, v in values.items() if n != x]
    # the typed fields too (no raw_data), as older writers store them
    typed = [helper.make_tensor(f"typed_{n}", helper.np_dtype_to_tensor_dtype(v.dtype), v.shape, v.reshape(-1).tolist())
             for n, v in values.items()]
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info(x, helper.np_dtype_to_tensor_dtype(values[x].dtype), values[x].shape)],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in node.output if n],
        initializer=inits + typed,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    data = model.SerializeToString()
    ours = pb.load_model(data)
    assert_same(ours, onnx.load_from_string(data))
    assert assert_arrays_and_attributes(ours, onnx.load_from_string(data)) == 2 * len(values) - 1


@needs_onnx
def test_typed_fields_and_every_accepted_dtype_equal_numpy_helper():
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.normal(size=(2, 3)).astype(np.float32),
        "f64": rng.normal(size=(3,)),
        "f16": rng.normal(size=(2, 2)).astype(np.float16),
        "i64": np.array([-(2**62), -1, 0, 7, 2**62], dtype=np.int64),
        "i32": np.array([[-(2**31), 5], [2**31 - 1, -1]], dtype=np.int32),
        "i8": np.array([-128, -1, 0, 127], dtype=np.int8),
        "u8": np.array([0, 1, 255], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "nan_inf": np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32),
    }
    tensors = [numpy_helper.from_array(v, k) for k, v in arrays.items()]  # raw_data
    for k, v in arrays.items():  # typed fields
        tensors.append(helper.make_tensor(f"typed_{k}", helper.np_dtype_to_tensor_dtype(v.dtype), v.shape, v.reshape(-1).tolist()))
    graph = helper.make_graph([], "g", [], [], initializer=tensors)
    data = helper.make_model(graph).SerializeToString()
    ours, theirs = pb.load_model(data), onnx.load_from_string(data)
    assert_same(ours, theirs)
    for t_ours, t_theirs in zip(ours.graph.initializer, theirs.graph.initializer):
        got, want = pb.to_array(t_ours), numpy_helper.to_array(t_theirs)
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), t_ours.name
        assert got.tobytes() == arrays[t_ours.name.removeprefix("typed_")].tobytes()


@needs_onnx
def test_protobuf_semantics_match_onnx_on_edge_encodings():
    """Oneof clearing, merged messages, mixed packed/unpacked, closed enums, wrong wire types, unknown fields, truncation."""
    dim_value_then_param = field(1, 0, varint(5)) + field(2, 2, b"B")
    param_then_value = field(2, 2, b"B") + field(1, 0, varint(5))
    g1 = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "first", [], [])
    g2 = helper.make_graph([helper.make_node("Relu", ["b"], ["c"])], "", [], [])
    tensor_bytes = (
        field(1, 0, varint(2)) + field(1, 2, varint(3) + varint(2**64 - 1))  # dims unpacked, then packed
        + field(2, 0, varint(2**32 + 1))  # int32 truncated to 1 (FLOAT)
        + field(4, 5, np.float32(1.5).tobytes()) + field(4, 2, np.array([2, 3], "<f4").tobytes())
        + field(14, 0, varint(7))  # unknown value of the closed DataLocation enum: left unset
        + field(8, 0, varint(3))  # name with a varint wire type: an unknown field
        + field(999, 2, b"skipped") + field(1000, 1, b"\0" * 8) + field(1001, 5, b"\0" * 4)
        + field(8, 2, b"t") + field(8, 2, b"tensor")  # last one wins
    )
    cases = {
        "dim_value_then_param": (pb.TensorShapeProto.Dimension, onnx.TensorShapeProto.Dimension, dim_value_then_param),
        "param_then_value": (pb.TensorShapeProto.Dimension, onnx.TensorShapeProto.Dimension, param_then_value),
        "merged_graph": (pb.ModelProto, onnx.ModelProto, field(7, 2, g1.SerializeToString()) + field(7, 2, g2.SerializeToString())),
        "tensor": (pb.TensorProto, onnx.TensorProto, tensor_bytes),
        "attribute_enum": (pb.AttributeProto, onnx.AttributeProto, field(20, 0, varint(99)) + field(1, 2, b"a")),
        "attribute_negative_i": (pb.AttributeProto, onnx.AttributeProto, field(3, 0, varint(2**64 - 5)) + field(20, 0, varint(2))),
        "type_oneof": (pb.TypeProto, onnx.TypeProto, field(1, 2, field(1, 0, varint(1))) + field(4, 2, field(1, 2, b""))),
        "empty": (pb.ModelProto, onnx.ModelProto, b""),
        "ten_byte_varint": (pb.TensorProto, onnx.TensorProto, field(1, 0, b"\xff" * 9 + b"\x7f")),
    }
    for name, (ours_cls, theirs_cls, data) in cases.items():
        theirs = theirs_cls()
        theirs.ParseFromString(data)
        assert_same(pb.parse(ours_cls, data), theirs, name)
    assert pb.parse(pb.TensorProto, tensor_bytes).dims == [2, 3, -1]
    bad = {
        "eleven_byte_varint": field(1, 0, b"\xff" * 10 + b"\x01"),
        "field_zero": b"\x00\x01",
        "wire_type_6": b"\x0e\x01",
        "end_group": b"\x0c",
        "packed_floats_not_whole": field(4, 2, b"\0\0\0"),
        "packed_varint_truncated": field(1, 2, b"\x81"),
        "field_number_too_large": varint((2**29) << 3),
        "truncated_fixed32": b"\x25\0\0",
    }
    for name, data in bad.items():
        with pytest.raises(Exception):
            onnx.TensorProto().ParseFromString(data)
        with pytest.raises(pb.ProtobufError):
            pb.parse(pb.TensorProto, data)


def test_absent_singular_message_and_defaults():
    model = pb.load_model(b"")
    assert model.graph.node == [] and model.graph.name == "" and not model.HasField("graph")
    assert model.ir_version == 0 and model.metadata_props == [] and model.opset_import == []
    vi = pb.ValueInfoProto()
    assert vi.type.tensor_type.elem_type == 0 and vi.type.tensor_type.shape.dim == []
    assert vi.type.WhichOneof("value") is None and not vi.type.HasField("value")
    with pytest.raises(ValueError):
        model.HasField("opset_import")  # repeated: protobuf raises too
    with pytest.raises(ValueError):
        model.HasField("no_such_field")
    tensor = pb.TensorProto()
    tensor.raw_data = b"\0\0\x80?"
    tensor.data_type = pb.TensorProto.FLOAT
    assert tensor.HasField("raw_data") and tensor.HasField("data_type")
    assert pb.to_array(tensor).shape == () and float(pb.to_array(tensor)) == 1.0  # dims [] is a scalar


def test_groups_and_invalid_utf8_are_refused_by_name():
    with pytest.raises(pb.ProtobufError, match="group wire type 3 of field 50"):
        pb.parse(pb.TensorProto, varint((50 << 3) | 3) + varint((50 << 3) | 4))
    with pytest.raises(pb.ProtobufError, match=r"not valid UTF-8 \(at NodeProto.input, byte 2\)"):
        pb.parse(pb.NodeProto, field(1, 2, b"\xff"))


def test_to_array_refuses_other_dtypes_segments_external_and_mismatched_sizes():
    def tensor(**fields):
        t = pb.TensorProto()
        for k, v in fields.items():
            setattr(t, k, v)
        return t

    with pytest.raises(InteropError, match=r"'s' has data type STRING \(8\); supported: FLOAT, DOUBLE, FLOAT16"):
        pb.to_array(tensor(name="s", data_type=8))
    with pytest.raises(InteropError, match=r"BFLOAT16 \(16\)"):
        pb.to_array(tensor(name="b", data_type=16, raw_data=b"\0\0"))
    with pytest.raises(InteropError, match=r"UNDEFINED \(0\)"):
        pb.to_array(tensor(name="u"))
    with pytest.raises(InteropError, match="segment"):
        pb.to_array(pb.parse(pb.TensorProto, field(2, 0, b"\x01") + field(3, 2, b"")))
    with pytest.raises(InteropError, match="external file that was not loaded"):
        pb.to_array(tensor(name="e", data_type=1, data_location=1))
    with pytest.raises(InteropError, match=r"dims \[2\] \(2 values of float32\) but 4 bytes"):
        pb.to_array(pb.parse(pb.TensorProto, field(1, 0, b"\x02") + field(2, 0, b"\x01") + field(9, 2, b"\0" * 4)))
    with pytest.raises(InteropError, match=r"1 values in int64_data"):
        pb.to_array(pb.parse(pb.TensorProto, field(1, 0, b"\x02") + field(2, 0, b"\x07") + field(7, 2, b"\x05")))
    with pytest.raises(InteropError, match="negative dimension"):
        pb.to_array(pb.parse(pb.TensorProto, field(1, 0, varint(2**64 - 1)) + field(2, 0, b"\x01")))
    with pytest.raises(InteropError, match="ref"):
        pb.get_attribute_value(pb.parse(pb.AttributeProto, field(21, 2, b"alpha")))


# --------------------------------------------------------------------------- hostile input


@pytest.fixture(scope="module")
def small_model():
    return small_model_bytes()


def test_every_prefix_of_a_small_model_errors_or_parses_as_onnx_does(small_model):
    assert 500 < len(small_model) < 20000
    parsed = 0
    for n in range(len(small_model)):
        prefix = small_model[:n]
        try:
            ours = pb.load_model(prefix)
        except pb.ProtobufError as exc:
            assert "byte" in str(exc)
            if onnx is not None:
                with pytest.raises(Exception):
                    onnx.load_from_string(prefix)
            continue
        parsed += 1  # a cut at a field boundary is a valid (smaller) message
        if onnx is not None:
            assert_same(ours, onnx.load_from_string(prefix))
    assert parsed < len(small_model) // 4


def test_claimed_length_of_2_62_is_refused_before_allocating():
    tracemalloc.start()
    try:
        for data in (
            varint((7 << 3) | 2) + varint(2**62) + b"\0" * 16,  # graph
            field(7, 2, varint((5 << 3) | 2) + varint(2**62) + b"xx"),  # graph.initializer
            field(7, 2, field(5, 2, varint((9 << 3) | 2) + varint(2**62 - 1))),  # raw_data
            field(7, 2, field(5, 2, varint((4 << 3) | 2) + varint(2**62))),  # packed float_data
        ):
            with pytest.raises(pb.ProtobufError, match=r"length \d+ runs past the end"):
                pb.load_model(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_deep_nesting_is_refused_without_recursion_error():
    inner = field(1, 2, field(1, 0, varint(1)))  # tensor_type
    headers, size = [], len(inner)
    for k in range(200_000):  # TypeProto.sequence_type.elem_type ... 200 000 levels, built in linear time
        header = varint(((4 if k % 2 else 1) << 3) | 2) + varint(size)
        headers.append(header)
        size += len(header)
    inner = b"".join(reversed(headers)) + inner
    start = time.perf_counter()
    with pytest.raises(pb.ProtobufError, match="nested deeper than max_depth=100"):
        pb.parse(pb.TypeProto, inner)
    assert time.perf_counter() - start < 2.0
    with pytest.raises(pb.ProtobufError, match="max_depth=5"):
        pb.parse(pb.TypeProto, inner, pb.Limits(max_depth=5))


def test_message_field_and_byte_budgets(tmp_path):
    many = field(7, 2, field(1, 2, b"") * 1000)  # 1000 empty nodes
    assert len(pb.load_model(many).graph.node) == 1000
    with pytest.raises(pb.ProtobufError, match="max_messages=100"):
        pb.load_model(many, limits=pb.Limits(max_messages=100))
    with pytest.raises(pb.ProtobufError, match="max_fields=500"):
        pb.load_model(many, limits=pb.Limits(max_fields=500))
    with pytest.raises(pb.ProtobufError, match="max_bytes=100"):
        pb.load_model(many, max_bytes=100)
    path = tmp_path / "big.onnx"
    path.write_bytes(many)
    with pytest.raises(pb.ProtobufError, match="big.onnx: 2003 bytes is over the max_bytes=2000"):
        pb.load_model(path, max_bytes=2000)
    with pytest.raises(InteropError):
        pb.load_model(tmp_path)  # a directory
    with pytest.raises(InteropError):
        pb.load_model(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x0e")
    with pytest.raises(pb.ProtobufError, match=r"bad.onnx is not a valid ONNX model: invalid wire type 6"):
        pb.load_model(tmp_path / "bad.onnx")


def test_a_1kb_file_claiming_a_huge_tensor_is_refused_by_size_before_allocating(tmp_path):
    dims = b"".join(field(1, 0, varint(1 << 40)) for _ in range(3))
    tensor = dims + field(2, 0, varint(1)) + field(8, 2, b"huge") + field(9, 2, b"\0" * 400)
    node = field(4, 2, b"Constant") + field(2, 2, b"y") + field(5, 2, field(1, 2, b"value") + field(20, 0, b"\x04") + field(5, 2, tensor))
    data = field(1, 0, b"\x08") + field(7, 2, field(5, 2, tensor) + field(1, 2, node))
    assert len(data) < 1100
    path = tmp_path / "huge.onnx"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        model = pb.load_model(path)
        for t in (model.graph.initializer[0], model.graph.node[0].attribute[0].t):
            with pytest.raises(InteropError, match=r"'huge' has dims \[1099511627776, 1099511627776, 1099511627776\]"):
                pb.to_array(t)
        typed = pb.parse(pb.TensorProto, dims + field(2, 0, varint(1)) + field(4, 2, b"\0" * 800))
        with pytest.raises(InteropError, match="values in float_data"):
            pb.to_array(typed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


#: Bounds of one fuzzed decode of at most a few KB.
FUZZ_PEAK_BYTES = 8 << 20
FUZZ_SECONDS = 2.0


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for op, at, value in edits:
        at = at % (len(out) + 1)
        if op == 0 and at < len(out):
            out[at] = value
        elif op == 1:
            out[at:at] = bytes([value])
        elif op == 2:
            del out[at : at + 1 + value % 8]
        elif op == 3:
            out[at:at] = varint(value << 24)  # a large length or tag
        else:
            out = out[:at]
    return bytes(out)


def _decode_bounded(data: bytes) -> tuple[pb.ModelProto | None, pb.ProtobufError | None]:
    """Decode and convert every tensor; only ProtobufError / InteropError; memory and time bounded."""
    tracemalloc.start()
    start = time.perf_counter()
    error = None
    try:
        try:
            model = pb.load_model(data)
        except pb.ProtobufError as exc:
            model, error = None, exc
        if model is not None:
            for _, t in tensors_of(model):
                try:
                    pb.to_array(t)
                except InteropError:
                    pass
            for node in model.graph.node:
                for attr in node.attribute:
                    try:
                        pb.get_attribute_value(attr)
                    except InteropError:
                        pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < FUZZ_SECONDS
    assert peak < FUZZ_PEAK_BYTES
    return model, error


def _agrees_with_onnx(data: bytes, model: pb.ModelProto | None, error: pb.ProtobufError | None) -> None:
    """Both parse: equal.  Only onnx parses: the reader refused a group or invalid UTF-8 (its documented refusals).

    Only the reader parses: allowed, as it skips fields outside its subset undecoded where onnx decodes them.
    """
    if onnx is None:
        return
    try:
        theirs = onnx.load_from_string(data)
    except Exception:
        return
    if model is not None:
        assert_same(model, theirs)
    else:
        assert "not valid UTF-8" in str(error) or "group wire type" in str(error), str(error)


SMALL = small_model_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, len(SMALL)), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzzed_mutations_give_only_protobuf_errors_within_bounds(edits):
    data = _mutate(SMALL, edits)
    _agrees_with_onnx(data, *_decode_bounded(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_fuzzed_random_bytes_give_only_protobuf_errors_within_bounds(data):
    _agrees_with_onnx(data, *_decode_bounded(data))


# --------------------------------------------------------------------------- without onnx

BLOCK_ONNX = """
import sys
sys.modules["onnx"] = None  # import onnx now raises ImportError, as in a NumPy-only environment
try:
    import onnx
except ImportError:
    pass
else:
    raise SystemExit("onnx was not blocked")
"""


def run_without_onnx(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", BLOCK_ONNX + code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_parses_a_model_with_onnx_blocked(small_model, tmp_path):
    path = tmp_path / "small.onnx"
    path.write_bytes(small_model)
    out = run_without_onnx(
        """
import json
from nplstm.interop import _protobuf as pb
model = pb.load_model(sys.argv[1])
arrays = {t.name: pb.to_array(t).tolist() for t in model.graph.initializer}
lstm = [n for n in model.graph.node if n.op_type == "LSTM"][0]
attrs = {a.name: pb.get_attribute_value(a) for a in lstm.attribute}
attrs = {k: v.decode() if isinstance(v, bytes) else [x.decode() for x in v] if v and isinstance(v, list) and isinstance(v[0], bytes) else v for k, v in attrs.items()}
print(json.dumps({"arrays": arrays, "attrs": attrs, "onnx_loaded": "onnx" in sys.modules and sys.modules["onnx"] is not None,
                  "dims": [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]}))
""",
        str(path),
    )
    assert not out["onnx_loaded"]
    assert out["dims"] == ["T", "B", 2]
    if onnx is not None:
        theirs = onnx.load_from_string(small_model)
        want = {t.name: numpy_helper.to_array(t).tolist() for t in theirs.graph.initializer}
        assert out["arrays"] == want
        lstm = [n for n in theirs.graph.node if n.op_type == "LSTM"][0]
        assert out["attrs"]["clip"] == helper.get_attribute_value([a for a in lstm.attribute if a.name == "clip"][0])
        assert out["attrs"]["hidden_size"] == 3 and out["attrs"]["direction"] == "bidirectional"


#: The reader's stand-in for the onnx module, where from_onnx looks for onnx (onnx itself stays blocked).
SHIM = """
import numpy as np
from nplstm.interop import _protobuf as pb
assert pb.onnx_api() is pb.READER_API
sys.modules["onnx"] = pb.READER_API
sys.modules["onnxruntime"] = None  # verify needs onnx's writer; the default then skips it
from nplstm.interop import from_onnx
x = np.load(sys.argv[2])
imported = from_onnx(sys.argv[1], verify=False)
"""


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_from_onnx_runs_unmodified_on_the_reader_with_onnx_blocked_and_matches_torch(dynamo, tmp_path):
    torch = pytest.importorskip("torch")
    path, module, x = torch_export(tmp_path, "lstm", dynamo, linear=False)
    np.save(tmp_path / "x.npy", x)
    out = run_without_onnx(
        SHIM
        + """
import json
y, (h, c) = imported.forward(x)
print(json.dumps({"y": np.asarray(y).tolist(), "h": np.asarray(h).tolist(), "c": np.asarray(c).tolist(),
                  "type": type(imported).__name__}))
""",
        str(path),
        str(tmp_path / "x.npy"),
    )
    with torch.no_grad():
        y, (h, c) = module(torch.from_numpy(x))
    assert out["type"] == "StackedLSTM"
    np.testing.assert_allclose(out["y"], y.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["h"], h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["c"], c.numpy(), rtol=1e-5, atol=1e-6)


@needs_onnx
def test_helpers_accept_onnx_tensors_and_copy_and_api(small_model):
    theirs = onnx.load_from_string(small_model)
    for t in theirs.graph.initializer:
        assert pb.to_array(t).tobytes() == numpy_helper.to_array(t).tobytes()
    for node in theirs.graph.node:
        for a in node.attribute:
            assert repr(pb.get_attribute_value(a)) == repr(helper.get_attribute_value(a))
    ours = pb.load_model(small_model)
    cut = type(ours)()
    cut.CopyFrom(ours)
    del cut.graph.output[:]
    cut.graph.output.append(pb.make_empty_tensor_value_info("Y_h"))
    cut.graph.initializer[0].raw_data = b""
    assert [o.name for o in ours.graph.output] == ["Y", "Y_h", "Y_c"] and [o.name for o in cut.graph.output] == ["Y_h"]
    assert_same(ours, theirs)  # the copy is deep
    assert pb.onnx_api() is onnx
    pb.check_model(ours)
    with pytest.raises(InteropError, match="no graph"):
        pb.check_model(pb.ModelProto())
    with pytest.raises(InteropError, match="ir_version 0"):
        pb.check_model(pb.load_model(field(7, 2, b"")))
    with pytest.raises(InteropError, match="default ONNX operator set"):
        pb.check_model(pb.load_model(field(1, 0, b"\x08") + field(7, 2, b"")))
