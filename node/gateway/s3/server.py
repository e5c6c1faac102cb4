"""The S3 listener: S3's REST API over HTTP, for fediverse servers' media storage.

Participants: an S3 client (Mastodon's Ruby SDK, PeerTube's JS SDK, Laravel's PHP
adapter, boto3) holding an access key made by ``medianode s3 key create``, and
anonymous browsers reading public objects. Goals: what those servers call works
unmodified (see the README's per-server settings); every object is a file in the
store, at once an S3 object, an ``/ipfs/`` URL and shared in the swarm (each
response names its CID in ``x-ipfs-roots``); a key sees only its own buckets;
deleting or privatising an object takes it off every public path. Non-goals:
versioning, bucket policies, lifecycle rules, object lock, website hosting, ACLs
beyond the canned ``private`` and ``public-read``.

Requests are addressed path-style (``/bucket/key``) or virtual-host-style
(``bucket.DOMAIN/key`` with ``[s3] domain``); the operation is the method plus
the bucket, key and query (``?uploads``, ``?uploadId=``, ``?acl``, ``?delete``,
``?list-type=2``, ``?location``). This module parses, authenticates
(``sigv4``), dispatches and renders (``xml``); bodies go to ``objects``, names
and listings to ``catalog`` and ``listing``. Every refusal is an ``S3Error``
rendered once, in ``S3App.__call__``.
"""

from __future__ import annotations

import email.utils
import logging
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ...storage.errors import StoreError
from ...storage.store import BlockStore
from ..http import answer_lifespan
from ..ranges import RangeError, parse_range
from ..spans import can_send_spans, spans_response
from ..stages import FEED_BATCH
from . import etag as etags
from . import listing, names, sigv4, xml
from .body import BodyReader
from .catalog import Catalog, ObjectRecord, Part, object_holder, part_holder
from .checksums import BodyChecks
from .chunked import decoder_for
from .errors import S3Error, access_denied, invalid_request
from .objects import MAX_PARTS, MIN_PART_SIZE, ObjectWriter, quota_exceeded

log = logging.getLogger("medianode.s3")

PIECE = 4 * 1024 * 1024
MAX_SMALL_BODY = 4 * 1024 * 1024
STORED_HEADERS = (
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
OBJECT_SUBRESOURCES = frozenset({"acl", "uploadId", "uploads"})  # a GET of these is not of the object's bytes
EXPOSED = (
    "ETag, Content-Length, Content-Range, Content-Type, Last-Modified, x-ipfs-roots, x-ipfs-path, x-amz-request-id"
)

# S3's own wording for its errors.
ALREADY_OWNED = "Your previous request to create the named bucket succeeded and you already own it."
COPY_TO_ITSELF = (
    "This copy request is illegal because it is trying to copy an object to itself without changing the "
    "object's metadata, storage class, website redirect location or encryption attributes."
)
NO_SUCH_UPLOAD = (
    "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have "
    "been aborted or completed."
)
INVALID_PART = (
    "One or more of the specified parts could not be found.  The part may not have been uploaded, or the "
    "specified entity tag may not match the part's entity tag."
)
TOO_SMALL = "Your proposed upload is smaller than the minimum allowed object size."
NOT_IMPLEMENTED = "A header or query you provided implies functionality that is not implemented"
RANGE = "The requested range is not satisfiable"


@dataclass(frozen=True)
class S3Settings:
    region: str = ""  # the one region accepted; "" accepts any
    domain: str = ""  # for virtual-host-style addressing
    chunk_size: int = 262144
    incomplete_upload_hours: float = 168.0


@dataclass(frozen=True)
class Call:
    """One request, parsed and authenticated."""

    request: Request
    body_reader: BodyReader
    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    auth: sigv4.Authorization
    headers: list[tuple[str, str]]

    @property
    def owner(self) -> str:
        if self.auth.access_key_id is None:
            raise access_denied()
        return self.auth.access_key_id

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)


