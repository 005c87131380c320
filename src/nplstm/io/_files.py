"""Opening files for reading: regular files only, never blocking on a FIFO; the error type; budgets.

Every file nplstm reads is opened with :func:`open_regular_file`, which
refuses anything that is not a regular file after following symlinks (a
directory, a device such as ``/dev/zero``, a FIFO, a socket) without ever
blocking on a FIFO.  Every failure is a :class:`WeightsFileError` naming the
user's path.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, BinaryIO, Mapping

import numpy as np

#: Largest single ``.npy`` or CSV file read unless the caller says otherwise (2 GiB).
DEFAULT_MAX_BYTES = 1 << 31
#: :func:`parameter_budget`: this many times the parameter bytes ...
BUDGET_FACTOR = 4
#: ... plus this allowance for small members (format tag, config) (1 MiB).
BUDGET_ALLOWANCE = 1 << 20

_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class WeightsFileError(ValueError):
    """A weight file that cannot be read: missing, malformed, or with wrong arrays."""


def parameter_budget(n_parameters: int, itemsize: int) -> int:
    """The ``max_total_bytes`` for a file holding ``n_parameters`` values of ``itemsize`` bytes.

    :data:`BUDGET_FACTOR` times the parameter bytes (room for duplicated
    biases, a float64 file of a float32 model) plus :data:`BUDGET_ALLOWANCE`.
    Callers should also cap it by the user's limit, e.g.
    ``min(parameter_budget(n, 8), max_total_bytes)``, so a config claiming a
    huge model cannot raise its own budget.
    """
    if n_parameters < 0 or itemsize <= 0:
        raise ValueError(f"parameter_budget needs n_parameters >= 0 and itemsize > 0; got {n_parameters}, {itemsize}")
    return BUDGET_FACTOR * int(n_parameters) * int(itemsize) + BUDGET_ALLOWANCE


# ------------------------------------------------------------------ opening
def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(path: Any, mode: int) -> WeightsFileError:
    kind = _kind(mode)
    if kind == "a directory":
        return WeightsFileError(f"{path}: is a directory")
    return WeightsFileError(f"{path}: is {kind}, not a regular file")


def _open_error(path: Any, exc: OSError) -> WeightsFileError:
    if isinstance(exc, FileNotFoundError):
        return WeightsFileError(f"{path}: no such file")
    if exc.errno == errno.ENXIO:  # opening a socket (or a FIFO/device without a driver) fails so
        try:
            return _not_regular(path, os.stat(path).st_mode)
        except OSError:
            pass
    return WeightsFileError(f"{path}: {(exc.strerror or str(exc)).lower()}")


def check_regular_file(path: str | os.PathLike) -> None:
    """Raise WeightsFileError unless ``path`` is (a symlink to) an existing regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _open_error(path, exc) from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened for binary reading, or WeightsFileError if it is not a regular file.

    Symlinks are followed.  The file is opened non-blocking and checked with
    ``fstat`` before anything is read, so a FIFO is refused at once instead
    of blocking, and ``/dev/zero`` is refused instead of read forever.  The
    returned file blocks normally and its ``name`` is ``str(path)``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _O_NONBLOCK)
    except OSError as exc:
        raise _open_error(path, exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        if _O_NONBLOCK:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_NONBLOCK)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    fh.raw.name = str(path)  # type: ignore[attr-defined]  # messages name the user's path, not an fd
    return fh


def read_bounded_bytes(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The whole of a regular file, or WeightsFileError if it holds more than ``max_bytes``."""
    with open_regular_file(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise WeightsFileError(f"{path}: {size} bytes, over the limit of {max_bytes}")
            data = fh.read(max_bytes + 1)  # the size can lie (a growing file, /proc)
        except OSError as exc:
            raise WeightsFileError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise WeightsFileError(f"{path}: more than {max_bytes} bytes, over the limit")
    return data



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
