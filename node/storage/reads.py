"""Reading from the store: blocks, where a file's leaves are (cached), and byte ranges of files.

A range of a stored file is read from the packs directly: the leaves under
it are planned (``layout.plan_reads``) into runs of contiguous pack bytes,
each one ``pread`` or ``sendfile``. A hot file's whole layout is cached
until blocks move (the index's generation); a cold one's range reads only
the nodes over that range, and at most READ_WINDOW bytes are planned at a
time, so memory stays bounded however large a file claims to be.

``read_spans`` plans the same reads for a server that can send from a file
(``sendfile``): a run of pack bytes comes out as a :class:`PackSpan` with a
file descriptor of its own, so a pack compacted away meanwhile still reads
(its inode lives while the descriptor is open) and the directory's cache
may close its own descriptor at any time.
"""

from __future__ import annotations

import errno
import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import zstandard

from .cid import CID, DAG_PB
from .codec import BlockCodec
from .dagpb import DagPBError
from .errors import BlockNotFound, CorruptBlock, StoreError
from .files import write_all
from .importer import Progress
from .index import Index
from .layout import FileLayout, FileNode, Leaf, LeafSlice, Location, PackRun, leaves_in_range, plan_reads, walk_file
from .packs import PackDirectory
from .unixfs import UnixFSError, decode_unixfs

LAYOUT_CACHE_LEAVES = 262144
NODE_CACHE = 4096  # decoded internal file nodes kept (a CID's content never changes): ~1,300 1 GiB files
READ_WINDOW = 16 * 1024 * 1024  # bytes of a file planned at a time: memory stays bounded however large it claims to be
READ_PIECE = 4 * 1024 * 1024  # bytes per pread of a run
SENDFILE_MAX = 1 << 26  # bytes per sendfile call

T = TypeVar("T")
Quarantine = Callable[[CID, bytes, str], None]
Layout = tuple[FileLayout, list[Location | None]]


@dataclass(frozen=True, slots=True)
class PackSpan:
    """``length`` bytes at ``offset`` of an open pack file; whoever takes it closes ``fd``."""

    fd: int
    offset: int
    length: int

    def close(self) -> None:
        os.close(self.fd)


