"""The block store: verified blocks in pack files, an SQLite index, pins, GC, quota, verify.

Every way in (``ImportBatch`` for local files, ``put_verified`` for blocks
from anywhere else) ends in ``ImportBatch.commit``: the pack is sealed
first, then one index transaction makes all its blocks, links, the root and
the pin visible at once. Nothing here does network I/O; the store is
synchronous and thread-safe, so trio code calls it through
``trio.to_thread`` where a call may be slow.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import zstandard

from . import directories, index
from .cid import CID, DAG_PB
from .dagpb import DagPBError, links_of
from .errors import BlockNotFound, CorruptBlock, NoSpace, PinRefused, QuotaExceeded, StoreError
from .layout import FileLayout, FileNode, Leaf, LeafSlice, Location, PackRun, leaves_in_range, plan_reads, walk_file
from .packs import PackDirectory, PackWriter
from .unixfs import Child, NodeType, UnixFSError, decode_unixfs

Progress = Callable[[int], None]
log = logging.getLogger("medianode.store")

# Blocks whose first 16 KiB do not shrink below 85% are stored as they are:
# encoded video never does, and testing a sample keeps add near hashing speed.
COMPRESSION_SAMPLE = 16384
SAMPLE_RATIO = 0.85
KEEP_RATIO = 0.9
# The pack writer thread starts writeback every so many bytes, spreading the flush over the import.
WRITEBACK_EVERY = 8 * 1024 * 1024
# Blocks waiting for the writer thread: bounds an import's memory to about 32 chunks.
WRITE_QUEUE_BLOCKS = 32
# Packs that are less than half live are rewritten by gc.
COMPACT_BELOW = 0.5
LAYOUT_CACHE_LEAVES = 262144
NODE_CACHE = 4096  # decoded internal file nodes kept (a CID's content never changes): ~1,300 1 GiB files
READ_WINDOW = 64 * 1024 * 1024  # bytes of a file planned at a time: memory stays bounded however large it claims to be
TOUCH_INTERVAL = 60.0  # seconds between recorded accesses of one root
GENERATION_TTL = 0.5  # seconds a read trusts its cached idea of where blocks are


@dataclass(frozen=True)
class StoreConfig:
    quota: int = 10 * 1024**3  # bytes on disk; 0 means no limit
    hash_on_read: bool = False


@dataclass(frozen=True)
class GCResult:
    blocks_removed: int
    bytes_freed: int
    packs_removed: int
    packs_compacted: int


@dataclass(frozen=True)
class CorruptReport:
    cid: CID
    reason: str


@dataclass(frozen=True)
class RepoStat:
    size: int  # bytes of pack files on disk
    quota: int
    blocks: int
    pinned: int
    pinned_bytes: int
    packs: int


@dataclass(frozen=True)
class DagStat:
    cid: CID
    type: str  # file, directory, symlink, raw
    size: int  # bytes of content (file size) or of the node
    dag_size: int  # bytes of all local blocks of the DAG as stored (compressed where they are)
    blocks: int
    missing: int
    pinned: bool


@dataclass(frozen=True)
class DirEntry:
    name: str
    cid: CID
    type: str
    size: int


class BlockCodec:
    """Decides per block whether zstd pays, and undoes it on read."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=3)
        return cctx

    def encode(self, data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
        if len(data) < 512:
            return data, 0
        cctx = self._compressor()
        sample = data[:COMPRESSION_SAMPLE]
        if len(cctx.compress(sample)) > SAMPLE_RATIO * len(sample):
            return data, 0
        packed = cctx.compress(data)
        if len(packed) > KEEP_RATIO * len(data):
            return data, 0
        return packed, index.FLAG_ZSTD

    def decode(self, stored: bytes, size: int, flags: int) -> bytes:
        if flags & index.FLAG_ZSTD:
            dctx = getattr(self._local, "dctx", None)
            if dctx is None:
                dctx = self._local.dctx = zstandard.ZstdDecompressor()
            data: bytes = dctx.decompress(stored, max_output_size=size)
            if len(data) != size:
                raise ValueError("decompressed size differs from the index")
            return data
        return stored


def child_links(cid: CID, block: bytes | memoryview) -> list[bytes]:
    """CIDs (as index keys) a dag-pb block links to; identity CIDs are not stored, so not linked."""
    try:
        links = links_of(cid, block)
    except DagPBError as exc:
        raise CorruptBlock(cid, f"not valid dag-pb ({exc})") from None
    return [bytes(child.to_v1()) for child in links if not child.is_identity]


class ImportBatch:
    """Blocks going into one new pack; the ``BlockSink`` the importer writes to.

    Nothing is visible to readers until ``commit``; ``abort`` (or an exception
    inside ``BlockStore.batch``) leaves the store exactly as it was.

    The caller's thread hashes; a writer thread owned by the batch (started
    here, joined by ``commit``/``abort``) compresses and writes, so an import
    uses both cores and runs at about hashing speed. Both release the GIL for
    their heavy work (OpenSSL, zstd, ``write``).
    """

    def __init__(self, store: BlockStore) -> None:
        self._store = store
        self._writer = PackWriter(store.packs.directory)
        self._rows: dict[bytes, tuple[int, int, int, int]] = {}
        self._seen: set[bytes] = set()
        self._links: list[tuple[bytes, bytes]] = []
        self._queue: queue.Queue[tuple[bytes, bytes | memoryview] | None] = queue.Queue(WRITE_QUEUE_BLOCKS)
        self._failure: OSError | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._write_loop, name="medianode-pack-writer", daemon=True
        )
        self._thread.start()
        self._committed = False

    def _write_loop(self) -> None:
        synced = 0
        while (item := self._queue.get()) is not None:
            if self._failure is not None:
                continue  # keep draining so the producer never blocks on a dead writer
            key, data = item
            try:
                stored, flags = self._store.codec.encode(data)
                offset = self._writer.append(stored)
                self._rows[key] = (offset, len(stored), len(data), flags)
                if self._writer.size - synced >= WRITEBACK_EVERY:
                    self._writer.start_writeback(synced, self._writer.size - synced)
                    synced = self._writer.size
            except OSError as exc:
                self._failure = exc

    def _finish_writes(self) -> None:
        """Wait for every queued block to be written; raise what the writer hit."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            raise _os_error(self._failure, "writing a pack") from self._failure

    def _put(self, cid: CID, data: bytes | memoryview) -> None:
        key = bytes(cid.to_v1())
        if key in self._seen or cid.is_identity:
            return
        if self._failure is not None:
            raise _os_error(self._failure, "writing a pack") from self._failure
        self._seen.add(key)
        for child in child_links(cid, data):
            self._links.append((key, child))
        self._queue.put((key, data))

    def put_leaf(self, cid: CID, data: bytes) -> None:
        self._put(cid, data)

    def put_node(self, cid: CID, data: bytes) -> None:
        self._put(cid, data)

    def put_verified(self, cid: CID, data: bytes | memoryview) -> None:
        """Add a block that came from outside, after checking it against its CID."""
        if not cid.verifies(data):
            raise CorruptBlock(cid)
        self._put(cid, data)

    def put_hashed(self, cid: CID, data: bytes | memoryview) -> None:
        """Add a block whose CID the caller computed from exactly these bytes."""
        self._put(cid, data)

    def __contains__(self, cid: CID) -> bool:
        return bytes(cid.to_v1()) in self._seen

    def commit(
        self,
        roots: Sequence[CID] = (),
        name: str | None = None,
        size: int = 0,
        pin: bool = False,
        hold: tuple[str, bool] | None = None,
    ) -> None:
        """Seal the pack and make the blocks, the roots and (with ``pin``) their pins, or (with ``hold``,
        a holder and whether it is public) the first root's hold, visible at once: a pin or hold over
        the quota undoes it all."""
        store = self._store
        try:
            self._finish_writes()
            self._writer.seal()
        except OSError as exc:
            self._writer.abort()
            raise _os_error(exc, "sealing a pack") from exc
        except StoreError:
            self._writer.abort()
            raise
        used_pack = False
        try:
            with store._transaction() as db:
                used_pack = self._insert(db)
                now = time.time()
                for root in roots:
                    key = bytes(root.to_v1())
                    db.execute(
                        "INSERT INTO roots(cid, name, size, added, last_access) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT(cid) DO UPDATE SET last_access = excluded.last_access, "
                        "name = coalesce(roots.name, excluded.name)",
                        (key, name, size, now, now),
                    )
                    if pin:
                        store._pin_in_transaction(db, root, name)
                if hold is not None:
                    store._hold_in_transaction(db, hold[0], roots[0], hold[1])
        except BaseException:
            self._writer.abort()
            raise
        if not used_pack:
            self._writer.abort()
        self._writer.release()
        self._committed = True
        if not pin and hold is None:
            store.enforce_quota(protect=roots)

    def _insert(self, db: sqlite3.Connection) -> bool:
        """Write this batch's rows; return False when every block was already stored."""
        conn = db
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS incoming(cid BLOB PRIMARY KEY) WITHOUT ROWID")
        conn.execute("DELETE FROM incoming")
        conn.executemany("INSERT INTO incoming(cid) VALUES (?)", ((k,) for k in self._rows))
        missing = conn.execute(
            "SELECT count(*) FROM incoming WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocks.cid = incoming.cid)"
        ).fetchone()[0]
        conn.execute("DELETE FROM incoming")
        if self._rows and missing:
            pack_id = conn.execute(
                "INSERT INTO packs(name, size) VALUES (?, ?)", (self._writer.name, self._writer.size)
            ).lastrowid
            # The newest copy wins, so the file just added reads contiguously.
            conn.executemany(
                "INSERT INTO blocks(cid, pack, offset, length, size, flags) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(cid) DO UPDATE SET pack = excluded.pack, offset = excluded.offset, "
                "length = excluded.length, size = excluded.size, flags = excluded.flags",
                ((k, pack_id, *row) for k, row in self._rows.items()),
            )
        conn.executemany("INSERT OR IGNORE INTO links(parent, child) VALUES (?, ?)", self._links)
        return bool(self._rows and missing)

    def abort(self) -> None:
        """Drop everything in this batch; after a commit there is nothing to drop."""
        if self._committed:
            return
        with contextlib.suppress(StoreError):  # the import failed already; the pack goes either way
            self._finish_writes()
        self._writer.abort()


