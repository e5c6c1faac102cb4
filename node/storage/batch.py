"""One import's blocks on their way into a new pack, and the thread that writes them.

Every way in (the importer for local files, ``BlockStore.put_verified`` and
Bitswap for blocks from anywhere else) ends in ``ImportBatch.commit``: the
pack is sealed first, then one index transaction makes all its blocks, links,
the roots and the pin or hold visible at once. ``abort``, or leaving the
batch's ``with`` block without a commit, leaves the store exactly as it was.

The caller's thread hashes; a ``PackFiller`` thread compresses and writes, so
an import uses both cores and runs at about hashing speed. Both release the
GIL for their heavy work (OpenSSL, zstd, ``write``). The batch owns that
thread: it starts with the batch, and commit and abort both end it, whatever
they raise.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from .cid import CID
from .codec import BlockCodec
from .dagpb import DagPBError, links_of
from .errors import CorruptBlock, NoSpace, StoreError
from .gc import Collector
from .index import Index
from .packs import PackDirectory, PackWriter
from .pins import Pins

# The writer thread starts writeback every so many bytes, spreading the flush over the import.
WRITEBACK_EVERY = 8 * 1024 * 1024
# Blocks waiting for the writer thread: bounds an import's memory to about 32 chunks.
WRITE_QUEUE_BLOCKS = 32

# Where a block went in the pack: offset, stored length, size, index flags.
PackedRow = tuple[int, int, int, int]


class PackFiller:
    """Compresses and appends blocks to one pack on a thread of its own.

    The thread starts here and ends in ``finish``, which may be called any
    number of times; a write that fails is raised by the next ``submit`` or
    by ``finish``, and the thread keeps draining so a producer never blocks
    on it.
    """

    def __init__(self, pack: PackWriter, codec: BlockCodec) -> None:
        self._pack = pack
        self._codec = codec
        self._rows: dict[bytes, PackedRow] = {}
        self._queue: queue.Queue[tuple[bytes, bytes | memoryview] | None] = queue.Queue(WRITE_QUEUE_BLOCKS)
        self._failure: OSError | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._write_loop, name="medianode-pack-writer", daemon=True
        )
        self._thread.start()

    def submit(self, key: bytes, data: bytes | memoryview) -> None:
        """Queue one block (waiting while WRITE_QUEUE_BLOCKS are queued)."""
        self._raise_failure()
        self._queue.put((key, data))

    def finish(self) -> dict[bytes, PackedRow]:
        """Wait until every queued block is written and the thread has ended; each block's row."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise_failure()
        return self._rows

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise _os_error(self._failure, "writing a pack") from self._failure

    def _write_loop(self) -> None:
        synced = 0
        while (item := self._queue.get()) is not None:
            if self._failure is not None:
                continue  # keep draining so the producer never blocks on a dead writer
            key, data = item
            try:
                stored, flags = self._codec.encode(data)
                offset = self._pack.append(stored)
                self._rows[key] = (offset, len(stored), len(data), flags)
                if self._pack.size - synced >= WRITEBACK_EVERY:
                    self._pack.start_writeback(synced, self._pack.size - synced)
                    synced = self._pack.size
            except OSError as exc:
                self._failure = exc


def child_links(cid: CID, block: bytes | memoryview) -> list[bytes]:
    """CIDs (as index keys) a dag-pb block links to; identity CIDs are not stored, so not linked."""
    try:
        links = links_of(cid, block)
    except DagPBError as exc:
        raise CorruptBlock(cid, f"not valid dag-pb ({exc})") from None
    return [bytes(child.to_v1()) for child in links if not child.is_identity]


class ImportBatch:
    """Blocks going into one new pack; the ``BlockSink`` the importer writes to.

    Nothing is visible to readers until ``commit``. Use it as a context
    manager (``BlockStore.batch``), or call ``abort`` in a ``finally``: both
    are no-ops once committed.
    """

    def __init__(self, index: Index, packs: PackDirectory, codec: BlockCodec, pins: Pins, collector: Collector) -> None:
        self._index = index
        self._pins = pins
        self._collector = collector
        try:
            self._pack = PackWriter(packs.directory)
        except OSError as exc:
            raise _os_error(exc, "creating a pack") from exc
        try:
            self._filler = PackFiller(self._pack, codec)
        except BaseException:
            self._pack.abort()
            raise
        self._seen: set[bytes] = set()
        self._links: list[tuple[bytes, bytes]] = []
        self._committed = False

    def __enter__(self) -> ImportBatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()

    def put(self, cid: CID, data: bytes | memoryview) -> None:
        """Add a block whose CID was computed from exactly these bytes (by the importer, or when a
        peer's message was decoded): it is not hashed again."""
        key = bytes(cid.to_v1())
        if key in self._seen or cid.is_identity:
            return
        children = child_links(cid, data)
        self._filler.submit(key, data)
        self._seen.add(key)
        self._links += ((key, child) for child in children)

    def put_verified(self, cid: CID, data: bytes | memoryview) -> None:
        """Add a block that came from outside, after checking it against its CID."""
        if not cid.verifies(data):
            raise CorruptBlock(cid)
        self.put(cid, data)

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
        try:
            rows = self._filler.finish()
            self._pack.seal()
        except OSError as exc:
            self._pack.abort()
            raise _os_error(exc, "sealing a pack") from exc
        except StoreError:
            self._pack.abort()
            raise
        used_pack = False
        try:
            with self._index.transaction() as db:
                used_pack = self._insert(db, rows)
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
                        self._pins.pin_in_transaction(db, root, name)
                if hold is not None:
                    self._pins.hold_in_transaction(db, hold[0], roots[0], hold[1])
        except BaseException:
            self._pack.abort()
            raise
        if not used_pack:
            self._pack.abort()
        self._pack.release()
        self._committed = True
        if not pin and hold is None:
            self._collector.enforce_quota(protect=roots)

    def _insert(self, db: sqlite3.Connection, rows: dict[bytes, PackedRow]) -> bool:
        """Write this batch's rows; return False when every block was already stored."""
        db.execute("CREATE TEMP TABLE IF NOT EXISTS incoming(cid BLOB PRIMARY KEY) WITHOUT ROWID")
        db.execute("DELETE FROM incoming")
        db.executemany("INSERT INTO incoming(cid) VALUES (?)", ((k,) for k in rows))
        missing = db.execute(
            "SELECT count(*) FROM incoming WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocks.cid = incoming.cid)"
        ).fetchone()[0]
        db.execute("DELETE FROM incoming")
        if rows and missing:
            pack_id = db.execute(
                "INSERT INTO packs(name, size) VALUES (?, ?)", (self._pack.name, self._pack.size)
            ).lastrowid
            # The newest copy wins, so the file just added reads contiguously.
            db.executemany(
                "INSERT INTO blocks(cid, pack, offset, length, size, flags) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(cid) DO UPDATE SET pack = excluded.pack, offset = excluded.offset, "
                "length = excluded.length, size = excluded.size, flags = excluded.flags",
                ((k, pack_id, *row) for k, row in rows.items()),
            )
        db.executemany("INSERT OR IGNORE INTO links(parent, child) VALUES (?, ?)", self._links)
        return bool(rows and missing)

    def abort(self) -> None:
        """Drop everything in this batch and end its writer thread; after a commit there is nothing to drop."""
        if self._committed:
            return
        with contextlib.suppress(StoreError):  # the import failed already; the pack goes either way
            self._filler.finish()
        self._pack.abort()


def _os_error(exc: OSError, doing: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"no space left on the device while {doing}; nothing was stored")
    return StoreError(f"{exc.strerror or exc} while {doing}; nothing was stored")
