"""The path and trustless gateway: ``GET``/``HEAD /ipfs/{cid}[/path]``, read only.

Following ipfs/specs path-gateway.md and trustless-gateway.md: UnixFS files
(with single Range requests), directory listings, raw blocks (``?format=raw`` or
``Accept: application/vnd.ipld.raw``) and CAR streams (``?format=car``, with
``dag-scope`` and ``entity-bytes``). Bad input is answered with a 4xx and a
one-line plain-text reason; content the node lacks is fetched from the swarm
block by block as the request descends (when there is a swarm) or is a 404.

File bytes are streamed piece by piece from the store in a worker thread, so
a range costs the blocks under it and the event loop never waits on disk.
"""

from __future__ import annotations

import functools
import html
import io
import logging
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from ..errors import FetchError, MedianodeError
from ..storage import directories
from ..storage.car import encode_header, write_block
from ..storage.cid import CID, DAG_PB, RAW, encode_varint
from ..storage.dagpb import DagPBError
from ..storage.errors import BlockNotFound, CorruptBlock
from ..storage.store import BlockStore
from ..storage.unixfs import NodeType, UnixFSError, decode_unixfs
from .http import (
    HTTPProblem,
    content_disposition,
    etag_matches,
    filename_param,
    parse_cid,
    problem_for,
    problem_response,
)
from .mediatype import SNIFF_BYTES, sniff
from .metrics import Metrics
from .ranges import RangeError, parse_range
from .settings import GatewaySettings
from .spans import can_send_spans, spans_response
from .trustless import EntityBytes, TrustlessParamError, car_blocks

log = logging.getLogger("medianode.gateway")

IMMUTABLE = "public, max-age=29030400, immutable"
RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
CAR_CONTENT_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
MAX_PATH = 4096
MAX_FETCH_ROUNDS = 16  # each round fetches what the last attempt found missing
# Stored content opened as a page runs in an origin of its own (no allow-same-origin): an uploaded HTML
# file cannot read what this origin's pages keep (the console's login in sessionStorage) or call its API
# as them. Scripts, forms and popups still work for a site published on IPFS.
CONTENT_SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals"
FETCH_DEADLINE = 30.0  # seconds a request waits on the swarm before a 504
IPFS_PREFIX = "/ipfs/"
PIECE = 4 * 1024 * 1024  # bytes per trip to the worker thread when streaming
SMALL_BODY = 4 * 1024 * 1024  # responses up to this size are read in one trip and sent whole
DESCRIBED_CACHE = 4096
STREAM_WINDOW = 16 * 1024 * 1024  # bytes of a large response fetched from the swarm at a time
# Accept values that name IPLD response formats we do not produce.
UNSUPPORTED_FORMATS = {
    "application/vnd.ipld.dag-json", "application/vnd.ipld.dag-cbor", "application/json", "application/cbor",
    "application/x-tar", "application/vnd.ipfs.ipns-record",
}  # fmt: skip


@dataclass(frozen=True)
class Resolved:
    root: CID
    path: list[str]
    cids: list[CID]  # root .. terminal
    traversed: list[CID] = field(default_factory=list)  # every block on the way (sharded directories' too)

    @property
    def terminal(self) -> CID:
        return self.cids[-1]

    @property
    def ipfs_path(self) -> str:
        return "/ipfs/" + "/".join([str(self.root), *(urllib.parse.quote(p) for p in self.path)])


def parse_ipfs_path(raw: str) -> tuple[CID, list[str]]:
    """Split ``{cid}/a/b`` into a CID and safe path segments, or raise HTTPProblem(400)."""
    if len(raw) > MAX_PATH:
        raise HTTPProblem(414, f"path longer than {MAX_PATH} characters")
    head, _, rest = raw.partition("/")
    if not head:
        raise HTTPProblem(400, "missing CID after /ipfs/")
    cid = parse_cid(head)
    segments = [s for s in rest.split("/") if s]
    for segment in segments:
        if segment in (".", "..") or "\\" in segment or "\0" in segment:
            raise HTTPProblem(400, f"invalid path segment {segment!r}")
    return cid, segments


def resolve(store: BlockStore, cid: CID, segments: list[str]) -> Resolved:
    try:
        found = directories.resolve(cid, segments, store.get_block)
    except directories.PathError as exc:
        raise HTTPProblem(404, str(exc)) from None
    return Resolved(cid, segments, found.cids, found.traversed)


