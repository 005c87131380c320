"""The message machinery: fields, presence, oneofs and merging with protobuf's semantics."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import numpy as np

from ._errors import Limits

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
        from ._wire import parse  # the decoder builds these messages

        return parse(cls, data, limits)


def _f(number: int, name: str, kind: str, *, repeated: bool = False, sub: str = "", enum: Iterable[int] = (), oneof: str = "") -> _Field:
    return _Field(number, name, kind, repeated, sub, frozenset(enum), oneof)


def _msg(number: int, name: str, sub: str, *, repeated: bool = False, oneof: str = "") -> _Field:
    return _Field(number, name, "message", repeated, sub, frozenset(), oneof)
