"""Making room: garbage collection, the quota's eviction of least recently used content, compaction.

``gc`` removes every block no pin or hold needs. The quota evicts unpinned
roots, least recently used first (``touch`` records a use), until the store
fits. Both then rewrite packs that are mostly dead, so the space of removed
blocks comes back: a pack is only deleted once no block lives in it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .cid import CID
from .index import BUSY_TIMEOUT_MS, LIVE_FROM_PINS, LIVE_FROM_PINS_AND_ROOTS, PINNED, Index
from .packs import PackDirectory, PackWriter

log = logging.getLogger("medianode.store")

COMPACT_BELOW = 0.5  # packs that are less than half live are rewritten
EVICT_AT_ONCE = 64  # least recently used roots considered per round of eviction
TOUCH_INTERVAL = 60.0  # seconds between recorded accesses of one root
TOUCHED_REMEMBERED = 100_000  # roots whose last recorded access is kept in memory


@dataclass(frozen=True)
class GCResult:
    blocks_removed: int
    bytes_freed: int
    packs_removed: int
    packs_compacted: int


class Collector:
    def __init__(self, index: Index, packs: PackDirectory, quota: int) -> None:
        self._index = index
        self._packs = packs
        self._quota = quota  # bytes on disk; 0 means no limit
        self._touched: dict[bytes, float] = {}

    def gc(self) -> GCResult:
        """Remove every block no pin needs, then compact packs that are mostly dead."""
        return self._sweep(LIVE_FROM_PINS, drop_roots=True)

    def enforce_quota(self, protect: Sequence[CID] = ()) -> int:
        """Evict least recently used unpinned content until the store fits its quota; return bytes freed."""
        quota, index = self._quota, self._index
        if not quota or index.usage() <= quota:
            return 0
        before = index.usage()
        self._sweep(LIVE_FROM_PINS_AND_ROOTS, drop_roots=False)  # orphans go first
        keep = [bytes(c.to_v1()) for c in protect]
        while index.usage() > quota:
            with index.lock:
                victims = [
                    row
                    for row in index.db.execute(
                        f"SELECT cid, size FROM roots WHERE cid NOT IN ({PINNED}) ORDER BY last_access LIMIT ?",
                        (EVICT_AT_ONCE,),
                    ).fetchall()
                    if row[0] not in keep
                ]
            if not victims:
                break
            excess, chosen = index.usage() - quota, []
            for cid, size in victims:
                chosen.append(cid)
                excess -= size
                if excess <= 0:
                    break
            with index.transaction() as db:
                db.executemany("DELETE FROM roots WHERE cid = ?", ((c,) for c in chosen))
            self._sweep(LIVE_FROM_PINS_AND_ROOTS, drop_roots=False)
        return before - index.usage()

    def touch_due(self, cid: CID) -> bool:
        """Whether :meth:`touch` would record an access now (decided in memory, without the lock)."""
        return time.time() - self._touched.get(bytes(cid.to_v1()), 0.0) >= TOUCH_INTERVAL

    def touch(self, cid: CID) -> None:
        """Record an access for the quota's LRU eviction, at most once a minute per root.

        A video player sends a Range request every few seconds; writing (and
        fsyncing) the index for each one would cost more than serving it.
        """
        key = bytes(cid.to_v1())
        now = time.time()
        db = self._index.db
        if now - self._touched.get(key, 0.0) < TOUCH_INTERVAL:
            return  # the common case, decided without waiting for the index lock
        with self._index.lock:
            if now - self._touched.get(key, 0.0) < TOUCH_INTERVAL:
                return
            if len(self._touched) > TOUCHED_REMEMBERED:
                self._touched.clear()
            self._touched[key] = now
            try:
                # Never wait for another process's write (a fetch or an add committing): this runs under the
                # index lock, so every read of this process would wait with it. A stamp missed is a hint lost.
                db.execute("PRAGMA busy_timeout = 0")
                try:
                    db.execute("UPDATE roots SET last_access = ? WHERE cid = ?", (now, key))
                finally:
                    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            except sqlite3.Error as exc:
                # A read never fails for its stamp (a full disk, a locked index): eviction order is a hint.
                log.debug("last access not recorded", extra={"fields": {"cid": str(cid), "error": str(exc)}})
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")

    def _sweep(self, live_query: str, drop_roots: bool) -> GCResult:
        dead_packs: list[str] = []
        with self._index.transaction() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS live_set(cid BLOB PRIMARY KEY) WITHOUT ROWID")
            db.execute("DELETE FROM live_set")
            db.execute(live_query + "INSERT INTO live_set SELECT cid FROM live")
            removed, freed = db.execute(
                "SELECT count(*), coalesce(sum(length), 0) FROM blocks WHERE cid NOT IN (SELECT cid FROM live_set)"
            ).fetchone()
            db.execute("DELETE FROM blocks WHERE cid NOT IN (SELECT cid FROM live_set)")
            db.execute("DELETE FROM links WHERE parent NOT IN (SELECT cid FROM live_set)")
            db.execute("DELETE FROM withheld WHERE cid NOT IN (SELECT cid FROM live_set)")
            if drop_roots:
                db.execute(f"DELETE FROM roots WHERE cid NOT IN ({PINNED})")
            for pack_id, name in db.execute(
                "SELECT id, name FROM packs WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocks.pack = packs.id)"
            ).fetchall():
                db.execute("DELETE FROM packs WHERE id = ?", (pack_id,))
                dead_packs.append(name)
            db.execute("DELETE FROM live_set")
            if removed or dead_packs:
                self._index.bump_generation()
        for name in dead_packs:
            self._packs.unlink(name)
        compacted = self._compact()
        return GCResult(int(removed), int(freed), len(dead_packs), compacted)

    def _compact(self) -> int:
        """Rewrite each pack whose live blocks fill less than COMPACT_BELOW of it; return how many."""
        index, packs = self._index, self._packs
        with index.lock:
            sparse = index.db.execute(
                "SELECT packs.id, packs.name FROM packs JOIN blocks ON blocks.pack = packs.id "
                "GROUP BY packs.id HAVING sum(blocks.length) < ? * packs.size",
                (COMPACT_BELOW,),
            ).fetchall()
        for pack_id, name in sparse:
            with index.lock:
                rows = index.db.execute(
                    "SELECT cid, offset, length FROM blocks WHERE pack = ? ORDER BY offset", (pack_id,)
                ).fetchall()
            writer = PackWriter(packs.directory)
            try:
                moved = [(writer.append(packs.pread(name, off, length)), cid, off) for cid, off, length in rows]
                writer.seal()
                with index.transaction() as db:
                    new_id = db.execute(
                        "INSERT INTO packs(name, size) VALUES (?, ?)", (writer.name, writer.size)
                    ).lastrowid
                    db.executemany(
                        "UPDATE blocks SET pack = ?, offset = ? WHERE cid = ? AND pack = ? AND offset = ?",
                        ((new_id, new_off, cid, pack_id, off) for new_off, cid, off in moved),
                    )
                    still = db.execute("SELECT 1 FROM blocks WHERE pack = ? LIMIT 1", (pack_id,)).fetchone()
                    if not still:
                        db.execute("DELETE FROM packs WHERE id = ?", (pack_id,))
                    index.bump_generation()
            except BaseException:
                writer.abort()
                raise
            writer.release()
            if not still:
                packs.unlink(name)
        return len(sparse)
