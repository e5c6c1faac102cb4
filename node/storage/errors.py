"""Errors the store reports to its callers; each message is one line a user can act on.

Each sits under ``node.errors``' root with the status the HTTP layers answer
for it: a missing block 404, a corrupt one 502 (the gateway's answer: the
storage behind it gave bad bytes), a full quota or disk 507, bad input 400,
a pin or hold the store's state refuses 409, and anything else (the disk or
the index failing) 500.
"""

from __future__ import annotations

from ..errors import Conflict, InsufficientStorage, InvalidRequest, MedianodeError, NotFound, UpstreamError


class StoreError(MedianodeError):
    """Base of every store error; ``str(error)`` is the one-line message."""


class BlockNotFound(StoreError, NotFound):
    def __init__(self, cid: object) -> None:
        super().__init__(f"{cid} is not in the store")
        self.cid = cid


class CorruptBlock(StoreError, UpstreamError):
    def __init__(self, cid: object, detail: str = "its bytes do not match its CID") -> None:
        super().__init__(f"block {cid} is corrupt: {detail}")
        self.cid = cid


class QuotaExceeded(StoreError, InsufficientStorage):
    pass


class NoSpace(StoreError, InsufficientStorage):
    pass


class InvalidInput(StoreError, InvalidRequest):
    """Input that is not valid content (bad CAR, bad dag-pb, unsupported file type)."""


class PinRefused(StoreError, Conflict):
    """A pin or hold the store's state does not allow now: part of its DAG is missing, or it is not pinned."""
