"""Turn files and directory trees into UnixFS blocks, the way kubo does.

``kubo add --cid-version=1 --raw-leaves --chunker=size-N`` cuts a file into
fixed-size raw leaves and builds a balanced tree of dag-pb file nodes with
at most 174 links each; a file of one chunk is the raw leaf itself. The
builder below streams: it holds at most 174 pending children per tree
level, so memory does not grow with the file. Blocks go to a ``BlockSink``
(the store's pack writer in practice) as soon as they exist; each leaf is a
fresh ``bytes`` object, so a sink may keep it and write it later.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from typing import BinaryIO, Protocol

from ..errors import InvalidRequest
from .cid import CID, RAW
from .hamt import build_shard
from .unixfs import Child, directory_node, file_node, symlink_node

DEFAULT_CHUNK_SIZE = 262144
MAX_CHUNK_SIZE = 1048576
MAX_LINKS = 174
# kubo v0.22 makes a directory a HAMT shard once this estimated node size is
# reached (see hamt.py for the estimate and where the JS importer differs).
DIRECTORY_SHARD_THRESHOLD = 262144

# Told the bytes just done (read, written, verified); the one progress callback of the storage layer.
Progress = Callable[[int], None]


class UnsupportedInputError(InvalidRequest, ValueError):
    """Input that cannot be imported (bad chunk size, unsupported file type, ...)."""


class BlockSink(Protocol):
    """Where blocks go (``ImportBatch`` in practice): each under the CID computed from its bytes."""

    def put(self, cid: CID, data: bytes) -> None: ...


def check_chunk_size(chunk_size: int) -> None:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise UnsupportedInputError(f"chunk size must be between 1 and {MAX_CHUNK_SIZE} bytes, got {chunk_size}")


class BalancedFileBuilder:
    """Builds one file's balanced DAG from its leaves, in order."""

    def __init__(self, sink: BlockSink) -> None:
        self._sink = sink
        self._pending: list[list[Child]] = [[]]
        self._counts: list[int] = [0]

    def add_leaf(self, data: bytes) -> None:
        cid = CID.for_block(RAW, data)
        self._sink.put(cid, data)
        self._push(0, Child(cid, len(data), len(data)))

    def add_stored_leaf(self, leaf: Child) -> None:
        """A leaf already in the store (a multipart upload's parts): linked, not written again."""
        self._push(0, leaf)

    def _push(self, level: int, child: Child) -> None:
        if level == len(self._pending):
            self._pending.append([])
            self._counts.append(0)
        self._pending[level].append(child)
        self._counts[level] += 1
        if len(self._pending[level]) == MAX_LINKS:
            self._flush(level)

    def _flush(self, level: int) -> None:
        block, child = file_node(self._pending[level])
        self._sink.put(child.cid, block)
        self._pending[level] = []
        self._push(level + 1, child)

    def finish(self) -> Child:
        if self._counts[0] == 0:
            self.add_leaf(b"")
        level = 0
        while True:
            top = level == len(self._pending) - 1
            if top and self._counts[level] == 1:
                return self._pending[level][0]
            if self._pending[level]:
                self._flush(level)
            level += 1


def import_stream(
    source: BinaryIO, sink: BlockSink, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: Progress | None = None
) -> Child:
    """Chunk ``source`` to its end; return the root."""
    check_chunk_size(chunk_size)
    builder = BalancedFileBuilder(sink)
    while True:
        chunk = source.read(chunk_size)
        while chunk and len(chunk) < chunk_size:  # a pipe or socket may return less than asked
            more = source.read(chunk_size - len(chunk))
            if not more:
                break
            chunk += more
        if not chunk:
            break
        builder.add_leaf(chunk)
        if progress is not None:
            progress(len(chunk))
        if len(chunk) < chunk_size:
            break
    return builder.finish()


class ChunkFeeder:
    """Push-style import for bytes that arrive in pieces (an HTTP body): feed, then finish.

    Also keeps a digest of the whole content: SHA-256 by default, which ActivityPub
    attachments carry; MD5 for S3's ETags (hashed here, beside the leaves' SHA-256, so
    the body is read once).
    """

    def __init__(
        self, sink: BlockSink, chunk_size: int = DEFAULT_CHUNK_SIZE, content_hash: str | None = "sha256"
    ) -> None:
        check_chunk_size(chunk_size)
        self._builder = BalancedFileBuilder(sink)
        self._chunk_size = chunk_size
        self._pending = bytearray()
        self._digest = hashlib.new(content_hash) if content_hash else None  # None: the caller hashes elsewhere
        self.size = 0

    def feed(self, data: bytes) -> None:
        if self._digest is not None:
            self._digest.update(data)
        self.size += len(data)
        chunk_size = self._chunk_size
        view = memoryview(data)
        if self._pending:  # complete the leaf the last batch began
            taken = chunk_size - len(self._pending)
            self._pending += view[:taken]
            view = view[taken:]
            if len(self._pending) < chunk_size:
                return
            self._builder.add_leaf(bytes(self._pending))
            self._pending.clear()
        while len(view) >= chunk_size:  # whole leaves straight from the batch: one copy each
            self._builder.add_leaf(bytes(view[:chunk_size]))
            view = view[chunk_size:]
        self._pending += view

    def finish(self) -> tuple[Child, bytes]:
        """Return the root and the digest of everything fed."""
        if self._pending:
            self._builder.add_leaf(bytes(self._pending))
            self._pending.clear()
        return self._builder.finish(), b"" if self._digest is None else self._digest.digest()


def import_file(
    path: str, sink: BlockSink, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: Progress | None = None
) -> Child:
    with open(path, "rb", buffering=0) as source:
        return import_stream(source, sink, chunk_size, progress)


def tree_size(path: str, hidden: bool = False) -> int:
    """Total bytes of the regular files ``import_tree`` would read (for progress bars and quotas)."""
    info = os.lstat(path)
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    total = 0
    if stat.S_ISDIR(info.st_mode):
        for entry in os.scandir(path):
            if hidden or not entry.name.startswith("."):
                total += tree_size(entry.path, hidden)
    return total


def import_tree(
    path: str,
    sink: BlockSink,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    hidden: bool = False,
    progress: Progress | None = None,
) -> Child:
    """Import a file, symlink or directory tree (kubo ``add -r``: dotfiles skipped unless ``hidden``)."""
    check_chunk_size(chunk_size)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        block, child = symlink_node(os.readlink(path))
        sink.put(child.cid, block)
        return child
    if stat.S_ISREG(info.st_mode):
        return import_file(path, sink, chunk_size, progress)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsupportedInputError(f"{path}: not a regular file, directory or symlink")
    entries: dict[str, Child] = {}
    estimate = 0
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if not hidden and entry.name.startswith("."):
            continue
        child = import_tree(entry.path, sink, chunk_size, hidden, progress)
        entries[entry.name] = child
        estimate += len(entry.name.encode("utf-8")) + len(bytes(child.cid))
    if estimate >= DIRECTORY_SHARD_THRESHOLD:  # kubo v0.22: >= (the JS importer: >)
        return build_shard(entries, sink.put)
    block, child = directory_node(entries)
    sink.put(child.cid, block)
    return child