def choose_format(request: Request) -> str | None:
    """``raw``, ``car`` or None (a deserialized response), from ?format= and Accept."""
    explicit = request.query_params.get("format")
    if explicit is not None:
        if explicit not in ("raw", "car"):
            raise HTTPProblem(400, f"unsupported format {explicit!r} (this gateway serves raw and car)")
        return explicit
    accept = request.headers.get("accept", "")
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media and q > 0:
            ranges.append((q, media.lower(), params))
    ranges.sort(key=lambda r: -r[0])
    for _, media, params in ranges:
        if media == RAW_TYPE:
            return "raw"
        if media == CAR_TYPE:
            for param in params:
                if param.startswith("version=") and param != "version=1":
                    raise HTTPProblem(406, "only CAR version 1 is served")
            return "car"
    if ranges and all(
        media in UNSUPPORTED_FORMATS or media.startswith("application/vnd.ipld.") for _, media, _ in ranges
    ):
        raise HTTPProblem(406, f"none of the accepted types can be served: {accept[:200]}")
    return None


@dataclass(frozen=True)
class Described:
    """What the gateway keeps in memory about a CID it served: content never changes under a CID."""

    node_type: NodeType
    size: int
    head: bytes  # the first bytes of a file, for its Content-Type
    complete: bool = True  # every block of the file is stored


