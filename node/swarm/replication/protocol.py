"""Replication between operators who pool storage: keep N copies of a pin on trusted peers.

Participants: an *owner* node that pins content and wants copies elsewhere,
and *holder* nodes that keep copies for it. Both sides list each other's
peer IDs in ``[replication] peers``; a node only obeys owners it trusts.

Goals: what an owner pins with ``--replicas N`` is pinned on N trusted
holders; when a holder disappears or drops the copy, another one takes over.
Non-goals: finding strangers to store for us (that is what the DHT and
caching are for), and erasure coding: copies are whole.

Protocol ``/medianode/replicate/1.0.0``: one request and one answer per
stream, each a msgpack map preceded by its length as an unsigned varint
(at most 64 KiB).

- ``{"type": "hold", "root": CID bytes}``: fetch the DAG (over Bitswap, from
  the owner, who is connected) and pin it. Answer ``{"type": "holding"}``
  once every block is stored and pinned, or ``{"type": "refused", "reason":
  "..."}`` (not trusted, over quota, fetch failed).
- ``{"type": "check", "roots": [CID bytes, ...]}``: answer ``{"type":
  "held", "roots": [...]}``, the ones pinned here complete.
- ``{"type": "release", "root": CID bytes}``: unpin a copy held for this
  owner; answer ``{"type": "released"}``.

Failure handling: the owner reconciles every ``interval`` seconds: a holder
that cannot be reached or no longer holds a copy is marked lost and another
trusted peer is asked; a request that gets no answer within its deadline
counts as a failure. Holders pin copies under the name ``replica:OWNER`` and
only ever release pins of that name, so an owner cannot unpin what the
holder pinned for itself.

Bookkeeping (``replication.sqlite`` in the data directory) is plain SQLite,
so ``medianode pin add --replicas N`` and ``pin ls`` work without libp2p;
the running node acts on it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..smalldb import open_small_db
from ..storage.cid import CID, decode_varint, encode_varint

log = logging.getLogger("medianode.swarm")

PROTOCOL_ID = "/medianode/replicate/1.0.0"
MAX_MESSAGE = 64 * 1024
REPLICA_PIN_PREFIX = "replica:"


class ReplicationError(ValueError):
    pass


def encode_request(message: dict[str, Any]) -> bytes:
    import msgpack

    payload: bytes = msgpack.packb(message, use_bin_type=True)
    if len(payload) > MAX_MESSAGE:
        raise ReplicationError("replication message too large")
    return encode_varint(len(payload)) + payload


def decode_message(payload: bytes) -> dict[str, Any]:
    import msgpack

    try:
        message = msgpack.unpackb(payload, raw=False, max_bin_len=MAX_MESSAGE, max_str_len=MAX_MESSAGE)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ReplicationError(f"malformed message: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ReplicationError("message is not a map with a type")
    return message


def frame_length(buf: bytes) -> tuple[int, int] | None:
    """(payload length, header length) once the varint prefix is complete, else None."""
    try:
        length, start = decode_varint(buf, 0)
    except ValueError:
        if len(buf) < 10:
            return None
        raise ReplicationError("bad length prefix") from None
    if length > MAX_MESSAGE:
        raise ReplicationError(f"message of {length} bytes is over the limit")
    return length, start


def cid_field(message: dict[str, Any], key: str = "root") -> CID:
    value = message.get(key)
    if not isinstance(value, bytes):
        raise ReplicationError(f"{key} must be CID bytes")
    try:
        return CID.from_bytes(value)
    except ValueError as exc:
        raise ReplicationError(f"bad CID in {key}: {exc}") from None


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
