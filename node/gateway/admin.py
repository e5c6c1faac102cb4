"""The node's local admin API, for the ``medianode`` command while ``serve`` runs.

``serve`` publishes the gateway URL and an admin token made for this run in
``api.json`` (node/api_file.py); commands such as ``medianode peers`` read
it and call these endpoints with ``Authorization: Bearer ADMIN_TOKEN``.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..storage.cid import CID
from .http import HTTPProblem, parse_cid, problem_response


def admin_routes(swarm: Any, token_holder: dict[str, str]) -> list[Route]:
    """Routes for peers and connections; ``token_holder["token"]`` is set once serve listens."""

    def authorised(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token_holder.get("token", "")
        if scheme.lower() != "bearer" or not expected or not hmac.compare_digest(given.strip(), expected):
            raise HTTPProblem(401, "the admin token from api.json is required")

    async def peers(request: Request) -> Response:
        try:
            authorised(request)
        except HTTPProblem as exc:
            return problem_response(exc, as_json=True)
        store = swarm.host.get_peerstore()
        listed = [{"peer_id": p.to_base58(), "addrs": [str(a) for a in _known_addrs(store, p)]} for p in swarm.peers()]
        return JSONResponse({"peer_id": swarm.peer_id, "addrs": swarm.addrs(), "peers": listed})

    async def connect(request: Request) -> Response:
        from ..swarm.host import SwarmError, parse_peer_addr

        try:
            authorised(request)
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("addr"), str):
                raise HTTPProblem(400, 'body must be {"addr": "/ip4/HOST/tcp/PORT/p2p/PEERID"}')
            try:
                info = parse_peer_addr(body["addr"])
            except SwarmError as exc:
                raise HTTPProblem(400, str(exc)) from None
            try:
                await swarm.connect(info)
            except Exception as exc:  # unreachable, refused, timed out: the caller learns which
                raise HTTPProblem(502, f"could not connect to {info.peer_id}: {exc!r}") from None
        except HTTPProblem as exc:
            return problem_response(exc, as_json=True)
        except ValueError:
            return problem_response(HTTPProblem(400, "body is not JSON"), as_json=True)
        return JSONResponse({"peer_id": info.peer_id.to_base58(), "connected": True})

    def cid_param(request: Request) -> CID:
        return parse_cid(request.path_params["cid"])

    def routing_cid(request: Request) -> CID:
        """The CID of an authorised routing request, when the DHT runs."""
        authorised(request)
        cid = cid_param(request)
        if swarm.routing is None:
            raise HTTPProblem(409, "the DHT is off (serve --no-dht)")
        return cid

    async def provide(request: Request) -> Response:
        try:
            cid = routing_cid(request)
        except HTTPProblem as exc:
            return problem_response(exc, as_json=True)
        return JSONResponse({"cid": str(cid), "provided": await swarm.provide(cid)})

    async def providers(request: Request) -> Response:
        try:
            cid = routing_cid(request)
        except HTTPProblem as exc:
            return problem_response(exc, as_json=True)
        found = await swarm.find_providers(cid)
        listed = [{"peer_id": p.peer_id.to_base58(), "addrs": [str(a) for a in p.addrs]} for p in found]
        return JSONResponse({"cid": str(cid), "providers": listed})

    return [
        Route("/api/v1/swarm/peers", peers, methods=["GET"]),
        Route("/api/v1/swarm/connect", connect, methods=["POST"]),
        Route("/api/v1/routing/provide/{cid}", provide, methods=["POST"]),
        Route("/api/v1/routing/providers/{cid}", providers, methods=["GET"]),
    ]


def _known_addrs(store: Any, peer: Any) -> list[Any]:
    """A peer's addresses; none yet for a peer that dialled us and has not finished identify."""
    from libp2p.peer.peerstore import PeerStoreError

    try:
        return list(store.addrs(peer))
    except PeerStoreError:
        return []
