"""The write API for instance operators and their fediverse servers.

Every write needs ``Authorization: Bearer TOKEN`` (``medianode token create``);
reads stay public. Errors are JSON ``{"error": "..."}`` with a 4xx status.

- ``POST /api/v1/add[?filename=NAME&pin=false]``: the body is the file (raw)
  or a ``multipart/form-data`` form whose first file part is the file. The
  body is chunked, hashed and stored as it streams in; an upload that is cut
  off, too large, or over the token's allowance stores nothing. Answers with
  the CID, size, media type, gateway URL and an ActivityPub attachment.
- ``GET /api/v1/attachment/{cid}``: the same attachment for stored content.
- ``POST|DELETE /api/v1/pin/{cid}``, ``GET /api/v1/pins``.
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
  upload repeats it. Unfinished uploads are deleted after a day.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..storage.cid import CID, CIDError
from ..storage.errors import BlockNotFound, NoSpace, QuotaExceeded, StoreError
from ..storage.importer import ChunkFeeder
from ..storage.store import BlockStore
from .app import GatewaySettings, HTTPProblem, problem_response
from .attachment import AttachmentCache, MediaFacts, attachment_object
from .metrics import Metrics
from .tokens import TokenInfo, TokenStore

log = logging.getLogger("medianode.gateway")

FEED_BATCH = 1024 * 1024  # bytes handed to the hashing thread at a time
TUS_VERSION = "1.0.0"
UPLOAD_TTL = 24 * 3600
MAX_NAME = 255


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
        self.media = AttachmentCache(settings.data_dir / "gateway.sqlite")
        self.uploads_dir = settings.data_dir / "uploads"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.expire_uploads()

    # -- helpers --------------------------------------------------------------------------

    def authenticate(self, request: Request) -> TokenInfo:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        info = self.tokens.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            raise HTTPProblem(401, "a valid bearer token is required", {"WWW-Authenticate": 'Bearer realm="medianode"'})
        return info

    def room_for(self, token: TokenInfo) -> int:
        remaining = token.remaining
        return self.settings.max_upload if remaining is None else min(self.settings.max_upload, remaining)

    def too_large(self, token: TokenInfo, size: int) -> HTTPProblem:
        if token.remaining is not None and size > token.remaining:
            return HTTPProblem(
                413, f"upload of {size} bytes exceeds token {token.name!r}'s remaining {token.remaining}"
            )
        return HTTPProblem(413, f"upload larger than the limit of {self.settings.max_upload} bytes")

    def gateway_url(self, cid: CID) -> str:
        return f"{self.settings.public_url.rstrip('/')}/ipfs/{cid}"

    async def result(self, outcome: ImportOutcome, name: str | None, pinned: bool) -> dict[str, Any]:
        facts: MediaFacts = await anyio.to_thread.run_sync(
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
            "attachment": attachment_object(facts, url),
        }

    async def import_chunks(
        self, chunks: AsyncIterator[bytes], token: TokenInfo, name: str | None, pin: bool
    ) -> ImportOutcome:
        """Store a body as it streams in; on any failure nothing stays in the store."""
        limit = self.room_for(token)
        with self.store.batch() as batch:
            feeder = ChunkFeeder(batch, self.settings.chunk_size)
            pending = bytearray()
            async for chunk in chunks:
                if feeder.size + len(pending) + len(chunk) > limit:
                    raise self.too_large(token, feeder.size + len(pending) + len(chunk))
                pending += chunk
                if len(pending) >= FEED_BATCH:
                    await anyio.to_thread.run_sync(feeder.feed, bytes(pending))
                    pending.clear()
            if pending:
                await anyio.to_thread.run_sync(feeder.feed, bytes(pending))
            root, sha256 = await anyio.to_thread.run_sync(feeder.finish)
            if not self.tokens.charge(token.name, feeder.size):
                raise self.too_large(token, feeder.size)
            try:
                await anyio.to_thread.run_sync(lambda: batch.commit([root.cid], name, feeder.size, pin))
            except BaseException:
                self.tokens.charge(token.name, -feeder.size)
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
        except BlockNotFound as exc:
            return problem_response(HTTPProblem(404, str(exc)), as_json=True)
        except StoreError as exc:
            return problem_response(HTTPProblem(409, str(exc)), as_json=True)
        return response

    # -- POST /api/v1/add ---------------------------------------------------------------------

    async def add(self, request: Request) -> Response:
        token = self.authenticate(request)
        pin = request.query_params.get("pin", "true") != "false"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.room_for(token) + 64 * 1024:
            raise self.too_large(token, int(declared))
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = MultipartFile(content_type)
            outcome = await self.import_chunks(form.file_chunks(request.stream()), token, None, pin)
            name = form.filename
        else:
            from .app import filename_param

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
        facts: MediaFacts = await anyio.to_thread.run_sync(self.media.facts, self.store, cid)
        return JSONResponse(attachment_object(facts, self.gateway_url(cid)))

    async def pin_add(self, request: Request) -> Response:
        self.authenticate(request)
        cid = parse_cid(request.path_params["cid"])
        await anyio.to_thread.run_sync(self.store.pin_add, cid)
        return JSONResponse({"cid": str(cid), "pinned": True})

    async def pin_rm(self, request: Request) -> Response:
        self.authenticate(request)
        cid = parse_cid(request.path_params["cid"])
        await anyio.to_thread.run_sync(self.store.pin_rm, cid)
        return JSONResponse({"cid": str(cid), "pinned": False})

    async def pins(self, request: Request) -> Response:
        self.authenticate(request)
        pins = await anyio.to_thread.run_sync(self.store.pins)
        return JSONResponse({"pins": [{"cid": str(c), "name": n, "created": t} for c, n, t in pins]})

    # -- tus resumable uploads ------------------------------------------------------------------

    def _upload_paths(self, upload_id: str) -> tuple[Path, Path]:
        if not upload_id.isalnum() or len(upload_id) > 64:
            raise HTTPProblem(404, "no such upload")
        return self.uploads_dir / f"{upload_id}.part", self.uploads_dir / f"{upload_id}.json"

    def _load_upload(self, upload_id: str, token: TokenInfo) -> tuple[Path, Path, dict[str, Any]]:
        part, meta_path = self._upload_paths(upload_id)
        try:
            meta = json.loads(meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            raise HTTPProblem(404, "no such upload") from None
        if meta["token"] != token.name:
            raise HTTPProblem(404, "no such upload")
        return part, meta_path, meta

    def expire_uploads(self) -> None:
        cutoff = time.time() - UPLOAD_TTL
        for meta_path in self.uploads_dir.glob("*.json"):
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("result") is None and meta["created"] < cutoff:
                    meta_path.with_suffix(".part").unlink(missing_ok=True)
                    meta_path.unlink()
            except (OSError, json.JSONDecodeError, KeyError):
                continue

    async def upload_create(self, request: Request) -> Response:
        token = self.authenticate(request)
        length_text = request.headers.get("upload-length", "")
        if not length_text.isdigit():
            raise HTTPProblem(400, "Upload-Length header with the total size is required")
        length = int(length_text)
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
        part.touch()
        meta = {"length": length, "name": name, "token": token.name, "created": time.time(),
                "pin": request.query_params.get("pin", "true") != "false", "result": None}  # fmt: skip
        _write_json(meta_path, meta)
        return Response(status_code=201, headers={
            "Location": f"/api/v1/uploads/{upload_id}", "Tus-Resumable": TUS_VERSION, "Upload-Offset": "0",
        })  # fmt: skip

    async def upload_head(self, request: Request) -> Response:
        token = self.authenticate(request)
        part, _, meta = self._load_upload(request.path_params["upload_id"], token)
        offset = meta["length"] if meta["result"] else part.stat().st_size
        return Response(headers={"Upload-Offset": str(offset), "Upload-Length": str(meta["length"]),
                                 "Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"})  # fmt: skip

    async def upload_get(self, request: Request) -> Response:
        token = self.authenticate(request)
        part, _, meta = self._load_upload(request.path_params["upload_id"], token)
        if meta["result"] is None:
            return JSONResponse({"offset": part.stat().st_size, "length": meta["length"], "complete": False})
        return JSONResponse(meta["result"])

    async def upload_delete(self, request: Request) -> Response:
        token = self.authenticate(request)
        part, meta_path, _ = self._load_upload(request.path_params["upload_id"], token)
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return Response(status_code=204, headers={"Tus-Resumable": TUS_VERSION})

    async def upload_patch(self, request: Request) -> Response:
        token = self.authenticate(request)
        part, meta_path, meta = self._load_upload(request.path_params["upload_id"], token)
        if request.headers.get("content-type") != "application/offset+octet-stream":
            raise HTTPProblem(415, "PATCH needs Content-Type: application/offset+octet-stream")
        if meta["result"] is not None:
            raise HTTPProblem(409, "upload is complete already")
        offset = part.stat().st_size
        claimed = request.headers.get("upload-offset", "")
        if not claimed.isdigit() or int(claimed) != offset:
            raise HTTPProblem(409, f"Upload-Offset must be {offset}", {"Upload-Offset": str(offset)})
        received = await self._append(part, request, meta["length"] - offset)
        offset += received
        headers = {"Upload-Offset": str(offset), "Tus-Resumable": TUS_VERSION}
        if offset < meta["length"]:
            return Response(status_code=204, headers=headers)
        outcome = await self._import_part(part, token, meta["name"], meta["pin"])
        meta["result"] = await self.result(outcome, meta["name"], meta["pin"])
        _write_json(meta_path, meta)
        part.unlink(missing_ok=True)
        self.metrics.uploads.labels("stored").inc()
        return JSONResponse(meta["result"], headers=headers)

    async def _append(self, part: Path, request: Request, room: int) -> int:
        """Append the body to the part file; keep (and fsync) what arrived even if the client went away."""
        received = 0
        with open(part, "ab") as out:
            try:
                async for chunk in request.stream():
                    if received + len(chunk) > room:
                        raise HTTPProblem(413, "PATCH body runs past Upload-Length")
                    await anyio.to_thread.run_sync(out.write, chunk)
                    received += len(chunk)
            finally:
                out.flush()
                os.fsync(out.fileno())
        return received

    async def _import_part(self, part: Path, token: TokenInfo, name: str | None, pin: bool) -> ImportOutcome:
        async def chunks() -> AsyncIterator[bytes]:
            with open(part, "rb") as source:
                while piece := await anyio.to_thread.run_sync(source.read, FEED_BATCH):
                    yield piece

        return await self.import_chunks(chunks(), token, name, pin)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def parse_cid(text: str) -> CID:
    try:
        return CID.parse(text)
    except CIDError as exc:
        raise HTTPProblem(400, f"invalid CID {text[:80]!r}: {exc}") from None


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
