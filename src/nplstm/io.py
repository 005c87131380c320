"""Reading and writing weight files without pickle, safely and atomically.

Every ``.npz`` this package reads goes through :func:`read_npz`, which looks
at each array's header before reading it: object dtypes, sizes that do not
match the bytes actually stored (a truncated file, or a header claiming
terabytes) and arrays beyond ``max_bytes`` are refused before anything large
is allocated.  Writes go to a temporary file in the same folder that is then
renamed over the target, so an interrupted save never leaves a half-written
file where a good one was.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

#: Largest array a weight file may hold unless the caller says otherwise.
DEFAULT_MAX_BYTES = 1 << 31


class WeightsFileError(ValueError):
    """A weight file that cannot be read: missing, malformed, or with wrong arrays."""


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it over ``path``."""
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save named arrays as an uncompressed ``.npz``, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{name: np.asarray(a) for name, a in arrays.items()})
            fh.flush()
            os.fsync(fh.fileno())

    return write_atomic(path, write)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> np.ndarray:
    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise WeightsFileError(f"array {name!r}: unsupported .npy format version {version}")
        except (ValueError, EOFError, OSError) as exc:
            if isinstance(exc, WeightsFileError):
                raise
            raise WeightsFileError(f"array {name!r} has a malformed header: {exc}") from None
        if dtype.hasobject or dtype.kind not in "biufU":
            raise WeightsFileError(f"array {name!r} has dtype {dtype}; only numeric and text arrays are read")
        count = 1
        for n in shape:
            count *= int(n)
        nbytes = count * dtype.itemsize
        if nbytes > max_bytes:
            raise WeightsFileError(f"array {name!r} claims shape {shape} ({nbytes} bytes), over the limit of {max_bytes}")
        stored = info.file_size - fh.tell()
        if stored != nbytes:
            raise WeightsFileError(
                f"array {name!r} claims shape {shape} {dtype} ({nbytes} bytes) but {stored} bytes are stored"
            )
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise WeightsFileError(f"array {name!r} is truncated: {len(data)} of {nbytes} bytes")
    arr = np.frombuffer(data, dtype=dtype).copy()
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npz(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file without pickle; see the module docstring."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise WeightsFileError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsFileError(f"{path} is not a readable .npz file: {exc}") from None
    arrays = {}
    try:
        with zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise WeightsFileError(f"{path}: unexpected member {info.filename!r} (not an .npy array)")
                arrays[info.filename[:-4]] = _read_member(zf, info, max_bytes)
    except WeightsFileError as exc:
        raise WeightsFileError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        # zlib/zip errors of a corrupted archive
        raise WeightsFileError(f"{path} is corrupted: {exc}") from None
    return arrays


def require(arrays: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...], source: str = "file") -> np.ndarray:
    """Fetch ``arrays[name]`` checking shape, float dtype and finiteness."""
    if name not in arrays:
        raise WeightsFileError(f"{source}: missing array {name!r} (expected shape {shape})")
    arr = arrays[name]
    if arr.shape != tuple(shape):
        raise WeightsFileError(f"{source}: array {name!r} has shape {arr.shape}; expected {tuple(shape)}")
    if arr.dtype.kind != "f":
        raise WeightsFileError(f"{source}: array {name!r} has dtype {arr.dtype}; expected float32 or float64")
    if not np.isfinite(arr).all():
        raise WeightsFileError(f"{source}: array {name!r} holds NaN or inf")
    return arr
