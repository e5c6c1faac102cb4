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
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.parse
from pathlib import Path

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


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating or upgrading) the index; on a full disk, an index at this schema opens read-only."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
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
