"""``medianode serve``: the node's layers composed in one trio nursery.

The gateway (Hypercorn's trio worker running the Starlette app) runs until
SIGINT or SIGTERM; then Hypercorn stops accepting, finishes or cancels
in-flight requests within its graceful timeout, and the store is closed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .api_file import remove_api_file, write_api_file
from .config import NodeConfig, url_host
from .gateway.app import build_app
from .gateway.connections import ConnectionLimits, GuardedConfig
from .gateway.connections import serve as serve_http
from .gateway.metrics import ASGIApp, Metrics
from .gateway.settings import GatewaySettings
from .gateway.signaling import SignalingEndpoint
from .gateway.tokens import TokenStore
from .gateway.workers import (
    WorkerPool,
    default_workers,
    from_workers,
    owner_channel,
    owner_socket_for,
    owner_socket_path,
)
from .storage.store import BlockStore
from .swarm.viewers.hub import ViewerHub

if TYPE_CHECKING:
    from .gateway.s3.server import S3App, S3Settings

log = logging.getLogger("medianode.daemon")

M_ARENA_MAX = -8  # glibc's mallopt parameter
GRACEFUL_TIMEOUT = 5.0  # seconds a stopping listener gives its requests


def gateway_settings(config: NodeConfig, bound_url: str) -> GatewaySettings:
    """The gateway's settings, made once: URLs handed out start with ``public_url``, else ``bound_url``."""
    gateway = config.gateway
    return GatewaySettings(
        gateway.public_url or bound_url,
        gateway.max_upload,
        config.data_dir,
        config.chunk_size,
        cache_whole_max=gateway.cache_whole_max,
        read_ahead=gateway.read_ahead,
    )


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas. Each thread that allocates gets an arena of its own (up to 8 per core),
    and an upload's MiB-sized buffers, freed on other threads than made them, stay in each: four parts of a
    multipart upload at once held 150-190 MiB with the default, 141 with 2, at the same speed. A no-op off
    glibc."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, arenas)


async def run_node(config: NodeConfig, on_ready: Callable[[dict[str, Any]], None]) -> None:
    """Serve until SIGINT/SIGTERM. ``on_ready`` gets the gateway URL and swarm addresses once both listen."""
    from .swarm.host import parse_peer_addr
    from .swarm.node import open_swarm
    from .swarm.replication import ReplicaBook
    from .swarm.replication.service import Replicator

    bootstrap = [parse_peer_addr(a) for a in config.swarm.bootstrap]
    trusted = [parse_peer_addr(a) for a in config.swarm.replication_peers]
    store = BlockStore(config.data_dir / "store", config.store)
    tokens = TokenStore(config.data_dir / "gateway.sqlite")
    hyper = gateway_hypercorn_config(config.gateway.listen)
    from .gateway.api import upload_expiry_timing

    sweep_every, upload_max_age = upload_expiry_timing()  # a bad override fails here, before anything opens
    gateway_socket, base = bind_listener(hyper)
    sockets = [gateway_socket]
    settings = gateway_settings(config, base)
    workers = config.gateway.workers or default_workers()
    try:
        async with (
            owner_socket_path() if workers > 1 else contextlib.nullcontext("") as owner_socket,
            open_swarm(
                store,
                config.data_dir,
                list(config.swarm.listen),
                bootstrap,
                config.swarm.dht,
                mdns=config.swarm.mdns,
                announce_new_every=config.swarm.announce_new_every,
            ) as swarm,
            trio.open_nursery() as nursery,
        ):
            stop = trio.Event()

            async def wait_for_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
                        stop.set()
                        return

            nursery.start_soon(wait_for_signal)
            book = ReplicaBook(config.data_dir / "replication.sqlite")
            replicator = Replicator(swarm, book, trusted, config.swarm.replication_interval)
            if trusted:
                swarm.start_background(replicator.run)
            admin_token: dict[str, str] = {}
            signaling = SignalingEndpoint(store, ViewerHub(ice_servers=list(config.viewers.stun)))
            metrics = Metrics()
            app = build_app(store, settings, metrics, tokens, swarm, admin_token, signaling)
            nursery.start_soon(expire_uploads_until, settings.data_dir / "uploads", tokens, stop, sweep_every,
                               upload_max_age)  # fmt: skip
            nursery.start_soon(app.sample_history, stop)  # the console's charts
            s3_url = None
            if workers > 1:
                # The gateway's socket (and the S3 listener's) is the workers' alone: this process answers what
                # they pass on, so the swarm, an upload or gc here never holds up a read.
                gateway_socket.listen(hyper.backlog)
                passed: dict[str, ASGIApp] = {"gateway": owner_channel(app, swarm, metrics)}
                s3_fd = None
                if config.s3.enabled:
                    s3_app = await open_s3(nursery, store, config, stop)
                    s3_hyper = hypercorn_config(config.s3.listen)
                    s3_socket, s3_url = bind_listener(s3_hyper)
                    s3_socket.listen(s3_hyper.backlog)
                    sockets.append(s3_socket)
                    s3_fd = s3_socket.fileno()
                    passed["s3"] = from_workers(s3_app)
                pool = WorkerPool(workers, gateway_socket.fileno(), s3_fd, owner_socket, config.data_dir, base,
                                  stop_bound=GRACEFUL_TIMEOUT + 1)  # fmt: skip
                await start_workers(nursery, pool, passed, stop)
            else:
                hyper.bind = [f"fd://{gateway_socket.detach()}"]  # Hypercorn's socket owns the descriptor from here
                await nursery.start(lambda task_status: serve_http(
                    app, hyper, bound_bodies=True, shutdown_trigger=stop.wait, task_status=task_status
                ))  # fmt: skip
                if config.s3.enabled:
                    s3_url = await start_s3(nursery, await open_s3(nursery, store, config, stop), config, stop)
            admin_token["token"] = write_api_file(config.data_dir, base)
            seeding = trio.CancelScope()
            if config.viewers.seed_hubs:
                nursery.start_soon(seed_viewer_swarms, store, config, seeding)
            on_ready({"gateway": base, "s3": s3_url, "peer_id": swarm.peer_id, "swarm": swarm.addrs()})
            await stop.wait()
            seeding.cancel()
            signaling.close_all()
            nursery.cancel_scope.deadline = trio.current_time() + hyper.graceful_timeout + 1
    finally:
        for listening in sockets:  # if never handed to Hypercorn; a detached socket has nothing to close
            listening.close()
        remove_api_file(config.data_dir)
        tokens.close()
        store.close()


