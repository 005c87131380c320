"""Saving: file modes, symlinks, refused targets, temporary files of killed saves, fsync, messages."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nplstm.io as nio
from nplstm.io import read_npz, save_npz, write_array, write_atomic

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes, links and signals")

ARRAYS = {"a": np.arange(6.0).reshape(2, 3)}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask():
    """Set the process umask for one test; restore it afterwards."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_the_umask_gives(tmp_path, umask, mask, expected):
    umask(mask)
    for path in (save_npz(tmp_path / "m.npz", ARRAYS), write_array(tmp_path / "x.csv", np.ones((2, 2)))):
        assert mode(path) == expected  # 0o666 & ~mask


@pytest.mark.parametrize("existing, mask", [(0o644, 0o077), (0o600, 0o022), (0o640, 0o022), (0o444, 0o022)])
def test_an_existing_file_keeps_its_mode(tmp_path, umask, existing, mask):
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    path.chmod(existing)
    umask(mask)
    save_npz(path, ARRAYS)
    assert mode(path) == existing
    np.testing.assert_array_equal(read_npz(path)["a"], ARRAYS["a"])


def test_a_symlink_is_written_through(tmp_path):
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "real.npz"
    real.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(Path("store") / "real.npz")  # relative, resolved from the link's folder
    assert save_npz(link, ARRAYS) == link
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "real.npz")
    np.testing.assert_array_equal(read_npz(real)["a"], ARRAYS["a"])
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "store" / "new.npz")
    save_npz(dangling, ARRAYS)
    assert dangling.is_symlink() and (tmp_path / "store" / "new.npz").is_file()
    assert temp_files(tmp_path) == [] and temp_files(tmp_path / "store") == []


def refused_target(path: Path, message: str) -> None:
    with pytest.raises(OSError) as info:
        save_npz(path, ARRAYS)
    assert str(info.value) == message
    assert temp_files(path.parent) == []


def test_non_regular_targets_are_refused(tmp_path):
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        save_npz(folder, ARRAYS)
    refused_target(folder, f"[Errno 21] is a directory, not a file to save to: '{folder}'")
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    refused_target(fifo, f"[Errno 22] is a FIFO, not a regular file; nplstm does not save over it: '{fifo}'")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = tmp_path / "null.npz"
    link.symlink_to("/dev/null")
    refused_target(link, f"[Errno 22] is a character device, not a regular file; nplstm does not save over it: '{link}'")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="making a device node needs root")
def test_as_root_a_device_node_is_not_replaced(tmp_path):
    node = tmp_path / "null.npz"  # our own copy of /dev/null (1, 3), so a failure cannot break the machine
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    refused_target(node, f"[Errno 22] is a character device, not a regular file; nplstm does not save over it: '{node}'")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_errors_name_the_users_path_not_the_temporary_file(tmp_path):
    target = tmp_path / "no_such_folder" / "m.npz"
    with pytest.raises(FileNotFoundError) as info:
        save_npz(target, ARRAYS)
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)

    def failing_write(tmp: Path) -> None:
        open(tmp.parent / "missing" / tmp.name)  # an OSError naming some other path

    with pytest.raises(FileNotFoundError) as info:
        write_atomic(tmp_path / "m.npz", failing_write)
    assert str(info.value) == f"[Errno 2] No such file or directory: '{tmp_path / 'm.npz'}'"
    assert temp_files(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_permission_error_names_the_target(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError) as info:
            save_npz(folder / "m.npz", ARRAYS)
        assert info.value.filename == str(folder / "m.npz")
    finally:
        folder.chmod(0o700)


def test_the_file_then_its_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        st = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(nio.os, "fsync", recording_fsync)
    path = save_npz(tmp_path / "m.npz", ARRAYS)
    assert synced == [("file", os.stat(path).st_ino), ("dir", os.stat(tmp_path).st_ino)]


# ------------------------------------------------ temporary files of killed saves
def temp_name(target: str, pid: int, token: str = "0123abcd") -> str:
    return f".{target}.nplstm-{pid}-{token}.tmp"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # not alive any more (reuse within the test is very unlikely)


def test_stale_temporary_files_of_the_same_target_are_removed(tmp_path):
    gone = dead_pid()
    stale = tmp_path / temp_name("m.npz", gone)
    stale.write_bytes(b"half a save")
    old_live = tmp_path / temp_name("m.npz", os.getpid(), "0000aaaa")  # a live pid, but unlocked for 10 min
    old_live.write_bytes(b"half a save")
    os.utime(old_live, (time.time() - 600, time.time() - 600))
    keep = [
        temp_name("m.npz", os.getpid(), "1111bbbb"),  # a live pid, recent: perhaps just being created
        temp_name("other.npz", gone),  # another target's
        f".m.npz.{gone}.tmp",  # not nplstm's naming
        "m.npz.tmp",
    ]
    for name in keep:
        (tmp_path / name).write_bytes(b"not ours to remove")
    locked = tmp_path / temp_name("m.npz", gone, "2222cccc")  # a dead pid but locked: in use (another pid namespace)
    locked.write_bytes(b"being written")
    import fcntl

    fd = os.open(locked, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        save_npz(tmp_path / "m.npz", ARRAYS)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + [locked.name, "m.npz"])


SLOW_SAVE = """
import sys, time
from nplstm.io import write_atomic

def write(tmp):
    with open(tmp, "wb") as fh:
        fh.write(b"x" * 1_000_000)
        fh.flush()
        time.sleep(600)  # killed here

write_atomic(sys.argv[1], write)
"""


def test_a_killed_save_leaves_the_old_file_and_its_temporary_file_goes_on_the_next_save(tmp_path):
    target = tmp_path / "m.npz"
    save_npz(target, ARRAYS)
    before = target.read_bytes()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(target)], env=env)
    try:
        for _ in range(600):  # wait (up to a minute) until the child is writing
            names = temp_files(tmp_path)
            if names and (tmp_path / names[0]).stat().st_size == 1_000_000:
                break
            time.sleep(0.1)
        assert names == [temp_name("m.npz", child.pid, names[0][-12:-4])]
        save_npz(target, ARRAYS)  # while the child is alive and holds its lock: its temp stays
        assert temp_files(tmp_path) == names
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert target.read_bytes() == before
    save_npz(target, {"b": np.zeros(2)})
    assert temp_files(tmp_path) == []
    assert list(read_npz(target)) == ["b"]
