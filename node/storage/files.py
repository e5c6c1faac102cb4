"""Durable writes shared by the store's pack files and the CAR files it exports.

``os.write`` may write less than it was given (a signal, a pipe, a nearly
full disk), and a rename is only durable once its directory is fsynced:
these two helpers are the one place both are done.
"""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd``, however many calls it takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the files just created or renamed in the directory ``path`` survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