async def expire_uploads_until(
    uploads_dir: Path, tokens: TokenStore, stop: trio.Event, every: float, max_age: float
) -> None:
    """Remove expired tus uploads (refunding unfinished ones' charges) every ``every`` seconds until ``stop``."""
    from .gateway.api import expire_uploads

    while not stop.is_set():
        removed = await trio.to_thread.run_sync(expire_uploads, uploads_dir, tokens, max_age)
        if removed:
            log.info("expired uploads", extra={"fields": {"uploads": removed}})
        with trio.move_on_after(every):
            await stop.wait()


def gateway_hypercorn_config(listen: tuple[str, int]) -> GuardedConfig:
    """The gateway listener's config, in ``serve`` and in each serving worker: with its WebSockets bounded."""
    hyper = hypercorn_config(listen)
    hyper.websocket_max_message_size = 64 * 1024  # signaling messages are capped lower still
    hyper.websocket_ping_interval = 30.0  # notice viewers that vanished without closing
    return hyper


def hypercorn_config(listen: tuple[str, int], limits: ConnectionLimits | None = None) -> GuardedConfig:
    """What both listeners (gateway and S3) share: quiet logs, bounded headers, a 5 s graceful stop, and
    the connection bounds of gateway/connections.py (a bad environment override fails here).
    Hypercorn's ``read_timeout`` stays off: it times every read, also those while a client only
    downloads, so it would cut long downloads."""
    host, port = listen
    hyper = GuardedConfig(limits or ConnectionLimits.from_environ())
    hyper.bind = [f"{url_host(host)}:{port}"]
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("medianode.http")
    hyper.graceful_timeout = GRACEFUL_TIMEOUT
    hyper.keep_alive_timeout = hyper.limits.keep_alive_timeout
    hyper.h11_max_incomplete_size = 64 * 1024
    # Hypercorn queues up to this many body messages for an app that is busy; with 1 MiB reads
    # (connections.RECEIVE_SIZE) its default of 10 was 10 MiB per upload, 40 MiB for a multipart
    # upload's four parts at once, past the S3 listener's 150 MiB bound.
    hyper.max_app_queue_size = 2
    return hyper


def bind_listener(hyper: GuardedConfig) -> tuple[socket.socket, str]:
    """Bind ``hyper``'s address now, with Hypercorn's own socket options, and return the socket and its URL:
    the port the system chose when 0 was asked for is known before the app is built, so its settings are made
    once. Hypercorn listens on the socket when it is handed over as ``fd://``."""
    (sock,) = hyper.create_sockets().insecure_sockets
    host, port = sock.getsockname()[:2]
    return sock, f"http://{url_host(host)}:{port}"


