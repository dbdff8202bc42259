"""Partition folders that are replaced whole or not at all, and a lock per partition.

A partition is written in full to a temporary folder beside its final place,
then swapped in. On Linux the swap is one `renameat2(RENAME_EXCHANGE)` call, so
a reader sees the old folder or the new one, never a mix and never nothing.
"""

import ctypes
import errno
import fcntl
import os
import shutil
import time
import uuid
from typing import IO

from upath import UPath

RENAME_EXCHANGE = 2
AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


class PartitionLockTimeout(RuntimeError):
    pass


def is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def temporary_sibling(target: UPath, label: str = "tmp") -> UPath:
    """Return a fresh hidden path in the target's folder, so a rename stays on one filesystem."""
    return target.parent / f".{label}-{target.name}-{uuid.uuid4().hex[:12]}"


def exchange_local(first: str, second: str) -> bool:
    """Swap two existing paths atomically; return False where the kernel or filesystem cannot."""
    if _renameat2 is None:
        return False
    result = _renameat2(AT_FDCWD, first.encode(), AT_FDCWD, second.encode(), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"could not swap {first} with {second}: {os.strerror(code)}")


def commit_folder(staged: UPath, target: UPath) -> None:
    """Move a complete staged folder to the target, replacing any earlier content whole."""
    if not is_local(staged):
        # NOTE: object stores have no atomic folder rename: a reader listing the
        # target during this copy can see old and new part files together.
        if target.exists():
            target.fs.rm(target.path, recursive=True)
        staged.fs.mv(staged.path, target.path, recursive=True)
        return

    staged_path, target_path = os.fspath(staged.path), os.fspath(target.path)
    if not os.path.exists(target_path):
        os.rename(staged_path, target_path)
        return

    if exchange_local(staged_path, target_path):
        # The staged path now contains the previous content.
        shutil.rmtree(staged_path)
        return

    # Fallback without an atomic exchange: a crash between the two renames
    # leaves the previous content at `.old-…`, from where it can be restored.
    retired = temporary_sibling(target, "old")
    os.rename(target_path, os.fspath(retired.path))
    os.rename(staged_path, target_path)
    shutil.rmtree(os.fspath(retired.path))


def recover_leftovers(target: UPath) -> None:
    """Remove what a killed writer of `target` left beside it; call only while holding its lock.

    A `.tmp-…` folder is a partial write, so it goes. An `.old-…` folder is the
    previous content moved aside by the fallback swap: it is put back when the
    crash came before the new content took its place, and removed otherwise.
    """
    parent = os.fspath(target.parent.path)
    if not os.path.isdir(parent):
        return

    target_path = os.fspath(target.path)
    for name in sorted(os.listdir(parent)):
        leftover = os.path.join(parent, name)
        if name.startswith(f".tmp-{target.name}-"):
            shutil.rmtree(leftover, ignore_errors=True)
        elif name.startswith(f".old-{target.name}-"):
            if not os.path.exists(target_path):
                os.rename(leftover, target_path)
            else:
                shutil.rmtree(leftover, ignore_errors=True)


class PartitionLock:
    """An exclusive lock on one partition, so two runs never write it at once.

    The lock is an `flock` on a hidden file beside the partition, which the
    kernel releases when the process dies: a killed run leaves no stale lock.
    Object stores have no such lock, so there acquiring always succeeds.
    """

    def __init__(self, target: UPath, timeout_seconds: float):
        self.target = target
        self.timeout_seconds = timeout_seconds
        self._handle: IO[str] | None = None

    def acquire(self) -> "PartitionLock":
        if not is_local(self.target):
            return self

        lock_path = os.fspath((self.target.parent / f".{self.target.name}.lock").path)
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        handle = open(lock_path, "a")
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._handle = handle
                recover_leftovers(self.target)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise PartitionLockTimeout(
                        f"partition {self.target} is being written by another run (lock {lock_path} held for "
                        f"{self.timeout_seconds:.0f} s); wait for that run to finish, then retry"
                    ) from None
                time.sleep(0.2)

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "PartitionLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
