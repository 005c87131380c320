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
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

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


def _read_array(fh: BinaryIO, size: int, name: str, max_bytes: int) -> np.ndarray:
    """Read one .npy stream of ``size`` bytes, checking its header before any allocation."""
    try:
        version = np.lib.format.read_magic(fh)
        with warnings.catch_warnings():  # parsing a junk header may warn (bad escapes); the error below says it
            warnings.simplefilter("ignore")
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise WeightsFileError(f"array {name!r}: unsupported .npy format version {version}")
    except WeightsFileError:
        raise
    except Exception as exc:  # NumPy's header parser raises a zoo (ValueError, SyntaxError, TokenError, ...)
        raise WeightsFileError(f"array {name!r} has a malformed header: {type(exc).__name__}: {exc}") from None
    if dtype.hasobject or dtype.kind not in "biufU" or dtype.fields is not None or dtype.subdtype is not None:
        raise WeightsFileError(f"array {name!r} has dtype {dtype}; only numeric and text arrays are read")
    count = 1
    for n in shape:
        count *= int(n)
    nbytes = count * dtype.itemsize
    if nbytes > max_bytes:
        raise WeightsFileError(f"array {name!r} claims shape {shape} ({nbytes} bytes), over the limit of {max_bytes}")
    stored = size - fh.tell()
    if stored != nbytes:
        raise WeightsFileError(f"array {name!r} claims shape {shape} {dtype} ({nbytes} bytes) but {stored} bytes are stored")
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise WeightsFileError(f"array {name!r} is truncated: {len(data)} of {nbytes} bytes")
    arr = np.frombuffer(data, dtype=dtype).copy()
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npy(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read one ``.npy`` file without pickle, checking its header first."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            return _read_array(fh, size, Path(path).name, max_bytes)
    except FileNotFoundError:
        raise WeightsFileError(f"{path}: no such file") from None
    except WeightsFileError as exc:
        raise WeightsFileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise WeightsFileError(f"{path}: {exc}") from None


def read_npz(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file without pickle; see the module docstring."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise WeightsFileError(f"{path}: no such file") from None
    except Exception as exc:  # BadZipFile, OSError, ValueError, struct.error ...
        raise WeightsFileError(f"{path} is not a readable .npz file: {type(exc).__name__}: {exc}") from None
    arrays = {}
    try:
        with zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise WeightsFileError(f"{path}: unexpected member {info.filename!r} (not an .npy array)")
                with zf.open(info) as fh:
                    arrays[info.filename[:-4]] = _read_array(fh, info.file_size, info.filename[:-4], max_bytes)
    except WeightsFileError as exc:
        raise WeightsFileError(f"{path}: {exc}") from None
    except Exception as exc:  # zipfile and zlib raise many kinds for a corrupted archive
        raise WeightsFileError(f"{path} is corrupted: {type(exc).__name__}: {exc}") from None
    return arrays


def require(
    arrays: Mapping[str, np.ndarray],
    name: str,
    shape: tuple[int, ...],
    source: str | None = None,
    *,
    kind: str = "array",
    error: type[WeightsFileError] = WeightsFileError,
) -> np.ndarray:
    """``arrays[name]`` checked for shape, floating dtype and finiteness, or ``error`` naming both shapes.

    ``kind`` ("array", "tensor") and ``source`` (a file name) only word the message.
    """
    where = f"{source}: " if source else ""
    if name not in arrays:
        raise error(f"{where}missing {kind} {name!r} (expected shape {tuple(shape)})")
    arr = np.asarray(arrays[name])
    if arr.shape != tuple(shape):
        raise error(f"{where}{kind} {name!r} has shape {arr.shape}; expected {tuple(shape)}")
    if arr.dtype.kind != "f":
        raise error(f"{where}{kind} {name!r} has dtype {arr.dtype}; expected floating point")
    if not np.isfinite(arr).all():
        raise error(f"{where}{kind} {name!r} holds NaN or inf")
    return arr


def read_csv(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """A numeric CSV, one time step per row: (T, I).  Lines starting with # are skipped."""
    try:
        if os.path.getsize(path) > max_bytes:
            raise WeightsFileError(f"{path}: {os.path.getsize(path)} bytes, over the limit of {max_bytes}")
        with open(path, encoding="utf-8") as fh:
            rows = [line for line in fh if line.strip() and not line.lstrip().startswith("#")]
    except FileNotFoundError:
        raise WeightsFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsFileError(f"{path}: not a readable text file ({exc})") from None
    values = []
    for k, line in enumerate(rows, start=1):
        try:
            values.append([float(v) for v in line.replace(";", ",").split(",")])
        except ValueError:
            raise WeightsFileError(f"{path}: row {k} is not a list of numbers: {line.strip()[:60]!r}") from None
    widths = {len(v) for v in values}
    if len(widths) > 1:
        raise WeightsFileError(f"{path}: rows have different numbers of columns {sorted(widths)}")
    return np.array(values, dtype=np.float64).reshape(len(values), widths.pop() if widths else 0)


def read_input(path: str | os.PathLike) -> np.ndarray:
    """Input sequences from ``.npy``, ``.npz`` (its only array, or the one named ``x``) or CSV."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        arr = read_npy(path)
    elif suffix == ".npz":
        arrays = read_npz(path)
        if "x" in arrays:
            arr = arrays["x"]
        elif len(arrays) == 1:
            arr = next(iter(arrays.values()))
        else:
            raise WeightsFileError(f"{path}: holds {sorted(arrays)}; name the input array 'x'")
    elif suffix in (".csv", ".txt"):
        arr = read_csv(path)
    else:
        raise WeightsFileError(f"{path}: unknown input format {suffix!r} (use .npy, .npz or .csv)")
    if arr.dtype.kind not in "iuf":
        raise WeightsFileError(f"{path}: input has dtype {arr.dtype}; expected numbers")
    return arr


def write_array(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``.npy`` (any shape) or ``.csv`` (2-D, one row per step), atomically."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a handle: np.save would add ".npy" to the temp name
                np.save(fh, np.asarray(array), allow_pickle=False)

        return write_atomic(path, write)
    if suffix in (".csv", ".txt"):
        arr = np.asarray(array)
        arr2 = arr.reshape(arr.shape[0], -1) if arr.ndim != 2 else arr
        return write_atomic(path, lambda tmp: np.savetxt(tmp, arr2, delimiter=",", fmt="%.17g"))
    raise ValueError(f"{path}: output must end in .npy or .csv")