def _os_error(exc: OSError, doing: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"no space left on the device while {doing}; nothing was stored")
    return StoreError(f"{exc.strerror or exc} while {doing}; nothing was stored")


class BlockStore:
    def __init__(self, root: Path, config: StoreConfig | None = None) -> None:
        self.root = root
        self.config = config or StoreConfig()
        self.codec = BlockCodec()
        (root / "packs").mkdir(parents=True, exist_ok=True)
        (root / "quarantine").mkdir(exist_ok=True)
        self.db = index.connect(root / "index.sqlite")
        self.packs = PackDirectory(root / "packs")
        self._lock = threading.RLock()
        self._layouts: OrderedDict[bytes, tuple[int, FileLayout, list[Location | None]]] = OrderedDict()
        self._layout_leaves = 0
        self._nodes: OrderedDict[CID, FileNode] = OrderedDict()
        self._touched: dict[bytes, float] = {}
        self._generation_value = 0
        self._generation_read_at = float("-inf")
        self._withheld_any = False
        self._withheld_read_at = float("-inf")
        self.recover()

    # -- housekeeping ---------------------------------------------------------------

    def recover(self) -> list[str]:
        """Delete packs left by writers that died before their index commit."""
        with self._lock:
            referenced = {row[0] for row in self.db.execute("SELECT name FROM packs")}
        return self.packs.remove_orphans(referenced)

    def close(self) -> None:
        self.packs.close()
        self.db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except Exception as exc:
                raise _db_error(exc) from exc
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException as exc:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if isinstance(exc, Exception) and not isinstance(exc, StoreError):
                    raise _db_error(exc) from exc
                raise

    def _generation(self) -> int:
        """The index generation, re-read at most every GENERATION_TTL seconds (call with the lock held).

        Another process's gc may move blocks in the meantime; a read that then
        finds its pack gone re-reads the generation and retries (``read_range``).
        """
        now = time.monotonic()
        if now - self._generation_read_at > GENERATION_TTL:
            self._generation_value = int(
                self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
            )
            self._generation_read_at = now
        return self._generation_value

    def _bump_generation(self) -> None:
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        self._generation_read_at = float("-inf")

    # -- writing ----------------------------------------------------------------------

    def new_batch(self) -> ImportBatch:
        """A batch the caller must ``commit`` or ``abort``; ``batch`` is the context-managed form."""
        try:
            return ImportBatch(self)
        except OSError as exc:
            raise _os_error(exc, "creating a pack") from exc

    @contextmanager
    def batch(self) -> Iterator[ImportBatch]:
        """An ``ImportBatch`` that is aborted if the block raises or never commits."""
        batch = self.new_batch()
        try:
            yield batch
        except BaseException:
            batch.abort()
            raise

    def put_verified(self, cid: CID, data: bytes | memoryview) -> None:
        """Store one block from outside (a peer, an upload) after checking it against its CID."""
        if not cid.verifies(data):
            raise CorruptBlock(cid)
        if self.has(cid):
            return
        with self.batch() as batch:
            batch.put_verified(cid, data)
            batch.commit()

    def check_room(self, nbytes: int, pin: bool) -> None:
        """Refuse early what cannot fit: pinned content may never push the store over its quota."""
        quota = self.config.quota
        if not quota:
            return
        if pin:
            pinned = self.pinned_bytes()
            if pinned + nbytes > quota:
                raise QuotaExceeded(
                    f"pinning {nbytes} more bytes would exceed the quota ({pinned} of {quota} bytes pinned)"
                )
        elif nbytes > quota - self.pinned_bytes():
            raise QuotaExceeded(f"{nbytes} bytes do not fit in the quota's room for cached content")

    # -- reading ----------------------------------------------------------------------

    def has(self, cid: CID) -> bool:
        if cid.is_identity:
            return True
        with self._lock:
            return self.db.execute("SELECT 1 FROM blocks WHERE cid = ?", (bytes(cid.to_v1()),)).fetchone() is not None

    def _location(self, key: bytes) -> tuple[str, int, int, int, int] | None:
        with self._lock:
            row = self.db.execute(
                "SELECT packs.name, blocks.offset, blocks.length, blocks.size, blocks.flags "
                "FROM blocks JOIN packs ON packs.id = blocks.pack WHERE blocks.cid = ?",
                (key,),
            ).fetchone()
        return tuple(row) if row else None

    def get_block(self, cid: CID) -> bytes:
        if cid.is_identity:
            return cid.identity_data()
        key = bytes(cid.to_v1())
        where = self._location(key)
        if where is None:
            raise BlockNotFound(cid)
        pack, offset, length, size, flags = where
        stored = self.packs.pread(pack, offset, length)
        try:
            data = self.codec.decode(stored, size, flags)
        except (ValueError, zstandard.ZstdError) as exc:
            self.quarantine(cid, stored, f"cannot decompress: {exc}")
            raise CorruptBlock(cid, "it does not decompress") from None
        if self.config.hash_on_read and not cid.verifies(data):
            self.quarantine(cid, data, "hash mismatch on read")
            raise CorruptBlock(cid)
        return data

    def layout(self, root: CID) -> tuple[FileLayout, list[Location | None]]:
        """The leaves of a file and where each is stored, cached until blocks move."""
        key = bytes(root.to_v1())
        with self._lock:
            generation = self._generation()
            cached = self._layouts.get(key)
            if cached is not None and cached[0] == generation:
                self._layouts.move_to_end(key)
                return cached[1], cached[2]
        try:
            file_layout = walk_file(root, self.get_block)
        except UnixFSError as exc:
            raise StoreError(f"{root} is not a valid UnixFS file: {exc}") from None
        locations = self._locations([bytes(leaf.cid.to_v1()) for leaf in file_layout.leaves])
        try:
            _refuse_lying_leaves(file_layout.leaves, locations)
        except UnixFSError as exc:
            raise StoreError(f"{root} is not a valid UnixFS file: {exc}") from None
        with self._lock:
            self._forget_layout(key)
            self._layouts[key] = (generation, file_layout, locations)
            self._layout_leaves += len(file_layout.leaves)
            while self._layout_leaves > LAYOUT_CACHE_LEAVES and len(self._layouts) > 1:
                _, (_, old, _) = self._layouts.popitem(last=False)
                self._layout_leaves -= len(old.leaves)
        return file_layout, locations

    def _forget_layout(self, key: bytes) -> None:
        cached = self._layouts.pop(key, None)
        if cached is not None:
            self._layout_leaves -= len(cached[1].leaves)

    def _locations(self, keys: list[bytes]) -> list[Location | None]:
        found: dict[bytes, Location] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for cid, pack, offset, length, size, flags in self.db.execute(
                    "SELECT blocks.cid, packs.name, blocks.offset, blocks.length, blocks.size, blocks.flags "
                    f"FROM blocks JOIN packs ON packs.id = blocks.pack WHERE blocks.cid IN ({marks})",
                    chunk,
                ):
                    found[cid] = Location(pack, offset, length, bool(flags & index.FLAG_ZSTD), size)
        return [found.get(k) for k in keys]

    def file_size(self, root: CID) -> int:
        """Bytes of the file at ``root``, from the root block alone."""
        node = self._file_node(root)
        return node.size if isinstance(node, FileNode) else node

    def _file_node(self, cid: CID) -> FileNode | int:
        """A dag-pb file node decoded (internal ones cached), or a raw block's size."""
        if cid.codec != DAG_PB:
            if cid.is_identity:
                return len(cid.identity_data())
            where = self._location(bytes(cid.to_v1()))
            if where is None:
                raise BlockNotFound(cid)
            return where[3]
        with self._lock:
            cached = self._nodes.get(cid)
            if cached is not None:
                self._nodes.move_to_end(cid)
                return cached
        try:
            node = FileNode.decode(cid, self.get_block(cid))
        except DagPBError as exc:
            raise UnixFSError(f"{cid}: not valid dag-pb ({exc})") from None
        if node.children:  # leaves are read once per range anyway; their bytes are not worth keeping
            with self._lock:
                self._nodes[cid] = node
                while len(self._nodes) > NODE_CACHE:
                    self._nodes.popitem(last=False)
        return node

    def range_layout(self, root: CID, offset: int, length: int) -> tuple[FileLayout, list[Location | None]]:
        """The leaves under [offset, offset+length) of the file at ``root`` and where each is stored,
        reading only the nodes over that range. A raw leaf whose stored size is not what its parent
        says is refused: a DAG that lies gets no bytes of another block."""
        size, leaves = leaves_in_range(root, offset, length, self._file_node)
        locations = self._locations([bytes(leaf.cid.to_v1()) for leaf in leaves])
        _refuse_lying_leaves(leaves, locations)
        if leaves:
            size = leaves[-1].offset + leaves[-1].size
        return FileLayout(size, leaves), locations

    def read_range(
        self, root: CID, offset: int = 0, length: int | None = None, piece_size: int = 4 * 1024 * 1024
    ) -> Iterator[bytes]:
        """Yield the bytes of [offset, offset+length) of the file at ``root``, touching only its leaves.

        If a pack vanished under a cached layout (another process compacted it), the layout is
        refreshed and the read goes on from where it was.
        """
        if length is None:
            length = self.file_size(root) - offset
        done = 0
        retried = False
        while True:
            try:
                for piece in self._read_range_once(root, offset + done, length - done, piece_size):
                    done += len(piece)
                    yield piece
                return
            except FileNotFoundError:
                if retried:
                    raise
                retried = True
                with self._lock:
                    self._generation_read_at = float("-inf")
                    self._forget_layout(bytes(root.to_v1()))

    def _read_range_once(self, root: CID, offset: int, length: int, piece_size: int) -> Iterator[bytes]:
        verify = self.config.hash_on_read
        for start, size in _windows(offset, length):
            file_layout, locations = self._planned(root, start, size)
            for step in plan_reads(file_layout, start, size, locations):
                if isinstance(step, PackRun) and not verify:
                    yield from self._read_run(step, piece_size)
                elif isinstance(step, PackRun):
                    yield from self._read_verified_run(file_layout, step, start, size, locations)
                else:
                    yield self._leaf_bytes(step)

    def _planned(self, root: CID, offset: int, length: int) -> tuple[FileLayout, list[Location | None]]:
        """The whole-file layout when it is cached (hot files: no node is read), else the range's."""
        with self._lock:
            cached = self._layouts.get(bytes(root.to_v1()))
            if cached is not None and cached[0] == self._generation():
                return cached[1], cached[2]
        return self.range_layout(root, offset, length)

    def _read_run(self, run: PackRun, chunk: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        done = 0
        while done < run.length:
            n = min(chunk, run.length - done)
            yield self.packs.pread(run.pack, run.offset + done, n)
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

    def copy_to_fd(self, root: CID, out_fd: int, progress: Progress | None = None) -> int:
        """Write the whole file at ``root`` to ``out_fd``, with ``sendfile`` for runs read from packs."""
        written = 0
        for start, size in _windows(0, self.file_size(root)):
            file_layout, locations = self.range_layout(root, start, size)
            for step in plan_reads(file_layout, start, size, locations):
                if isinstance(step, PackRun) and not self.config.hash_on_read:
                    written += self._sendfile_run(step, out_fd, progress)
                    continue
                pieces = (
                    self._read_verified_run(file_layout, step, start, size, locations)
                    if isinstance(step, PackRun)
                    else iter([self._leaf_bytes(step)])
                )
                for piece in pieces:
                    _write_all(out_fd, piece)
                    written += len(piece)
                    if progress:
                        progress(len(piece))
        return written

    def _sendfile_run(self, run: PackRun, out_fd: int, progress: Progress | None) -> int:
        in_fd = self.packs.fd(run.pack)
        done = 0
        try:
            while done < run.length:
                sent = os.sendfile(out_fd, in_fd, run.offset + done, min(run.length - done, 1 << 26))
                if sent == 0:
                    raise OSError(errno.EIO, f"pack {run.pack} is shorter than the index says")
                done += sent
                if progress:
                    progress(sent)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS) or done:
                raise
            for piece in self._read_run(run):
                _write_all(out_fd, piece)
                done += len(piece)
                if progress:
                    progress(len(piece))
        return done

    def touch(self, cid: CID) -> None:
        """Record an access for the quota's LRU eviction, at most once a minute per root.

        A video player sends a Range request every few seconds; writing (and
        fsyncing) the index for each one would cost more than serving it.
        """
        key = bytes(cid.to_v1())
        now = time.time()
        with self._lock:
            if now - self._touched.get(key, 0.0) < TOUCH_INTERVAL:
                return
            if len(self._touched) > 100_000:
                self._touched.clear()
            self._touched[key] = now
            try:
                self.db.execute("UPDATE roots SET last_access = ? WHERE cid = ?", (now, key))
            except sqlite3.Error as exc:
                # A read never fails for its stamp (a full disk, a locked index): eviction order is a hint.
                log.debug("last access not recorded", extra={"fields": {"cid": str(cid), "error": str(exc)}})
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")

    # -- DAG inspection -----------------------------------------------------------------

    def dag_counts(self, root: CID) -> tuple[int, int, int]:
        """(blocks in the DAG, of which missing locally, stored bytes) as far as local nodes tell."""
        if root.is_identity:  # its block is the CID itself; what it links to may be stored
            counts = [self.dag_counts(child) for child in _identity_links(root)]
            return 1 + sum(c[0] for c in counts), sum(c[1] for c in counts), sum(c[2] for c in counts)
        with self._lock:
            row = self.db.execute(
                index.DAG_OF + "SELECT count(*), sum(blocks.cid IS NULL), coalesce(sum(blocks.length), 0) "
                "FROM dag LEFT JOIN blocks ON blocks.cid = dag.cid",
                (bytes(root.to_v1()),),
            ).fetchone()
        return int(row[0]), int(row[1] or 0), int(row[2])

    def missing_in_dag(self, root: CID) -> list[CID]:
        """Blocks of the DAG under ``root`` that are not stored, as far as the stored nodes tell
        (the children of a missing node are unknown until it arrives). Identity CIDs are never
        missing: their bytes are in the CID."""
        if root.is_identity:
            return [cid for child in _identity_links(root) for cid in self.missing_in_dag(child)]
        if not self.has(root):
            return [root]
        with self._lock:
            rows = self.db.execute(
                index.DAG_OF + "SELECT dag.cid FROM dag LEFT JOIN blocks ON blocks.cid = dag.cid "
                "WHERE blocks.cid IS NULL",
                (bytes(root.to_v1()),),
            ).fetchall()
        return [CID.from_bytes(row[0]) for row in rows]

    def stat(self, cid: CID) -> DagStat:
        block = self.get_block(cid)
        blocks, missing, dag_size = self.dag_counts(cid)
        kind, size = "raw", len(block)
        if cid.codec == DAG_PB:
            try:
                _, data = decode_unixfs(block)
            except (UnixFSError, DagPBError) as exc:
                raise StoreError(f"{cid} is not a UnixFS node: {exc}") from None
            kind = {NodeType.DIRECTORY: "directory", NodeType.SYMLINK: "symlink", NodeType.HAMT_SHARD: "directory"}.get(
                data.type, "file"
            )
            size = data.file_size() if kind == "file" else len(block)
        elif cid.codec == 0x55:
            kind = "file"
        return DagStat(cid, kind, size, dag_size, blocks, missing, self.is_pinned(cid))

    def ls(self, cid: CID) -> list[DirEntry]:
        """The entries of a directory, flat or HAMT-sharded, with the type and size of those stored."""
        try:
            links = list(directories.iter_links(cid, self.get_block))
        except directories.PathError as exc:
            raise StoreError(str(exc)) from None
        entries = []
        for link in links:
            kind, size = "unknown", link.tsize
            if self.has(link.cid):
                child = self.stat(link.cid)
                kind, size = child.type, child.size
            entries.append(DirEntry(link.name, link.cid, kind, size))
        return entries

    def resolve(self, root: CID, path: str) -> CID:
        """Follow ``a/b/c`` through UnixFS directories (flat or sharded) from ``root``."""
        try:
            return directories.resolve(root, [p for p in path.split("/") if p], self.get_block).cids[-1]
        except directories.PathError as exc:
            raise BlockNotFound(f"{root}/{path}: {exc}") from None

    # -- pins, quota, gc -----------------------------------------------------------------

    def is_pinned(self, cid: CID) -> bool:
        """Pinned by the operator or held (by an S3 object, say)."""
        with self._lock:
            return (
                self.db.execute(f"SELECT 1 FROM ({index.PINNED}) WHERE cid = ?", (bytes(cid.to_v1()),)).fetchone()
                is not None
            )

    def root_cids(self) -> list[CID]:
        """Every pinned or held CID and every root added or fetched as a whole, except what is
        withheld: what a node announces."""
        with self._lock:
            rows = self.db.execute(
                f"SELECT cid FROM ({index.PINNED} UNION SELECT cid FROM roots) "
                "WHERE cid NOT IN (SELECT cid FROM withheld)"
            ).fetchall()
        return [CID.from_bytes(row[0]) for row in rows]

    # -- holds: pins kept by others (S3 keys), and what only private ones keep ---------------

    def hold(self, holder: str, cid: CID, public: bool) -> None:
        """``holder`` (e.g. an S3 bucket and key) keeps ``cid`` pinned; moving a holder to another CID
        or changing its visibility replaces its hold. Refused (nothing changes) past the quota."""
        with self._transaction() as db:
            self._hold_in_transaction(db, holder, cid, public)

    def _hold_in_transaction(self, db: sqlite3.Connection, holder: str, cid: CID, public: bool) -> None:
        key = bytes(cid.to_v1())
        blocks, missing, _ = self.dag_counts(cid)
        if missing:
            raise PinRefused(f"cannot hold {cid}: {missing} of its {blocks} blocks are not in the store")
        old = db.execute("SELECT cid FROM holds WHERE holder = ?", (holder,)).fetchone()
        db.execute(
            "INSERT INTO holds(holder, cid, public, created) VALUES (?, ?, ?, ?) ON CONFLICT(holder) "
            "DO UPDATE SET cid = excluded.cid, public = excluded.public",
            (holder, key, int(public), time.time()),
        )
        if old is None or old[0] != key:
            self._check_pinned_quota(f"keeping {cid}")
        self._refresh_withheld(db, {key} | ({old[0]} if old else set()))

    def _check_pinned_quota(self, doing: str) -> None:
        """Refuse (inside the caller's transaction) when pins and holds now keep more than the quota.
        Pinned bytes are at most what is on disk: the pins are walked only when the disk is past it."""
        quota = self.config.quota
        if quota and self.usage() > quota:
            pinned = self.pinned_bytes()
            if pinned > quota:
                raise QuotaExceeded(f"{doing} would put {pinned} bytes under pins, over the quota of {quota}")

    def release(self, holder: str) -> CID | None:
        """Drop ``holder``'s hold; return the CID it held (gc frees it once nothing else keeps it)."""
        with self._transaction() as db:
            row = db.execute("DELETE FROM holds WHERE holder = ? RETURNING cid", (holder,)).fetchone()
            if row is None:
                return None
            self._refresh_withheld(db, {row[0]})
        return CID.from_bytes(row[0])

    def holds_under(self, prefix: str) -> list[tuple[str, CID]]:
        """Every (holder, CID) whose holder name starts with ``prefix`` (to reconcile a catalogue)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT holder, cid FROM holds WHERE substr(holder, 1, ?) = ? ORDER BY holder", (len(prefix), prefix)
            ).fetchall()
        return [(holder, CID.from_bytes(cid)) for holder, cid in rows]

    def holders(self, cid: CID) -> list[tuple[str, bool]]:
        with self._lock:
            rows = self.db.execute("SELECT holder, public FROM holds WHERE cid = ?", (bytes(cid.to_v1()),))
            return [(holder, bool(public)) for holder, public in rows.fetchall()]

    def any_withheld(self) -> bool:
        """Whether anything is withheld at all, re-read at most every GENERATION_TTL seconds (another
        process may have changed it): readers skip the per-block check while nothing is."""
        now = time.monotonic()
        with self._lock:
            if now - self._withheld_read_at > GENERATION_TTL:
                self._withheld_any = self.db.execute("SELECT EXISTS (SELECT 1 FROM withheld)").fetchone()[0] == 1
                self._withheld_read_at = now
            return self._withheld_any

    def is_withheld(self, cid: CID) -> bool:
        """True for a block that only private holds keep: not for the public gateway, peers or viewers."""
        if cid.is_identity or not self.any_withheld():
            return False
        with self._lock:
            return self.db.execute("SELECT 1 FROM withheld WHERE cid = ?", (bytes(cid.to_v1()),)).fetchone() is not None

    def _refresh_withheld(self, db: sqlite3.Connection, roots: set[bytes]) -> None:
        """Recompute ``withheld`` for the DAGs of ``roots``: a root with holds that are all private
        and no pin is withheld with its DAG, except the parts another DAG also links to (a block
        with a parent outside it, and everything below such a block, stays public)."""
        for root in roots:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS dag_set(cid BLOB PRIMARY KEY) WITHOUT ROWID")
            db.execute("DELETE FROM dag_set")
            db.execute(index.DAG_OF + "INSERT INTO dag_set SELECT cid FROM dag", (root,))
            db.execute("DELETE FROM withheld WHERE cid IN (SELECT cid FROM dag_set)")
            private = db.execute(
                "SELECT EXISTS (SELECT 1 FROM holds WHERE cid = ?1) "
                "AND NOT EXISTS (SELECT 1 FROM holds WHERE cid = ?1 AND public) "
                "AND NOT EXISTS (SELECT 1 FROM pins WHERE cid = ?1)",
                (root,),
            ).fetchone()[0]
            if private:
                db.execute(
                    "WITH RECURSIVE shared(cid) AS ("
                    "  SELECT dag_set.cid FROM dag_set JOIN links ON links.child = dag_set.cid"
                    "  WHERE links.parent NOT IN (SELECT cid FROM dag_set)"
                    "  UNION SELECT links.child FROM links JOIN shared ON links.parent = shared.cid"
                    ") INSERT OR IGNORE INTO withheld SELECT cid FROM dag_set "
                    "WHERE cid NOT IN (SELECT cid FROM shared)"
                )
            db.execute("DELETE FROM dag_set")
        self._withheld_read_at = float("-inf")

    def pins(self) -> list[tuple[CID, str | None, float]]:
        with self._lock:
            rows = self.db.execute("SELECT cid, name, created FROM pins ORDER BY created").fetchall()
        return [(CID.from_bytes(cid), name, created) for cid, name, created in rows]

    def pinned_bytes(self) -> int:
        """Bytes on disk that pins and holds keep."""
        with self._lock:
            row = self.db.execute(
                index.LIVE_FROM_PINS + "SELECT coalesce(sum(blocks.length), 0) FROM live JOIN blocks USING (cid)"
            ).fetchone()
        return int(row[0])

    def pin_add(self, cid: CID, name: str | None = None) -> None:
        with self._transaction() as db:
            self._pin_in_transaction(db, cid, name)

    def _pin_in_transaction(self, db: sqlite3.Connection, cid: CID, name: str | None) -> None:
        key = bytes(cid.to_v1())
        if not self.has(cid):
            raise BlockNotFound(cid)
        blocks, missing, _ = self.dag_counts(cid)
        if missing:
            raise PinRefused(f"cannot pin {cid}: {missing} of its {blocks} blocks are not in the store")
        db.execute("INSERT OR IGNORE INTO pins(cid, name, created) VALUES (?, ?, ?)", (key, name, time.time()))
        self._refresh_withheld(db, {key})
        self._check_pinned_quota(f"pinning {cid}")

    def pin_rm(self, cid: CID) -> None:
        with self._transaction():
            if not self.db.execute("DELETE FROM pins WHERE cid = ?", (bytes(cid.to_v1()),)).rowcount:
                raise PinRefused(f"{cid} is not pinned")
            self._refresh_withheld(self.db, {bytes(cid.to_v1())})

    def usage(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT coalesce(sum(size), 0) FROM packs").fetchone()[0])

    def gc(self) -> GCResult:
        """Remove every block no pin needs, then compact packs that are mostly dead."""
        return self._sweep(index.LIVE_FROM_PINS, drop_roots=True)

    def enforce_quota(self, protect: Sequence[CID] = ()) -> int:
        """Evict least recently used unpinned content until the store fits its quota; return bytes freed."""
        quota = self.config.quota
        if not quota or self.usage() <= quota:
            return 0
        before = self.usage()
        self._sweep(index.LIVE_FROM_PINS_AND_ROOTS, drop_roots=False)  # orphans go first
        keep = [bytes(c.to_v1()) for c in protect]
        while self.usage() > quota:
            with self._lock:
                victims = [
                    row
                    for row in self.db.execute(
                        f"SELECT cid, size FROM roots WHERE cid NOT IN ({index.PINNED}) ORDER BY last_access LIMIT 64"
                    ).fetchall()
                    if row[0] not in keep
                ]
            if not victims:
                break
            excess, chosen = self.usage() - quota, []
            for cid, size in victims:
                chosen.append(cid)
                excess -= size
                if excess <= 0:
                    break
            with self._transaction():
                self.db.executemany("DELETE FROM roots WHERE cid = ?", ((c,) for c in chosen))
            self._sweep(index.LIVE_FROM_PINS_AND_ROOTS, drop_roots=False)
        return before - self.usage()

    def _sweep(self, live_query: str, drop_roots: bool) -> GCResult:
        dead_packs: list[str] = []
        with self._transaction():
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS live_set(cid BLOB PRIMARY KEY) WITHOUT ROWID")
            self.db.execute("DELETE FROM live_set")
            self.db.execute(live_query + "INSERT INTO live_set SELECT cid FROM live")
            removed, freed = self.db.execute(
                "SELECT count(*), coalesce(sum(length), 0) FROM blocks WHERE cid NOT IN (SELECT cid FROM live_set)"
            ).fetchone()
            self.db.execute("DELETE FROM blocks WHERE cid NOT IN (SELECT cid FROM live_set)")
            self.db.execute("DELETE FROM links WHERE parent NOT IN (SELECT cid FROM live_set)")
            self.db.execute("DELETE FROM withheld WHERE cid NOT IN (SELECT cid FROM live_set)")
            if drop_roots:
                self.db.execute(f"DELETE FROM roots WHERE cid NOT IN ({index.PINNED})")
            for pack_id, name in self.db.execute(
                "SELECT id, name FROM packs WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocks.pack = packs.id)"
            ).fetchall():
                self.db.execute("DELETE FROM packs WHERE id = ?", (pack_id,))
                dead_packs.append(name)
            self.db.execute("DELETE FROM live_set")
            if removed or dead_packs:
                self._bump_generation()
        for name in dead_packs:
            self.packs.unlink(name)
        compacted = self._compact()
        return GCResult(int(removed), int(freed), len(dead_packs), compacted)

    def _compact(self) -> int:
        with self._lock:
            sparse = self.db.execute(
                "SELECT packs.id, packs.name FROM packs JOIN blocks ON blocks.pack = packs.id "
                "GROUP BY packs.id HAVING sum(blocks.length) < ? * packs.size",
                (COMPACT_BELOW,),
            ).fetchall()
        for pack_id, name in sparse:
            with self._lock:
                rows = self.db.execute(
                    "SELECT cid, offset, length FROM blocks WHERE pack = ? ORDER BY offset", (pack_id,)
                ).fetchall()
            writer = PackWriter(self.packs.directory)
            try:
                moved = [(writer.append(self.packs.pread(name, off, length)), cid, off) for cid, off, length in rows]
                writer.seal()
                with self._transaction():
                    new_id = self.db.execute(
                        "INSERT INTO packs(name, size) VALUES (?, ?)", (writer.name, writer.size)
                    ).lastrowid
                    self.db.executemany(
                        "UPDATE blocks SET pack = ?, offset = ? WHERE cid = ? AND pack = ? AND offset = ?",
                        ((new_id, new_off, cid, pack_id, off) for new_off, cid, off in moved),
                    )
                    still = self.db.execute("SELECT 1 FROM blocks WHERE pack = ? LIMIT 1", (pack_id,)).fetchone()
                    if not still:
                        self.db.execute("DELETE FROM packs WHERE id = ?", (pack_id,))
                    self._bump_generation()
            except BaseException:
                writer.abort()
                raise
            writer.release()
            if not still:
                self.packs.unlink(name)
        return len(sparse)

    # -- verify and quarantine -------------------------------------------------------------

    def verify(self, progress: Progress | None = None) -> list[CorruptReport]:
        """Rehash every block; quarantine and report those whose bytes no longer match."""
        with self._lock:
            rows = self.db.execute(
                "SELECT blocks.cid, packs.name, blocks.offset, blocks.length, blocks.size, blocks.flags "
                "FROM blocks JOIN packs ON packs.id = blocks.pack ORDER BY blocks.pack, blocks.offset"
            ).fetchall()
        bad: list[tuple[CID, bytes, str]] = []
        for key, pack, offset, length, size, flags in rows:
            cid = CID.from_bytes(key)
            try:
                stored = self.packs.pread(pack, offset, length)
            except OSError as exc:
                bad.append((cid, b"", f"unreadable: {exc.strerror or exc}"))
                continue
            try:
                data = self.codec.decode(stored, size, flags)
            except (ValueError, zstandard.ZstdError):
                bad.append((cid, stored, "does not decompress"))
                continue
            if not cid.verifies(data):
                bad.append((cid, data, "hash mismatch"))
            if progress:
                progress(length)
        for cid, data, reason in bad:
            self.quarantine(cid, data, reason)
        return [CorruptReport(cid, reason) for cid, _, reason in bad]

    def quarantine(self, cid: CID, data: bytes, reason: str) -> None:
        """Take a corrupt block out of service for good, keeping its bytes for inspection."""
        path = self.root / "quarantine" / f"{cid}-{int(time.time())}.bin"
        try:
            path.write_bytes(data)
        except OSError:
            path = None  # type: ignore[assignment]
        with self._transaction():
            self.db.execute("DELETE FROM blocks WHERE cid = ?", (bytes(cid.to_v1()),))
            self.db.execute(
                "INSERT INTO quarantine(cid, found, reason, path) VALUES (?, ?, ?, ?)",
                (bytes(cid.to_v1()), time.time(), reason, str(path) if path else None),
            )
            self._bump_generation()

    def repo_stat(self) -> RepoStat:
        with self._lock:
            blocks = self.db.execute("SELECT count(*) FROM blocks").fetchone()[0]
            pins = self.db.execute("SELECT count(*) FROM pins").fetchone()[0]
            packs = self.db.execute("SELECT count(*) FROM packs").fetchone()[0]
        return RepoStat(self.usage(), self.config.quota, int(blocks), int(pins), self.pinned_bytes(), int(packs))

    # -- whole files --------------------------------------------------------------------

    def add_path(
        self,
        path: str,
        chunk_size: int,
        pin: bool = True,
        hidden: bool = False,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Child:
        from .importer import import_tree, tree_size

        size = tree_size(path, hidden)
        self.check_room(size, pin)
        with self.batch() as batch:
            root = import_tree(path, batch, chunk_size, hidden, progress)
            batch.commit([root.cid], name or os.path.basename(os.path.normpath(path)), root.content_size or size, pin)
        return root


def _refuse_lying_leaves(leaves: list[Leaf], locations: list[Location | None]) -> None:
    """A raw leaf is read straight from its pack by the size its parent gave: a parent that lies would
    hand out bytes of the blocks after it, so a stored size that differs is a ``UnixFSError``."""
    for leaf, where in zip(leaves, locations, strict=True):
        if where is not None and not leaf.embedded and where.size != leaf.size:
            raise UnixFSError(f"{leaf.cid}: holds {where.size} bytes, its parent says {leaf.size}")


def _identity_links(cid: CID) -> list[CID]:
    """What an identity CID's inlined dag-pb node links to (nothing for other codecs or bad bytes)."""
    try:
        return links_of(cid, cid.identity_data())
    except DagPBError:
        return []


def _windows(offset: int, length: int) -> Iterator[tuple[int, int]]:
    """[offset, offset+length) as READ_WINDOW-sized pieces, each planned only when it is reached."""
    end = offset + length
    while offset < end:
        size = min(READ_WINDOW, end - offset)
        yield offset, size
        offset += size


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _db_error(exc: BaseException) -> StoreError:
    text = str(exc)
    if "full" in text:
        return NoSpace("no space left on the device for the index; nothing was changed")
    return StoreError(f"index error: {text}")
