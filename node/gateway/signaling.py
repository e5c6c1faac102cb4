"""The viewer-swarm signaling endpoint: ``/api/v1/swarm/{cid}`` (WebSocket) and its stats.

The protocol is specified in ``node/swarm/viewers/protocol.py``; the
bookkeeping is the pure ``ViewerHub`` in ``node/swarm/viewers/hub.py``. This module is the I/O
around it: one task per socket reads and checks messages, and each viewer
has a bounded outbox drained by a sender task in the same nursery, so a
slow viewer loses its own relays and never holds up anyone else.

Only files this node stores whole get a swarm, so a viewer can always fall
back to the gateway for any piece; which of those do is the clip model's
answer (``node/swarm/viewers/clip.py``), the same the player gives.

``GET /watch/player/contract.json`` is the viewer protocol's wire contract
(``node/swarm/viewers/contract.json``: its constants and message vectors),
which the player's modules import.

``GET /api/v1/swarm/{cid}/stats`` answers ``{"viewers", "viewers_seen",
"bytes_from_peers", "bytes_from_http"}`` for the CID since the node
started: peer bytes as far as both ends of each transfer agree, HTTP bytes
as viewers claim them within bounds, distinct viewers in the last hour (the
exact rules are in the hub's docstring).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..storage.cid import CID
from ..storage.errors import BlockNotFound, StoreError
from ..storage.layout import NotAFileError
from ..storage.store import BlockStore
from ..storage.unixfs import UnixFSError
from ..swarm.viewers.clip import stored_clip
from ..swarm.viewers.hub import Refused, ViewerHub
from ..swarm.viewers.protocol import CONTRACT_PATH, JOIN_TIMEOUT, MAX_SIGNAL, Join, ProtocolError, decode_signal, pack
from .http import HTTPProblem, parse_cid, problem_response

log = logging.getLogger("medianode.viewers")

OUTBOX = 64  # messages waiting for one viewer before further relays to it are dropped
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


class SignalingEndpoint:
    def __init__(self, store: BlockStore, hub: ViewerHub) -> None:
        self.store = store
        self.hub = hub
        self._outboxes: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._sockets: set[trio.CancelScope] = set()

    def close_all(self) -> None:
        """End every viewer's socket: the server is stopping, and viewers fall back to HTTP."""
        for scope in self._sockets:
            scope.cancel()

    def routes(self) -> list[Route | WebSocketRoute]:
        return [
            WebSocketRoute("/api/v1/swarm/{cid}", self.socket),
            Route("/api/v1/swarm/{cid}/stats", self.stats, methods=["GET"]),
            Route("/watch/player/contract.json", self.contract, methods=["GET", "HEAD"]),
        ]

    async def contract(self, request: Request) -> Response:
        # no-cache like the player's other files: the contract changes with the node's version
        return FileResponse(CONTRACT_PATH, media_type="application/json", headers={"Cache-Control": "no-cache"})

    async def stats(self, request: Request) -> Response:
        try:
            cid = parse_cid(request.path_params["cid"])
        except HTTPProblem as problem:
            return problem_response(problem, as_json=True)
        stats = self.hub.stats(cid, trio.current_time())
        return JSONResponse({"cid": str(cid), **stats}, headers={"Cache-Control": "no-store"})

    def _pieces(self, cid: CID) -> tuple[int, int]:
        """Pieces and bytes of a file stored here whole that gets a swarm, or raise ``Refused``."""
        if self.store.is_withheld(cid):
            raise Refused(f"{cid} is not public")
        try:
            clip = stored_clip(self.store, cid)
        except (BlockNotFound, NotAFileError, UnixFSError) as exc:
            raise Refused(f"this node does not serve {cid} as a file: {exc}") from None
        if clip is None:
            raise Refused(f"this node does not hold all of {cid}")
        refusal = clip.swarm_refusal
        if refusal is not None:
            raise Refused(f"{cid} has no viewer swarm: {refusal}")
        return len(clip.pieces), clip.size

    async def socket(self, websocket: WebSocket) -> None:
        with trio.CancelScope() as scope:
            self._sockets.add(scope)
            try:
                await self._serve_viewer(websocket)
            finally:
                self._sockets.discard(scope)

    async def _serve_viewer(self, websocket: WebSocket) -> None:
        await websocket.accept()
        viewer_id: str | None = None
        try:
            with trio.move_on_after(JOIN_TIMEOUT) as waited:
                first = decode_signal(await self._receive(websocket))
            if waited.cancelled_caught:
                raise ProtocolError(f"no 'join' within {JOIN_TIMEOUT:.0f} s")
            if not isinstance(first, Join):
                raise ProtocolError("the first message is 'join'")
            try:
                cid = parse_cid(websocket.path_params["cid"])
            except HTTPProblem as problem:
                raise Refused(f"malformed CID: {problem.reason}") from None
            pieces, size = await trio.to_thread.run_sync(self._pieces, cid)
            ip = websocket.client.host if websocket.client else "?"
            viewer_id, outgoing = self.hub.join(cid, ip, first, pieces, size, trio.current_time())
            send, outbox = trio.open_memory_channel[dict[str, Any]](OUTBOX)
            self._outboxes[viewer_id] = send
            self._deliver(outgoing)
            log.info("viewer joined", extra={"fields": {"cid": str(cid), "viewer": viewer_id, "ip": ip}})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, websocket, outbox)
                broken = await self._receive_loop(websocket, viewer_id)
                nursery.cancel_scope.cancel()
            if broken is not None:
                raise broken
        except WebSocketDisconnect:
            pass
        except (ProtocolError, Refused) as exc:
            code = TRY_AGAIN_LATER if isinstance(exc, Refused) else POLICY_VIOLATION
            log.info("viewer refused", extra={"fields": {"viewer": viewer_id, "reason": str(exc)}})
            await self._close(websocket, code, str(exc))
        except StoreError as exc:
            await self._close(websocket, 1011, f"store error: {exc}")
        finally:
            if viewer_id is not None:
                self.hub.leave(viewer_id, trio.current_time())
                outbox_send = self._outboxes.pop(viewer_id, None)
                if outbox_send is not None:
                    outbox_send.close()

    async def _receive_loop(self, websocket: WebSocket, viewer_id: str) -> ProtocolError | None:
        """Relay a joined viewer's messages until it leaves (None) or breaks the protocol."""
        try:
            while True:
                message = decode_signal(await self._receive(websocket))
                self._deliver(self.hub.handle(viewer_id, message, trio.current_time()))
        except WebSocketDisconnect:
            return None
        except ProtocolError as exc:
            return exc

    async def _receive(self, websocket: WebSocket) -> bytes:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        data = message.get("bytes")
        if data is None:
            raise ProtocolError("messages are binary msgpack")
        if len(data) > MAX_SIGNAL:
            raise ProtocolError(f"message of {len(data)} bytes, at most {MAX_SIGNAL}")
        return bytes(data)

    def _deliver(self, outgoing: list[tuple[str, dict[str, Any]]]) -> None:
        for recipient, message in outgoing:
            outbox = self._outboxes.get(recipient)
            if outbox is None:
                continue
            # A viewer that is not reading loses its relays, like packets.
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                outbox.send_nowait(message)

    @staticmethod
    async def _send_loop(websocket: WebSocket, outbox: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        try:
            async for message in outbox:
                await websocket.send_bytes(pack(message))
        except (WebSocketDisconnect, RuntimeError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the viewer left; the receiving side notices and cleans up

    @staticmethod
    async def _close(websocket: WebSocket, code: int, reason: str) -> None:
        try:
            await websocket.send_bytes(pack({"t": "error", "reason": reason}))
            await websocket.close(code, reason[:120])
        except (WebSocketDisconnect, RuntimeError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # already gone
