"""The write API for instance operators and their fediverse servers.

Every write needs ``Authorization: Bearer TOKEN`` (``medianode token create``);
reads stay public. Errors are JSON ``{"error": "..."}`` with a 4xx status.

- ``POST /api/v1/add[?filename=NAME&pin=false]``: the body is the file (raw)
  or a ``multipart/form-data`` form whose first file part is the file. The
  body is chunked, hashed and stored as it streams in; an upload that is cut
  off, too large, or over the token's allowance stores nothing. Answers with
  the CID, size, media type, gateway URL and an ActivityPub attachment.
- ``GET /api/v1/attachment/{cid}``: the same attachment for stored content.
  A video's attachment carries its poster as ``icon`` (``posters.py``), made
  once the clip is stored.
- ``POST|DELETE /api/v1/pin/{cid}``, ``GET /api/v1/pins`` (each pin with
  ``poster``, its poster's ``/ipfs/`` path or null, and ``poster_of``, the
  clip it is the poster of when someone pinned a poster, else null).
- Resumable uploads, the tus 1.0.0 core protocol with the creation
  extension, so existing tus clients work:
  ``POST /api/v1/uploads`` (``Upload-Length``, optional ``Upload-Metadata``
  with a base64 ``filename``) creates an upload and returns its
  ``Location``; ``HEAD`` on it tells the ``Upload-Offset`` the server has;
  ``PATCH`` (``Content-Type: application/offset+octet-stream``,
  ``Upload-Offset`` equal to the server's) appends. Bytes that arrived
  before a connection broke are kept, so the client resumes from the
  offset ``HEAD`` reports. The ``PATCH`` that completes the upload imports
  the file and answers with the same JSON as ``/api/v1/add``; ``GET`` on the
  upload repeats it once, then the upload is gone. One ``PATCH`` at a time
  writes to an upload: another one meanwhile is a 409 with the offset.
  Uploads are deleted a day after they were created (unfinished) or
  finished (result never read).

Accounting: every file stored through this API is charged to its token
once. ``/api/v1/add`` charges the stored size when the body is complete
(refunded if the commit fails). A tus upload charges its ``Upload-Length``
when it is created (413 and nothing created when that does not fit); the
completing ``PATCH`` imports without charging again, so that charge is the
stored file's. It is refunded when the upload is deleted, expires
unfinished, or its import fails (which ends the upload).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import MedianodeError
from ..storage.cid import CID
from ..storage.errors import NoSpace, QuotaExceeded
from ..storage.files import replace_file, write_all
from ..storage.importer import ChunkFeeder
from ..storage.store import BlockStore
from .attachment import AttachmentCache, MediaFacts, attachment_object
from .http import HTTPProblem, filename_param, parse_cid, problem_for, problem_response
from .metrics import Metrics
from .settings import GatewaySettings
from .stages import FEED_BATCH, Stages, feed_in_batches
from .tokens import TokenInfo, TokenStore

log = logging.getLogger("medianode.gateway")

TUS_VERSION = "1.0.0"
UPLOAD_TTL = 24 * 3600  # seconds a tus upload is kept after its creation (unfinished) or completion
UPLOAD_SWEEP_EVERY = 3600.0  # seconds between looks for expired tus uploads while serve runs
MAX_NAME = 255
MAX_DIGITS = 19  # a decimal header value with more digits is not a size this node handles


def upload_expiry_timing() -> tuple[float, float]:
    """Seconds between sweeps and the age at which tus uploads expire: ``UPLOAD_SWEEP_EVERY`` and
    ``UPLOAD_TTL``, or ``MEDIANODE_UPLOAD_SWEEP_EVERY`` / ``MEDIANODE_UPLOAD_EXPIRE_AFTER`` when set."""
    from ..config import ConfigError

    timing = []
    for variable, default in (("MEDIANODE_UPLOAD_SWEEP_EVERY", UPLOAD_SWEEP_EVERY),
                              ("MEDIANODE_UPLOAD_EXPIRE_AFTER", float(UPLOAD_TTL))):  # fmt: skip
        text = os.environ.get(variable, "")
        if not text:
            timing.append(default)
            continue
        whole, _, fraction = text.partition(".")
        if not (whole + fraction).isascii() or not whole.isdigit() or not (fraction.isdigit() or not fraction):
            raise ConfigError(f"{variable} must be a number of seconds, got {text!r}")
        if len(whole) > MAX_DIGITS or float(text) <= 0:
            raise ConfigError(f"{variable} must be a positive number of seconds, got {text!r}")
        timing.append(float(text))
    return timing[0], timing[1]


def ascii_int(text: str | None, what: str) -> int:
    """A non-negative decimal of ASCII digits (``str.isdigit`` also takes '²', which ``int`` refuses)."""
    if not text or not text.isascii() or not text.isdigit():
        raise HTTPProblem(400, f"{what} must be a whole number in ASCII digits")
    if len(text) > MAX_DIGITS:
        raise HTTPProblem(400, f"{what} has more than {MAX_DIGITS} digits")
    return int(text)


def disk_full(exc: BaseException) -> bool:
    """An OSError or SQLite error that means the file system (or the user's disk quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class UploadBusy(Exception):
    """Another request holds the upload (a PATCH in progress)."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


@contextmanager
def hold_part(part: Path) -> Iterator[int | None]:
    """The upload's ``.part`` opened for appending and locked (``flock``) for as long as the block runs:
    the one writer per upload. Yields None when the part is gone (the upload finished or was removed);
    raises UploadBusy when another holder has it, without waiting."""
    try:
        fd = os.open(part, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadBusy(os.fstat(fd).st_size) from None
        # The holder before us may have finished (and unlinked the part) between our open and our lock.
        yield fd if os.fstat(fd).st_nlink else None
    finally:
        os.close(fd)


def read_meta(meta_path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def discard_upload(tokens: TokenStore, part: Path, meta_path: Path, meta: dict[str, Any], fd: int | None) -> None:
    """End an upload whose part the caller holds (``fd``; None when the part is gone): refund what its
    creation charged unless it finished, then remove its files. The part is emptied first, so a full disk
    has room for the refund; if the refund still fails the upload stays, at offset 0 and charged, for a
    DELETE or the expiry to end it later. Every refund happens under the lock: never twice."""
    if fd is None:  # no part to lock (a crash between steps): whoever removes the metadata refunds
        meta_path.unlink()  # FileNotFoundError: another remover was first
        if meta.get("result") is None:
            tokens.refund(str(meta["token"]), int(meta.get("charged", 0)))
        return
    os.ftruncate(fd, 0)
    if meta.get("result") is None:
        tokens.refund(str(meta["token"]), int(meta.get("charged", 0)))
    meta_path.unlink(missing_ok=True)
    part.unlink(missing_ok=True)


def expire_uploads(uploads_dir: Path, tokens: TokenStore, max_age: float = UPLOAD_TTL) -> int:
    """Remove tus uploads older than ``max_age`` seconds (unfinished: since creation, refunding their charge;
    finished with the result never read: since completion). Uploads being patched are left for the next
    look. Returns how many were removed."""
    now = time.time()
    removed = 0
    for meta_path in uploads_dir.glob("*.json"):
        part = meta_path.with_suffix(".part")
        try:
            meta = read_meta(meta_path)
            if meta is None:
                if now - meta_path.stat().st_mtime > max_age:  # unreadable: nothing to refund
                    meta_path.unlink(missing_ok=True)
                    part.unlink(missing_ok=True)
                    removed += 1
                continue
            if meta.get("result") is not None:
                if now - float(meta.get("finished", meta["created"])) > max_age:
                    meta_path.unlink(missing_ok=True)
                    part.unlink(missing_ok=True)
                    removed += 1
                continue
            if now - float(meta["created"]) <= max_age:
                continue
            with hold_part(part) as fd:
                meta = read_meta(meta_path)  # again, now that no PATCH can change it
                if meta is None or meta.get("result") is not None:
                    continue  # finished or removed meanwhile; a finished one is looked at next time
                discard_upload(tokens, part, meta_path, meta, fd)
                removed += 1
        except UploadBusy:
            continue
        except (OSError, sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            log.warning("could not expire upload", extra={"fields": {"upload": meta_path.stem, "error": str(exc)}})
    for stray in (*uploads_dir.glob("*.tmp"), *uploads_dir.glob("*.part")):
        # A .tmp from a crash while writing metadata; a .part whose creation never wrote its metadata.
        try:
            if not stray.with_suffix(".json").exists() and now - stray.stat().st_mtime > max_age:
                stray.unlink(missing_ok=True)
        except OSError:
            continue
    return removed


@dataclass
class ImportOutcome:
    cid: CID
    size: int
    sha256: bytes


def _clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = os.path.basename(name.replace("\\", "/")).strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        raise HTTPProblem(400, "file name must be 1-255 printable characters")
    return name


def _strict_utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPProblem(400, f"{what} is not valid UTF-8") from None


class WriteAPI:
    def __init__(self, store: BlockStore, settings: GatewaySettings, metrics: Metrics, tokens: TokenStore) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.tokens = tokens
        self.media = AttachmentCache(settings.data_dir / "gateway.sqlite", settings.chunk_size)
        self.uploads_dir = settings.data_dir / "uploads"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)  # serve's upload_expiry task sweeps it

    # -- helpers --------------------------------------------------------------------------

    def authenticate(self, request: Request) -> TokenInfo:
        """The upload token sent; the admin token of this run (the console's) uploads as the token
        ``console``, made when first needed (``node/gateway/console.py``)."""
        from .console import admin_upload_account

        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        info = self.tokens.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if info is None and scheme.lower() == "bearer":
            info = admin_upload_account(request, self.tokens, token.strip())
        if info is None:
            raise HTTPProblem(401, "a valid bearer token is required", {"WWW-Authenticate": 'Bearer realm="medianode"'})
        return info

    def room_for(self, token: TokenInfo) -> int:
        remaining = token.remaining
        return self.settings.max_upload if remaining is None else min(self.settings.max_upload, remaining)

    def too_large(self, token: TokenInfo, size: int, over_allowance: bool = False) -> HTTPProblem:
        if over_allowance:  # the charge was refused: TokenInfo.remaining is from before other uploads' charges
            return HTTPProblem(413, f"upload of {size} bytes exceeds what is left of token {token.name!r}'s allowance")
        if token.remaining is not None and size > token.remaining:
            return HTTPProblem(
                413, f"upload of {size} bytes exceeds token {token.name!r}'s remaining {token.remaining}"
            )
        return HTTPProblem(413, f"upload larger than the limit of {self.settings.max_upload} bytes")

    def gateway_url(self, cid: CID) -> str:
        return f"{self.settings.public_url.rstrip('/')}/ipfs/{cid}"

    def attachment_for(self, facts: MediaFacts) -> dict[str, Any]:
        poster_url = self.gateway_url(facts.poster.cid) if facts.poster else None
        return attachment_object(facts, self.gateway_url(facts.cid), poster_url)

    async def result(self, outcome: ImportOutcome, name: str | None, pinned: bool) -> dict[str, Any]:
        # The clip is stored and committed by now: its poster is made here (bounded; none on any failure).
        facts: MediaFacts = await trio.to_thread.run_sync(
            self.media.facts, self.store, outcome.cid, name, outcome.sha256
        )
        url = self.gateway_url(outcome.cid)
        return {
            "cid": str(outcome.cid),
            "size": outcome.size,
            "name": name,
            "mediaType": facts.media_type,
            "url": url,
            "pinned": pinned,
            "attachment": self.attachment_for(facts),
        }

    async def import_chunks(
        self, chunks: AsyncIterator[bytes], token: TokenInfo, name: str | None, pin: bool, prepaid: int | None = None
    ) -> ImportOutcome:
        """Store a body as it streams in; on any failure nothing stays in the store.

        Without ``prepaid`` the stored size is charged to the token here, once the body is complete, and
        refunded if the commit fails. With it (a tus upload, charged its length when it was created) the
        body may be at most ``prepaid`` bytes and nothing is charged: that charge stands for this file."""
        limit = self.room_for(token) if prepaid is None else prepaid
        with self.store.batch() as batch:
            # The leaves (hashed and written) and the file's SHA-256 each on a thread of their own.
            feeder = ChunkFeeder(batch, self.settings.chunk_size, content_hash=None)
            digest = hashlib.sha256()
            async with Stages([feeder.feed, digest.update]) as stages:
                await feed_in_batches(chunks, stages, FEED_BATCH, limit, lambda size: self.too_large(token, size))
                await stages.finish()
            root, _ = await trio.to_thread.run_sync(feeder.finish)
            sha256 = digest.digest()
            if prepaid is None and not self.tokens.charge(token.name, feeder.size):
                raise self.too_large(token, feeder.size, over_allowance=True)
            try:
                await trio.to_thread.run_sync(lambda: batch.commit([root.cid], name, feeder.size, pin))
            except BaseException:
                if prepaid is None:
                    self.tokens.refund(token.name, feeder.size)
                raise
        self.metrics.upload_bytes.inc(feeder.size)
        return ImportOutcome(root.cid, feeder.size, sha256)

    async def guarded(self, handler: Any, request: Request) -> Response:
        try:
            response: Response = await handler(request)
        except HTTPProblem as exc:
            if request.url.path.startswith(("/api/v1/add", "/api/v1/uploads")) and exc.status != 401:
                self.metrics.uploads.labels("refused").inc()
            return problem_response(exc, as_json=True)
        except ClientDisconnect:
            self.metrics.uploads.labels("disconnected").inc()
            return problem_response(HTTPProblem(400, "the client went away before the body was complete"), True)
        except (QuotaExceeded, NoSpace) as exc:
            self.metrics.uploads.labels("no_room").inc()
            return problem_response(HTTPProblem(507, str(exc)), as_json=True)
        except (OSError, sqlite3.OperationalError) as exc:
            if not disk_full(exc):
                raise
            self.metrics.uploads.labels("no_room").inc()
            return problem_response(HTTPProblem(507, "no space left on the device; nothing was stored"), True)
        except MedianodeError as exc:  # the node's own errors answer with their status hint
            return problem_response(problem_for(exc), as_json=True)
        return response

    # -- POST /api/v1/add ---------------------------------------------------------------------

    async def add(self, request: Request) -> Response:
        token = self.authenticate(request)
        pin = request.query_params.get("pin", "true") != "false"
        declared = request.headers.get("content-length")
        if declared is not None and ascii_int(declared, "Content-Length") > self.room_for(token) + 64 * 1024:
            raise self.too_large(token, int(declared))
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = MultipartFile(content_type)
            outcome = await self.import_chunks(form.file_chunks(request.stream()), token, None, pin)
            name = form.filename
        else:
            name = _clean_name(filename_param(request))
            outcome = await self.import_chunks(request.stream(), token, name, pin)
        body = await self.result(outcome, name, pin)
        self.metrics.uploads.labels("stored").inc()
        log.info("upload stored", extra={"fields": {"cid": body["cid"], "size": outcome.size, "token": token.name}})
        return JSONResponse(body, status_code=201)

    # -- attachments and pins -----------------------------------------------------------------

    async def attachment(self, request: Request) -> Response:
        cid = parse_cid(request.path_params["cid"])
        if not self.store.has(cid):
            raise HTTPProblem(404, f"{cid} is not in the store")
        if self.store.is_withheld(cid):
            raise HTTPProblem(410, f"{cid} is not public")
        facts: MediaFacts = await trio.to_thread.run_sync(self.media.facts, self.store, cid)
        return JSONResponse(self.attachment_for(facts))

    async def pin_add(self, request: Request) -> Response:
        self.authenticate(request)
        cid = parse_cid(request.path_params["cid"])
        await trio.to_thread.run_sync(self.store.pin_add, cid)
        await trio.to_thread.run_sync(self.media.posters.follow, self.store, cid)  # held again with its clip
        return JSONResponse({"cid": str(cid), "pinned": True})

    async def pin_rm(self, request: Request) -> Response:
        self.authenticate(request)
        cid = parse_cid(request.path_params["cid"])
        await trio.to_thread.run_sync(self.store.pin_rm, cid)
        await trio.to_thread.run_sync(self.media.posters.follow, self.store, cid)  # released unless still held
        return JSONResponse({"cid": str(cid), "pinned": False})

    async def pins(self, request: Request) -> Response:
        self.authenticate(request)
        pins = await trio.to_thread.run_sync(self.store.pins)
        # Posters are holds, never pins; each pin names its poster, and a pin someone made of a poster
        # says whose it is (``poster_of``), so a console can tell them from clips.
        posters = await trio.to_thread.run_sync(self.media.posters.all)
        clip_of = {poster: clip for clip, poster in posters.items()}
        return JSONResponse({"pins": [
            {"cid": str(c), "name": n, "created": t,
             "poster": f"/ipfs/{posters[c]}" if c in posters else None,
             "poster_of": str(clip_of[c]) if c in clip_of else None}
            for c, n, t in pins
        ]})  # fmt: skip

    # -- tus resumable uploads ------------------------------------------------------------------

    def _upload_paths(self, upload_id: str) -> tuple[Path, Path]:
        if not upload_id.isascii() or not upload_id.isalnum() or len(upload_id) > 64:
            raise HTTPProblem(404, "no such upload")
        return self.uploads_dir / f"{upload_id}.part", self.uploads_dir / f"{upload_id}.json"

    def _load_upload(self, upload_id: str, token: TokenInfo) -> tuple[Path, Path, dict[str, Any]]:
        part, meta_path = self._upload_paths(upload_id)
        meta = read_meta(meta_path)
        if meta is None or meta.get("token") != token.name:
            raise HTTPProblem(404, "no such upload")
        return part, meta_path, meta

    @staticmethod
    def _offset(part: Path, meta: dict[str, Any]) -> int:
        if meta["result"] is not None:
            return int(meta["length"])
        try:
            return part.stat().st_size
        except FileNotFoundError:
            raise HTTPProblem(404, "no such upload") from None

    @staticmethod
    def _busy(exc: UploadBusy) -> HTTPProblem:
        return HTTPProblem(409, "another PATCH to this upload is in progress",
                           {"Upload-Offset": str(exc.offset), "Tus-Resumable": TUS_VERSION})  # fmt: skip

    async def upload_create(self, request: Request) -> Response:
        token = self.authenticate(request)
        if "upload-length" not in request.headers:
            raise HTTPProblem(400, "Upload-Length header with the total size is required")
        length = ascii_int(request.headers["upload-length"], "Upload-Length")
        if length > self.room_for(token):
            raise self.too_large(token, length)
        name = None
        for item in request.headers.get("upload-metadata", "").split(","):
            key, _, value = item.strip().partition(" ")
            if key == "filename":
                try:
                    raw = base64.b64decode(value, validate=True)
                except ValueError:
                    raise HTTPProblem(400, "Upload-Metadata filename is not base64") from None
                name = _clean_name(_strict_utf8(raw, "filename"))
        upload_id = secrets.token_hex(16)
        part, meta_path = self._upload_paths(upload_id)
        meta = {"length": length, "name": name, "token": token.name, "created": time.time(), "charged": length,
                "pin": request.query_params.get("pin", "true") != "false", "result": None}  # fmt: skip
        # The files first, then the charge: a full disk fails before anything is charged, and a refused
        # charge removes the files (nothing to refund). The sweeper leaves an upload this young alone.
        try:
            os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            replace_file(meta_path, json.dumps(meta).encode())
            charged = self.tokens.charge(token.name, length)
        except BaseException:
            meta_path.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
            raise
        if not charged:
            meta_path.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
            raise self.too_large(token, length, over_allowance=True)
        return Response(status_code=201, headers={
            "Location": f"/api/v1/uploads/{upload_id}", "Tus-Resumable": TUS_VERSION, "Upload-Offset": "0",
        })  # fmt: skip

    async def upload_head(self, request: Request) -> Response:
        token = self.authenticate(request)
        part, _, meta = self._load_upload(request.path_params["upload_id"], token)
        offset = self._offset(part, meta)
        return Response(headers={"Upload-Offset": str(offset), "Upload-Length": str(meta["length"]),
                                 "Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"})  # fmt: skip

    async def upload_get(self, request: Request) -> Response:
        """Progress while unfinished; the result once, after which the upload's files are removed."""
        token = self.authenticate(request)
        part, meta_path, meta = self._load_upload(request.path_params["upload_id"], token)
        if meta["result"] is None:
            return JSONResponse({"offset": self._offset(part, meta), "length": meta["length"], "complete": False})
        meta_path.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        return JSONResponse(meta["result"])

    async def upload_delete(self, request: Request) -> Response:
        token = self.authenticate(request)
        part, meta_path, _ = self._load_upload(request.path_params["upload_id"], token)
        try:
            with hold_part(part) as fd:
                meta = read_meta(meta_path)  # again, under the lock
                if meta is None:
                    raise HTTPProblem(404, "no such upload")
                discard_upload(self.tokens, part, meta_path, meta, fd)
        except UploadBusy as exc:
            raise self._busy(exc) from None
        except FileNotFoundError:
            raise HTTPProblem(404, "no such upload") from None
        return Response(status_code=204, headers={"Tus-Resumable": TUS_VERSION})

    async def upload_patch(self, request: Request) -> Response:
        token = self.authenticate(request)
        part, meta_path, meta = self._load_upload(request.path_params["upload_id"], token)
        if request.headers.get("content-type") != "application/offset+octet-stream":
            raise HTTPProblem(415, "PATCH needs Content-Type: application/offset+octet-stream")
        claimed = ascii_int(request.headers.get("upload-offset"), "Upload-Offset")
        try:
            with hold_part(part) as fd:
                meta = read_meta(meta_path) or {}  # again: the holder before us may have finished or removed it
                if meta.get("result") is not None:
                    raise HTTPProblem(409, "upload is complete already")
                if fd is None or not meta:
                    raise HTTPProblem(404, "no such upload")
                return await self._patch_locked(request, fd, part, meta_path, meta, token, claimed)
        except UploadBusy as exc:
            raise self._busy(exc) from None

    async def _patch_locked(
        self, request: Request, fd: int, part: Path, meta_path: Path, meta: dict[str, Any], token: TokenInfo,
        claimed: int,
    ) -> Response:  # fmt: skip
        offset = os.fstat(fd).st_size
        length = int(meta["length"])
        if claimed != offset:
            raise HTTPProblem(409, f"Upload-Offset must be {offset}", {"Upload-Offset": str(offset)})
        try:
            await self._append(fd, request, length - offset)
        except OSError as exc:
            if not disk_full(exc):
                raise
            # What was written before the disk filled stays: the client resumes from this offset.
            kept = os.fstat(fd).st_size
            raise HTTPProblem(507, "no space left on the device for the upload",
                              {"Upload-Offset": str(kept), "Tus-Resumable": TUS_VERSION}) from None  # fmt: skip
        offset = os.fstat(fd).st_size
        headers = {"Upload-Offset": str(offset), "Tus-Resumable": TUS_VERSION}
        if offset < length:
            return Response(status_code=204, headers=headers)
        try:
            outcome = await self._import_part(part, token, meta["name"], meta["pin"], length)
        except Exception:
            # A failed import ends the upload: its charge is refunded and its files removed.
            try:
                discard_upload(self.tokens, part, meta_path, meta, fd)
            except (OSError, sqlite3.Error) as exc:
                log.warning("could not discard a failed upload", extra={"fields": {"error": str(exc)}})
            raise
        meta["result"] = await self.result(outcome, meta["name"], meta["pin"])
        meta["finished"] = time.time()
        try:
            replace_file(meta_path, json.dumps(meta).encode())
        except OSError as exc:
            # The file is stored and this answer carries the result: with no room to keep it for a later
            # GET, the upload ends here (its charge stands for the stored file).
            log.warning("upload result not kept", extra={"fields": {"error": str(exc), "cid": meta["result"]["cid"]}})
            meta_path.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        self.metrics.uploads.labels("stored").inc()
        return JSONResponse(meta["result"], headers=headers)

    async def _append(self, fd: int, request: Request, room: int) -> int:
        """Append the body to the part file; keep (and fsync) what arrived even if the client went away."""
        received = 0
        try:
            async for chunk in request.stream():
                if received + len(chunk) > room:
                    raise HTTPProblem(413, "PATCH body runs past Upload-Length")
                await trio.to_thread.run_sync(write_all, fd, chunk)
                received += len(chunk)
        finally:
            await trio.to_thread.run_sync(os.fsync, fd)
        return received

    async def _import_part(
        self, part: Path, token: TokenInfo, name: str | None, pin: bool, length: int
    ) -> ImportOutcome:
        async def chunks() -> AsyncIterator[bytes]:
            with open(part, "rb") as source:
                while piece := await trio.to_thread.run_sync(source.read, FEED_BATCH):
                    yield piece

        return await self.import_chunks(chunks(), token, name, pin, prepaid=length)


class MultipartFile:
    """Pulls the first file part out of a multipart/form-data body as it streams."""

    def __init__(self, content_type: str) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise HTTPProblem(400, "multipart body without a boundary")
        self.filename: str | None = None
        self._chunks: list[bytes] = []
        self._in_file = False
        self._file_done = False
        self._finished = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })  # fmt: skip

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"")
        _, params = parse_options_header(disposition)
        if b"filename" in params and not self._file_done and not self._in_file:
            self._in_file = True
            self.filename = _clean_name(_strict_utf8(params[b"filename"], "file name")) or None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._chunks.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_done = True

    def _end(self) -> None:
        self._finished = True

    async def file_chunks(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in body:
            try:
                self._parser.write(chunk)
            except Exception as exc:  # python-multipart raises its own error types for malformed bodies
                raise HTTPProblem(400, f"malformed multipart body: {exc}") from None
            for piece in self._chunks:
                yield piece
            self._chunks.clear()
        if not self._finished:
            raise HTTPProblem(400, "multipart body ended before its closing boundary")
        if not self._file_done:
            raise HTTPProblem(400, "multipart body has no file part")


def api_routes(store: BlockStore, settings: GatewaySettings, metrics: Metrics, tokens: TokenStore) -> list[Route]:
    api = WriteAPI(store, settings, metrics, tokens)

    def guard(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await api.guarded(handler, request)

        return endpoint

    return [
        Route("/api/v1/add", guard(api.add), methods=["POST"]),
        Route("/api/v1/attachment/{cid}", guard(api.attachment), methods=["GET"]),
        Route("/api/v1/pin/{cid}", guard(api.pin_add), methods=["POST"]),
        Route("/api/v1/pin/{cid}", guard(api.pin_rm), methods=["DELETE"]),
        Route("/api/v1/pins", guard(api.pins), methods=["GET"]),
        Route("/api/v1/uploads", guard(api.upload_create), methods=["POST"]),
        Route("/api/v1/uploads/{upload_id}", guard(api.upload_head), methods=["HEAD"]),
        Route("/api/v1/uploads/{upload_id}", guard(api.upload_get), methods=["GET"]),
        Route("/api/v1/uploads/{upload_id}", guard(api.upload_patch), methods=["PATCH"]),
        Route("/api/v1/uploads/{upload_id}", guard(api.upload_delete), methods=["DELETE"]),
    ]
