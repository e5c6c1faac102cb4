"""The embedded index: where each block lives, DAG links, pins, roots and last access.

SQLite in WAL mode with ``synchronous=FULL``: a committed transaction
survives ``kill -9`` and power loss, and an interrupted one leaves nothing.
Rows only ever point into packs that were sealed (fsynced and renamed)
before the transaction that adds them.

Tables:
- ``packs``: every sealed pack file and its size on disk.
- ``blocks``: CID (CIDv1 bytes) -> pack, offset, stored length, raw size, flags (zstd).
- ``links``: parent -> child CIDs of every stored dag-pb node, so reachability
  (pins, GC, completeness) is a recursive query, never a re-parse. The number
  of parents of a block is its reference count.
- ``pins``: recursive pins.
- ``roots``: what was added, imported or fetched as a whole, with last access:
  the unit the quota's LRU eviction removes.
- ``holds``: pins held by someone other than the operator (an S3 object key
  holds its CID): a CID stays pinned while any hold or pin names it. A hold
  is public or not; ``withheld`` lists the blocks of CIDs that only private
  holds keep (and no pin, and no public DAG shares), which the node serves to
  no one but the holders' owners (not the public gateway, Bitswap or viewers).
- ``quarantine``: blocks ``verify`` or a hashed read found corrupt.
- ``meta``: ``generation``, bumped whenever a block moves or disappears, so
  in-memory layouts computed from older rows are dropped.

``Index`` is the open database as the store's parts share it: one lock for
every query of this process, transactions that turn SQLite's failures into
store errors, the generation, and the queries of where blocks are and what
a DAG holds, which writing, reading, pinning and gc all ask.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .changes import ChangeCounter
from .cid import CID
from .dagpb import DagPBError, links_of
from .errors import NoSpace, StoreError
from .layout import Location

BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for another connection's write lock

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (
    cid BLOB PRIMARY KEY,
    pack INTEGER NOT NULL REFERENCES packs(id),
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    size INTEGER NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_pack ON blocks(pack, offset);
CREATE TABLE IF NOT EXISTS links (
    parent BLOB NOT NULL,
    child BLOB NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_by_child ON links(child);
CREATE TABLE IF NOT EXISTS pins (
    cid BLOB PRIMARY KEY,
    name TEXT,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roots (
    cid BLOB PRIMARY KEY,
    name TEXT,
    size INTEGER NOT NULL,
    added REAL NOT NULL,
    last_access REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS roots_by_access ON roots(last_access);
CREATE TABLE IF NOT EXISTS holds (
    holder TEXT PRIMARY KEY,
    cid BLOB NOT NULL,
    public INTEGER NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_by_cid ON holds(cid);
CREATE TABLE IF NOT EXISTS withheld (
    cid BLOB PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    cid BLOB NOT NULL,
    found REAL NOT NULL,
    reason TEXT NOT NULL,
    path TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', 0);
"""

FLAG_ZSTD = 1
GENERATION_TTL = 0.5  # seconds a reader trusts its cached idea of where blocks are (another process may move them)
LOCATIONS_PER_QUERY = 500  # CIDs per IN (...) list: well under SQLite's bound on parameters


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating or upgrading) the index; on a full disk, an index at this schema opens read-only."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        conn.close()
        # WAL mode needs its shared-memory file (32 KiB) even to read: with no room for it, a
        # database whose log is empty (every commit checkpointed) is read exactly as its file is.
        fallback = _read_only(path)
        if fallback is None:
            raise
        return fallback
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"index {path} is from a newer medianode (schema {version})")
    # An index already at this schema is opened without writing (executescript takes the write lock
    # even when every statement is a no-op), so a node on a full disk still opens it to read and verify.
    if version < SCHEMA_VERSION or not _has_schema(conn):
        conn.executescript(SCHEMA)
    if version < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # Tables were just made (or added): fold them into the database file rather than leave the
        # schema's pages in the write-ahead log for the life of the process.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return conn


def _read_only(path: Path) -> sqlite3.Connection | None:
    """The index opened immutable, when the disk has no room and its write-ahead log is empty, so
    nothing is missed and no other process is writing; None otherwise."""
    try:
        room = os.statvfs(path.parent)
        wal = path.with_name(path.name + "-wal")
        if room.f_bavail * room.f_frsize >= 1024 * 1024 or (wal.exists() and wal.stat().st_size):
            return None
    except OSError:
        return None
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?immutable=1"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION or not _has_schema(conn):
        conn.close()
        return None
    return conn


_SCHEMA_OBJECTS = frozenset(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA))


def _has_schema(conn: sqlite3.Connection) -> bool:
    """Every table and index of SCHEMA exists and the generation row is there (read only)."""
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    if not names >= _SCHEMA_OBJECTS:
        return False
    return conn.execute("SELECT 1 FROM meta WHERE key = 'generation'").fetchone() is not None


LIVE_FROM_PINS = """
WITH RECURSIVE live(cid) AS (
    SELECT cid FROM pins UNION SELECT cid FROM holds
    UNION SELECT links.child FROM links JOIN live ON links.parent = live.cid
)
"""

LIVE_FROM_PINS_AND_ROOTS = """
WITH RECURSIVE live(cid) AS (
    SELECT cid FROM pins UNION SELECT cid FROM holds UNION SELECT cid FROM roots
    UNION SELECT links.child FROM links JOIN live ON links.parent = live.cid
)
"""

PINNED = "SELECT cid FROM pins UNION SELECT cid FROM holds"

