"""The S3 catalogue: access keys, buckets, object keys and multipart uploads, in ``s3.sqlite``.

An object key names a CID in the block store; the bytes live there once however
many keys, buckets or tenants name them. What keeps those bytes is a *hold* in
the store per object key (``s3:BUCKET/KEY``) and per uploaded part
(``s3-part:UPLOAD/N``), public or not by the object's ACL, so deleting the last
key releases the CID to gc and a CID only private keys name is withheld from
the public gateway, Bitswap and viewers (see the store's ``holds``).

Secrets are kept as they are (SigV4 needs them to recompute signatures), in a
file only the node's user can read, like MinIO's; they are shown once when made.
Each tenant (access key) owns the buckets it creates and sees only those.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InvalidRequest
from ...smalldb import open_small_db
from ...storage.cid import CID

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    access_key_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    limit_bytes INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES keys(access_key_id),
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS buckets_by_owner ON buckets(owner);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    cid BLOB NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    modified REAL NOT NULL,
    public INTEGER NOT NULL,
    headers TEXT NOT NULL,
    parts TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_cid ON objects(cid);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    created REAL NOT NULL,
    public INTEGER NOT NULL,
    headers TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads(bucket, key, upload_id);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL REFERENCES uploads(upload_id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    cid BLOB NOT NULL,
    size INTEGER NOT NULL,
    md5 BLOB NOT NULL,
    modified REAL NOT NULL,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
"""

ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits
OBJECT_COLUMNS = "bucket, key, cid, size, etag, modified, public, headers, parts"


class CatalogError(InvalidRequest, ValueError):
    """A key name or limit the CLI refuses (one line, no traceback)."""


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret: str
    name: str
    limit: int  # bytes of objects this tenant may keep; 0 = no limit
    created: float


@dataclass(frozen=True)
class Bucket:
    name: str
    owner: str
    created: float


@dataclass(frozen=True)
class ObjectRecord:
    bucket: str
    key: str
    cid: CID
    size: int
    etag: str  # quoted, as S3 sends it
    modified: float
    public: bool
    headers: dict[str, str] = field(default_factory=dict)  # Content-Type, Cache-Control, x-amz-meta-*, ...
    parts: tuple[int, ...] = ()  # sizes of the parts of a multipart upload, for GET ?partNumber=N


@dataclass(frozen=True)
class Upload:
    upload_id: str
    bucket: str
    key: str
    created: float
    public: bool
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Part:
    number: int
    cid: CID
    size: int
    md5: bytes
    modified: float


def object_holder(bucket: str, key: str) -> str:
    return f"s3:{bucket}/{key}"


def part_holder(upload_id: str, number: int) -> str:
    return f"s3-part:{upload_id}/{number}"


