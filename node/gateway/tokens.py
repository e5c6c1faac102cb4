"""Upload tokens: named bearer tokens for fediverse servers, revocable, with a byte allowance.

Only a SHA-256 of each token is kept (``tokens.sqlite`` in the data
directory), so a copy of the data directory does not leak working tokens.
The token itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequest
from ..smalldb import open_small_db

PREFIX = "mn_"


class TokenError(InvalidRequest, ValueError):
    """A token name or limit refused, or a token that does not exist (one line for the CLI)."""


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created: float
    limit: int  # bytes this token may upload in total; 0 = no limit
    used: int

    @property
    def remaining(self) -> int | None:
        return None if not self.limit else max(0, self.limit - self.used)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenStore:
    def __init__(self, path: Path) -> None:
        self._db = open_small_db(
            path,
            "CREATE TABLE IF NOT EXISTS tokens (name TEXT PRIMARY KEY, digest BLOB NOT NULL UNIQUE, "
            "created REAL NOT NULL, limit_bytes INTEGER NOT NULL, used_bytes INTEGER NOT NULL DEFAULT 0)",
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def create(self, name: str, limit: int = 0) -> str:
        bare = name.replace("-", "").replace("_", "").replace(".", "")
        if not name or len(name) > 64 or not bare.isascii() or not bare.isalnum():
            raise TokenError("token name must be 1-64 letters, digits, '-', '_' or '.'")
        token = PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO tokens(name, digest, created, limit_bytes) VALUES (?, ?, ?, ?)",
                    (name, _digest(token), time.time(), limit),
                )
            except sqlite3.IntegrityError:
                raise TokenError(f"a token named {name!r} exists already (revoke it first)") from None
        return token

    def revoke(self, name: str) -> None:
        with self._lock:
            if not self._db.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount:
                raise TokenError(f"no token named {name!r}")

    def list(self) -> list[TokenInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, created, limit_bytes, used_bytes FROM tokens ORDER BY created"
            ).fetchall()
        return [TokenInfo(n, c, lim, used) for n, c, lim, used in rows]

    def authenticate(self, token: str) -> TokenInfo | None:
        if not token.startswith(PREFIX) or len(token) > 128:
            return None
        digest = _digest(token)
        with self._lock:
            row = self._db.execute(
                "SELECT name, created, limit_bytes, used_bytes FROM tokens WHERE digest = ?", (digest,)
            ).fetchone()
        return None if row is None else TokenInfo(*row)

    def charge(self, name: str, nbytes: int) -> bool:
        """Count ``nbytes`` against the token's allowance; False (and nothing counted) if it would exceed it.
        Atomic: concurrent charges never take a token past its limit together."""
        if nbytes < 0:
            raise ValueError("a charge cannot be negative: use refund")
        with self._lock:
            return bool(
                self._db.execute(
                    "UPDATE tokens SET used_bytes = used_bytes + ? "
                    "WHERE name = ? AND (limit_bytes = 0 OR used_bytes + ? <= limit_bytes)",
                    (nbytes, name, nbytes),
                ).rowcount
            )

    def refund(self, name: str, nbytes: int) -> None:
        """Give back ``nbytes`` charged earlier (a tus upload that ended unfinished, a commit that failed).
        Never below zero; a revoked token has nothing to give back to."""
        if nbytes < 0:
            raise ValueError("a refund cannot be negative")
        with self._lock:
            self._db.execute("UPDATE tokens SET used_bytes = MAX(0, used_bytes - ?) WHERE name = ?", (nbytes, name))
