"""What an owner wants replicated how often, and who holds which copy: ``replication.sqlite``.

Plain SQLite (``smalldb``), so ``medianode pin add --replicas N`` and ``pin ls``
work without libp2p; the running node's ``service.Replicator`` acts on it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...smalldb import open_small_db
from ...storage.cid import CID


@dataclass(frozen=True)
class Replica:
    root: CID
    peer: str
    state: str  # holding | lost
    updated: float


class ReplicaBook:
    """What should be replicated how often, and who holds which copy."""

    def __init__(self, path: Path) -> None:
        self._db = open_small_db(
            path,
            "CREATE TABLE IF NOT EXISTS wanted (root BLOB PRIMARY KEY, copies INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS replicas (root BLOB NOT NULL, peer TEXT NOT NULL, state TEXT NOT NULL,"
            " updated REAL NOT NULL, PRIMARY KEY (root, peer));",
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def want(self, root: CID, copies: int) -> None:
        with self._lock:
            if copies <= 0:
                self._db.execute("DELETE FROM wanted WHERE root = ?", (bytes(root.to_v1()),))
            else:
                self._db.execute(
                    "INSERT INTO wanted(root, copies) VALUES (?, ?) ON CONFLICT(root) DO UPDATE SET copies = ?",
                    (bytes(root.to_v1()), copies, copies),
                )

    def wanted(self) -> list[tuple[CID, int]]:
        with self._lock:
            rows = self._db.execute("SELECT root, copies FROM wanted").fetchall()
        return [(CID.from_bytes(r), n) for r, n in rows]

    def record(self, root: CID, peer: str, state: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO replicas(root, peer, state, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(root, peer) DO UPDATE SET state = excluded.state, updated = excluded.updated",
                (bytes(root.to_v1()), peer, state, time.time()),
            )

    def replicas(self, root: CID | None = None) -> list[Replica]:
        with self._lock:
            if root is None:
                rows = self._db.execute("SELECT root, peer, state, updated FROM replicas").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT root, peer, state, updated FROM replicas WHERE root = ?", (bytes(root.to_v1()),)
                ).fetchall()
        return [Replica(CID.from_bytes(r), p, s, u) for r, p, s, u in rows]

    def holders(self, root: CID) -> list[str]:
        return [r.peer for r in self.replicas(root) if r.state == "holding"]
