"""The small SQLite databases beside the block index (tokens, media facts, replicas)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_small_db(path: Path, schema: str) -> sqlite3.Connection:
    """Autocommit, WAL, shareable across threads (callers hold their own lock), schema applied."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db
