"""A serving worker: one more process answering the gateway's read side on the owner's listening socket.

Participants. The owner is ``medianode serve``: it alone writes to the store,
runs the libp2p swarm, the viewer hub, uploads, S3 and admin. With
``serve --workers N`` (N of 2 or more) it starts N workers
(node/gateway/workers.py), each this module run as ``python -m
node.gateway.worker``, all accepting connections on the one gateway socket
the owner bound and passed down (the kernel hands each new connection to
whichever worker accepts first, so a busy one takes fewer). The owner no
longer accepts there itself: its event loop, busy with the swarm or an
upload, never holds up a read.

Goals. ``GET``/``HEAD /ipfs/...``, the hot path, is answered in the worker,
reading the store directly: SQLite in WAL mode gives each read a consistent
index while the owner writes, and a pack file is never changed once
written (gc writes new packs and the store retries a read whose pack went
away; tests/integration/test_workers.py reads through a worker while the
owner adds, pins, collects and compacts). So is an S3 ``GET``/``HEAD`` of an
object (public or signed) when the S3 listener is on: the workers accept on
its socket too, and read the S3 catalog (SQLite, WAL) as they read the
store. Everything else is the owner's and is passed through to it unchanged:
from the gateway's socket to the owner's channel, from the S3 listener's to
the owner's S3 app on a Unix socket of its own (``owner-s3.sock``, beside
the channel's).

Non-goals. Workers never write the store or the S3 catalog, never speak
libp2p, never hold viewer state.

The local channel: HTTP/1.1 over the owner's Unix socket (a private
directory of its own, mode 0700), one connection pool per worker.
- Pass-through: any request (and WebSocket) the worker does not answer goes
  there as it came, plus ``X-Medianode-Client: HOST:PORT`` (the client's
  address; the owner believes it only on this socket), and the answer comes
  back as it is.
- ``POST /internal/v1/fetch`` ``{"op": "block"|"dag"|"range"|"directory"|
  "background", "cid", "offset", "length"}``: the worker's gateway met a block
  the store lacks; the owner fetches it from the swarm into the store and
  answers 204 (then the worker reads it), or 504 ``{"error"}``.
- ``POST /internal/v1/metrics`` ``{"requests": [[route, method, status, n]],
  "bytes_served": n}``: what this worker answered since its last report, every
  ``METRICS_EVERY`` seconds, so the owner's ``/metrics`` is the sum of all.

When the owner cannot be reached (it is starting or restarting), a request
waits for it, up to ``OWNER_WAIT`` seconds, then is answered 503 with
Retry-After: never a 500. A worker ends when the owner does (its stdin, a pipe from
the owner, ends) and on SIGTERM, finishing its requests within the graceful bound.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio
import trio_websocket
from starlette.requests import Request

from ..errors import FetchError
from ..storage.cid import CID
from .http import HTTPProblem, answer_lifespan, problem_response
from .metrics import ASGIApp, Metrics
from .path_gateway import IPFS_PREFIX, Gateway

if TYPE_CHECKING:
    from .s3.server import S3App

log = logging.getLogger("medianode.worker")

CLIENT_HEADER = b"x-medianode-client"
INTERNAL_PREFIX = "/internal/v1/"
OWNER_WAIT = 30.0  # seconds a request waits for an owner that does not answer before a 503
METRICS_EVERY = 1.0  # seconds between a worker's reports of what it answered
# Per hop, not passed through (RFC 9110 7.6.1), and what the pass-through sets itself.
HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                         b"upgrade", b"expect", CLIENT_HEADER})  # fmt: skip
# What trio-websocket writes itself in the handshake to the owner.
WEBSOCKET_OWN_HEADERS = HOP_HEADERS | {b"host", b"sec-websocket-key", b"sec-websocket-version", b"content-length",
                                       b"sec-websocket-extensions", b"sec-websocket-protocol"}  # fmt: skip


class OwnerUnavailable(Exception):
    """The owner did not accept a connection within ``OWNER_WAIT`` seconds."""


def client_text(scope: dict[str, Any]) -> str:
    """The client's address as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6), what the owner rebuilds it from."""
    client = scope.get("client") or ("", 0)
    host, port = str(client[0]), int(client[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OwnerLink:
    """The worker's end of the local channel (see the module docstring)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        transport = httpx.AsyncHTTPTransport(uds=socket_path, retries=0)
        # No read bound here: a pass-through download lasts as long as the client reads; the owner's
        # connection bounds (node/gateway/connections.py) cut one that stalls.
        self.client = httpx.AsyncClient(transport=transport, base_url="http://owner",
                                        timeout=httpx.Timeout(None, connect=5.0))  # fmt: skip

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _waiting(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """``attempt()``, again while the owner refuses connections, for up to ``OWNER_WAIT`` seconds."""
        pause = 0.05
        with trio.move_on_after(OWNER_WAIT):
            while True:
                try:
                    return await attempt()
                except (httpx.ConnectError, OSError) as exc:
                    log.debug("owner not answering", extra={"fields": {"error": repr(exc)}})
                    await trio.sleep(pause)
                    pause = min(pause * 2, 1.0)
        raise OwnerUnavailable(f"the serving process did not answer within {OWNER_WAIT:.0f} s")

    async def fetch(self, op: str, cid: CID, offset: int = 0, length: int | None = None) -> None:
        """Have the owner fetch from the swarm into the store; FetchError if the swarm did not deliver."""
        body = {"op": op, "cid": str(cid), "offset": offset, "length": length}
        response = await self._waiting(lambda: self.client.post(INTERNAL_PREFIX + "fetch", json=body))
        if response.status_code != 204:
            try:
                reason = str(response.json().get("error", response.text))
            except ValueError:
                reason = response.text
            raise FetchError(reason)

    async def report(self, counts: dict[str, Any]) -> None:
        await self._waiting(lambda: self.client.post(INTERNAL_PREFIX + "metrics", json=counts))

    async def pass_http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Hand one HTTP request to the owner and its answer back, both streamed."""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_HEADERS]
        headers.append((CLIENT_HEADER, client_text(scope).encode()))
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        gone = trio.Event()

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    raise trio.BrokenResourceError("the client went away mid-request")
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        request = self.client.build_request(scope["method"], "http://owner" + target.decode("latin-1"),
                                            headers=headers, content=body() if has_body else None)  # fmt: skip
        try:
            response = await self._waiting(lambda: self.client.send(request, stream=True))
        except OwnerUnavailable as exc:
            await problem_response(HTTPProblem(503, str(exc), {"Retry-After": "5"}))(scope, receive, send)
            return
        except (httpx.HTTPError, trio.BrokenResourceError) as exc:
            if gone.is_set():
                return  # nobody to answer
            # The owner went away with the request (it is stopping, or was killed): not the client's fault and
            # not a 500; the request may not have been carried out, so the client is told to try again.
            log.warning("owner went away mid-request", extra={"fields": {"error": repr(exc)}})
            gone_away = HTTPProblem(
                503, "the serving process went away while answering; try again", {"Retry-After": "5"}
            )
            await problem_response(gone_away)(scope, receive, send)
            return
        try:
            answer = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_HEADERS]
            await send({"type": "http.response.start", "status": response.status_code, "headers": answer})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as exc:
            # The answer had begun: all the client can be told is that its body ends short (the connection closes).
            log.warning("owner went away mid-answer", extra={"fields": {"error": repr(exc)}})
        finally:
            await response.aclose()

    async def pass_websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Hand one WebSocket to the owner and relay messages both ways until either side closes."""
        if (await receive())["type"] != "websocket.connect":
            return
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in WEBSOCKET_OWN_HEADERS]
        headers.append((CLIENT_HEADER, client_text(scope).encode()))
        try:
            stream = await self._waiting(lambda: trio.open_unix_socket(self.socket_path))
        except OwnerUnavailable:
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        async with trio.open_nursery() as nursery:
            try:
                owner = await trio_websocket.wrap_client_stream(
                    nursery, stream, "owner", target, subprotocols=scope.get("subprotocols") or None,
                    extra_headers=headers, max_message_size=1024 * 1024,
                )  # fmt: skip
            except trio_websocket.HandshakeError:
                await stream.aclose()
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "websocket.accept", "subprotocol": owner.subprotocol})

            async def from_client() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        await owner.aclose(message.get("code", 1000))
                        break
                    if message["type"] == "websocket.receive":
                        data = message.get("text")
                        with contextlib.suppress(trio_websocket.ConnectionClosed):
                            await owner.send_message(data if data is not None else message.get("bytes") or b"")
                nursery.cancel_scope.cancel()

            async def from_owner() -> None:
                try:
                    while True:
                        data = await owner.get_message()
                        key = "text" if isinstance(data, str) else "bytes"
                        await send({"type": "websocket.send", key: data})
                except trio_websocket.ConnectionClosed as closed:
                    code = closed.reason.code if closed.reason and closed.reason.code else 1000
                    with contextlib.suppress(Exception):  # the client may be gone as well
                        await send({"type": "websocket.close", "code": code})
                nursery.cancel_scope.cancel()

            nursery.start_soon(from_client)
            nursery.start_soon(from_owner)


class OwnerSwarm:
    """What the path gateway asks of a swarm (``node.swarm.node.Swarm``'s fetches), done by the owner."""

    def __init__(self, link: OwnerLink, nursery: trio.Nursery) -> None:
        self.link = link
        self.nursery = nursery

    async def fetch_block(self, cid: CID) -> None:
        await self.link.fetch("block", cid)

    async def fetch_dag(self, root: CID) -> None:
        await self.link.fetch("dag", root)

    async def fetch_range(self, root: CID, offset: int, length: int) -> None:
        await self.link.fetch("range", root, offset, length)

    async def fetch_directory(self, cid: CID) -> None:
        await self.link.fetch("directory", cid)

    def fetch_in_background(self, root: CID, offset: int = 0, length: int | None = None) -> None:
        async def ask() -> None:
            with contextlib.suppress(Exception):  # a hint: the request itself has what it needs
                await self.link.fetch("background", root, offset, length)

        self.nursery.start_soon(ask)


def worker_app(gateway: Gateway, link: OwnerLink, metrics: Metrics) -> ASGIApp:
    """``GET``/``HEAD /ipfs/`` from the store here (counted in this worker's metrics); the rest to the owner."""

    async def local(scope: dict[str, Any], receive: Any, send: Any) -> None:
        response = await gateway.ipfs(Request(scope, receive), scope["path"][len(IPFS_PREFIX) :])
        await response(scope, receive, send)

    counted = metrics.wrap(local)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] == "websocket":
            await link.pass_websocket(scope, receive, send)
        elif scope["method"] in ("GET", "HEAD") and scope["path"].startswith(IPFS_PREFIX):
            await counted(scope, receive, send)
        elif scope["path"].startswith(INTERNAL_PREFIX):  # the channel's own requests are not a client's to make
            await problem_response(HTTPProblem(404, "Not Found"))(scope, receive, send)
        else:
            await link.pass_http(scope, receive, send)

    return app


