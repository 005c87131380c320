"""``.npy`` and ``.npz`` files read without pickle, within a memory budget; zip directories checked first.

See :mod:`nplstm.io` for what an ``.npz`` must be and the budgets.
"""

from __future__ import annotations

import os
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._files import BUDGET_ALLOWANCE, DEFAULT_MAX_BYTES, WeightsFileError, open_regular_file

#: Largest total declared uncompressed size of a zip (all arrays of an ``.npz``) (2 GiB).
DEFAULT_MAX_TOTAL_BYTES = 1 << 31
#: Most members a zip may list; its directory is checked before zipfile parses it.
MAX_ZIP_MEMBERS = 10_000
#: Largest zip central directory read (8 MiB: 10 000 members with long names).
MAX_CENTRAL_DIRECTORY_BYTES = 8 << 20
#: Largest ``.npy`` header (NumPy's own default limit).
MAX_NPY_HEADER_BYTES = 10_000

_CHUNK = 1 << 20


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
