"""Reading and writing weight files without pickle, within a memory budget, atomically.

Reading
-------
Every file is opened with :func:`open_regular_file`, which refuses anything
that is not a regular file after following symlinks (a directory, a device
such as ``/dev/zero``, a FIFO, a socket) without ever blocking on a FIFO.

Every ``.npz`` is read through :class:`NpzArchive`.  Opening it reads only
the zip's central directory and refuses, before any array data is read:
members that are not ``.npy`` arrays, duplicate names, more than
:data:`MAX_ZIP_MEMBERS` members, and a total *declared* uncompressed size
above the budget ``max_total_bytes``.  Each array's ``.npy`` header is then
checked (numeric or text dtypes only; the shape must need exactly the bytes
the zip declares for it) before its array is allocated, and the data is read
in chunks straight into that array, so reading costs one copy of the data
and a member is never read past what its header claims.

Budgets:

* :data:`DEFAULT_MAX_TOTAL_BYTES` (2 GiB): all arrays of one zip file
  together, unless the caller passes another ``max_total_bytes``.
* :func:`parameter_budget`: the budget a model loader should pass once it
  knows, from the small ``format``/``config`` members, how many parameters
  the file may hold: :data:`BUDGET_FACTOR` (4) times the parameter bytes
  plus :data:`BUDGET_ALLOWANCE` (1 MiB) for the small members.
* :data:`DEFAULT_MAX_BYTES` (2 GiB): one ``.npy`` file, or a CSV file.
  :func:`read_csv` also caps the number of values (``max_values``, default
  :data:`DEFAULT_MAX_CSV_VALUES`, 2 GiB of float64) and the length of a
  line (:data:`MAX_CSV_LINE_BYTES`, 1 MiB), and streams the file line by
  line into the result.
* :func:`check_zip_budget` applies the same central-directory check to zip
  files another library parses (``torch.load`` reads ``.pt`` zips), and
  :func:`read_bounded_bytes` reads a whole file only up to a limit (ONNX).

Saving
------
:func:`write_atomic` (used by every save) writes a temporary file next to the
target and renames it over the target, so an interrupted save never leaves a
half-written file where a good one was:

* a new file gets the mode the umask gives (``0o666 & ~umask``); an existing
  file keeps its permission bits, its sticky bit, and (where allowed) its
  owner and group, and its setgid/setuid bits when the group/owner is kept;
* a symlink is written through: its final target is replaced and the link
  stays.  A file with several hard links is replaced, not rewritten in
  place: its other names keep the old content;
* a target that exists and is not a regular file (a directory, a device, a
  FIFO, a socket) is refused;
* the temporary file is ``.<name>.nplstm-<pid>-<8 hex digits>.tmp`` in the
  target's directory.  nplstm holds an exclusive ``flock`` on it for the whole
  save; the kernel releases it even when the process is killed.  A save
  removes the stale temporary files of *its own target*: those whose lock is
  free and whose pid is not a live process, or whose lock is free and which
  were last modified more than :data:`STALE_AFTER_SECONDS` (60 s) ago (the
  pid may have been reused).  A temporary file being written by any process
  holds its lock and is never removed;
* the file is fsynced before the rename and its directory after it;
* an ``OSError`` is re-raised with the same type and errno, naming the
  user's path rather than the temporary file; when the temporary file cannot
  be created, the message says so and names the folder (e.g. a symlink to
  ``/proc/self/status``, whose folder takes no new files).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import struct
import time
import warnings
import zipfile
from array import array
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Sequence

import numpy as np

#: Largest single ``.npy`` or CSV file read unless the caller says otherwise (2 GiB).
DEFAULT_MAX_BYTES = 1 << 31
#: Largest total declared uncompressed size of a zip (all arrays of an ``.npz``) (2 GiB).
DEFAULT_MAX_TOTAL_BYTES = 1 << 31
#: :func:`parameter_budget`: this many times the parameter bytes ...
BUDGET_FACTOR = 4
#: ... plus this allowance for small members (format tag, config) (1 MiB).
BUDGET_ALLOWANCE = 1 << 20
#: Most members a zip may list; its directory is checked before zipfile parses it.
MAX_ZIP_MEMBERS = 10_000
#: Largest zip central directory read (8 MiB: 10 000 members with long names).
MAX_CENTRAL_DIRECTORY_BYTES = 8 << 20
#: Largest ``.npy`` header (NumPy's own default limit).
MAX_NPY_HEADER_BYTES = 10_000
#: Most values :func:`read_csv` returns by default (2 GiB of float64).
DEFAULT_MAX_CSV_VALUES = DEFAULT_MAX_BYTES // 8
#: Longest CSV line (1 MiB, some 50 000 values).
MAX_CSV_LINE_BYTES = 1 << 20
#: A temporary file of an interrupted save is removed once its lock is free and it is this old.
STALE_AFTER_SECONDS = 60.0

_CHUNK = 1 << 20
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


# ---------------------------------------------------------------- .npy data
class _Header:
    __slots__ = ("shape", "fortran", "dtype", "offset", "nbytes")

    def __init__(self, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, offset: int, nbytes: int):
        self.shape, self.fortran, self.dtype, self.offset, self.nbytes = shape, fortran, dtype, offset, nbytes


def _read_exactly(fh: BinaryIO, n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise WeightsFileError(f"{what} is truncated")
    return data


def _read_header(fh: BinaryIO, name: str, stored: int, max_bytes: int) -> _Header:
    """Parse one ``.npy`` header of a stream holding ``stored`` bytes, before any allocation."""
    magic = fh.read(8)
    if len(magic) != 8 or magic[:6] != b"\x93NUMPY":
        raise WeightsFileError(f"array {name!r} is not a .npy array (bad magic string)")
    version = (magic[6], magic[7])
    if version == (1, 0):
        length_bytes = _read_exactly(fh, 2, f"array {name!r} header")
        length = struct.unpack("<H", length_bytes)[0]
        parse = np.lib.format.read_array_header_1_0
    elif version == (2, 0):
        length_bytes = _read_exactly(fh, 4, f"array {name!r} header")
        length = struct.unpack("<I", length_bytes)[0]
        parse = np.lib.format.read_array_header_2_0
    else:
        raise WeightsFileError(f"array {name!r}: unsupported .npy format version {version}")
    if length > MAX_NPY_HEADER_BYTES:
        raise WeightsFileError(f"array {name!r} has a {length}-byte header, over the limit of {MAX_NPY_HEADER_BYTES}")
    text = _read_exactly(fh, length, f"array {name!r} header")
    import io

    try:
        with warnings.catch_warnings():  # parsing a junk header may warn (bad escapes); the error below says it
            warnings.simplefilter("ignore")
            shape, fortran, dtype = parse(io.BytesIO(length_bytes + text), max_header_size=MAX_NPY_HEADER_BYTES)
    except Exception as exc:  # NumPy's header parser raises a zoo (ValueError, SyntaxError, TokenError, ...)
        raise WeightsFileError(f"array {name!r} has a malformed header: {type(exc).__name__}: {exc}") from None
    if dtype.hasobject or dtype.kind not in "biufU" or dtype.fields is not None or dtype.subdtype is not None:
        raise WeightsFileError(f"array {name!r} has dtype {dtype}; only numeric and text arrays are read")
    if dtype.itemsize == 0:
        raise WeightsFileError(f"array {name!r} has the empty dtype {dtype}")
    if any(n < 0 for n in shape):
        raise WeightsFileError(f"array {name!r} claims the negative shape {shape}")
    count = 1
    for n in shape:
        count *= int(n)
    nbytes = count * dtype.itemsize
    if nbytes > max_bytes:
        raise WeightsFileError(f"array {name!r} claims shape {shape} ({nbytes} bytes), over the limit of {max_bytes}")
    offset = len(magic) + len(length_bytes) + length
    if stored - offset != nbytes:
        raise WeightsFileError(
            f"array {name!r} claims shape {shape} {dtype} ({nbytes} bytes) but {stored - offset} bytes are stored"
        )
    return _Header(tuple(int(n) for n in shape), bool(fortran), dtype, offset, nbytes)


def _read_data(fh: BinaryIO, header: _Header, name: str) -> np.ndarray:
    """The array of ``header``, read in chunks into its own buffer: one copy, never past ``nbytes``."""
    flat = np.empty(header.nbytes // header.dtype.itemsize, dtype=header.dtype)
    view = flat.view(np.uint8).data
    done = 0
    while done < header.nbytes:
        n = fh.readinto(view[done : min(done + _CHUNK, header.nbytes)])  # type: ignore[attr-defined]
        if not n:
            raise WeightsFileError(f"array {name!r} is truncated: {done} of {header.nbytes} bytes")
        done += n
    return flat.reshape(header.shape, order="F" if header.fortran else "C")


def read_npy(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read one ``.npy`` file without pickle, checking its header first."""
    with open_regular_file(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            name = Path(path).name
            return _read_data(fh, _read_header(fh, name, size, max_bytes), name)
        except WeightsFileError as exc:
            raise WeightsFileError(f"{path}: {exc}") from None
        except OSError as exc:
            raise WeightsFileError(f"{path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------- zips
def _open_zip(fh: BinaryIO, path: Any, what: str) -> zipfile.ZipFile:
    """A ZipFile over ``fh`` once its end record shows a directory of sane size."""
    try:
        end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]  # the end record, without the directory
        if end is None:
            raise zipfile.BadZipFile("File is not a zip file")
        members, directory = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
        if members > MAX_ZIP_MEMBERS or directory > MAX_CENTRAL_DIRECTORY_BYTES:
            raise WeightsFileError(
                f"{path}: its zip directory lists {members} members in {directory} bytes, over the limit of "
                f"{MAX_ZIP_MEMBERS} members or {MAX_CENTRAL_DIRECTORY_BYTES} bytes"
            )
        return zipfile.ZipFile(fh)
    except WeightsFileError:
        raise
    except Exception as exc:  # BadZipFile, OSError, ValueError, struct.error ...
        raise WeightsFileError(f"{path} is not a readable {what}: {type(exc).__name__}: {exc}") from None


def _declared_total(infos: list[zipfile.ZipInfo], path: Any, max_total_bytes: int) -> int:
    total = sum(info.file_size for info in infos)
    if total > max_total_bytes:
        raise WeightsFileError(
            f"{path}: its members declare {total} bytes uncompressed, over the budget of {max_total_bytes} "
            "(max_total_bytes)"
        )
    return total


def check_zip_budget(
    file: str | os.PathLike | BinaryIO, max_total_bytes: int, *, max_expansion: float | None = None
) -> int:
    """The total declared uncompressed size of a zip file, or WeightsFileError if over budget.

    Reads only the zip's directory, so a zip bomb is refused before another
    library (``torch.load``) inflates it.  ``file`` is a path (checked to be a
    regular file) or an open seekable binary file (rewound afterwards).
    ``max_expansion`` also refuses a total above that many times the file's
    size plus :data:`BUDGET_ALLOWANCE`, for formats whose writers do not
    compress (``torch.save``).
    """
    own = not hasattr(file, "read")
    fh: BinaryIO = open_regular_file(file) if own else file  # type: ignore[arg-type, assignment]
    path = file if own else getattr(fh, "name", "<file>")
    try:
        with _open_zip(fh, path, "zip file") as zf:
            total = _declared_total(zf.infolist(), path, max_total_bytes)
        if max_expansion is not None:
            size = os.fstat(fh.fileno()).st_size
            if total > max_expansion * size + BUDGET_ALLOWANCE:
                raise WeightsFileError(
                    f"{path}: its members declare {total} bytes uncompressed from a {size}-byte file "
                    f"(more than {max_expansion:g}x its size): a zip bomb, not a file this format's writer makes"
                )
        return total
    finally:
        if own:
            fh.close()
        else:
            fh.seek(0)


class NpzArchive:
    """An ``.npz`` file opened for reading arrays one by one within a memory budget.

    Opening reads only the zip directory; see the module docstring for what is
    refused there.  Then :meth:`header` reads one array's ``.npy`` header
    (cheap) and :meth:`read` reads one array.  Every failure is a
    WeightsFileError naming the file.

    Examples
    --------
    A model loader reads the small members first, then bounds the rest:

    >>> with NpzArchive("model.npz") as npz:  # doctest: +SKIP
    ...     config = npz.read("config")  # after npz.header("config") says it is small
    ...     npz.limit_to(parameter_budget(n_parameters_of(config), 8))
    ...     shape, dtype = npz.header("lstm.Wf")  # check every shape before reading any
    ...     weights = npz.read("lstm.Wf")
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        small_until_limited: int | None = None,
    ) -> None:
        self.path = path
        self.max_total_bytes = int(max_total_bytes)
        # A model loader passes small_until_limited: until it calls limit_to(), read() refuses any
        # member the directory declares larger, so no array can be inflated before the budget is set.
        self._small_until_limited = small_until_limited
        self._file = open_regular_file(path)
        try:
            self._zip = _open_zip(self._file, path, ".npz file")
            infos = self._zip.infolist()
            members: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise WeightsFileError(f"{path}: unexpected member {info.filename!r} (not an .npy array)")
                name = info.filename[:-4]
                if name in members:
                    raise WeightsFileError(f"{path}: the array {name!r} is stored twice")
                if info.flag_bits & 0x1:
                    raise WeightsFileError(f"{path}: the array {name!r} is encrypted")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise WeightsFileError(
                        f"{path}: the array {name!r} uses zip compression method {info.compress_type}; "
                        "only stored and deflated (np.savez, np.savez_compressed) are read"
                    )
                members[name] = info
            #: Total uncompressed size the zip directory declares for all arrays.
            self.declared_bytes = _declared_total(infos, path, self.max_total_bytes)
        except BaseException:
            self.close()
            raise
        self._members = members
        self._headers: dict[str, _Header] = {}

    def limit_to(self, max_total_bytes: int) -> None:
        """Lower the budget, e.g. to :func:`parameter_budget` once the config is read.

        Raises WeightsFileError if the arrays already declare more; later
        headers are checked against the new budget too.
        """
        budget = min(self.max_total_bytes, int(max_total_bytes))
        _declared_total(list(self._members.values()), self.path, budget)
        self.max_total_bytes = budget
        self._small_until_limited = None

    @property
    def names(self) -> list[str]:
        """Array names, in file order, without the ``.npy`` suffix."""
        return list(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def _member(self, name: str) -> zipfile.ZipInfo:
        if name not in self._members:
            raise WeightsFileError(f"{self.path}: no array named {name!r}")
        return self._members[name]

    def _corrupted(self, name: str, exc: Exception) -> WeightsFileError:
        if isinstance(exc, WeightsFileError):
            return WeightsFileError(f"{self.path}: {exc}")
        # zipfile and zlib raise many kinds for a corrupted archive
        return WeightsFileError(f"{self.path} is corrupted (array {name!r}): {type(exc).__name__}: {exc}")

    def _header(self, name: str, fh: BinaryIO) -> _Header:
        info = self._member(name)
        header = _read_header(fh, name, info.file_size, self.max_total_bytes)
        self._headers[name] = header
        return header

    def header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """``(shape, dtype)`` of one array, reading only its ``.npy`` header."""
        if name not in self._headers:
            try:
                with self._zip.open(self._member(name)) as fh:
                    self._header(name, fh)  # type: ignore[arg-type]
            except Exception as exc:
                raise self._corrupted(name, exc) from None
        header = self._headers[name]
        return header.shape, header.dtype

    def read(self, name: str) -> np.ndarray:
        """One array; its header is checked first, then its bytes are read into it in chunks.

        Before :meth:`limit_to` is called on an archive opened with
        ``small_until_limited=n``, a member declaring more than ``n`` bytes
        is refused unread.
        """
        limit = self._small_until_limited
        if limit is not None and self._member(name).file_size > limit:
            raise WeightsFileError(
                f"{self.path}: array {name!r} declares {self._member(name).file_size} bytes, more than the "
                f"{limit} allowed before the file's parameter budget is known"
            )
        try:
            with self._zip.open(self._member(name)) as fh:
                return _read_data(fh, self._header(name, fh), name)  # type: ignore[arg-type]
        except Exception as exc:
            raise self._corrupted(name, exc) from None

    def read_all(self) -> dict[str, np.ndarray]:
        """Every array, by name."""
        return {name: self.read(name) for name in self._members}

    def close(self) -> None:
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
        self._file.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_npz(path: str | os.PathLike, *, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without pickle, within ``max_total_bytes``; see :class:`NpzArchive`."""
    with NpzArchive(path, max_total_bytes=max_total_bytes) as npz:
        return npz.read_all()


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


# ---------------------------------------------------------------------- CSV
#: One CSV value, as numpy.loadtxt and C's strtod read it: no ``_`` digit separators (which
#: Python's float() accepts), no hexadecimal; ``inf``/``nan`` in any case.
_CSV_NUMBER = rb"\s*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))\s*"
_CSV_ROW = re.compile(_CSV_NUMBER + rb"(?:[,;]" + _CSV_NUMBER + rb")*")
_CSV_FIELD = re.compile(_CSV_NUMBER)
#: A row that reads as one number written with a decimal comma (``0,5``, ``-12,25``).
_CSV_DECIMAL_COMMA_ROW = re.compile(rb"[+-]?[0-9]+,[0-9]+")
#: Between two ``;``: one number written with a decimal comma (``0,5`` in ``0,5;1,5``).
_CSV_DECIMAL_COMMA_FIELD = re.compile(rb"\s*[+-]?[0-9]+,[0-9]+\s*")
#: Longest offending value quoted in a CSV error.
MAX_CSV_ECHO = 24


def _csv_token(field: bytes, echo: bool) -> str:
    """The offending value for an error message: at most :data:`MAX_CSV_ECHO` bytes, only when ``echo``."""
    if not echo:
        return "a value is not a number (not quoted: the file is not ordinary data on disk)"
    shown = field.strip()
    cut = shown[:MAX_CSV_ECHO].decode("utf-8", "replace")
    return repr(cut) + ("..." if len(shown) > MAX_CSV_ECHO else "") + " is not a number"


def _ordinary_file(fh: BinaryIO) -> bool:
    """Whether the file is plain data on disk whose content may be quoted in an error.

    Files of the kernel's pseudo file systems (``/proc``, ``/sys``) claim size 0
    but hold text such as the environment: never quote them.
    """
    try:
        real = os.path.realpath(getattr(fh, "name", ""))
        return os.fstat(fh.fileno()).st_size > 0 and not real.startswith(("/proc/", "/sys/", "/dev/"))
    except (OSError, ValueError):
        return False


def _csv_columns(header: list[str] | None, columns: Sequence[int | str], width: int, path: Any) -> list[int]:
    """The 0-based positions of ``columns`` (indices, or names from the header)."""
    picked = []
    for column in columns:
        if isinstance(column, str) and not column.lstrip("-").isdigit():
            if header is None:
                raise WeightsFileError(f"{path}: column {column!r} is a name, but the file has no header (use skip_header)")
            if column not in header:
                raise WeightsFileError(f"{path}: no column named {column!r}; the header has {header[:12]}")
            picked.append(header.index(column))
            continue
        index = int(column)
        if not 0 <= index < width:
            raise WeightsFileError(f"{path}: column {index} does not exist: rows have {width} values (columns 0 to {width - 1})")
        picked.append(index)
    if len(set(picked)) != len(picked):
        raise WeightsFileError(f"{path}: columns {list(columns)} name a column twice")
    return picked


def read_csv(
    path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES, max_values: int = DEFAULT_MAX_CSV_VALUES,
    skip_header: bool = False, columns: Sequence[int | str] | None = None,
) -> np.ndarray:
    """A numeric CSV, one time step per row: (T, I) float64.

    With ``skip_header`` the first row (after comments and blank lines) is a
    header of column names.  ``columns`` keeps only those columns, in that
    order: 0-based indices, or names from the header; the other columns may
    hold anything (dates, labels).

    Lines starting with ``#`` and blank lines are skipped; ``;`` separates
    values like ``,``.  Values are read as ``numpy.loadtxt`` reads them:
    decimal numbers with an optional exponent, ``inf`` and ``nan``; not
    ``1_0`` or hexadecimal.  A value that is not a number is quoted in the
    error (at most :data:`MAX_CSV_ECHO` bytes), except from a file that is
    not ordinary data on disk (``/proc``, ``/sys``), which is never quoted.

    Decimal commas are refused rather than read as extra columns.  A file
    is refused when a line separates values with ``;`` and one of them is
    two whole numbers joined by a comma (``0,5;1,5``), or when every data
    row is two whole numbers joined by a bare comma (``0,5`` / ``-1,25``:
    one feature written with decimal commas, or two integer columns?).  With
    several features per row, a decimal-comma file must use ``;``, so these
    two rules cover it; two integer columns are read once any row has a
    decimal point, a sign on its second value or a space after its comma
    (``1, 2``).  :func:`write_array` never writes such a file.

    The file is streamed line by line into one growing buffer, so reading
    costs about the size of the result; more than ``max_bytes`` bytes,
    ``max_values`` values or a line longer than :data:`MAX_CSV_LINE_BYTES` is
    refused.
    """
    values = array("d")
    width = -1
    read = 0
    header: list[str] | None = None
    picked: list[int] | None = None
    want_header = bool(skip_header)
    decimal_commas = True  # every row so far reads as one decimal-comma number
    with open_regular_file(path) as fh:
        echo = _ordinary_file(fh)
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise WeightsFileError(f"{path}: {size} bytes, over the limit of {max_bytes}")
            for number in range(1, 1 << 62):
                line = fh.readline(MAX_CSV_LINE_BYTES + 1)
                if not line:
                    break
                read += len(line)
                if read > max_bytes:
                    raise WeightsFileError(f"{path}: more than {max_bytes} bytes, over the limit")
                if len(line) > MAX_CSV_LINE_BYTES:
                    raise WeightsFileError(f"{path}: line {number} is longer than {MAX_CSV_LINE_BYTES} bytes")
                if number == 1 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                    line = line[3:]
                text = line.strip()
                if not text or text.startswith(b"#"):
                    continue
                fields = text.replace(b";", b",").split(b",")
                if want_header:
                    want_header = False
                    header = [f.strip().strip(b'"').strip(b"'").decode("utf-8", "replace") for f in fields]
                    width = len(fields)
                    continue
                if width < 0:
                    width = len(fields)
                if columns is not None and picked is None:
                    picked = _csv_columns(header, columns, width, path)
                if picked is not None:
                    if len(fields) != width:
                        raise WeightsFileError(
                            f"{path}: line {number} has {len(fields)} values; the rows before it have {width}"
                        )
                    bad = next((fields[k] for k in picked if not _CSV_FIELD.fullmatch(fields[k])), None)
                    if bad is not None:
                        raise WeightsFileError(
                            f"{path}: line {number}, a chosen column is not a number: {_csv_token(bad, echo)}"
                        )
                    if len(values) + len(picked) > max_values:
                        raise WeightsFileError(f"{path}: more than {max_values} values, over the limit")
                    values.extend(float(fields[k]) for k in picked)
                    decimal_commas = False  # columns are named: a decimal comma would have changed the count
                    continue
                if not _CSV_ROW.fullmatch(text):
                    bad = next((f for f in fields if not _CSV_FIELD.fullmatch(f)), text)
                    hint = " (a header? skip it with skip_header, --skip-header on the command line)" if not values else ""
                    raise WeightsFileError(
                        f"{path}: line {number} is not a list of numbers: {_csv_token(bad, echo)}{hint}"
                    )
                if b";" in text and any(_CSV_DECIMAL_COMMA_FIELD.fullmatch(f) for f in text.split(b";")):
                    raise WeightsFileError(
                        f"{path}: line {number} separates values with ';' and joins two whole numbers with ',' "
                        "between them: decimal commas (0,5 for 0.5) are not read; write numbers with a decimal point"
                    )
                if len(fields) != width:
                    raise WeightsFileError(
                        f"{path}: line {number} has {len(fields)} values; the rows before it have {width}"
                    )
                if len(values) + width > max_values:
                    raise WeightsFileError(f"{path}: more than {max_values} values, over the limit")
                decimal_commas = decimal_commas and _CSV_DECIMAL_COMMA_ROW.fullmatch(text) is not None
                values.extend(map(float, fields))
        except OSError as exc:
            raise WeightsFileError(f"{path}: {exc.strerror or exc}") from None
    if width < 0 or (not values and header is not None):
        raise WeightsFileError(f"{path}: no data rows (a CSV with one time step per line is expected)")
    if picked is not None:
        width = len(picked)
    if decimal_commas:
        raise WeightsFileError(
            f"{path}: every row is two whole numbers joined by a comma, like '0,5': one value with a decimal comma "
            "or two integer columns? nplstm does not guess: write decimal points (0.5), or write the "
            "integers as 1.0 or with a space after the comma"
        )
    return np.frombuffer(values, dtype=np.float64).reshape(-1, width)  # shares the buffer: no copy


def read_input(path: str | os.PathLike, *, skip_header: bool = False, columns: Sequence[int | str] | None = None) -> np.ndarray:
    """Input sequences from ``.npy``, ``.npz`` (its only array, or the one named ``x``) or CSV.

    An ``.npz`` is chosen from by the names in its zip directory; only the
    chosen array is read (see :class:`NpzArchive` for its budget).
    ``skip_header`` and ``columns`` are for CSV files (see :func:`read_csv`).
    """
    if (skip_header or columns is not None) and Path(path).suffix.lower() not in (".csv", ".txt"):
        raise WeightsFileError(f"{path}: a header and columns are options of CSV files; this is {Path(path).suffix!r}")
    check_regular_file(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        arr = read_npy(path)
    elif suffix == ".npz":
        with NpzArchive(path) as npz:
            names = npz.names
            if "x" in names:
                name = "x"
            elif len(names) == 1:
                name = names[0]
            else:
                listed = ", ".join(repr(n[:40]) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                raise WeightsFileError(f"{path}: holds {len(names)} arrays ({listed}); name the input array 'x'")
            _, dtype = npz.header(name)
            if dtype.kind not in "iuf":
                raise WeightsFileError(f"{path}: input {name!r} has dtype {dtype}; expected numbers")
            arr = npz.read(name)
    elif suffix in (".csv", ".txt"):
        arr = read_csv(path, skip_header=skip_header, columns=columns)
    else:
        raise WeightsFileError(f"{path}: unknown input format {suffix!r} (use .npy, .npz or .csv)")
    if arr.dtype.kind not in "iuf":
        raise WeightsFileError(f"{path}: input has dtype {arr.dtype}; expected numbers")
    return arr


# ------------------------------------------------------------------- saving
def _temp_prefix(name: str) -> str:
    # keep the temporary name within NAME_MAX (255 bytes) for long target names
    stem = name if len(os.fsencode(name)) <= 200 else name[:40]
    return f".{stem}.nplstm-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _lock_is_free(path: str) -> bool:
    """Whether nobody holds the save lock of a temporary file (False when unsure)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): rely on pid and age alone
        return True
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the lock just taken


def _remove_stale_temps(directory: str, name: str) -> None:
    """Remove temporary files left by killed saves of ``name``; see the module docstring for the rule."""
    prefix = _temp_prefix(name)
    pattern = re.compile(re.escape(prefix) + r"([1-9][0-9]*)-[0-9a-f]{8}\.tmp")
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            old = time.time() - st.st_mtime > STALE_AFTER_SECONDS
            if (old or not _pid_alive(int(match.group(1)))) and _lock_is_free(entry.path):
                os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove
            continue


def _save_error(path: Any, exc: OSError) -> OSError:
    """``exc`` re-made to name the user's ``path`` instead of a temporary file."""
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    return type(exc)(exc.errno, exc.strerror, str(path))


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it over ``path``.

    See the module docstring for the rules: modes, symlinks, refused targets,
    temporary names and their cleanup, fsync, and error messages.  Returns
    ``Path(path)`` (a symlink stays a symlink; its target was written).
    """
    target = Path(path)
    real = os.path.realpath(target)
    directory, name = os.path.split(real)
    try:
        existing: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise _save_error(path, exc) from None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        kind = _kind(existing.st_mode)
        if kind == "a directory":
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file to save to", str(path))
        raise OSError(errno.EINVAL, f"is {kind}, not a regular file; nplstm does not save over it", str(path))
    _remove_stale_temps(directory, name)
    # a new file: 0o666 and the kernel applies the umask.  An existing one: its own bits plus the
    # owner's read and write while being written (never more for others), its exact mode after.
    create_mode = 0o666 if existing is None else (stat.S_IMODE(existing.st_mode) & 0o777) | 0o600
    tmp = None
    fd = -1
    try:
        for _ in range(100):
            candidate = os.path.join(directory, f"{_temp_prefix(name)}{os.getpid()}-{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, create_mode)
            except FileExistsError:
                continue
            except OSError as exc:  # say what failed: the target may exist (a /proc file) yet its folder takes no files
                where = f"{directory!r}" if real == os.path.abspath(target) else f"{directory!r} (the folder of {real!r})"
                raise type(exc)(
                    exc.errno, f"cannot create a file in {where} to save it: {exc.strerror or exc}", str(path)
                ) from None
            tmp = candidate
            break
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)  # marks it in use until closed (or the process dies)
        except ImportError:
            pass
        if existing is not None and hasattr(os, "fchown") and (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.fchown(fd, existing.st_uid, existing.st_gid)
            except OSError:  # not allowed: the file becomes ours, as any rewrite would
                pass
        write(Path(tmp))
        if existing is not None:  # after writing, so that a read-only file can be saved over
            os.fchmod(fd, _kept_mode(existing, os.fstat(fd))) if hasattr(os, "fchmod") else os.chmod(tmp, _kept_mode(existing, os.stat(tmp)))
        os.fsync(fd)  # flushes the file whichever descriptor wrote it
        os.replace(tmp, real)
        tmp = None
        _fsync_directory(directory)
    except OSError as exc:
        raise _save_error(path, exc) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target


def _kept_mode(existing: os.stat_result, new: os.stat_result) -> int:
    """The mode of the file replacing ``existing``: its permission bits and its sticky bit, and its
    setgid (setuid) bit when the new file has the same group (owner): a save never grants a special
    bit to another owner or group than the one the user gave it to."""
    mode = stat.S_IMODE(existing.st_mode)
    if new.st_uid != existing.st_uid:
        mode &= ~stat.S_ISUID
    if new.st_gid != existing.st_gid:
        mode &= ~stat.S_ISGID
    return mode


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; some file systems cannot fsync a directory, which is no error."""
    try:
        dfd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(dfd)


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save named arrays as an uncompressed ``.npz``, atomically (see :func:`write_atomic`)."""

    def write(tmp: Path) -> None:
        named: dict[str, Any] = {name: np.asarray(a) for name, a in arrays.items()}
        with open(tmp, "wb") as fh:
            np.savez(fh, **named)

    return write_atomic(path, write)


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
        fmt = "%.17g"
        if arr2.ndim == 2 and arr2.shape[1] == 2 and np.all(np.isfinite(arr2)) and np.all(arr2 == np.round(arr2)):
            fmt = "%.1f"  # "0.0,5.0", exact for whole numbers: "0,5" rows would read back as decimal commas
        return write_atomic(path, lambda tmp: np.savetxt(tmp, arr2, delimiter=",", fmt=fmt))
    raise ValueError(f"{path}: output must end in .npy or .csv")
