"""A change counter that every process with the store open maps from one small file.

Participants: the processes of one store (``serve``'s owner and its workers, a
``medianode gc`` run beside them). Goal: a reader that caches a fact the index
decides (whether anything is withheld at all) learns at once that another
process changed it, with no lock, system call or query: reading the counter
is reading 8 bytes of shared memory. A writer sets a new value after it
committed the change; a reader reads the value before it queries, so a change
it may have missed shows as a value it has not seen. Values are random, not
incremented: two writers at once still leave a value neither reader saw.
Non-goals: saying what changed, or ordering changes.

Where the file cannot be made (a full disk), the value changes every
``fallback_every`` seconds instead: readers then trust what they cached that
long, as before this counter existed.
"""

from __future__ import annotations

import mmap
import os
import random
import struct
import time
from pathlib import Path

_VALUE = struct.Struct("<Q")


class ChangeCounter:
    def __init__(self, path: Path, fallback_every: float) -> None:
        self._fallback_every = fallback_every
        self._map: mmap.mmap | None = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            # Allocated, not just extended: a write to a sparse page on a full disk would be a SIGBUS.
            os.posix_fallocate(fd, 0, _VALUE.size)
            self._map = mmap.mmap(fd, _VALUE.size)
        except OSError:
            pass
        finally:
            os.close(fd)

    def value(self) -> int:
        if self._map is None:
            return int(time.monotonic() / self._fallback_every)
        return int(_VALUE.unpack_from(self._map, 0)[0])

    def changed(self) -> None:
        """Call after the change is committed."""
        if self._map is not None:
            _VALUE.pack_into(self._map, 0, random.getrandbits(64))

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
