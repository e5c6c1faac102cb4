"""The root of every error medianode reports to a person or a client.

``str(error)`` is one line the reader can act on (no traceback ever reaches a
user); ``status`` says whose fault it is, as an HTTP status: 4xx for what a
client, a user or an input file got wrong, 5xx for this node, its disk or its
peers. The HTTP layers (gateway, upload API, S3) and the CLI each map this root
in one place: the gateway answers ``status`` with the message, the CLI prints
the message and exits 1. Errors inside a protocol that never leave it (a peer's
bad frame that only costs the peer a strike) need not use it.

Subclasses choose the nearest category below and may set a finer ``status``
(as ``ranges.RangeError`` is a 416). A class keeps ``ValueError`` or
``LookupError`` beside it where callers catch those.
"""

from __future__ import annotations

from typing import ClassVar


class MedianodeError(Exception):
    status: ClassVar[int] = 500


class InvalidRequest(MedianodeError):
    """What was asked or given is not valid: a malformed CID, a bad header, a DAG that lies."""

    status = 400


class NotFound(MedianodeError):
    status = 404


class Conflict(MedianodeError):
    """Valid, but not now: another writer holds it, or the state does not allow it."""

    status = 409


class InsufficientStorage(MedianodeError):
    """The disk or the quota is full; nothing was written."""

    status = 507


class UpstreamError(MedianodeError):
    """A peer, the swarm or another node did not give what was needed."""

    status = 502


class FetchError(UpstreamError):
    """The swarm could not deliver what was asked (nobody has it, or nobody answered in time)."""

    status = 504  # the gateway's answer: not stored here, and the swarm did not deliver in time
