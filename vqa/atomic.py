"""Write-then-rename helpers, so a crash never leaves half a file or half a directory."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import glob
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success rename it onto `path`, on error remove it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _share(tmp_path, umask())  # mkstemp's (or the writer's own) 0600 would outlive the rename
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary sibling directory; on success it replaces `path` as a whole.

    Where the filesystem can swap two directories in one step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``: ext4, xfs, btrfs, tmpfs) `path` is never absent. Elsewhere the old
    directory is first renamed aside to ``.<name>.old-<host>-<pid>``; a kill between the two
    renames leaves it there, and :func:`recover_dir` (called here and by the readers) puts it
    back. Temporary names carry host and pid too, so what a killed writer left is removed later.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _share(tmp, umask())  # mkdtemp's 0700 (and safetensors' 0600 files) would outlive it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists() and _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old contents
        return
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}{_OLD}{_owner()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_OLD = ".old-"


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status);
    elsewhere set to 0o077 for an instant, so a file another thread creates meanwhile is private
    rather than open."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o077)
    os.umask(old)
    return old


def _share(root: Path, mask: int) -> None:
    """Give `root` and what lies under it the modes a plain open() or mkdir() would under `mask`:
    0o777 less `mask` for directories and executables, 0o666 less `mask` for other files.
    Symbolic links are left alone."""
    paths = [str(root)]
    if root.is_dir() and not root.is_symlink():
        for top, dirs, files in os.walk(root):  # does not follow links
            paths += [os.path.join(top, name) for name in dirs + files]
    for path in paths:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            continue
        full = 0o777 if stat.S_ISDIR(mode) or mode & 0o111 else 0o666
        os.chmod(path, full & ~mask)


def _owner() -> str:
    """``<host>-<pid>`` of this process: names of temporary and set-aside paths carry it."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.{_owner()}."


def _gone(owner: str) -> bool:
    """Whether `owner` (``<host>-<pid>``) names a process of this host that no longer runs;
    False for other hosts (a shared filesystem) and for anything unparseable."""
    host, _, pid = owner.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. EPERM: the pid runs, as another user
        return False
    return False


def remove_leftovers(path: str | os.PathLike[str]) -> None:
    """Remove what writers of `path` that were killed on this host left beside it: temporary
    files and directories, and (once `path` exists again) directories set aside."""
    target = Path(path)
    if not target.parent.is_dir():
        return
    head = f".{target.name}."
    for entry in target.parent.glob(f"{glob.escape(head)}*"):
        rest = entry.name[len(head) :]
        if rest.endswith(".tmp"):
            owner = rest[: -len(".tmp")].rpartition(".")[0]  # <owner>.<random>.tmp
        elif rest.startswith(_OLD[1:]) and target.exists():
            owner = rest[len(_OLD) - 1 :]
        else:
            continue
        if _gone(owner):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the OS or filesystem cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if done == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # e.g. NFS, or a kernel before 3.15: fall back to two renames
    raise OSError(err, f"renameat2 {a} <-> {b}: {os.strerror(err)}")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    if hasattr(libc, "renameat2"):
        libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                   ctypes.c_uint]  # fmt: skip
        libc.renameat2.restype = ctypes.c_int
    return libc


def recover_dir(path: str | os.PathLike[str]) -> None:
    """If `path` is missing because a writer was killed between the two renames of
    :func:`atomic_dir`'s fallback, put the complete old directory back (the newest, if several);
    then remove what killed writers left (:func:`remove_leftovers`)."""
    target = Path(path)
    if not target.parent.is_dir():
        return
    if not target.exists():
        pattern = f".{glob.escape(target.name)}{_OLD}*"
        aside = sorted(target.parent.glob(pattern), key=lambda p: p.stat().st_mtime)
        if aside:
            os.replace(aside[-1], target)
    remove_leftovers(target)
