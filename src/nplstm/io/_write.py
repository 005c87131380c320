"""Saving atomically: a temporary sibling renamed over the target; see :mod:`nplstm.io` for the rules."""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ._files import _kind

#: A temporary file of an interrupted save is removed once its lock is free and it is this old.
STALE_AFTER_SECONDS = 60.0

_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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
