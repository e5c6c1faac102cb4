"""The gateway's ASGI application, assembled: the path gateway, the write API, admin, viewers, metrics, console.

Each part lives in its own module (``path_gateway``, ``api``, ``admin``,
``signaling``, ``watch``, ``metrics``, ``console``); this one only puts them
together. ``GatewayApp`` is the ASGI application with the one task it needs
beside the requests: the console's sampler of counters, which ``serve`` runs.
"""

from __future__ import annotations

from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from ..storage.store import BlockStore
from ..swarm.viewers.hub import ViewerHub
from .admin import admin_routes
from .api import api_routes
from .console import Console
from .http import HTTPProblem, problem_response
from .metrics import ASGIApp, Metrics
from .path_gateway import IPFS_PREFIX, Gateway
from .settings import GatewaySettings
from .signaling import SignalingEndpoint
from .watch import watch_routes


class GatewayApp:
    """The ASGI application (``asgi``) and the console whose history ``sample_history`` records."""

    def __init__(self, asgi: ASGIApp, console: Console) -> None:
        self.asgi = asgi
        self.console = console

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.asgi(scope, receive, send)

    async def sample_history(self, stop: trio.Event) -> None:
        """Sample the counters the console charts until ``stop`` is set."""
        await self.console.sample_history(stop)


def build_app(
    store: BlockStore,
    settings: GatewaySettings,
    metrics: Metrics,
    tokens: Any = None,
    swarm: Any = None,
    admin_token: dict[str, str] | None = None,
    signaling: SignalingEndpoint | None = None,
) -> GatewayApp:
    """The ASGI application; ``tokens`` (a TokenStore) enables the write API.

    ``/ipfs/`` is dispatched before Starlette's router and middleware: a video
    player's Range requests are the hot path, and that stack cost more per
    request than reading the megabyte it asks for.
    """
    gateway = Gateway(store, settings, metrics, swarm)
    signaling = signaling or SignalingEndpoint(store, ViewerHub(ice_servers=[]))
    routes: list[BaseRoute] = [Route("/metrics", metrics.endpoint(store, swarm, signaling.hub), methods=["GET"])]
    routes += signaling.routes()
    routes += watch_routes(store)
    console = Console(store, settings, metrics, signaling.hub, tokens, swarm)
    routes += console.routes()
    if tokens is not None:
        routes += api_routes(store, settings, metrics, tokens)
    if swarm is not None and admin_token is not None:
        routes += admin_routes(swarm, admin_token)
    rest = Starlette(routes=routes)
    rest.state.admin_token = admin_token  # what the console and the write API check the admin token against

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(IPFS_PREFIX):
            request = Request(scope, receive)
            if request.method in ("GET", "HEAD"):
                response = await gateway.ipfs(request, scope["path"][len(IPFS_PREFIX) :])
            else:
                response = problem_response(HTTPProblem(405, "the gateway is read-only: use /api/v1/add to write",
                                                        {"Allow": "GET, HEAD"}))  # fmt: skip
            await response(scope, receive, send)
            return
        await rest(scope, receive, send)

    return GatewayApp(metrics.wrap(app), console)