class Gateway:
    def __init__(self, store: BlockStore, settings: GatewaySettings, metrics: Metrics, swarm: Any = None) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.swarm = swarm  # a node.swarm.node.Swarm, or None: serve only what is stored
        self._described: OrderedDict[CID, Described] = OrderedDict()

    async def run_sync(self, func: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(func, *args)

    async def ipfs(self, request: Request, raw_path: str) -> Response:
        for _ in range(MAX_FETCH_ROUNDS):
            try:
                return await self._ipfs(request, raw_path)
            except BlockNotFound as exc:
                if self.swarm is None or not isinstance(exc.cid, CID):
                    return problem_response(HTTPProblem(404, str(exc)))
                # Just that block: the next attempt descends one level further, so a seek into a
                # file (or a path into a directory) costs the nodes on its way, not the whole DAG.
                problem = await self._fetch_from_swarm(self.swarm.fetch_block, exc.cid)
                if problem is not None:
                    return problem_response(problem)
            except HTTPProblem as exc:
                return problem_response(exc)
            except CorruptBlock as exc:
                log.warning("corrupt block", extra={"fields": {"cid": str(exc.cid)}})
                return problem_response(HTTPProblem(502, f"{exc}; it has been quarantined"))
            except (UnixFSError, DagPBError) as exc:
                if _names_identity(raw_path):  # the client wrote these bytes into the CID itself
                    return problem_response(HTTPProblem(400, f"the identity CID's bytes are not valid UnixFS: {exc}"))
                # The DAG itself lies (sizes, shards, depth): nothing to retry, say which block.
                return problem_response(HTTPProblem(422, f"not a valid UnixFS DAG: {exc}"))
            except MedianodeError as exc:  # the node's own errors answer with their status hint
                return problem_response(problem_for(exc))
        return problem_response(HTTPProblem(504, "the swarm kept missing blocks", {"Retry-After": "10"}))

    async def _fetch_from_swarm(self, fetch: Any, *args: Any) -> HTTPProblem | None:
        """Run a swarm fetch under the gateway's deadline; a problem to answer with if it fails."""
        try:
            with trio.fail_after(FETCH_DEADLINE):
                await fetch(*args)
        except (FetchError, trio.TooSlowError) as exc:
            reason = str(exc) or f"no provider answered within {FETCH_DEADLINE:.0f} s"
            return HTTPProblem(504, f"not stored here and not fetched from the swarm: {reason}", {"Retry-After": "10"})
        return None

    async def _ipfs(self, request: Request, raw_path: str) -> Response:
        cid, segments = parse_ipfs_path(raw_path)
        fmt = choose_format(request)
        if segments:
            resolved: Resolved = await self.run_sync(resolve, self.store, cid, segments)
        else:
            resolved = Resolved(cid, [], [cid], [cid])
        if self.store.any_withheld():  # private S3 objects exist: is this one of them?
            withheld = await self.run_sync(lambda: next(filter(self.store.is_withheld, resolved.traversed), None))
            if withheld is not None:
                raise HTTPProblem(410, f"{withheld} is not public here")
        common = {
            "X-Ipfs-Path": resolved.ipfs_path,
            "X-Ipfs-Roots": ",".join(str(c) for c in resolved.cids),
            "Cache-Control": IMMUTABLE,
            "Content-Security-Policy": CONTENT_SANDBOX,
        }
        if fmt == "raw":
            return await self._raw(request, resolved, common)
        if fmt == "car":
            return await self._car(request, resolved, common)
        return await self._deserialized(request, resolved, common)

    async def _raw(self, request: Request, resolved: Resolved, headers: dict[str, str]) -> Response:
        cid = resolved.terminal
        etag = f'"{cid}.raw"'
        headers = {**headers, "ETag": etag, "X-Content-Type-Options": "nosniff", "Vary": "Accept"}
        headers["Content-Disposition"] = content_disposition("attachment", filename_param(request) or f"{cid}.bin")
        if etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        block: bytes = await self.run_sync(self.store.get_block, cid)
        self.metrics.bytes_served.inc(len(block) if request.method == "GET" else 0)
        body = b"" if request.method == "HEAD" else block
        headers["Content-Length"] = str(len(block))
        return Response(body, headers=headers, media_type=RAW_TYPE)

    async def _car(self, request: Request, resolved: Resolved, headers: dict[str, str]) -> Response:
        params = request.query_params
        scope = params.get("dag-scope", "all")
        try:
            entity_bytes = EntityBytes.parse(params["entity-bytes"]) if "entity-bytes" in params else None
            if entity_bytes is not None and scope != "entity":
                raise TrustlessParamError("entity-bytes needs dag-scope=entity")
            blocks = car_blocks(self.store.get_block, resolved.traversed, scope, entity_bytes)
        except TrustlessParamError as exc:
            raise HTTPProblem(400, str(exc)) from None
        etag = f'"{resolved.terminal}.car.{scope}.{params.get("entity-bytes", "")}"'
        headers = {**headers, "ETag": etag, "X-Content-Type-Options": "nosniff", "Vary": "Accept"}
        headers["Content-Disposition"] = content_disposition(
            "attachment", filename_param(request) or f"{resolved.root}.car"
        )
        if etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            return Response(headers=headers, media_type=CAR_CONTENT_TYPE)
        if self.swarm is not None and scope != "block":
            # A CAR is verified as a whole by the client: fetch what is missing before the stream starts.
            missing = (await self.run_sync(self.store.dag_counts, resolved.terminal))[1]
            if missing:
                problem = await self._fetch_from_swarm(self.swarm.fetch_dag, resolved.terminal)
                if problem is not None:
                    raise problem
        # The first block is fetched before answering, so a missing root is a 404, not a broken stream.
        first = await self.run_sync(next, blocks, None)
        return StreamingResponse(
            self._car_stream(resolved.root, first, blocks), headers=headers, media_type=CAR_CONTENT_TYPE
        )

    async def _car_stream(
        self, root: CID, first: tuple[CID, bytes] | None, rest: Iterator[tuple[CID, bytes]]
    ) -> AsyncIterator[bytes]:
        """The CAR body, many blocks per trip to the worker thread. A block that cannot be read or a
        DAG found to lie part way through ends the body with an exception, never cleanly: the server
        then drops the connection without the final chunk, so the client sees an incomplete CAR
        rather than taking a truncated one for the whole (the status was sent long before)."""
        header = encode_header([root])
        yield encode_varint(len(header)) + header
        if first is None:
            return
        pending: list[tuple[CID, bytes]] = [first]
        while True:
            piece, failure, done = await self.run_sync(_car_batch, pending, rest)
            pending = []
            if piece:
                self.metrics.bytes_served.inc(len(piece))
                yield piece
            if failure is not None:
                log.warning("CAR stream cut", extra={"fields": {"root": str(root), "error": str(failure)}})
                raise failure
            if done:
                return

    async def _deserialized(self, request: Request, resolved: Resolved, headers: dict[str, str]) -> Response:
        cid = resolved.terminal
        if cid.codec not in (RAW, DAG_PB):
            raise HTTPProblem(406, f"{cid} is {cid.codec_name}: ask for ?format=raw or ?format=car")
        facts = self._described.get(cid)
        if facts is None:
            facts = await self.run_sync(self._describe, cid)
            if not facts.complete and facts.node_type in (NodeType.FILE, NodeType.RAW):
                # Still arriving from the swarm: its first bytes tell the Content-Type.
                problem = await self._fetch_from_swarm(self.swarm.fetch_range, cid, 0, SNIFF_BYTES)
                if problem is not None:
                    raise problem
                head = await self.run_sync(lambda: b"".join(self.store.read_range(cid, 0, SNIFF_BYTES)))
                facts = replace(facts, head=head)
            else:
                self._described[cid] = facts
                if len(self._described) > DESCRIBED_CACHE:
                    self._described.popitem(last=False)
        if facts.node_type in (NodeType.DIRECTORY, NodeType.HAMT_SHARD):
            return await self._directory(request, resolved, headers)
        if facts.node_type not in (NodeType.FILE, NodeType.RAW):
            raise HTTPProblem(406, f"{cid} is a UnixFS {facts.node_type.name.lower()}: ask for ?format=raw")
        return await self._file(request, resolved, headers, facts)

    def _describe(self, cid: CID) -> Described:
        """What a CID is, and for a file its size and first bytes, in one trip to the worker thread."""
        node_type = NodeType.RAW
        if cid.codec == DAG_PB:
            node_type = decode_unixfs(self.store.get_block(cid))[1].type
            if node_type not in (NodeType.FILE, NodeType.RAW):
                return Described(node_type, 0, b"")
        size = self.store.file_size(cid)
        complete = self.store.dag_counts(cid)[1] == 0
        if not complete and self.swarm is None:
            raise BlockNotFound(cid)
        head = b"".join(self.store.read_range(cid, 0, SNIFF_BYTES)) if complete else b""
        return Described(node_type, size, head, complete)

    def _read_small(self, cid: CID, root: CID, start: int, length: int) -> bytes:
        self.store.touch(root)
        return b"".join(self.store.read_range(cid, start, length))

    async def _file(self, request: Request, resolved: Resolved, headers: dict[str, str], facts: Described) -> Response:
        cid = resolved.terminal
        etag = f'"{cid}"'
        name = filename_param(request)
        size = facts.size
        media_type = sniff(facts.head, name or (resolved.path[-1] if resolved.path else None))
        headers = {**headers, "ETag": etag, "Accept-Ranges": "bytes"}
        if name is not None:
            kind = "attachment" if request.query_params.get("download") == "true" else "inline"
            headers["Content-Disposition"] = content_disposition(kind, name)
        if etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        try:
            byte_range = parse_range(request.headers.get("range"), size)
        except RangeError as exc:
            extra = {"Content-Range": f"bytes */{size}"} if exc.status == 416 else {}
            raise HTTPProblem(exc.status, exc.message, extra) from None
        status, start, length = 200, 0, size
        if byte_range is not None:
            status, start, length = 206, byte_range.start, byte_range.length
            headers["Content-Range"] = byte_range.content_range(size)
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=media_type)
        partial = self.swarm is not None and not facts.complete
        if partial:
            # Blocks under the range first, then the rest of the file in the background.
            problem = await self._fetch_from_swarm(self.swarm.fetch_range, cid, start, min(length, SMALL_BODY))
            if problem is not None:
                raise problem
            if size <= self.settings.cache_whole_max:
                self.swarm.fetch_in_background(cid)
            elif self.settings.read_ahead and start + length < size:
                self.swarm.fetch_in_background(cid, start + length, self.settings.read_ahead)
        if not partial and can_send_spans(request.scope, length):
            # Runs of pack bytes go from the page cache to the socket (node/gateway/zerocopy.py); the
            # first batch is planned here, so a block that cannot be read is still a status, not a cut.
            touch = functools.partial(self.store.touch, resolved.root)
            stamped = not self.store.touch_due(resolved.root)  # else the stamp is due, on the planning thread
            return await spans_response(self.store, cid, start, length, status, headers, media_type,
                                        self.metrics.bytes_served, stamped, touch)  # fmt: skip
        if length <= SMALL_BODY:
            # One trip to the worker thread and a plain response: what a player's seek costs.
            body = await self.run_sync(self._read_small, cid, resolved.root, start, length)
            self.metrics.bytes_served.inc(len(body))
            return Response(body, status_code=status, headers=headers, media_type=media_type)
        await self.run_sync(self.store.touch, resolved.root)
        return StreamingResponse(
            self._bytes(cid, start, length, partial), status_code=status, headers=headers, media_type=media_type
        )

    async def _bytes(self, cid: CID, start: int, length: int, partial: bool) -> AsyncIterator[bytes]:
        """The range in windows; for a file still arriving from the swarm, each window is fetched
        (its blocks, in parallel) just before it is sent, so bytes flow as they arrive."""
        end = start + length
        position = start
        while position < end:
            window = min(STREAM_WINDOW, end - position)
            if partial:
                problem = await self._fetch_from_swarm(self.swarm.fetch_range, cid, position, window)
                if problem is not None:
                    raise RuntimeError(problem.reason)  # headers are sent: all that is left is to cut the body
            pieces = self.store.read_range(cid, position, window, piece_size=PIECE)
            while (piece := await self.run_sync(next, pieces, None)) is not None:
                self.metrics.bytes_served.inc(len(piece))
                yield piece
            position += window

    async def _directory(self, request: Request, resolved: Resolved, headers: dict[str, str]) -> Response:
        path = request.url.path
        if not path.endswith("/"):
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(urllib.parse.quote(path) + "/" + query, status_code=301, headers=headers)
        try:
            entries = await self.run_sync(self.store.ls, resolved.terminal)
        except BlockNotFound:
            if self.swarm is None:
                raise
            # A sharded directory only peers have: all its shards at once, not one per round.
            problem = await self._fetch_from_swarm(self.swarm.fetch_directory, resolved.terminal)
            if problem is not None:
                raise problem from None
            entries = await self.run_sync(self.store.ls, resolved.terminal)
        index = next((e for e in entries if e.name == "index.html"), None)
        if index is not None:
            segments, cids = [*resolved.path, "index.html"], [*resolved.cids, index.cid]
            inner = Resolved(resolved.root, segments, cids, [*resolved.traversed, index.cid])
            return await self._file(request, inner, headers, await self.run_sync(self._describe, index.cid))
        etag = f'"DirIndex-{resolved.terminal}"'
        headers = {**headers, "ETag": etag}
        if etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        rows = "\n".join(
            f'<tr><td><a href="{urllib.parse.quote(e.name)}{"/" if e.type == "directory" else ""}">'
            f"{html.escape(e.name)}{'/' if e.type == 'directory' else ''}</a></td>"
            f"<td>{e.size}</td><td><code>{e.cid}</code></td></tr>"
            for e in entries
        )
        title = html.escape(resolved.ipfs_path)
        body = (
            f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title></head><body>"
            f"<h1>Index of {title}</h1><table><tr><th>name</th><th>size</th><th>cid</th></tr>{rows}</table>"
            "</body></html>"
        )
        if request.method == "HEAD":
            return Response(headers=headers, media_type="text/html; charset=utf-8")
        return Response(body, headers=headers, media_type="text/html; charset=utf-8")


CAR_BATCH = 256 * 1024  # bytes of CAR encoded per trip to the worker thread


def _car_batch(
    pending: list[tuple[CID, bytes]], rest: Iterator[tuple[CID, bytes]]
) -> tuple[bytes, Exception | None, bool]:
    """Encode ``pending`` and then blocks from ``rest`` up to about CAR_BATCH bytes: (the bytes,
    what stopped the traversal or None, whether it is over). What was encoded before a failure
    is still sent, so the cut falls exactly where the traversal failed."""
    out = io.BytesIO()
    for item in pending:
        write_block(out, *item)
    while out.tell() < CAR_BATCH:
        try:
            following = next(rest, None)
        except Exception as exc:
            return out.getvalue(), exc, True
        if following is None:
            return out.getvalue(), None, True
        write_block(out, *following)
    return out.getvalue(), None, False


def _names_identity(raw_path: str) -> bool:
    try:
        return parse_ipfs_path(raw_path)[0].is_identity
    except HTTPProblem:
        return False
