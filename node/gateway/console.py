"""The operator's console: the page at ``/`` and the JSON it reads under ``/api/v1/console/``.

The page (``static/console/``: HTML, CSS and JavaScript, no build step, nothing from elsewhere) shows the
node's status, its library of pinned files, charts over time, uploads, and the tokens and S3 keys.

Reading is public, as the gateway is: ``status``, ``library`` and ``history`` need no credential. Every
write (pin, unpin, tokens, S3 keys) needs ``Authorization: Bearer ADMIN_TOKEN``, the token ``serve`` makes
for each run and keeps in ``api.json`` (``node/gateway/admin.py``); uploads go to the tus endpoint of the
write API (``node/gateway/api.py``), which takes the admin token as well as an upload token. No cookie is
ever set, so a page on another site cannot ride a login (CSRF): the console keeps the token in the tab's
``sessionStorage`` and sends it as a header. ``serve`` and ``medianode console`` print a login URL with
the token in its fragment (``/#login=TOKEN``), which browsers send neither to the server nor in
``Referer``; the page moves it to ``sessionStorage`` and drops it from the address bar. Nothing is
trusted for coming from loopback: reverse proxies connect from there too.

Endpoints (JSON; errors are ``{"error": ...}`` with a 4xx):

- ``GET /api/v1/console/whoami``: ``{"role": "anonymous"|"admin"|"uploader"}`` for the credential sent
  (a credential that is not valid is a 401).
- ``GET /api/v1/console/status``: version, uptime, peer ID, swarm addresses, peers, viewers, storage
  (used, quota, pinned, cache, blocks, pins).
- ``GET /api/v1/console/library``: pinned files, newest first, with size, media type, replica holders and
  what viewers took from each other and over HTTP; pins being fetched from the swarm.
- ``GET /api/v1/console/history?span=SECONDS``: the charts' series (``node/gateway/history.py``).
- ``POST /api/v1/console/pins`` ``{"cid", "replicas"}``: pin now if stored whole, else fetch it from the
  swarm in the background and pin it then (202; the library lists it as pending, or failed and why);
  ``DELETE /api/v1/console/pins/{cid}``: unpin; ``DELETE /api/v1/console/pending/{cid}``: forget a failure.
- ``GET|POST /api/v1/console/tokens``, ``DELETE /api/v1/console/tokens/{name}``: upload tokens.
- ``GET|POST /api/v1/console/s3/keys``, ``DELETE /api/v1/console/s3/keys/{name}``: S3 access keys.

A created token's or key's secret is in the answer to its creation and nowhere else.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..errors import MedianodeError
from ..storage.cid import CID
from ..storage.errors import BlockNotFound, PinRefused, StoreError
from ..storage.layout import NotAFileError
from ..storage.store import BlockStore
from ..storage.unixfs import UnixFSError
from ..swarm.replication import ReplicaBook
from ..swarm.viewers.hub import ViewerHub
from .history import History
from .http import HTTPProblem, json_problems, parse_cid
from .mediatype import SNIFF_BYTES, sniff
from .metrics import Metrics
from .settings import GatewaySettings
from .tokens import TokenError, TokenInfo, TokenStore

log = logging.getLogger("medianode.console")

STATIC = Path(__file__).parent / "static" / "console"
SAMPLE_EVERY = 5.0  # seconds between samples of the counters
PINNED_EVERY = 60.0  # seconds between sums of the pinned bytes (a query over the pins' DAGs) while nothing changes
LIBRARY_LENGTH = 500
MAX_BODY = 16 * 1024
PENDING_KEPT = 50  # pins being fetched (or failed) the library remembers
CONSOLE_ACCOUNT = "console"  # the upload token name uploads with the admin token are counted under
# The page loads nothing from elsewhere and runs no inline script; no site may frame it.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_STORE = {"Cache-Control": "no-store"}


# -- credentials --------------------------------------------------------------------------------------


def bearer(request: Request) -> str | None:
    """The bearer token sent, or None when no Authorization header came."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def is_admin_token(request: Request, given: str) -> bool:
    """Whether ``given`` is this run's admin token (the app's ``state.admin_token`` holder, filled once
    serve listens)."""
    app = request.scope.get("app")
    holder = getattr(getattr(app, "state", None), "admin_token", None)
    expected = holder.get("token", "") if isinstance(holder, dict) else ""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def console_account(tokens: TokenStore) -> TokenInfo:
    """The upload account uploads with the admin token are counted under, made when first needed (its
    token is never shown: only the admin token uploads as it)."""
    for info in tokens.list():
        if info.name == CONSOLE_ACCOUNT:
            return info
    with contextlib.suppress(TokenError):  # made meanwhile by another request
        tokens.create(CONSOLE_ACCOUNT)
    return next(info for info in tokens.list() if info.name == CONSOLE_ACCOUNT)