class Catalog:
    def __init__(self, path: Path) -> None:
        fresh = not path.exists()
        self._db = open_small_db(path, SCHEMA)
        self._db.execute("PRAGMA foreign_keys=ON")
        if fresh:
            os.chmod(path, 0o600)  # it holds the tenants' secrets
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # -- access keys ------------------------------------------------------------------------------

    def create_key(self, name: str, limit: int = 0) -> AccessKey:
        if not name or len(name) > 128 or any(c.isspace() or not c.isprintable() for c in name):
            raise CatalogError("a key name is 1-128 printable characters without spaces, e.g. mastodon.example")
        if limit < 0:
            raise CatalogError("the limit must not be negative")
        access_key_id = "MN" + "".join(secrets.choice(ACCESS_KEY_ALPHABET) for _ in range(18))
        secret = secrets.token_urlsafe(30)
        while secret.startswith("-"):  # one in 64: it then reads as an option where it is pasted on a command line
            secret = secrets.token_urlsafe(30)
        key = AccessKey(access_key_id, secret, name, limit, time.time())
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO keys(access_key_id, secret, name, limit_bytes, created) VALUES (?, ?, ?, ?, ?)",
                    (key.access_key_id, key.secret, key.name, key.limit, key.created),
                )
            except sqlite3.IntegrityError:
                raise CatalogError(f"a key named {name!r} exists already (revoke it first)") from None
        return key

    def revoke_key(self, name: str) -> AccessKey:
        """Revoke by name or access key id; its buckets and objects stay (an operator deletes them)."""
        with self._lock:
            row = self._db.execute(
                "SELECT access_key_id, secret, name, limit_bytes, created FROM keys "
                "WHERE name = ?1 OR access_key_id = ?1",
                (name,),
            ).fetchone()
            if row is None:
                raise CatalogError(f"no S3 key named {name!r}")
            self._db.execute("UPDATE keys SET secret = '' WHERE access_key_id = ?", (row[0],))
        return AccessKey(*row)

    def access_keys(self) -> list[AccessKey]:
        with self._lock:
            rows = self._db.execute(
                "SELECT access_key_id, secret, name, limit_bytes, created FROM keys WHERE secret != '' ORDER BY created"
            ).fetchall()
        return [AccessKey(*row) for row in rows]

    def key(self, access_key_id: str) -> AccessKey | None:
        """A live key (a revoked one has no secret and signs nothing)."""
        with self._lock:
            row = self._db.execute(
                "SELECT access_key_id, secret, name, limit_bytes, created FROM keys "
                "WHERE access_key_id = ? AND secret != ''",
                (access_key_id,),
            ).fetchone()
        return None if row is None else AccessKey(*row)

    def used_bytes(self, owner: str) -> int:
        """Bytes of the objects in the tenant's buckets (each counted, shared copies or not)."""
        with self._lock:
            row = self._db.execute(
                "SELECT coalesce(sum(objects.size), 0) FROM objects JOIN buckets ON buckets.name = objects.bucket "
                "WHERE buckets.owner = ?",
                (owner,),
            ).fetchone()
        return int(row[0])

    # -- buckets ----------------------------------------------------------------------------------

    def create_bucket(self, name: str, owner: str) -> bool:
        """False when it exists already (owned by ``owner`` or not: the caller tells which)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO buckets(name, owner, created) VALUES (?, ?, ?)", (name, owner, time.time())
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def bucket(self, name: str) -> Bucket | None:
        with self._lock:
            row = self._db.execute("SELECT name, owner, created FROM buckets WHERE name = ?", (name,)).fetchone()
        return None if row is None else Bucket(*row)

    def buckets(self, owner: str) -> list[Bucket]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, owner, created FROM buckets WHERE owner = ? ORDER BY name", (owner,)
            ).fetchall()
        return [Bucket(*row) for row in rows]

    def delete_bucket(self, name: str) -> bool:
        """False (and nothing deleted) while it holds objects or unfinished uploads."""
        with self._lock:
            busy = self._db.execute(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE bucket = ?1) "
                "OR EXISTS (SELECT 1 FROM uploads WHERE bucket = ?1)",
                (name,),
            ).fetchone()[0]
            if busy:
                return False
            self._db.execute("DELETE FROM buckets WHERE name = ?", (name,))
        return True

    # -- objects ----------------------------------------------------------------------------------

    def get(self, bucket: str, key: str) -> ObjectRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key = ?",
                (bucket, key),
            ).fetchone()
        return None if row is None else _object(row)

    def put(self, record: ObjectRecord) -> ObjectRecord | None:
        """Store or replace ``record``; return the object it replaced."""
        with self._lock:
            old = self._db.execute(
                f"SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key = ?",
                (record.bucket, record.key),
            ).fetchone()
            self._db.execute(
                f"INSERT INTO objects({OBJECT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(bucket, key) DO UPDATE SET cid = excluded.cid, "
                "size = excluded.size, etag = excluded.etag, modified = excluded.modified, "
                "public = excluded.public, headers = excluded.headers, parts = excluded.parts",
                (
                    record.bucket, record.key, bytes(record.cid), record.size, record.etag, record.modified,
                    int(record.public), json.dumps(record.headers), json.dumps(list(record.parts)),
                ),
            )  # fmt: skip
        return None if old is None else _object(old)

    def set_public(self, bucket: str, key: str, public: bool) -> bool:
        with self._lock:
            return bool(
                self._db.execute(
                    "UPDATE objects SET public = ? WHERE bucket = ? AND key = ?", (int(public), bucket, key)
                ).rowcount
            )

    def delete(self, bucket: str, key: str) -> ObjectRecord | None:
        with self._lock:
            row = self._db.execute(
                f"DELETE FROM objects WHERE bucket = ? AND key = ? RETURNING {OBJECT_COLUMNS}",
                (bucket, key),
            ).fetchone()
        return None if row is None else _object(row)

    def keys_after(self, bucket: str, prefix: str, after: str) -> Iterator[ObjectRecord]:
        """Objects of ``bucket`` whose keys start with ``prefix`` and sort after ``after`` (UTF-8 byte
        order, as S3 lists), read lazily in pages so a listing stops as soon as it has a page."""
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {OBJECT_COLUMNS} FROM objects "
                    "WHERE bucket = ?1 AND key >= ?2 AND key > ?3 AND substr(key, 1, ?4) = ?2 ORDER BY key LIMIT 256",
                    (bucket, prefix, after, len(prefix)),
                ).fetchall()
            for row in rows:
                yield _object(row)
            if len(rows) < 256:
                return
            after = rows[-1][1]

    # -- multipart uploads ------------------------------------------------------------------------

    def create_upload(self, bucket: str, key: str, public: bool, headers: dict[str, str]) -> Upload:
        upload = Upload(secrets.token_urlsafe(24), bucket, key, time.time(), public, headers)
        with self._lock:
            self._db.execute(
                "INSERT INTO uploads(upload_id, bucket, key, created, public, headers) VALUES (?, ?, ?, ?, ?, ?)",
                (upload.upload_id, bucket, key, upload.created, int(public), json.dumps(headers)),
            )
        return upload

    def upload(self, upload_id: str) -> Upload | None:
        with self._lock:
            row = self._db.execute(
                "SELECT upload_id, bucket, key, created, public, headers FROM uploads WHERE upload_id = ?",
                (upload_id,),
            ).fetchone()
        return None if row is None else _upload(row)

    def uploads(self, bucket: str) -> list[Upload]:
        with self._lock:
            rows = self._db.execute(
                "SELECT upload_id, bucket, key, created, public, headers FROM uploads WHERE bucket = ? "
                "ORDER BY key, created",
                (bucket,),
            ).fetchall()
        return [_upload(row) for row in rows]

    def stale_uploads(self, older_than: float) -> list[Upload]:
        with self._lock:
            rows = self._db.execute(
                "SELECT upload_id, bucket, key, created, public, headers FROM uploads WHERE created < ?",
                (older_than,),
            ).fetchall()
        return [_upload(row) for row in rows]

    def put_part(self, upload_id: str, part: Part) -> Part | None:
        """Record ``part`` (replacing one of the same number); return the one it replaced."""
        with self._lock:
            old = self._db.execute(
                "SELECT number, cid, size, md5, modified FROM parts WHERE upload_id = ? AND number = ?",
                (upload_id, part.number),
            ).fetchone()
            self._db.execute(
                "INSERT INTO parts(upload_id, number, cid, size, md5, modified) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(upload_id, number) DO UPDATE SET cid = excluded.cid, size = excluded.size, "
                "md5 = excluded.md5, modified = excluded.modified",
                (upload_id, part.number, bytes(part.cid), part.size, part.md5, part.modified),
            )
        return None if old is None else _part(old)

    def parts(self, upload_id: str) -> list[Part]:
        with self._lock:
            rows = self._db.execute(
                "SELECT number, cid, size, md5, modified FROM parts WHERE upload_id = ? ORDER BY number", (upload_id,)
            ).fetchall()
        return [_part(row) for row in rows]

    def parts_size(self, upload_id: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT coalesce(sum(size), 0) FROM parts WHERE upload_id = ?", (upload_id,))
            return int(row.fetchone()[0])

    def delete_upload(self, upload_id: str) -> list[Part]:
        """Forget an upload; return its parts, whose holds the caller releases."""
        with self._lock:
            rows = self._db.execute(
                "SELECT number, cid, size, md5, modified FROM parts WHERE upload_id = ? ORDER BY number", (upload_id,)
            ).fetchall()
            self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        return [_part(row) for row in rows]

    def names_cid(self, cid: CID) -> bool:
        """Whether any object key names ``cid``."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM objects WHERE cid = ? LIMIT 1", (bytes(cid),)).fetchone() is not None


def _object(row: Any) -> ObjectRecord:
    bucket, key, cid, size, etag, modified, public, headers, parts = row
    return ObjectRecord(
        bucket,
        key,
        CID.from_bytes(cid),
        size,
        etag,
        modified,
        bool(public),
        json.loads(headers),
        tuple(json.loads(parts)),
    )


def _upload(row: Any) -> Upload:
    upload_id, bucket, key, created, public, headers = row
    return Upload(upload_id, bucket, key, created, bool(public), json.loads(headers))


def _part(row: Any) -> Part:
    number, cid, size, md5, modified = row
    return Part(number, CID.from_bytes(cid), size, md5, modified)
