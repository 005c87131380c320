"""Loading an ONNX model from a path, bytes or a ModelProto, external data within bounds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._protobuf import onnx_api
from ..gates import InteropError


def _tensors_of(model: Any) -> list[Any]:
    """Every TensorProto stored in the main graph: initializers and Constant values."""
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    return tensors


def _tensor_nbytes(tensor: Any) -> int:
    helper = onnx_api().helper

    count = 1
    for d in tensor.dims:
        if d < 0:
            raise InteropError(f"tensor {tensor.name!r} has a negative dimension {list(tensor.dims)}")
        count *= int(d)
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:
        raise InteropError(f"tensor {tensor.name!r} has an unsupported data type {tensor.data_type}") from None
    return count * itemsize


def _external_file(tensor: Any, location: str, base: Path, label: str) -> Path:
    """The external-data file a tensor names, refused unless it is a regular file inside ``base``.

    The location must be relative, without ``..`` or NUL, and must resolve
    (symlinks followed) to a regular file in the model's folder or below,
    as onnxruntime requires.
    """
    where = f"{label}: tensor {tensor.name!r}"
    if not location or "\0" in location:
        raise InteropError(f"{where} names an invalid external file {location!r}")
    rel = Path(location)
    if rel.is_absolute() or ".." in rel.parts:
        raise InteropError(f"{where} names external file {location!r} outside the model's folder")
    try:
        root = base.resolve()
        target = (root / rel).resolve()
    except (OSError, RuntimeError) as exc:
        raise InteropError(f"{where}: external file {location!r} cannot be resolved: {_first_line(exc)}") from None
    if root != target.parent and root not in target.parents:
        raise InteropError(f"{where} names external file {location!r}, which resolves outside the model's folder")
    if not target.is_file():  # checked again on the open descriptor; a FIFO is never opened for reading here
        raise InteropError(f"{where}: external file {location!r} is not a regular file in the model's folder")
    return target


def _read_external(target: Path, offset: int, nbytes: int, where: str, location: str) -> bytes:
    """``nbytes`` at ``offset`` of a regular file, checked on the open descriptor (a FIFO never blocks)."""
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InteropError(f"{where}: external file {location!r} cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        import stat

        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InteropError(f"{where}: external file {location!r} is not a regular file in the model's folder")
        if offset < 0 or offset + nbytes > st.st_size:
            raise InteropError(f"{where} reads bytes {offset}..{offset + nbytes} past the end of {location!r} ({st.st_size} bytes)")
        fh.seek(offset)
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise InteropError(f"{where}: external file {location!r} changed while being read")
    return data


def _load_external(model: Any, base: Path | None, label: str, allow: bool, max_bytes: int) -> None:
    """Replace external-data references by the bytes they point to, within bounds.

    Only regular files inside the model's folder are read, their sizes are
    checked before anything is read, and the total is bounded by
    ``max_bytes``.
    """
    TensorProto = onnx_api().TensorProto

    total = 0
    for tensor in _tensors_of(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        where = f"{label}: tensor {tensor.name!r}"
        if not allow:
            raise InteropError(f"{where} keeps its data in the external file {location!r}, and allow_external_data=False")
        if base is None:
            raise InteropError(f"{where} has external data {location!r}; give from_onnx the file path")
        target = _external_file(tensor, location, base, label)
        nbytes = _tensor_nbytes(tensor)
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else nbytes
        except ValueError:
            raise InteropError(f"{where}: external data offset/length {info.get('offset')!r}/{info.get('length')!r} are not integers") from None
        if length != nbytes:
            raise InteropError(f"{where} has length {length} but dims {list(tensor.dims)} need {nbytes} bytes")
        total += nbytes
        if total > max_bytes:
            raise InteropError(f"{label}: external data exceeds max_external_bytes={max_bytes} at tensor {tensor.name!r}")
        tensor.raw_data = _read_external(target, offset, nbytes, where, location)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _load_model(source: Any, allow_external_data: bool, max_external_bytes: int) -> tuple[Any, str]:
    onnx = onnx_api()  # the onnx package, or nplstm's own bounded reader when it is absent

    from ...io import DEFAULT_MAX_BYTES

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise InteropError(f"{label}: no such file")
        if path.stat().st_size > DEFAULT_MAX_BYTES:
            raise InteropError(f"{label}: {path.stat().st_size} bytes is over the {DEFAULT_MAX_BYTES}-byte limit")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises assorted protobuf errors
            raise InteropError(f"{label} is not a valid ONNX model: {_first_line(exc)}") from None
        base: Path | None = path.parent
    elif isinstance(source, (bytes, bytearray)):
        label, base = "ONNX bytes", None
        try:
            model = onnx.load_from_string(bytes(source))
        except Exception as exc:
            raise InteropError(f"{label} are not a valid ONNX model: {_first_line(exc)}") from None
    elif hasattr(source, "graph"):
        label, base = f"ONNX model {source.graph.name!r}", None
        model = type(source)()
        model.CopyFrom(source)
    else:
        raise TypeError(f"expected an onnx.ModelProto, bytes or a path; got {type(source).__name__}")
    _load_external(model, base, label, allow_external_data, max_external_bytes)
    if not hasattr(source, "graph"):  # a model built in memory is the caller's; files and bytes are checked
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            raise InteropError(f"{label} is not a valid ONNX model: {_first_line(exc)}") from None
    return model, label


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_array(tensor: Any) -> np.ndarray:
    """A TensorProto as an array, refusing sizes a weights file cannot need."""
    numpy_helper = onnx_api().numpy_helper

    from ...io import DEFAULT_MAX_BYTES

    if _tensor_nbytes(tensor) > DEFAULT_MAX_BYTES:
        raise InteropError(f"tensor {tensor.name!r} claims dims {list(tensor.dims)}, over the size limit")
    return np.asarray(numpy_helper.to_array(tensor))
