"""The reader's one error and its bounds."""

from __future__ import annotations

from dataclasses import dataclass

from ..gates import InteropError

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