async def start_workers(nursery: trio.Nursery, pool: WorkerPool, passed: dict[str, ASGIApp],
                        stop: trio.Event) -> None:  # fmt: skip
    """Listen on the owner's Unix sockets for what the workers pass on (``passed``: the gateway's channel, and
    the S3 app when the workers take the S3 listener too), then start the workers (node/gateway/workers.py).
    The channels have no per-address bound: every worker is one "address"."""
    for listener, app in passed.items():
        hyper = hypercorn_config(("127.0.0.1", 0), replace(ConnectionLimits.from_environ(), per_ip=0))
        hyper.bind = [f"unix:{owner_socket_for(pool.owner_socket, listener)}"]
        hyper.websocket_max_message_size = 64 * 1024
        await nursery.start(lambda task_status, app=app, hyper=hyper: serve_http(
            app, hyper, bound_bodies=True, shutdown_trigger=stop.wait, task_status=task_status
        ))  # fmt: skip
    await nursery.start(pool.run, stop)


def s3_settings(config: NodeConfig) -> S3Settings:
    from .gateway.s3.server import S3Settings

    s3 = config.s3
    return S3Settings(s3.region, s3.domain, config.chunk_size, s3.incomplete_upload_hours)


async def open_s3(nursery: trio.Nursery, store: BlockStore, config: NodeConfig, stop: trio.Event) -> S3App:
    """The owner's S3 app, its catalog reconciled with the store, and its upkeep started."""
    from .gateway.s3.catalog import Catalog
    from .gateway.s3.server import S3App

    catalog = Catalog(config.data_dir / "s3.sqlite")
    app = S3App(store, catalog, s3_settings(config))
    released = await trio.to_thread.run_sync(app.writer.reconcile)
    if released:
        log.info("released holds no S3 object names", extra={"fields": {"holds": released}})

    async def upkeep() -> None:
        try:
            while not stop.is_set():  # parts of uploads nobody completed, hourly
                await trio.to_thread.run_sync(app.writer.expire, config.s3.incomplete_upload_hours)
                with trio.move_on_after(3600):
                    await stop.wait()
        finally:
            catalog.close()

    nursery.start_soon(upkeep)
    return app


async def start_s3(nursery: trio.Nursery, app: S3App, config: NodeConfig, stop: trio.Event) -> str:
    """Serve ``app`` on ``[s3] listen`` (its own Hypercorn); return its URL."""
    hyper = hypercorn_config(config.s3.listen)
    binds: list[str] = await nursery.start(lambda task_status: serve_http(  # S3 bounds its bodies' pauses itself
        app, hyper, bound_bodies=False, shutdown_trigger=stop.wait, task_status=task_status
    ))  # fmt: skip
    return binds[0].rstrip("/")


async def seed_viewer_swarms(store: BlockStore, config: NodeConfig, scope: trio.CancelScope) -> None:
    """The WebRTC seeder of pinned files for the hubs in ``[viewers] seed_hubs``, until ``scope`` is cancelled."""
    from .swarm.viewers.seeder import run_seeder  # aiortc costs a third of a second to import

    with scope:
        await run_seeder(store, config.viewers)


def with_overrides(
    config: NodeConfig,
    gateway: tuple[str, int] | None,
    listen: list[str],
    bootstrap: list[str],
    dht: bool = True,
    mdns: bool | None = None,
    s3: tuple[str, int] | bool | None = None,
    workers: int | None = None,
) -> NodeConfig:
    """The config with ``serve``'s command-line options applied (``s3``: an address, False for
    --no-s3, None for the config's)."""
    if gateway is not None:
        config = replace(config, gateway=replace(config.gateway, listen=gateway))
    if workers is not None:
        config = replace(config, gateway=replace(config.gateway, workers=workers))
    if s3 is False:
        config = replace(config, s3=replace(config.s3, enabled=False))
    elif isinstance(s3, tuple):
        config = replace(config, s3=replace(config.s3, enabled=True, listen=s3))
    swarm = config.swarm
    if listen:
        swarm = replace(swarm, listen=tuple(listen))
    if bootstrap:
        swarm = replace(swarm, bootstrap=swarm.bootstrap + tuple(bootstrap))
    if not dht:
        swarm = replace(swarm, dht=False)
    if mdns is not None:  # --mdns / --no-mdns; otherwise the config decides
        swarm = replace(swarm, mdns=mdns)
    return replace(config, swarm=swarm)
