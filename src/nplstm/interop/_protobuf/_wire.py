"""The wire format: a bounded decoder that checks every claimed length before slicing."""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from ..gates import open_framework_file
from ._errors import DEFAULT_MAX_BYTES, Limits, ProtobufError
from ._message import (
    _CLASSES,
    _EGROUP,
    _I32,
    _I64,
    _LEN,
    _MASK64,
    _MAX_FIELD_NUMBER,
    _SCALAR_KINDS,
    _SGROUP,
    _VARINT,
    _Field,
    _Message,
)
from ._schema import ModelProto


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
        raise TypeError(f"expected one of the message classes of {__package__}; got {cls!r}")
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