DAG_OF = """
WITH RECURSIVE dag(cid) AS (
    VALUES(?)
    UNION SELECT links.child FROM links JOIN dag ON links.parent = dag.cid
)
"""


# Where a block is: pack name, offset, stored length, size, flags.
BlockRow = tuple[str, int, int, int, int]


class Index:
    """The open index, shared by the store's parts under one lock (SQLite connections are not thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.db = connect(path)
        self.lock = threading.RLock()
        self._generation = 0
        self._generation_read_at = float("-inf")
        # Whether anything is withheld, as every process of the store learns it (pins.Pins.any_withheld).
        self.withheld_changes = ChangeCounter(path.with_name(path.name + "-withheld"), GENERATION_TTL)
        self._after_commit: list[Callable[[], None]] = []

    def close(self) -> None:
        self.db.close()
        self.withheld_changes.close()

    def after_commit(self, call: Callable[[], None]) -> None:
        """Call ``call`` once the transaction under way commits (not if it rolls back)."""
        self._after_commit.append(call)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` under the lock; rolled back on any exception, which
        reaches the caller as a ``StoreError`` (``NoSpace`` for a full disk) unless it is one already."""
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except Exception as exc:
                raise _db_error(exc) from exc
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException as exc:
                self._after_commit.clear()
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if isinstance(exc, Exception) and not isinstance(exc, StoreError):
                    raise _db_error(exc) from exc
                raise
            calls, self._after_commit = self._after_commit, []
            for call in calls:
                call()

    def generation(self) -> int:
        """The index generation, re-read at most every GENERATION_TTL seconds (call with the lock held).

        Another process's gc may move blocks in the meantime; a read that then
        finds its pack gone calls ``forget_generation`` and retries.
        """
        now = time.monotonic()
        if now - self._generation_read_at > GENERATION_TTL:
            self._generation = int(self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            self._generation_read_at = now
        return self._generation

    def fresh_generation(self) -> int | None:
        """The generation as last read if that was within GENERATION_TTL, else None (call with the lock
        held): for a reader that must not wait on SQLite."""
        if time.monotonic() - self._generation_read_at > GENERATION_TTL:
            return None
        return self._generation

    def bump_generation(self) -> None:
        """Blocks moved or went away (call inside a transaction): layouts computed before are stale."""
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        self.forget_generation()

    def forget_generation(self) -> None:
        """Make the next ``generation`` re-read the index."""
        self._generation_read_at = float("-inf")

    def pack_names(self) -> set[str]:
        with self.lock:
            return {row[0] for row in self.db.execute("SELECT name FROM packs")}

    def usage(self) -> int:
        """Bytes of pack files on disk."""
        with self.lock:
            return int(self.db.execute("SELECT coalesce(sum(size), 0) FROM packs").fetchone()[0])

    def has(self, cid: CID) -> bool:
        if cid.is_identity:
            return True
        with self.lock:
            return self.db.execute("SELECT 1 FROM blocks WHERE cid = ?", (bytes(cid.to_v1()),)).fetchone() is not None

    def location(self, key: bytes) -> BlockRow | None:
        with self.lock:
            row = self.db.execute(
                "SELECT packs.name, blocks.offset, blocks.length, blocks.size, blocks.flags "
                "FROM blocks JOIN packs ON packs.id = blocks.pack WHERE blocks.cid = ?",
                (key,),
            ).fetchone()
        return tuple(row) if row else None

    def locations(self, keys: list[bytes]) -> list[Location | None]:
        """Where each of ``keys`` is stored, in order; None for a block that is not."""
        found: dict[bytes, Location] = {}
        with self.lock:
            for start in range(0, len(keys), LOCATIONS_PER_QUERY):
                chunk = keys[start : start + LOCATIONS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                for cid, pack, offset, length, size, flags in self.db.execute(
                    "SELECT blocks.cid, packs.name, blocks.offset, blocks.length, blocks.size, blocks.flags "
                    f"FROM blocks JOIN packs ON packs.id = blocks.pack WHERE blocks.cid IN ({marks})",
                    chunk,
                ):
                    found[cid] = Location(pack, offset, length, bool(flags & FLAG_ZSTD), size)
        return [found.get(k) for k in keys]

    def dag_counts(self, root: CID) -> tuple[int, int, int]:
        """(blocks in the DAG, of which missing locally, stored bytes) as far as local nodes tell."""
        if root.is_identity:  # its block is the CID itself; what it links to may be stored
            counts = [self.dag_counts(child) for child in _identity_links(root)]
            return 1 + sum(c[0] for c in counts), sum(c[1] for c in counts), sum(c[2] for c in counts)
        with self.lock:
            row = self.db.execute(
                DAG_OF + "SELECT count(*), sum(blocks.cid IS NULL), coalesce(sum(blocks.length), 0) "
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
        with self.lock:
            rows = self.db.execute(
                DAG_OF + "SELECT dag.cid FROM dag LEFT JOIN blocks ON blocks.cid = dag.cid WHERE blocks.cid IS NULL",
                (bytes(root.to_v1()),),
            ).fetchall()
        return [CID.from_bytes(row[0]) for row in rows]


def _identity_links(cid: CID) -> list[CID]:
    """What an identity CID's inlined dag-pb node links to (nothing for other codecs or bad bytes)."""
    try:
        return links_of(cid, cid.identity_data())
    except DagPBError:
        return []


def _db_error(exc: BaseException) -> StoreError:
    text = str(exc)
    if "full" in text:
        return NoSpace("no space left on the device for the index; nothing was changed")
    return StoreError(f"index error: {text}")
