"""The command line's input files: CSV (one time step per row) and ``--input`` (``.npy``, ``.npz``, CSV).

Re-exported by :mod:`nplstm.io`, their public home.
"""

from __future__ import annotations

import os
import re
from array import array
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from ..io._files import DEFAULT_MAX_BYTES, WeightsFileError, check_regular_file, open_regular_file
from ..io._npz import NpzArchive, read_npy

#: Most values :func:`read_csv` returns by default (2 GiB of float64).
DEFAULT_MAX_CSV_VALUES = DEFAULT_MAX_BYTES // 8
#: Longest CSV line (1 MiB, some 50 000 values).
MAX_CSV_LINE_BYTES = 1 << 20

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
