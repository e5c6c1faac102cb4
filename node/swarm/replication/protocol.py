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

This module is the protocol's messages, with no I/O; ``book`` keeps what
is wanted and held, ``service`` speaks the protocol on libp2p streams.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ...errors import InvalidRequest
from ...storage.cid import CID, decode_varint, encode_varint

PROTOCOL_ID = "/medianode/replicate/1.0.0"
MAX_MESSAGE = 64 * 1024
REPLICA_PIN_PREFIX = "replica:"


class ReplicationError(InvalidRequest, ValueError):
    """A replication message that is malformed, too large, or asks for something unknown."""


def encode_request(message: dict[str, Any]) -> bytes:
    payload: bytes = msgpack.packb(message, use_bin_type=True)
    if len(payload) > MAX_MESSAGE:
        raise ReplicationError("replication message too large")
    return encode_varint(len(payload)) + payload


def decode_message(payload: bytes) -> dict[str, Any]:
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
