"""Errors the store reports to its callers; each message is one line a user can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store error; ``str(error)`` is the one-line message."""


class BlockNotFound(StoreError):
    def __init__(self, cid: object) -> None:
        super().__init__(f"{cid} is not in the store")
        self.cid = cid


class CorruptBlock(StoreError):
    def __init__(self, cid: object, detail: str = "its bytes do not match its CID") -> None:
        super().__init__(f"block {cid} is corrupt: {detail}")
        self.cid = cid


class QuotaExceeded(StoreError):
    pass


class NoSpace(StoreError):
    pass


class InvalidInput(StoreError):
    """Input that is not valid content (bad CAR, bad dag-pb, unsupported file type)."""
