"""Reading and writing weight files without pickle, within a memory budget, atomically.

The code lives in private modules: ``_files`` (opening, the error type, budgets), ``_npz``
(``.npy``/``.npz`` and zip directories), ``_write`` (atomic saves); the command line's input
readers (:func:`read_csv`, :func:`read_input`) live beside it in ``nplstm.cli._inputs``.
Import every name from here.

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

import os  # noqa: F401  (tests patch os.fsync and np.savez through this module)
from typing import Any

import numpy as np  # noqa: F401

from ._files import (
    BUDGET_ALLOWANCE,
    BUDGET_FACTOR,
    DEFAULT_MAX_BYTES,
    WeightsFileError,
    check_regular_file,
    open_regular_file,
    parameter_budget,
    read_bounded_bytes,
    require,
)
from ._npz import (
    DEFAULT_MAX_TOTAL_BYTES,
    MAX_CENTRAL_DIRECTORY_BYTES,
    MAX_NPY_HEADER_BYTES,
    MAX_ZIP_MEMBERS,
    NpzArchive,
    check_zip_budget,
    read_npy,
    read_npz,
)
from ._write import STALE_AFTER_SECONDS, save_npz, write_array, write_atomic

__all__ = [
    # errors and opening
    "WeightsFileError", "open_regular_file", "check_regular_file", "read_bounded_bytes", "require",
    # .npy, .npz and zips
    "read_npy", "read_npz", "NpzArchive", "check_zip_budget", "parameter_budget",
    # saving
    "write_atomic", "save_npz", "write_array",
    # the command line's inputs (defined in nplstm.cli._inputs)
    "read_csv", "read_input",
    # limits
    "DEFAULT_MAX_BYTES", "DEFAULT_MAX_TOTAL_BYTES", "BUDGET_FACTOR", "BUDGET_ALLOWANCE", "MAX_ZIP_MEMBERS",
    "MAX_CENTRAL_DIRECTORY_BYTES", "MAX_NPY_HEADER_BYTES", "DEFAULT_MAX_CSV_VALUES", "MAX_CSV_LINE_BYTES", "MAX_CSV_ECHO",
    "STALE_AFTER_SECONDS",
]

_INPUTS = ("read_csv", "read_input", "DEFAULT_MAX_CSV_VALUES", "MAX_CSV_LINE_BYTES", "MAX_CSV_ECHO")


def __getattr__(name: str) -> Any:
    # imported on first use: the command line package imports this one
    if name in _INPUTS:
        from ..cli import _inputs

        return getattr(_inputs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
