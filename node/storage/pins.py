"""What the store keeps: the operator's pins, the holds others keep (S3 keys), and what is withheld.

A CID stays pinned while any pin or hold names it, and pinned content may
never push the store over its quota (unpinned content is evicted first; see
``gc``). A hold is public or not: the DAG of a root that only private holds
keep (no pin, no public hold) is withheld from the public gateway, peers and
viewers, except the parts another DAG also links to.
"""

from __future__ import annotations

import sqlite3
import time

from .cid import CID
from .errors import BlockNotFound, PinRefused, QuotaExceeded
from .index import DAG_OF, LIVE_FROM_PINS, PINNED, Index


class Pins:
    def __init__(self, index: Index, quota: int) -> None:
        self._index = index
        self._quota = quota  # bytes on disk; 0 means no limit
        self._withheld_any = False
        self._withheld_seen: int | None = None  # the change counter's value when _withheld_any was read

    # -- pins ---------------------------------------------------------------------------

    def listed(self) -> list[tuple[CID, str | None, float]]:
        """Every pin: its CID, name and when it was made, oldest first."""
        with self._index.lock:
            rows = self._index.db.execute("SELECT cid, name, created FROM pins ORDER BY created").fetchall()
        return [(CID.from_bytes(cid), name, created) for cid, name, created in rows]

    def is_pinned(self, cid: CID) -> bool:
        """Pinned by the operator or held (by an S3 object, say)."""
        with self._index.lock:
            return (
                self._index.db.execute(f"SELECT 1 FROM ({PINNED}) WHERE cid = ?", (bytes(cid.to_v1()),)).fetchone()
                is not None
            )

    def root_cids(self) -> list[CID]:
        """Every pinned or held CID and every root added or fetched as a whole, except what is
        withheld: what a node announces."""
        with self._index.lock:
            rows = self._index.db.execute(
                f"SELECT cid FROM ({PINNED} UNION SELECT cid FROM roots) WHERE cid NOT IN (SELECT cid FROM withheld)"
            ).fetchall()
        return [CID.from_bytes(row[0]) for row in rows]

    def pin_add(self, cid: CID, name: str | None = None) -> None:
        with self._index.transaction() as db:
            self.pin_in_transaction(db, cid, name)

    def pin_in_transaction(self, db: sqlite3.Connection, cid: CID, name: str | None) -> None:
        key = bytes(cid.to_v1())
        if not self._index.has(cid):
            raise BlockNotFound(cid)
        blocks, missing, _ = self._index.dag_counts(cid)
        if missing:
            raise PinRefused(f"cannot pin {cid}: {missing} of its {blocks} blocks are not in the store")
        db.execute("INSERT OR IGNORE INTO pins(cid, name, created) VALUES (?, ?, ?)", (key, name, time.time()))
        self._refresh_withheld(db, {key})
        self._check_pinned_quota(f"pinning {cid}")

    def pin_rm(self, cid: CID) -> None:
        with self._index.transaction() as db:
            if not db.execute("DELETE FROM pins WHERE cid = ?", (bytes(cid.to_v1()),)).rowcount:
                raise PinRefused(f"{cid} is not pinned")
            self._refresh_withheld(db, {bytes(cid.to_v1())})

    # -- holds: pins kept by others (S3 keys), and what only private ones keep ---------------

    def hold(self, holder: str, cid: CID, public: bool) -> None:
        """``holder`` (e.g. an S3 bucket and key) keeps ``cid`` pinned; moving a holder to another CID
        or changing its visibility replaces its hold. Refused (nothing changes) past the quota."""
        with self._index.transaction() as db:
            self.hold_in_transaction(db, holder, cid, public)

    def hold_in_transaction(self, db: sqlite3.Connection, holder: str, cid: CID, public: bool) -> None:
        key = bytes(cid.to_v1())
        blocks, missing, _ = self._index.dag_counts(cid)
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

    def release(self, holder: str) -> CID | None:
        """Drop ``holder``'s hold; return the CID it held (gc frees it once nothing else keeps it)."""
        with self._index.transaction() as db:
            row = db.execute("DELETE FROM holds WHERE holder = ? RETURNING cid", (holder,)).fetchone()
            if row is None:
                return None
            self._refresh_withheld(db, {row[0]})
        return CID.from_bytes(row[0])

    def holds_under(self, prefix: str) -> list[tuple[str, CID]]:
        """Every (holder, CID) whose holder name starts with ``prefix`` (to reconcile a catalogue)."""
        with self._index.lock:
            rows = self._index.db.execute(
                "SELECT holder, cid FROM holds WHERE substr(holder, 1, ?) = ? ORDER BY holder", (len(prefix), prefix)
            ).fetchall()
        return [(holder, CID.from_bytes(cid)) for holder, cid in rows]

    def holders(self, cid: CID) -> list[tuple[str, bool]]:
        with self._index.lock:
            rows = self._index.db.execute("SELECT holder, public FROM holds WHERE cid = ?", (bytes(cid.to_v1()),))
            return [(holder, bool(public)) for holder, public in rows.fetchall()]

    def any_withheld(self) -> bool:
        """Whether anything may be withheld: what was last read, while no process of the store has changed
        it since (the index's change counter says so, with no lock or query: every gateway request asks, on
        its event loop); True once one has, until ``is_withheld`` has looked again."""
        if self._index.withheld_changes.value() != self._withheld_seen:
            return True
        return self._withheld_any

    def is_withheld(self, cid: CID) -> bool:
        """True for a block that only private holds keep: not for the public gateway, peers or viewers."""
        if cid.is_identity or not self.any_withheld():
            return False
        with self._index.lock:
            seen = self._index.withheld_changes.value()  # before the query: a change after it shows next time
            if seen != self._withheld_seen:
                self._withheld_any = self._index.db.execute("SELECT EXISTS (SELECT 1 FROM withheld)").fetchone()[0] == 1
                self._withheld_seen = seen
            if not self._withheld_any:
                return False
            return (
                self._index.db.execute("SELECT 1 FROM withheld WHERE cid = ?", (bytes(cid.to_v1()),)).fetchone()
                is not None
            )

    def _refresh_withheld(self, db: sqlite3.Connection, roots: set[bytes]) -> None:
        """Recompute ``withheld`` for the DAGs of ``roots``: a root with holds that are all private
        and no pin is withheld with its DAG, except the parts another DAG also links to (a block
        with a parent outside it, and everything below such a block, stays public)."""
        for root in roots:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS dag_set(cid BLOB PRIMARY KEY) WITHOUT ROWID")
            db.execute("DELETE FROM dag_set")
            db.execute(DAG_OF + "INSERT INTO dag_set SELECT cid FROM dag", (root,))
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
        self._index.after_commit(self._index.withheld_changes.changed)

    # -- the quota's share for pinned content ----------------------------------------------------

    def pinned_bytes(self) -> int:
        """Bytes on disk that pins and holds keep."""
        with self._index.lock:
            row = self._index.db.execute(
                LIVE_FROM_PINS + "SELECT coalesce(sum(blocks.length), 0) FROM live JOIN blocks USING (cid)"
            ).fetchone()
        return int(row[0])

    def check_room(self, nbytes: int, pin: bool) -> None:
        """Refuse early what cannot fit: pinned content may never push the store over its quota."""
        quota = self._quota
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

    def _check_pinned_quota(self, doing: str) -> None:
        """Refuse (inside the caller's transaction) when pins and holds now keep more than the quota.
        Pinned bytes are at most what is on disk: the pins are walked only when the disk is past it."""
        quota = self._quota
        if quota and self._index.usage() > quota:
            pinned = self.pinned_bytes()
            if pinned > quota:
                raise QuotaExceeded(f"{doing} would put {pinned} bytes under pins, over the quota of {quota}")