class BlockReader:
    """Reads verified blocks and file ranges; caches layouts and internal nodes under the index's lock."""

    def __init__(
        self, index: Index, packs: PackDirectory, codec: BlockCodec, hash_on_read: bool, quarantine: Quarantine
    ) -> None:
        self._index = index
        self._packs = packs
        self._codec = codec
        self._hash_on_read = hash_on_read
        self._quarantine = quarantine
        self._layouts: OrderedDict[bytes, tuple[int, FileLayout, list[Location | None]]] = OrderedDict()
        self._layout_leaves = 0
        self._nodes: OrderedDict[CID, FileNode] = OrderedDict()
        self._window_layouts: OrderedDict[tuple[bytes, int], tuple[int, FileLayout, list[Location | None]]] = (
            OrderedDict()
        )
        self._window_leaves = 0

    def get_block(self, cid: CID) -> bytes:
        if cid.is_identity:
            return cid.identity_data()
        where = self._index.location(bytes(cid.to_v1()))
        if where is None:
            raise BlockNotFound(cid)
        pack, offset, length, size, flags = where
        stored = self._packs.pread(pack, offset, length)
        try:
            data = self._codec.decode(stored, size, flags)
        except (ValueError, zstandard.ZstdError) as exc:
            self._quarantine(cid, stored, f"cannot decompress: {exc}")
            raise CorruptBlock(cid, "it does not decompress") from None
        if self._hash_on_read and not cid.verifies(data):
            self._quarantine(cid, data, "hash mismatch on read")
            raise CorruptBlock(cid)
        return data

    # -- layouts --------------------------------------------------------------------------

    def layout(self, root: CID) -> Layout:
        """The leaves of a file and where each is stored, cached until blocks move."""
        key = bytes(root.to_v1())
        with self._index.lock:
            generation = self._index.generation()
            cached = self._layouts.get(key)
            if cached is not None and cached[0] == generation:
                self._layouts.move_to_end(key)
                return cached[1], cached[2]
        try:
            file_layout = walk_file(root, self.get_block)
        except UnixFSError as exc:
            raise StoreError(f"{root} is not a valid UnixFS file: {exc}") from None
        locations = self._index.locations([bytes(leaf.cid.to_v1()) for leaf in file_layout.leaves])
        try:
            _refuse_lying_leaves(file_layout.leaves, locations)
        except UnixFSError as exc:
            raise StoreError(f"{root} is not a valid UnixFS file: {exc}") from None
        with self._index.lock:
            self._forget_layout(key)
            self._layouts[key] = (generation, file_layout, locations)
            self._layout_leaves += len(file_layout.leaves)
            while self._layout_leaves > LAYOUT_CACHE_LEAVES and len(self._layouts) > 1:
                _, (_, old, _) = self._layouts.popitem(last=False)
                self._layout_leaves -= len(old.leaves)
        return file_layout, locations

    def _forget_all(self, root: CID) -> None:
        """A pack went away under a layout of ``root``: re-read the generation and drop its layouts."""
        key = bytes(root.to_v1())
        with self._index.lock:
            self._index.forget_generation()
            self._forget_layout(key)
            for window in [w for w in self._window_layouts if w[0] == key]:
                self._window_leaves -= len(self._window_layouts.pop(window)[1].leaves)

    def _forget_layout(self, key: bytes) -> None:
        cached = self._layouts.pop(key, None)
        if cached is not None:
            self._layout_leaves -= len(cached[1].leaves)

    def file_size(self, root: CID) -> int:
        """Bytes of the file at ``root``, from the root block alone."""
        node = self._file_node(root)
        return node.size if isinstance(node, FileNode) else node

    def _file_node(self, cid: CID) -> FileNode | int:
        """A dag-pb file node decoded (internal ones cached), or a raw block's size."""
        if cid.codec != DAG_PB:
            if cid.is_identity:
                return len(cid.identity_data())
            where = self._index.location(bytes(cid.to_v1()))
            if where is None:
                raise BlockNotFound(cid)
            return where[3]
        with self._index.lock:
            cached = self._nodes.get(cid)
            if cached is not None:
                self._nodes.move_to_end(cid)
                return cached
        try:
            node = FileNode.decode(cid, self.get_block(cid))
        except DagPBError as exc:
            raise UnixFSError(f"{cid}: not valid dag-pb ({exc})") from None
        if node.children:  # leaves are read once per range anyway; their bytes are not worth keeping
            with self._index.lock:
                self._nodes[cid] = node
                while len(self._nodes) > NODE_CACHE:
                    self._nodes.popitem(last=False)
        return node

    def range_layout(self, root: CID, offset: int, length: int) -> Layout:
        """The leaves under [offset, offset+length) of the file at ``root`` and where each is stored,
        reading only the nodes over that range. A raw leaf whose stored size is not what its parent
        says is refused: a DAG that lies gets no bytes of another block."""
        size, leaves = leaves_in_range(root, offset, length, self._file_node)
        locations = self._index.locations([bytes(leaf.cid.to_v1()) for leaf in leaves])
        _refuse_lying_leaves(leaves, locations)
        if leaves:
            size = leaves[-1].offset + leaves[-1].size
        return FileLayout(size, leaves), locations

    def _planned(self, root: CID, offset: int, length: int) -> Layout:
        """The layout under [offset, offset+length), which lies in one READ_WINDOW-aligned window: the
        whole file's when that is cached, else the window's, read once and cached while its blocks stay
        where they are (and only the range's while a node of the window is missing). A player's Range
        requests land in windows read before, and cost no query."""
        key = bytes(root.to_v1())
        window = (key, offset // READ_WINDOW)
        with self._index.lock:
            generation = self._index.generation()
            cached = self._layouts.get(key)
            if cached is not None and cached[0] == generation:
                return cached[1], cached[2]
            hit = self._window_layouts.get(window)
            if hit is not None and hit[0] == generation:
                self._window_layouts.move_to_end(window)
                return hit[1], hit[2]
        try:
            file_layout, locations = self.range_layout(root, window[1] * READ_WINDOW, READ_WINDOW)
        except BlockNotFound:
            # A node of the window is not here (a file still arriving from peers): plan only the range, so
            # a seek costs the nodes over it and the caller fetches just those.
            return self.range_layout(root, offset, length)
        if all(where is not None for where in locations):  # a block still to come would leave it stale
            with self._index.lock:
                old = self._window_layouts.pop(window, None)
                self._window_leaves += len(file_layout.leaves) - (len(old[1].leaves) if old else 0)
                self._window_layouts[window] = (generation, file_layout, locations)
                while self._window_leaves > LAYOUT_CACHE_LEAVES and len(self._window_layouts) > 1:
                    _, (_, evicted, _) = self._window_layouts.popitem(last=False)
                    self._window_leaves -= len(evicted.leaves)
        return file_layout, locations

    # -- byte ranges ----------------------------------------------------------------------

    def read_range(
        self, root: CID, offset: int = 0, length: int | None = None, piece_size: int = READ_PIECE
    ) -> Iterator[bytes]:
        """Yield the bytes of [offset, offset+length) of the file at ``root``, touching only its leaves.

        If a pack vanished under a cached layout (another process compacted it), the layout is
        refreshed and the read goes on from where it was.
        """
        if length is None:
            length = self.file_size(root) - offset
        once = functools.partial(self._read_range_once, root, piece_size=piece_size)
        yield from self._retried(root, offset, length, once, len)

    def _read_range_once(self, root: CID, offset: int, length: int, piece_size: int) -> Iterator[bytes]:
        for start, size in _windows(offset, length):
            file_layout, locations = self._planned(root, start, size)
            for step in plan_reads(file_layout, start, size, locations):
                if isinstance(step, PackRun) and not self._hash_on_read:
                    yield from self._read_run(step, piece_size)
                elif isinstance(step, PackRun):
                    yield from self._read_verified_run(file_layout, step, start, size, locations)
                else:
                    yield self._leaf_bytes(step)

    def read_spans(self, root: CID, offset: int, length: int) -> Iterator[bytes | PackSpan]:
        """[offset, offset+length) of the file at ``root`` in order: pack runs as :class:`PackSpan`
        (each opened only when it is reached), and what must be decoded or verified as bytes, a piece
        of at most READ_PIECE at a time. A pack gone under a cached layout is handled as in
        :meth:`read_range`."""
        once = functools.partial(self._read_spans_once, root)
        yield from self._retried(root, offset, length, once, _item_length)

    def _retried(
        self, root: CID, offset: int, length: int, once: Callable[[int, int], Iterator[T]], size: Callable[[T], int]
    ) -> Iterator[T]:
        """``once(offset, length)``'s items; if a pack vanished under the layout (FileNotFoundError), the
        layouts of ``root`` are dropped and the read goes on, once, from the first byte not yet given."""
        done = 0
        retried = False
        while True:
            try:
                for item in once(offset + done, length - done):
                    done += size(item)
                    yield item
                return
            except FileNotFoundError:
                if retried:
                    raise
                retried = True
                self._forget_all(root)

    def spans_if_ready(self, root: CID, offset: int, length: int) -> list[PackSpan] | None:
        """The spans of [offset, offset+length) if all it takes is in memory: fresh cached layouts of the
        windows it lies in, runs in packs already open, nothing to decode or verify. Else None, and the
        caller plans in a thread (:meth:`read_spans`). Never waits on a lock, the disk or SQLite, so an event
        loop can call it: a player's hot Range requests then need no trip to a thread."""
        if self._hash_on_read or length <= 0:
            return None
        key = bytes(root.to_v1())
        if not self._index.lock.acquire(blocking=False):
            return None
        try:
            generation = self._index.fresh_generation()
            whole = self._layouts.get(key)
            pieces = []
            for start, size in _windows(offset, length):
                cached = whole or self._window_layouts.get((key, start // READ_WINDOW))
                if generation is None or cached is None or cached[0] != generation:
                    return None
                pieces.append((start, size, cached[1], cached[2]))
        finally:
            self._index.lock.release()
        runs: list[PackRun] = []
        for start, size, file_layout, locations in pieces:
            for step in plan_reads(file_layout, start, size, locations):
                if not isinstance(step, PackRun):
                    return None
                last = runs[-1] if runs else None
                if last is not None and last.pack == step.pack and last.offset + last.length == step.offset:
                    runs[-1] = PackRun(step.pack, last.offset, last.length + step.length)  # one across a window edge
                else:
                    runs.append(step)
        if sum(run.length for run in runs) != length:
            return None
        fds = self._packs.copies_if_open([run.pack for run in runs])
        if fds is None:
            return None
        return [PackSpan(fd, run.offset, run.length) for fd, run in zip(fds, runs, strict=True)]

    def _read_spans_once(self, root: CID, offset: int, length: int) -> Iterator[bytes | PackSpan]:
        for start, size in _windows(offset, length):
            file_layout, locations = self._planned(root, start, size)
            for step in plan_reads(file_layout, start, size, locations):
                if isinstance(step, PackRun) and not self._hash_on_read:
                    yield PackSpan(self._packs.open_copy(step.pack), step.offset, step.length)
                elif isinstance(step, PackRun):
                    yield from self._read_verified_run(file_layout, step, start, size, locations)
                else:
                    yield self._leaf_bytes(step)

    def copy_to_fd(self, root: CID, out_fd: int, progress: Progress | None = None) -> int:
        """Write the whole file at ``root`` to ``out_fd``, with ``sendfile`` for runs read from packs."""
        written = 0
        for start, size in _windows(0, self.file_size(root)):
            file_layout, locations = self.range_layout(root, start, size)
            for step in plan_reads(file_layout, start, size, locations):
                if isinstance(step, PackRun) and not self._hash_on_read:
                    written += self._sendfile_run(step, out_fd, progress)
                    continue
                pieces = (
                    self._read_verified_run(file_layout, step, start, size, locations)
                    if isinstance(step, PackRun)
                    else iter([self._leaf_bytes(step)])
                )
                for piece in pieces:
                    write_all(out_fd, piece)
                    written += len(piece)
                    if progress:
                        progress(len(piece))
        return written

    def _read_run(self, run: PackRun, chunk: int = READ_PIECE) -> Iterator[bytes]:
        done = 0
        while done < run.length:
            n = min(chunk, run.length - done)
            yield self._packs.pread(run.pack, run.offset + done, n)
            done += n

    def _read_verified_run(
        self, file_layout: FileLayout, run: PackRun, offset: int, length: int, locations: list[Location | None]
    ) -> Iterator[bytes]:
        # With hash-on-read every leaf is read whole and hashed; then the wanted slice is cut.
        for index_, start, stop in file_layout.leaves_under(offset, length):
            where = locations[index_]
            if where is None or where.pack != run.pack:
                continue
            if not (run.offset <= where.offset + start < run.offset + run.length):
                continue
            leaf = file_layout.leaves[index_]
            yield self.get_block(leaf.cid)[start:stop]

    def _leaf_bytes(self, step: LeafSlice) -> bytes:
        if step.leaf.inline is not None:
            return step.leaf.inline[step.start : step.end]
        block = self.get_block(step.leaf.cid)
        if step.leaf.embedded:
            _, data = decode_unixfs(block)
            block = data.data or b""
        if len(block) < step.end:
            raise CorruptBlock(step.leaf.cid, "shorter than its parent says")
        return block[step.start : step.end]

    def _sendfile_run(self, run: PackRun, out_fd: int, progress: Progress | None) -> int:
        in_fd = self._packs.fd(run.pack)
        done = 0
        try:
            while done < run.length:
                sent = os.sendfile(out_fd, in_fd, run.offset + done, min(run.length - done, SENDFILE_MAX))
                if sent == 0:
                    raise OSError(errno.EIO, f"pack {run.pack} is shorter than the index says")
                done += sent
                if progress:
                    progress(sent)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS) or done:
                raise
            for piece in self._read_run(run):
                write_all(out_fd, piece)
                done += len(piece)
                if progress:
                    progress(len(piece))
        return done


def _item_length(item: bytes | PackSpan) -> int:
    return item.length if isinstance(item, PackSpan) else len(item)


def _refuse_lying_leaves(leaves: list[Leaf], locations: list[Location | None]) -> None:
    """A raw leaf is read straight from its pack by the size its parent gave: a parent that lies would
    hand out bytes of the blocks after it, so a stored size that differs is a ``UnixFSError``."""
    for leaf, where in zip(leaves, locations, strict=True):
        if where is not None and not leaf.embedded and where.size != leaf.size:
            raise UnixFSError(f"{leaf.cid}: holds {where.size} bytes, its parent says {leaf.size}")


def _windows(offset: int, length: int) -> Iterator[tuple[int, int]]:
    """[offset, offset+length) cut at multiples of READ_WINDOW, each piece planned only when it is reached."""
    end = offset + length
    while offset < end:
        size = min(READ_WINDOW - offset % READ_WINDOW, end - offset)
        yield offset, size
        offset += size