class S3App:
    def __init__(self, store: BlockStore, catalog: Catalog, settings: S3Settings) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.writer = ObjectWriter(store, catalog, settings.chunk_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        reader = BodyReader(receive)
        request_id = secrets.token_hex(8).upper()
        try:
            response = await self.handle(request, reader)
        except S3Error as error:
            response = self.error(error, request)
            if request.method in ("PUT", "POST"):
                await reader.drain()
        except ClientDisconnect:
            response = self.error(S3Error("IncompleteBody", 400, "The request body ended early"), request)
        response.headers["x-amz-request-id"] = request_id
        if "origin" in request.headers:
            response.headers.setdefault("Access-Control-Allow-Origin", "*")
            response.headers.setdefault("Access-Control-Expose-Headers", EXPOSED)
        await response(scope, receive, send)

    def reads_an_object(self, scope: Scope) -> bool:
        """Whether the request is a GET or HEAD of an object's bytes: all a serving worker answers itself, as it
        needs only reads of the catalog and the store (node/gateway/worker.py). A malformed address is not:
        the owner refuses it."""
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return False
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        try:
            bucket, key = names.parse_address(host, raw_path, self.settings.domain or "")
        except S3Error:
            return False
        if bucket is None or key is None:
            return False
        asked = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        return not OBJECT_SUBRESOURCES & {name for name, _ in asked}

    def error(self, error: S3Error, request: Request) -> Response:
        fields = {"code": error.code, "method": request.method, "path": request.url.path, "message": error.message}
        if error.status >= 500:
            log.warning("s3 error", extra={"fields": fields})
        else:
            log.debug("s3 refused", extra={"fields": fields})
        body = b"" if request.method == "HEAD" else xml.error_body(error, resource=request.url.path)
        headers = {"Retry-After": "10"} if error.status == 503 else {}
        return Response(body, status_code=error.status, media_type="application/xml", headers=headers)

    # -- parsing and dispatch ---------------------------------------------------------------------

    async def handle(self, request: Request, reader: BodyReader) -> Response:
        method = request.method
        if method == "OPTIONS":
            return self.preflight(request)
        raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        raw_query: bytes = request.scope.get("query_string", b"")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
        bucket, key = names.parse_address(request.headers.get("host"), raw_path, self.settings.domain or "")
        auth = sigv4.authenticate(
            method,
            raw_path,
            raw_query,
            headers,
            now=datetime.now(UTC),
            secret_for=self._secret,
            region=self.settings.region or None,
        )
        # The operation is named by the query, less the presigned URL's own X-Amz-* parameters.
        query = {
            k: v
            for k, v in urllib.parse.parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)
            if not k.lower().startswith("x-amz-") and k != "x-id"
        }
        call = Call(request, reader, method, bucket, key, query, auth, headers)
        if bucket is None:
            if method == "GET":
                return self.list_buckets(call)
            raise S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.")
        if key is None:
            return await self.bucket_operation(call, bucket)
        return await self.object_operation(call, bucket, key)

    def _secret(self, access_key_id: str) -> str | None:
        found = self.catalog.key(access_key_id)
        return None if found is None else found.secret

    def preflight(self, request: Request) -> Response:
        asked = request.headers.get("access-control-request-headers", "")
        return Response(
            status_code=200,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, HEAD, PUT, POST, DELETE",
                "Access-Control-Allow-Headers": asked or "*",
                "Access-Control-Expose-Headers": EXPOSED,
                "Access-Control-Max-Age": "3600",
            },
        )

    def owned_bucket(self, call: Call, bucket: str) -> str:
        """The bucket, if it exists and the caller's key owns it."""
        found = self.catalog.bucket(bucket)
        if found is None:
            names.validate_bucket_name(bucket)
            raise S3Error("NoSuchBucket", 404, "The specified bucket does not exist", {"BucketName": bucket})
        if call.auth.anonymous or found.owner != call.auth.access_key_id:
            raise access_denied()
        return found.owner

    async def bucket_operation(self, call: Call, bucket: str) -> Response:
        method, query = call.method, call.query
        if method == "PUT" and not query:
            return await self.create_bucket(call, bucket)
        if method == "PUT" and "acl" in query:
            self.owned_bucket(call, bucket)
            return Response(status_code=200)  # buckets are private; objects carry their own ACLs
        self.owned_bucket(call, bucket)
        if method == "HEAD":
            region = self.settings.region or "us-east-1"
            return Response(status_code=200, headers={"x-amz-bucket-region": region})
        if method == "DELETE" and not query:
            if not self.catalog.delete_bucket(bucket):
                raise S3Error("BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
            return Response(status_code=204)
        if method == "GET" and "location" in query:
            return _xml(xml.location_constraint(self.settings.region or None))
        if method == "GET" and "acl" in query:
            return _xml(xml.access_control_policy(xml.Owner(call.owner), "private"))
        if method == "GET" and "uploads" in query:
            return self.list_uploads(call, bucket)
        if method == "GET" and not set(query) - LIST_PARAMETERS:
            return self.list_objects(call, bucket)
        if method == "POST" and "delete" in query:
            return await self.delete_objects(call, bucket)
        raise S3Error("NotImplemented", 501, NOT_IMPLEMENTED)

    async def object_operation(self, call: Call, bucket: str, key: str) -> Response:
        method, query = call.method, call.query
        if method in ("GET", "HEAD") and not (OBJECT_SUBRESOURCES & set(query)):
            return await self.get_object(call, bucket, key)
        self.owned_bucket(call, bucket)
        if method == "PUT" and "uploadId" in query:
            if call.header("x-amz-copy-source"):
                raise S3Error("NotImplemented", 501, "UploadPartCopy is not implemented")
            return await self.upload_part(call, bucket, key)
        if method == "PUT" and "acl" in query:
            return await self.put_acl(call, bucket, key)
        if method == "PUT" and call.header("x-amz-copy-source"):
            return self.copy_object(call, bucket, key)
        if method == "PUT" and not query:
            return await self.put_object(call, bucket, key)
        if method == "GET" and "acl" in query:
            record = self.existing(bucket, key)
            return _xml(xml.access_control_policy(xml.Owner(call.owner), "public-read" if record.public else "private"))
        if method == "GET" and "uploadId" in query:
            return self.list_parts(call, bucket, key)
        if method == "DELETE" and "uploadId" in query:
            self.writer.abort(self.upload_of(call, bucket, key))
            return Response(status_code=204)
        if method == "DELETE":
            self.delete_key(bucket, key)
            return Response(status_code=204)
        if method == "POST" and "uploads" in query:
            return self.create_upload(call, bucket, key)
        if method == "POST" and "uploadId" in query:
            return await self.complete_upload(call, bucket, key)
        raise S3Error("NotImplemented", 501, NOT_IMPLEMENTED)

    # -- buckets ----------------------------------------------------------------------------------

    def list_buckets(self, call: Call) -> Response:
        owned = self.catalog.buckets(call.owner)
        return _xml(xml.list_all_my_buckets(xml.Owner(call.owner), [(b.name, b.created) for b in owned]))

    async def create_bucket(self, call: Call, bucket: str) -> Response:
        owner = call.owner
        names.validate_bucket_name(bucket)
        region = xml.parse_create_bucket_configuration(await self.small_body(call))
        if region and self.settings.region and region != self.settings.region:
            raise S3Error("InvalidLocationConstraint", 400, "The specified location-constraint is not valid")
        if not self.catalog.create_bucket(bucket, owner):
            found = self.catalog.bucket(bucket)
            if found is not None and found.owner == owner:
                raise S3Error("BucketAlreadyOwnedByYou", 409, ALREADY_OWNED)
            raise S3Error("BucketAlreadyExists", 409, "The requested bucket name is not available.")
        return Response(status_code=200, headers={"Location": f"/{bucket}"})

    def list_objects(self, call: Call, bucket: str) -> Response:
        def source(after: str) -> Iterator[tuple[str, listing.ObjectSummary]]:
            prefix = call.query.get("prefix", "")
            for record in self.catalog.keys_after(bucket, prefix, after):
                yield (
                    record.key,
                    listing.ObjectSummary(
                        record.key, record.size, record.etag, record.modified, call.owner, call.owner
                    ),
                )

        page = listing.list_objects(source, call.query)
        return _xml(xml.list_bucket_result(bucket, page))

    def list_uploads(self, call: Call, bucket: str) -> Response:
        uploads = [
            listing.UploadSummary(u.key, u.upload_id, u.created, call.owner, call.owner)
            for u in self.catalog.uploads(bucket)
        ]
        page = listing.list_multipart_uploads_query(listing.uploads_from_sorted(uploads), call.query)
        return _xml(xml.list_multipart_uploads_result(bucket, page))

    async def delete_objects(self, call: Call, bucket: str) -> Response:
        body = await self.small_body(call)
        request = xml.parse_delete(body)
        outcomes = []
        for key, version in request.objects:
            try:
                names.validate_key(key)
            except S3Error as error:
                outcomes.append(xml.DeleteOutcome(key, error.code, error.message, version))
                continue
            self.delete_key(bucket, key)
            outcomes.append(xml.DeleteOutcome(key, version_id=version))
        return _xml(xml.delete_result(outcomes, quiet=request.quiet))

    # -- objects ----------------------------------------------------------------------------------

    def existing(self, bucket: str, key: str) -> ObjectRecord:
        record = self.catalog.get(bucket, key)
        if record is None:
            raise S3Error("NoSuchKey", 404, "The specified key does not exist.", {"Key": key})
        return record

    async def get_object(self, call: Call, bucket: str, key: str) -> Response:
        if call.auth.anonymous:
            record = self.catalog.get(bucket, key)
            if record is None or not record.public:
                raise access_denied()  # as S3: an anonymous reader cannot tell missing from private
            if any(name in call.query for name in RESPONSE_OVERRIDES):
                raise invalid_request("Request specific response headers cannot be used for anonymous GET requests.")
        else:
            self.owned_bucket(call, bucket)
            record = self.existing(bucket, key)
        headers = self.object_headers(record, call.query if not call.auth.anonymous else {})
        status = etags.evaluate(
            etags.Conditions.from_headers(call.request.headers), record.etag, record.modified, method=call.method
        )
        if status == etags.NOT_MODIFIED:
            return Response(status_code=304, headers={k: v for k, v in headers.items() if k.lower() != "content-type"})
        if status is not None:
            raise S3Error("PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold")
        part = call.query.get("partNumber")
        if part is not None:
            # A part of a multipart object as it was uploaded (the SDKs' parallel downloads read the parts
            # count from part 1); an object put whole is its own part 1.
            sizes = record.parts or (record.size,)
            if not part.isascii() or not part.isdigit() or not 1 <= int(part) <= len(sizes):
                raise S3Error("InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
            start, length = sum(sizes[: int(part) - 1]), sizes[int(part) - 1]
            if record.parts:
                headers["x-amz-mp-parts-count"] = str(len(record.parts))
            if length:
                headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{record.size}"
            headers["Content-Length"] = str(length)
            if call.method == "HEAD":
                return Response(status_code=206, headers=headers)
            return await self.object_body(call, record, start, length, 206, headers)
        try:
            byte_range = parse_range(call.header("range"), record.size)
        except RangeError as exc:
            if exc.status == 416:
                raise S3Error("InvalidRange", 416, RANGE, {"ActualObjectSize": str(record.size)}) from None
            byte_range = None  # S3 ignores a Range it cannot parse
        start, length, status_code = 0, record.size, 200
        if byte_range is not None:
            start, length, status_code = byte_range.start, byte_range.length, 206
            headers["Content-Range"] = byte_range.content_range(record.size)
        headers["Content-Length"] = str(length)
        if call.method == "HEAD":
            return Response(status_code=status_code, headers=headers)
        return await self.object_body(call, record, start, length, status_code, headers)

    async def object_body(
        self, call: Call, record: ObjectRecord, start: int, length: int, status: int, headers: dict[str, str]
    ) -> Response:
        """The object's bytes [start, start+length): sent from the pack files where the connection allows
        (node/gateway/spans.py), else read a piece at a time on a worker thread."""
        if can_send_spans(call.request.scope, length):
            return await spans_response(self.store, record.cid, start, length, status, headers)
        if length <= PIECE:  # a player's seek: one trip to the worker thread and a plain response
            body = await trio.to_thread.run_sync(lambda: b"".join(self.store.read_range(record.cid, start, length)))
            return Response(body, status_code=status, headers=headers)
        return StreamingResponse(self.read(record, start, length), status_code=status, headers=headers)

    async def read(self, record: ObjectRecord, start: int, length: int) -> AsyncIterator[bytes]:
        pieces = self.store.read_range(record.cid, start, length, piece_size=PIECE)
        while (piece := await trio.to_thread.run_sync(next, pieces, None)) is not None:
            yield piece

    def object_headers(self, record: ObjectRecord, query: Mapping[str, str]) -> dict[str, str]:
        headers = {
            "ETag": record.etag,
            "Last-Modified": email.utils.formatdate(record.modified, usegmt=True),
            "Accept-Ranges": "bytes",
            "x-ipfs-roots": str(record.cid),
            "x-ipfs-path": f"/ipfs/{record.cid}",
            "Content-Type": "binary/octet-stream",
        }
        for name, value in record.headers.items():
            headers[_title(name)] = value
        for parameter, header in RESPONSE_OVERRIDES.items():
            if parameter in query:
                headers[_title(header)] = query[parameter]
        if record.public:
            headers["Access-Control-Allow-Origin"] = "*"
        return headers

    def kept_headers(self, call: Call) -> dict[str, str]:
        """The headers a PUT or CreateMultipartUpload asks to keep with the object (and return on GET)."""
        kept = {}
        for name, value in call.headers:
            lower = name.lower()
            if lower in STORED_HEADERS or lower.startswith("x-amz-meta-"):
                kept[lower] = value
        if len(str(kept)) > 8192:
            raise S3Error("MetadataTooLarge", 400, "Your metadata headers exceed the maximum allowed metadata size.")
        return kept

    def room(self, call: Call, replacing: int = 0) -> int | None:
        """Bytes this key may still add (``replacing``: the size of the object the write replaces); None
        when the key has no limit."""
        access = self.catalog.key(call.owner)
        if access is None or not access.limit:
            return None
        return max(0, access.limit - self.catalog.used_bytes(call.owner) + replacing)

    def body(self, call: Call) -> tuple[AsyncIterator[bytes], BodyChecks, Any]:
        """The payload (decoded from aws-chunked when it is), what to check it against, and its trailers."""
        length = call.header("content-length")
        if length is not None and (not length.isascii() or not length.isdigit()):
            raise invalid_request("Content-Length is not a number")
        checks = BodyChecks.from_headers(
            call.headers,
            payload_sha256=call.auth.payload_sha256 if call.auth.payload is sigv4.PayloadMode.SIGNED else None,
        )
        if not call.auth.payload.streaming:
            if length is None and call.header("transfer-encoding") is None:
                raise S3Error("MissingContentLength", 411, "You must provide the Content-Length HTTP header.")
            return call.body_reader.batches(None if length is None else int(length), FEED_BATCH), checks, None
        decoder = decoder_for(call.auth, call.headers)
        wire = call.body_reader.batches(None, FEED_BATCH)  # the decoder checks the decoded length

        async def decoded() -> AsyncIterator[bytes]:
            async for batch in wire:
                pieces = decoder.feed(batch)
                if pieces:
                    yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            decoder.end()

        return decoded(), checks, lambda: decoder.trailers

    async def put_object(self, call: Call, bucket: str, key: str) -> Response:
        acl = xml.parse_canned_acl(call.header("x-amz-acl"))
        kept = self.kept_headers(call)
        old = self.catalog.get(bucket, key)
        chunks, checks, trailers = self.body(call)
        imported = await self.writer.import_body(
            chunks,
            checks,
            room=self.room(call, old.size if old else 0),
            hold=(object_holder(bucket, key), acl == "public-read"),
            name=key,
            trailers=trailers,
        )
        etag = f'"{imported.md5.hex()}"'
        self.catalog.put(
            ObjectRecord(bucket, key, imported.cid, imported.size, etag, time.time(), acl == "public-read", kept)
        )
        headers = {"ETag": etag, "x-ipfs-roots": str(imported.cid), **imported.checksum_headers()}
        return Response(status_code=200, headers=headers)

    def copy_object(self, call: Call, bucket: str, key: str) -> Response:
        source_bucket, source_key = _copy_source(call.header("x-amz-copy-source") or "")
        self.owned_bucket(call, source_bucket)
        source = self.existing(source_bucket, source_key)
        status = etags.evaluate(
            etags.Conditions.from_copy_source_headers(call.request.headers),
            source.etag,
            source.modified,
            method="PUT",
            copy_source=True,
        )
        if status is not None:
            raise S3Error("PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold")
        directive = (call.header("x-amz-metadata-directive") or "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", 400, "Unknown metadata directive.")
        if (source_bucket, source_key) == (bucket, key) and directive == "COPY":
            raise invalid_request(COPY_TO_ITSELF)
        public = xml.parse_canned_acl(call.header("x-amz-acl")) == "public-read"
        kept = source.headers if directive == "COPY" else self.kept_headers(call)
        old = self.catalog.get(bucket, key)
        room = self.room(call, old.size if old else 0)
        if room is not None and source.size > room:
            raise quota_exceeded("the copy does not fit in what is left to this key")
        try:  # no bytes are copied: both keys name one CID
            self.store.hold(object_holder(bucket, key), source.cid, public)
        except StoreError as exc:
            raise quota_exceeded(str(exc)) from None
        now = time.time()
        self.catalog.put(
            ObjectRecord(bucket, key, source.cid, source.size, source.etag, now, public, kept, source.parts)
        )
        return _xml(xml.copy_object_result(source.etag, now), {"x-ipfs-roots": str(source.cid)})

    async def put_acl(self, call: Call, bucket: str, key: str) -> Response:
        record = self.existing(bucket, key)
        header = call.header("x-amz-acl")
        body = await self.small_body(call)
        acl = (
            xml.parse_canned_acl(header)
            if header or not body.strip()
            else xml.parse_access_control_policy(body, call.owner)
        )
        public = acl == "public-read"
        self.store.hold(object_holder(bucket, key), record.cid, public)
        self.catalog.set_public(bucket, key, public)
        return Response(status_code=200)

    def delete_key(self, bucket: str, key: str) -> None:
        if self.catalog.delete(bucket, key) is not None:  # the name goes first, then what it held
            self.store.release(object_holder(bucket, key))

    # -- multipart uploads ------------------------------------------------------------------------

    def create_upload(self, call: Call, bucket: str, key: str) -> Response:
        public = xml.parse_canned_acl(call.header("x-amz-acl")) == "public-read"
        upload = self.catalog.create_upload(bucket, key, public, self.kept_headers(call))
        return _xml(xml.initiate_multipart_upload_result(bucket, key, upload.upload_id))

    def upload_of(self, call: Call, bucket: str, key: str) -> Any:
        upload = self.catalog.upload(call.query.get("uploadId", ""))
        if upload is None or upload.bucket != bucket or upload.key != key:
            raise S3Error("NoSuchUpload", 404, NO_SUCH_UPLOAD)
        return upload

    async def upload_part(self, call: Call, bucket: str, key: str) -> Response:
        upload = self.upload_of(call, bucket, key)
        number_text = call.query.get("partNumber", "")
        if not number_text.isascii() or not number_text.isdigit() or not 1 <= int(number_text) <= MAX_PARTS:
            raise S3Error("InvalidArgument", 400, "Part number must be an integer between 1 and 10000, inclusive")
        number = int(number_text)
        chunks, checks, trailers = self.body(call)
        room = self.room(call)
        if room is not None:
            room = max(0, room - self.catalog.parts_size(upload.upload_id))
        imported = await self.writer.import_body(
            chunks,
            checks,
            room=room,
            hold=(part_holder(upload.upload_id, number), False),
            name=f"{key} part {number}",
            trailers=trailers,
        )
        if self.catalog.upload(upload.upload_id) is None:  # aborted while the part streamed in
            self.store.release(part_holder(upload.upload_id, number))
            raise S3Error("NoSuchUpload", 404, "The specified multipart upload does not exist.")
        self.catalog.put_part(upload.upload_id, Part(number, imported.cid, imported.size, imported.md5, time.time()))
        return Response(status_code=200, headers={"ETag": f'"{imported.md5.hex()}"', **imported.checksum_headers()})

    def list_parts(self, call: Call, bucket: str, key: str) -> Response:
        upload = self.upload_of(call, bucket, key)
        parts = [
            listing.PartSummary(p.number, f'"{p.md5.hex()}"', p.size, p.modified)
            for p in self.catalog.parts(upload.upload_id)
        ]
        page = listing.list_parts_query(listing.parts_from_sorted(parts), call.query)
        return _xml(xml.list_parts_result(bucket, key, upload.upload_id, page, xml.Owner(call.owner)))

    async def complete_upload(self, call: Call, bucket: str, key: str) -> Response:
        upload = self.upload_of(call, bucket, key)
        asked = xml.parse_complete_multipart_upload(await self.small_body(call))
        stored = {p.number: p for p in self.catalog.parts(upload.upload_id)}
        chosen: list[Part] = []
        for index, wanted in enumerate(asked):
            part = stored.get(wanted.part_number)
            if part is None or etags.unquote_etag(wanted.etag).lower() != part.md5.hex():
                raise S3Error("InvalidPart", 400, INVALID_PART)
            if index < len(asked) - 1 and part.size < MIN_PART_SIZE:
                raise S3Error("EntityTooSmall", 400, TOO_SMALL)
            chosen.append(part)
        old = self.catalog.get(bucket, key)
        room = self.room(call, old.size if old else 0)
        if room is not None and sum(p.size for p in chosen) > room:
            raise quota_exceeded("the object does not fit in what is left to this key")
        cid, size = await self.writer.complete(upload, chosen)
        etag = f'"{etags.multipart_etag([p.md5 for p in chosen])}"'
        sizes = tuple(p.size for p in chosen)
        self.catalog.put(ObjectRecord(bucket, key, cid, size, etag, time.time(), upload.public, upload.headers, sizes))
        self.writer.abort(upload)  # the parts' holds go; their leaves stay, held by the object
        location = (
            f"{call.request.url.scheme}://{call.request.headers.get('host', '')}/{bucket}/{urllib.parse.quote(key)}"
        )
        return _xml(xml.complete_multipart_upload_result(location, bucket, key, etag), {"x-ipfs-roots": str(cid)})

    async def small_body(self, call: Call) -> bytes:
        body = bytearray()
        chunks, checks, trailers = self.body(call)
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_SMALL_BODY:
                raise S3Error("MaxMessageLengthExceeded", 400, "Your request was too big.")
        checks.update(bytes(body))
        checks.finish(trailers() if trailers is not None else None)
        return bytes(body)


LIST_PARAMETERS = {
    "prefix",
    "delimiter",
    "marker",
    "max-keys",
    "encoding-type",
    "list-type",
    "continuation-token",
    "start-after",
    "fetch-owner",
    "x-id",
}


def _xml(body: bytes, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status_code=200, media_type="application/xml", headers=dict(headers or {}))


def _title(name: str) -> str:
    if name.startswith("x-amz-meta-"):
        return name
    return "-".join(part.capitalize() for part in name.split("-"))


def _copy_source(value: str) -> tuple[str, str]:
    source = urllib.parse.unquote(value.split("?", 1)[0]).lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise S3Error(
            "InvalidArgument", 400, "Copy Source must mention the source bucket and key: sourcebucket/sourcekey"
        )
    return bucket, names.validate_key(key)