def s3_worker_app(s3: S3App, link: OwnerLink) -> ASGIApp:
    """Object reads (``S3App.reads_an_object``) answered here from the catalog and the store; the rest, with
    every write, to the owner's S3 app."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] != "http":
            return  # S3 has no WebSockets; Hypercorn answers an upgrade the app ignores with a refusal
        elif s3.reads_an_object(scope):
            await s3(scope, receive, send)
        else:
            await link.pass_http(scope, receive, send)

    return app


async def report_metrics(metrics: Metrics, link: OwnerLink) -> None:
    """Every ``METRICS_EVERY`` seconds, what this worker answered since the last report."""
    sent: dict[str, Any] = {"requests": {}, "bytes_served": 0.0}
    while True:
        await trio.sleep(METRICS_EVERY)
        now = metrics.http_counts()
        delta_requests = [[*labels, n - sent["requests"].get(labels, 0.0)] for labels, n in now["requests"].items()
                          if n != sent["requests"].get(labels, 0.0)]  # fmt: skip
        delta_bytes = now["bytes_served"] - sent["bytes_served"]
        if delta_requests or delta_bytes:
            with contextlib.suppress(OwnerUnavailable, httpx.HTTPError):
                await link.report({"requests": delta_requests, "bytes_served": delta_bytes})
                sent = now


async def end_with_owner(stop: trio.Event) -> None:
    """Set ``stop`` when the owner is gone, however it went (kill -9 included): our stdin is a pipe whose
    other end only the owner holds, so it reads as ended then. (``PR_SET_PDEATHSIG`` would fire when the
    thread that started us ends, and trio starts processes from a worker thread.)"""
    with contextlib.suppress(OSError):
        stream = trio.lowlevel.FdStream(os.dup(0))
        async with stream:
            while await stream.receive_some(4096):
                pass
    stop.set()


@dataclass(frozen=True)
class Listeners:
    """The listening sockets a worker inherited, and where it passes on what it does not answer."""

    gateway_fd: int
    owner_socket: str
    s3_fd: int | None = None
    owner_s3_socket: str | None = None


async def run_worker(data_dir: Path, listeners: Listeners, url: str) -> None:
    from ..config import load
    from ..daemon import gateway_hypercorn_config, gateway_settings, hypercorn_config, s3_settings
    from ..storage.store import BlockStore
    from .connections import serve as serve_http

    config = load(data_dir)
    store = BlockStore(config.data_dir / "store", config.store)
    hyper = gateway_hypercorn_config(config.gateway.listen)
    hyper.bind = [f"fd://{listeners.gateway_fd}"]
    link = OwnerLink(listeners.owner_socket)
    links = [link]
    catalog = None
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                stop = trio.Event()
                metrics = Metrics()
                gateway = Gateway(store, gateway_settings(config, url), metrics, OwnerSwarm(link, nursery))
                upkeep = trio.CancelScope()  # signals, reports, the owner watch: ended as soon as we stop

                async def on_signal() -> None:
                    async for _ in signals:
                        stop.set()

                async def keep_up() -> None:
                    with upkeep:
                        async with trio.open_nursery() as tasks:
                            tasks.start_soon(on_signal)
                            tasks.start_soon(report_metrics, metrics, link)
                            tasks.start_soon(end_with_owner, stop)

                nursery.start_soon(keep_up)
                await nursery.start(lambda task_status: serve_http(
                    worker_app(gateway, link, metrics), hyper, bound_bodies=True, shutdown_trigger=stop.wait,
                    task_status=task_status,
                ))  # fmt: skip
                if listeners.s3_fd is not None and listeners.owner_s3_socket is not None:
                    from .s3.catalog import Catalog
                    from .s3.server import S3App

                    catalog = Catalog(config.data_dir / "s3.sqlite")  # the owner made it before starting us
                    s3_link = OwnerLink(listeners.owner_s3_socket)
                    links.append(s3_link)
                    s3_hyper = hypercorn_config(config.s3.listen)
                    s3_hyper.bind = [f"fd://{listeners.s3_fd}"]
                    s3 = s3_worker_app(S3App(store, catalog, s3_settings(config)), s3_link)
                    await nursery.start(lambda task_status: serve_http(  # S3 bounds its bodies' pauses itself
                        s3, s3_hyper, bound_bodies=False, shutdown_trigger=stop.wait, task_status=task_status
                    ))  # fmt: skip
                # What start-up made (modules, the app, caches) lives as long as we do: out of the collector's
                # sight, a full collection no longer walks it, on the loop every request waits on (38-46 ms
                # each, 1-2 every 8 s at 1,200 requests/s before).
                gc.freeze()
                await stop.wait()
                upkeep.cancel()
                nursery.cancel_scope.deadline = trio.current_time() + hyper.graceful_timeout + 1
    finally:
        with trio.CancelScope(shield=True):
            for each in links:
                await each.aclose()
        if catalog is not None:
            catalog.close()
        store.close()


def main(argv: list[str] | None = None) -> None:
    from ..daemon import limit_malloc_arenas
    from ..logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m node.gateway.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--listen-fd", type=int, required=True, help="the gateway's listening socket, inherited")
    parser.add_argument("--owner-socket", required=True, help="the owner's Unix socket")
    parser.add_argument("--s3-listen-fd", type=int, help="the S3 listener's socket, inherited, if S3 is on")
    parser.add_argument("--owner-s3-socket", help="the owner's Unix socket for its S3 app, if S3 is on")
    parser.add_argument("--url", required=True, help="the gateway's URL, as the owner hands it out")
    args = parser.parse_args(argv)
    limit_malloc_arenas()
    setup_logging()
    listeners = Listeners(args.listen_fd, args.owner_socket, args.s3_listen_fd, args.owner_s3_socket)
    trio.run(run_worker, args.data_dir, listeners, args.url)


if __name__ == "__main__":
    main(sys.argv[1:])