def admin_upload_account(request: Request, tokens: TokenStore, given: str) -> TokenInfo | None:
    """For the write API's ``authenticate``: the console's upload account when ``given`` is the admin
    token, else None."""
    return console_account(tokens) if given and is_admin_token(request, given) else None


def require_admin(request: Request, tokens: TokenStore | None) -> None:
    given = bearer(request)
    if given and is_admin_token(request, given):
        return
    if given and tokens is not None and tokens.authenticate(given) is not None:
        raise HTTPProblem(403, "an upload token can upload, nothing more: log in with the admin token")
    raise HTTPProblem(401, "log in with the admin token (medianode console prints a login link)",
                      {"WWW-Authenticate": 'Bearer realm="medianode"'})  # fmt: skip


# -- the console --------------------------------------------------------------------------------------


class Console:
    """The console's routes, its history of counters and the task that samples them."""

    def __init__(
        self,
        store: BlockStore,
        settings: GatewaySettings,
        metrics: Metrics,
        hub: ViewerHub,
        tokens: TokenStore | None = None,
        swarm: Any = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.hub = hub
        self.tokens = tokens
        self.swarm = swarm
        self.history = History()
        self.started = time.time()
        self._started_mono = time.monotonic()
        self._facts: dict[CID, dict[str, Any]] = {}
        self._pending: dict[str, dict[str, Any]] = {}  # CID -> {"state": "fetching"|"failed", ...}
        self._pinned_bytes = 0
        self.book = ReplicaBook(settings.data_dir / "replication.sqlite")
        self._facts_lock = threading.Lock()  # library requests run on worker threads, several at once

    # -- sampling ---------------------------------------------------------------------------------------

    def counters(self) -> dict[str, float]:
        """The counters the charts show as rates; read on the event loop's thread (the hub is not
        thread-safe)."""
        counters = {
            "http": _counter_value(self.metrics.bytes_served),
            "viewers_peers": float(self.hub.overall.bytes_from_peers),
            "viewers_http": float(self.hub.overall.bytes_from_http),
        }
        if self.swarm is not None:
            counters["bitswap"] = float(self.swarm.exchange.bytes_served)
            counters["bitswap_fetched"] = float(self.swarm.exchange.bytes_fetched)
        return counters

    def sample_now(self, storage_used: int) -> None:
        gauges: dict[str, float] = {
            "used": float(storage_used),
            "pinned": float(self._pinned_bytes),
            "viewers": float(self.hub.viewer_count()),
        }
        if self.swarm is not None:
            gauges["peers"] = float(len(self.swarm.peers()))
        # Wall time kept monotonic: a clock stepped back does not stop the charts.
        self.history.record(self.started + (time.monotonic() - self._started_mono), self.counters(), gauges)

    async def sample_history(self, stop: trio.Event, every: float = SAMPLE_EVERY) -> None:
        """Sample the counters every ``every`` seconds until ``stop`` (serve runs this in its nursery). The
        pinned bytes (a query over every pin's DAG) are summed again when the bytes on disk or the pins
        changed, else every ``PINNED_EVERY`` seconds."""
        pinned_read, seen = -math.inf, (-1, -1)
        while not stop.is_set():
            used, pins = await trio.to_thread.run_sync(self._usage_and_pins)
            if (used, pins) != seen or time.monotonic() - pinned_read >= PINNED_EVERY:
                self._pinned_bytes = await trio.to_thread.run_sync(self.store.pinned_bytes)
                pinned_read, seen = time.monotonic(), (used, pins)
            self.sample_now(used)
            with trio.move_on_after(every):
                await stop.wait()

    def _usage_and_pins(self) -> tuple[int, int]:
        return self.store.usage(), len(self.store.pins())

    # -- routes -----------------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page, methods=["GET", "HEAD"]),
            Mount("/console", with_headers(StaticFiles(directory=STATIC), PAGE_HEADERS), name="console"),
            Route("/api/v1/console/whoami", json_problems(self.whoami), methods=["GET"]),
            Route("/api/v1/console/status", json_problems(self.status), methods=["GET"]),
            Route("/api/v1/console/library", json_problems(self.library), methods=["GET"]),
            Route("/api/v1/console/history", json_problems(self.series), methods=["GET"]),
            Route("/api/v1/console/pins", json_problems(self.pin), methods=["POST"]),
            Route("/api/v1/console/pins/{cid}", json_problems(self.unpin), methods=["DELETE"]),
            Route("/api/v1/console/pending/{cid}", json_problems(self.forget_pending), methods=["DELETE"]),
            Route("/api/v1/console/tokens", json_problems(self.token_list), methods=["GET"]),
            Route("/api/v1/console/tokens", json_problems(self.token_create), methods=["POST"]),
            Route("/api/v1/console/tokens/{name}", json_problems(self.token_revoke), methods=["DELETE"]),
            Route("/api/v1/console/s3/keys", json_problems(self.key_list), methods=["GET"]),
            Route("/api/v1/console/s3/keys", json_problems(self.key_create), methods=["POST"]),
            Route("/api/v1/console/s3/keys/{name}", json_problems(self.key_revoke), methods=["DELETE"]),
        ]

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def whoami(self, request: Request) -> Response:
        given = bearer(request)
        if given is None:
            return JSONResponse({"role": "anonymous"}, headers=NO_STORE)
        if given and is_admin_token(request, given):
            return JSONResponse({"role": "admin"}, headers=NO_STORE)
        info = self.tokens.authenticate(given) if given and self.tokens is not None else None
        if info is None:
            raise HTTPProblem(401, "this token is not valid here (the admin token changes each time serve starts)",
                              {"WWW-Authenticate": 'Bearer realm="medianode"'})  # fmt: skip
        return JSONResponse({"role": "uploader", "name": info.name, "limit": info.limit, "used": info.used},
                            headers=NO_STORE)  # fmt: skip

    async def status(self, request: Request) -> Response:
        stat = await trio.to_thread.run_sync(self.store.repo_stat)
        swarm = self.swarm
        body: dict[str, Any] = {
            "version": __version__,
            "started": self.started,
            "uptime": time.monotonic() - self._started_mono,
            "gateway": self.settings.public_url,
            "storage": {
                "used": stat.size,
                "quota": stat.quota,
                "pinned": stat.pinned_bytes,
                "cache": max(0, stat.size - stat.pinned_bytes),
                "blocks": stat.blocks,
                "pins": stat.pinned,
                "packs": stat.packs,
            },
            "viewers": self.hub.viewer_count(),
            "peer_id": swarm.peer_id if swarm is not None else None,
            "swarm_addrs": swarm.addrs() if swarm is not None else [],
            "peers": len(swarm.peers()) if swarm is not None else 0,
            "dht": swarm is not None and swarm.routing is not None,
        }
        return JSONResponse(body, headers=NO_STORE)

    async def library(self, request: Request) -> Response:
        items = await trio.to_thread.run_sync(self._library_items)
        now = trio.current_time()
        for item in items:  # the hub's counts, on the event loop's thread
            item["viewers"] = self.hub.stats(CID.parse(item["cid"]), now)
        pending = [{"cid": cid, **state} for cid, state in self._pending.items()]
        return JSONResponse({"items": items, "pending": pending[::-1]}, headers=NO_STORE)

    def _library_items(self) -> list[dict[str, Any]]:
        pins = sorted(self.store.pins(), key=lambda pin: pin[2], reverse=True)[:LIBRARY_LENGTH]
        wanted = dict(self.book.wanted())
        items = []
        for cid, name, pinned_at in pins:
            facts = self._cid_facts(cid, name)
            items.append({"cid": str(cid), "name": name, "pinned_at": pinned_at, **facts,
                          "replicas_wanted": wanted.get(cid, 0), "replicas": self.book.holders(cid)})  # fmt: skip
        kept = {cid for cid, _, _ in pins}
        with self._facts_lock:
            for forgotten in self._facts.keys() - kept:
                del self._facts[forgotten]
        return items

    def _cid_facts(self, cid: CID, name: str | None) -> dict[str, Any]:
        """What a CID is (kind, size, media type): it never changes, so it is remembered."""
        with self._facts_lock:
            facts = self._facts.get(cid)
        if facts is None:
            try:
                size = self.store.file_size(cid)
                head = b"".join(self.store.read_range(cid, 0, min(size, SNIFF_BYTES))) if size else b""
                facts = {"kind": "file", "size": size, "media_type": sniff(head, name)}
            except NotAFileError:
                facts = {"kind": "directory", "size": self.store.stat(cid).size, "media_type": None}
            except (UnixFSError, StoreError) as exc:
                facts = {"kind": "unknown", "size": None, "media_type": None, "problem": str(exc)}
            with self._facts_lock:
                self._facts[cid] = facts
        return dict(facts)

    async def series(self, request: Request) -> Response:
        text = request.query_params.get("span", "3600")
        try:
            span = float(text)
        except ValueError:
            raise HTTPProblem(400, f"span must be a number of seconds, got {text[:40]!r}") from None
        if not 60 <= span <= self.history.longest:
            raise HTTPProblem(400, f"span must be between 60 and {self.history.longest:.0f} seconds")
        return JSONResponse(self.history.series(span), headers=NO_STORE)

    # -- pins ---------------------------------------------------------------------------------------------

    async def pin(self, request: Request) -> Response:
        require_admin(request, self.tokens)
        body = await json_body(request)
        if not isinstance(body.get("cid"), str):
            raise HTTPProblem(400, 'body must be {"cid": "bafy...", "replicas": N}')
        text = body["cid"].strip().removeprefix("/ipfs/").rstrip("/")
        if "/" in text:
            raise HTTPProblem(400, "pin a CID, not a path under one")
        cid = parse_cid(text)
        replicas = body.get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= 64:
            raise HTTPProblem(400, "replicas must be a whole number from 0 to 64")
        try:
            await trio.to_thread.run_sync(self.store.pin_add, cid)
        except (BlockNotFound, PinRefused):
            if self.swarm is None:
                raise HTTPProblem(409, f"{cid} is not stored whole here, and this node has no swarm") from None
            if self._pending.get(str(cid), {}).get("state") != "fetching":
                self._remember_pending(str(cid), {"state": "fetching", "blocks": 0, "since": time.time()})
                self.swarm.start_background(lambda: self._fetch_and_pin(cid, replicas))
            return JSONResponse({"cid": str(cid), "pinned": False, "fetching": True}, status_code=202)
        await trio.to_thread.run_sync(self.book.want, cid, replicas)
        return JSONResponse({"cid": str(cid), "pinned": True, "replicas_wanted": replicas})

    def _remember_pending(self, cid: str, state: dict[str, Any]) -> None:
        self._pending.pop(cid, None)
        self._pending[cid] = state
        while len(self._pending) > PENDING_KEPT:
            del self._pending[next(iter(self._pending))]

    async def _fetch_and_pin(self, cid: CID, replicas: int) -> None:
        state = self._pending[str(cid)]

        def fetched(_block: CID, size: int) -> None:
            state["blocks"] += 1
            state["bytes"] = state.get("bytes", 0) + size

        try:
            await self.swarm.fetch_dag(cid, on_block=fetched)
            await trio.to_thread.run_sync(self.store.pin_add, cid)
            await trio.to_thread.run_sync(self.book.want, cid, replicas)
        except (MedianodeError, trio.TooSlowError, OSError) as exc:
            log.info("console pin failed", extra={"fields": {"cid": str(cid), "error": str(exc)}})
            self._remember_pending(str(cid), {**state, "state": "failed", "error": str(exc) or type(exc).__name__})
            return
        self._pending.pop(str(cid), None)
        log.info("console pinned from the swarm", extra={"fields": {"cid": str(cid), "blocks": state["blocks"]}})

    async def unpin(self, request: Request) -> Response:
        require_admin(request, self.tokens)
        cid = parse_cid(request.path_params["cid"])
        await trio.to_thread.run_sync(self.store.pin_rm, cid)
        await trio.to_thread.run_sync(self.book.want, cid, 0)
        return JSONResponse({"cid": str(cid), "pinned": False})

    async def forget_pending(self, request: Request) -> Response:
        require_admin(request, self.tokens)
        cid = str(parse_cid(request.path_params["cid"]))
        if self._pending.get(cid, {}).get("state") != "failed":
            raise HTTPProblem(404, f"no failed pin of {cid} to forget")
        del self._pending[cid]
        return Response(status_code=204)

    # -- upload tokens --------------------------------------------------------------------------------

    def _token_store(self) -> TokenStore:
        if self.tokens is None:
            raise HTTPProblem(404, "this node has no write API")
        return self.tokens

    async def token_list(self, request: Request) -> Response:
        require_admin(request, self.tokens)
        listed = await trio.to_thread.run_sync(self._token_store().list)
        return JSONResponse({"tokens": [{"name": t.name, "created": t.created, "limit": t.limit, "used": t.used,
                                         "console": t.name == CONSOLE_ACCOUNT} for t in listed]},
                            headers=NO_STORE)  # fmt: skip

    async def token_create(self, request: Request) -> Response:
        require_admin(request, self.tokens)
        body = await json_body(request)
        name, limit = _name_and_limit(body)
        token = await trio.to_thread.run_sync(self._token_store().create, name, limit)
        return JSONResponse({"name": name, "limit": limit, "token": token}, status_code=201, headers=NO_STORE)

    async def token_revoke(self, request: Request) -> Response:
        require_admin(request, self.tokens)
        name = request.path_params["name"]
        tokens = self._token_store()
        if name not in {t.name for t in await trio.to_thread.run_sync(tokens.list)}:
            raise HTTPProblem(404, f"no token named {name!r}")
        await trio.to_thread.run_sync(tokens.revoke, name)
        return JSONResponse({"name": name, "revoked": True})

    # -- S3 keys ------------------------------------------------------------------------------------------

    def _with_catalog(self, work: Callable[[Any], Any]) -> Any:
        """``work(catalog)`` with the S3 catalogue opened for it (as the CLI does: serve sees it at once)."""
        from .s3.catalog import Catalog

        catalog = Catalog(self.settings.data_dir / "s3.sqlite")
        try:
            return work(catalog)
        finally:
            catalog.close()

    async def key_list(self, request: Request) -> Response:
        require_admin(request, self.tokens)

        def listed(catalog: Any) -> list[dict[str, Any]]:
            return [{"name": k.name, "access_key_id": k.access_key_id, "limit": k.limit, "created": k.created,
                     "used": catalog.used_bytes(k.access_key_id),
                     "buckets": [b.name for b in catalog.buckets(k.access_key_id)]}
                    for k in catalog.access_keys()]  # fmt: skip

        keys = await trio.to_thread.run_sync(self._with_catalog, listed)
        return JSONResponse({"keys": keys}, headers=NO_STORE)

    async def key_create(self, request: Request) -> Response:
        require_admin(request, self.tokens)
        body = await json_body(request)
        name, limit = _name_and_limit(body)
        buckets = body.get("buckets", [])
        if not isinstance(buckets, list) or not all(isinstance(b, str) for b in buckets) or len(buckets) > 16:
            raise HTTPProblem(400, "buckets must be a list of at most 16 bucket names")

        def create(catalog: Any) -> dict[str, Any]:
            from .s3.errors import S3Error
            from .s3.names import validate_bucket_name

            for bucket in buckets:
                try:
                    validate_bucket_name(bucket)
                except S3Error as exc:
                    raise HTTPProblem(400, f"{bucket!r}: {exc.message}") from None
                if catalog.bucket(bucket) is not None:
                    raise HTTPProblem(409, f"bucket {bucket!r} exists already")
            key = catalog.create_key(name, limit)
            for bucket in buckets:
                catalog.create_bucket(bucket, key.access_key_id)
            return {"name": key.name, "access_key_id": key.access_key_id, "secret_access_key": key.secret,
                    "limit": key.limit, "buckets": buckets}  # fmt: skip

        created = await trio.to_thread.run_sync(self._with_catalog, create)
        return JSONResponse(created, status_code=201, headers=NO_STORE)

    async def key_revoke(self, request: Request) -> Response:
        require_admin(request, self.tokens)
        name = request.path_params["name"]

        def revoke(catalog: Any) -> Any:
            if not any(name in (k.name, k.access_key_id) for k in catalog.access_keys()):
                raise HTTPProblem(404, f"no S3 key named {name!r}")
            return catalog.revoke_key(name)

        key = await trio.to_thread.run_sync(self._with_catalog, revoke)
        return JSONResponse({"name": key.name, "access_key_id": key.access_key_id, "revoked": True})


def with_headers(app: Any, headers: dict[str, str]) -> Any:
    """``app`` with ``headers`` added to each response it starts (the console's files get the page's policy,
    so ``/console/index.html`` cannot be framed either)."""
    extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": kept + extra}
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


async def json_body(request: Request) -> dict[str, Any]:
    """A small JSON object from the request body, or a 400 saying what is wrong with it."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise HTTPProblem(413, f"the body is over {MAX_BODY} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise HTTPProblem(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPProblem(400, "the body must be a JSON object")
    return body


def _name_and_limit(body: dict[str, Any]) -> tuple[str, int]:
    from ..config import parse_size

    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise HTTPProblem(400, "a name is required, e.g. the instance's host name")
    limit = body.get("limit") or 0
    if isinstance(limit, bool) or not isinstance(limit, (int, str)):
        raise HTTPProblem(400, "limit must be a size such as 50GiB, or a number of bytes")
    return name.strip(), parse_size(limit.strip() if isinstance(limit, str) else limit)


def _counter_value(counter: Any) -> float:
    """A prometheus_client Counter's total, through its public ``collect``."""
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0
