"""Pack files: blocks laid end to end on disk, with no framing of their own.

One import writes one pack, so a file's leaves sit contiguously in it and a
byte range of the file is usually one ``pread`` (or ``sendfile``) of the
pack. Where each block lives is kept by the index, never in the pack: a
pack is only data.

Crash safety: a pack is written as ``tmp-NAME``, fsynced, renamed to
``NAME`` and its directory fsynced *before* the index commits rows that
point into it. A crash before that commit leaves an unreferenced file that
``PackDirectory.remove_orphans`` deletes on the next open; a crash after it
leaves a complete pack. Writers hold an ``flock`` on their pack until the
index commit, so another process opening the store never deletes a pack
that is still being written.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

from .files import fsync_dir, write_all

TMP_PREFIX = "tmp-"
SUFFIX = ".pack"

# Linux sync_file_range(2): start writeback of a range without waiting for it,
# so the final fsync of a large pack has little left to do and the writer
# never stalls on the disk mid-import. Python does not expose it; where libc
# lacks it, writeback is simply left to the kernel and fsync.
SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int


class PackWriter:
    """Appends blocks to one new pack; the pack is invisible until ``seal`` and the index commit."""

    def __init__(self, directory: Path) -> None:
        self.name = secrets.token_hex(12) + SUFFIX
        self._directory = directory
        self._tmp_path = directory / (TMP_PREFIX + self.name)
        self._fd = os.open(self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.size = 0
        self._sealed = False

    def append(self, data: bytes | memoryview) -> int:
        """Write ``data`` at the end of the pack; return the offset it starts at."""
        offset = self.size
        write_all(self._fd, data)
        self.size += len(data)
        return offset

    def start_writeback(self, offset: int, length: int) -> None:
        """Ask the kernel to start writing a range to disk now; returns without waiting."""
        if _sync_file_range is not None:
            _sync_file_range(self._fd, offset, length, SYNC_FILE_RANGE_WRITE)

    def seal(self) -> None:
        """Make the pack durable under its final name (still locked until ``release``)."""
        os.fsync(self._fd)
        os.rename(self._tmp_path, self._directory / self.name)
        fsync_dir(self._directory)
        self._sealed = True

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def abort(self) -> None:
        """Remove the pack; used when the import fails or the index refuses it."""
        path = self._directory / self.name if self._sealed else self._tmp_path
        path.unlink(missing_ok=True)
        self.release()


class PackDirectory:
    """Reads from sealed packs through a bounded cache of open file descriptors."""

    def __init__(self, directory: Path, max_open: int = 64) -> None:
        self.directory = directory
        self._max_open = max_open
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def fd(self, name: str) -> int:
        with self._lock:
            return self._cached(name)

    def open_copy(self, name: str) -> int:
        """A descriptor of the pack that is the caller's to close (the cache may close its own any time)."""
        with self._lock:
            return os.dup(self._cached(name))

    def copies_if_open(self, names: list[str]) -> list[int] | None:
        """A descriptor of each pack (the caller's to close) if all are open already and the cache is not
        busy; else None. Never waits: for a caller on an event loop."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if any(name not in self._fds for name in names):
                return None
            return [os.dup(self._fds[name]) for name in names]
        finally:
            self._lock.release()

    def _cached(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is not None:
            self._fds.move_to_end(name)
            return fd
        fd = os.open(self.directory / name, os.O_RDONLY | os.O_CLOEXEC)
        self._fds[name] = fd
        while len(self._fds) > self._max_open:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def pread(self, name: str, offset: int, length: int) -> bytes:
        data = os.pread(self.fd(name), length, offset)
        if len(data) != length:
            raise OSError(errno.EIO, f"pack {name} is shorter than the index says")
        return data

    def forget(self, name: str) -> None:
        with self._lock:
            fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def remove_orphans(self, referenced: set[str]) -> list[str]:
        """Delete packs the index does not reference and that no writer holds locked."""
        removed = []
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(SUFFIX) or entry.name in referenced:
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live writer in another process
            try:
                # Re-check under the lock: the writer may have renamed it and committed meanwhile.
                if entry.name.startswith(TMP_PREFIX) or os.path.exists(entry.path):
                    os.unlink(entry.path)
                    removed.append(entry.name)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return removed

    def unlink(self, name: str) -> None:
        self.forget(name)
        (self.directory / name).unlink(missing_ok=True)
