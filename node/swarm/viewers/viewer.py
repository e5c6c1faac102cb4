"""One Python member of a clip's viewer swarm: ``medianode watch`` and the node's WebRTC seeder both run it.

The protocol is specified in ``protocol.py``. A ``SwarmViewer`` is one
membership in one swarm and puts together parts that each live in their own
module: the hub's WebSocket (join, have, signal, peers, and the stats that
``report.py`` keeps), a ``PeerLink`` per peer (``link.py``: the WebRTC
connection through ``rtc_bridge`` and serving the peer's requests), and,
while pieces are missing, the ``PiecePicker`` deciding what to ask of whom
and what to take over HTTP (``from_gateway.py``). Every piece from a peer is
checked against its leaf CID before it is kept (``pieces.py``) or
announced; a peer that sends a bad piece, an unrequested chunk or a
malformed message is dropped and never connected to again in this session.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from ...storage.cid import CID
from ...storage.errors import StoreError
from .clip import Clip, ViewerError
from .from_gateway import GatewayBlocks
from .link import PeerLink
from .picker import PeerFault, PiecePicker
from .pieces import PieceSource
from .protocol import (
    ASK_PEERS_EVERY,
    CONNECT_TIMEOUT,
    DATA_CHANNEL_LABEL,
    JOIN_TIMEOUT,
    MAX_PEER_CONNECTIONS,
    MAX_PIECE,
    MAX_SIGNAL,
    PEER_PATIENCE,
    STATS_EVERY,
    Cancel,
    HaveAll,
    HaveOne,
    HubError,
    Introduction,
    PeersList,
    PieceChunk,
    ProtocolError,
    Reject,
    Request,
    Signal,
    Welcome,
    bitfield,
    decode_hub_message,
    decode_peer_message,
    pack,
)
from .report import MembershipReport
from .rtc_bridge import ChannelClosed, ChannelMessage, RtcBridge, RtcError

log = logging.getLogger("medianode.viewers")

FEW_PEERS = 2  # open connections below which a viewer still missing pieces asks for more
SIGNAL_INBOX = 64  # relayed signals waiting for one connection; more are dropped, as a lossy network would
REJOIN_FIRST, REJOIN_MAX = 1.0, 60.0  # backoff between attempts to rejoin a hub


def hub_url(gateway: str, root: CID) -> str:
    """The hub's WebSocket for ``root`` at the gateway whose base URL is ``gateway``."""
    base = gateway.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return f"{ws}{base[len(http) :]}/api/v1/swarm/{root}"
    raise ViewerError(f"the gateway URL must start with http:// or https://, got {gateway!r}")


# ---------------------------------------------------------------- the viewer


@dataclass
class ViewerStats:
    bytes_from_peers: int = 0
    bytes_from_http: int = 0
    bytes_served: int = 0
    pieces_held: int = 0
    peers_open: int = 0
    peers_dropped: int = 0


class SwarmViewer:
    """One viewer in the swarm of ``clip`` at the hub of ``gateway``; see the module docstring.

    ``complete`` is set, and ``on_complete`` called, once every piece is
    held. ``run`` then goes on seeding until cancelled, or with
    ``stop_when_complete`` reports its final stats to the hub and returns;
    it raises ``ViewerError`` if HTTP could not bring a missing piece. With
    ``http`` None nothing is fetched over HTTP (a seeder); with ``rejoin`` a
    lost or refused hub connection is retried with backoff, otherwise the
    viewer carries on without the hub.
    """

    def __init__(
        self,
        bridge: RtcBridge,
        gateway: str,
        clip: Clip,
        source: PieceSource,
        *,
        http: GatewayBlocks | None,
        stun: Sequence[str] = (),
        rejoin: bool = False,
        stop_when_complete: bool = False,
        on_progress: Callable[[ViewerStats], None] | None = None,
        on_complete: Callable[[], None] | None = None,
    ) -> None:
        self.bridge = bridge
        self.url = hub_url(gateway, clip.root)
        self.clip = clip
        self.count = len(clip.pieces)
        self.source = source
        self.http = http
        self.stun = list(stun)
        self.rejoin = rejoin
        self.stop_when_complete = stop_when_complete
        self.on_progress = on_progress
        self.on_complete = on_complete
        self.held = source.held()
        self.stats = ViewerStats(pieces_held=len(self.held))
        self.complete = trio.Event()
        self.links: dict[str, PeerLink] = {}
        self.banned: set[str] = set()
        self.my_id: str | None = None
        self._ice: list[str] = list(stun)
        self._hub: WebSocketConnection | None = None
        self._picker: PiecePicker | None = None
        self._wake = trio.Event()
        self._failure: str | None = None
        self._nursery: trio.Nursery | None = None
        self.report = MembershipReport()

    # -- the whole

    async def run(self) -> None:
        if not self.clip.swarmable and self.http is None:
            raise ViewerError(f"{self.clip.root} cannot have a swarm: {self.clip.swarm_refusal}")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if len(self.held) == self.count:
                self._completed()
            else:
                # Without a swarm there is nobody to wait for before going to HTTP.
                grace = PEER_PATIENCE if self.clip.swarmable else 0.0
                sizes = [p.size for p in self.clip.pieces]
                rng = random.Random()
                self._picker = PiecePicker(sizes, self.held, trio.current_time(), grace=grace,
                                           http_start=rng.randrange(self.count), rng=rng)  # fmt: skip
                nursery.start_soon(self._download)
            if self.clip.swarmable:
                nursery.start_soon(self._hub_loop)
        if self._failure is not None:
            raise ViewerError(self._failure)

    def _completed(self) -> None:
        self.complete.set()
        if self.on_complete is not None:
            self.on_complete()
        if self._nursery is not None:
            self._nursery.start_soon(self._after_complete)

    async def _after_complete(self) -> None:
        await self._send_stats()  # so the hub counts all of it before we may leave
        if self.stop_when_complete and self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _kick(self) -> None:
        self._wake.set()

    def _progress(self) -> None:
        self.stats.pieces_held = len(self.held)
        self.stats.peers_open = sum(1 for link in self.links.values() if link.open)
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def _got(self, index: int, data: bytes) -> None:
        """A verified piece, from anywhere: keep it, tell the peers."""
        try:
            self.source.write(index, data)
        except (OSError, StoreError) as exc:
            self._fail(f"cannot keep piece {index}: {exc}")
            return
        self.held.add(index)
        if self._picker is not None:
            self._picker.piece_done(index)
        for link in self.links.values():
            link.send(HaveOne(index), self.count)
        self._progress()
        if len(self.held) == self.count and not self.complete.is_set():
            self._completed()
        self._kick()

    # -- download

    async def _download(self) -> None:
        picker = self._picker
        assert picker is not None
        async with trio.open_nursery() as fetches:
            while not picker.complete:
                now = trio.current_time()
                for expired in picker.expire(now):
                    link = self.links.get(expired.peer)
                    if link is not None:
                        link.send(Cancel(expired.index), self.count)
                        if expired.drop:
                            self._drop(link, f"{expired.index} and others timed out")
                for peer, index in picker.requests(now):
                    self.links[peer].send(Request(index), self.count)
                if self.http is not None:
                    for index in picker.http_fetches(now):
                        fetches.start_soon(self._fetch_over_http, self.http, index)
                deadline = picker.next_deadline(now)
                with trio.move_on_at(min(deadline if deadline is not None else math.inf, now + 1.0)):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _fetch_over_http(self, http: GatewayBlocks, index: int) -> None:
        picker = self._picker
        assert picker is not None
        try:
            data = await http.get(self.clip.pieces[index].cid, MAX_PIECE)
        except ViewerError as exc:
            self._fail(str(exc))
            return
        finally:
            picker.http_finished(index)
        if index not in self.held:
            self.stats.bytes_from_http += len(data)
            self._got(index, data)

    # -- the hub

    async def _hub_loop(self) -> None:
        delay = REJOIN_FIRST
        while True:
            self.my_id = None
            try:
                async with open_websocket_url(self.url, max_message_size=MAX_SIGNAL) as ws:
                    reason = await self._member(ws)
            except (HandshakeError, ConnectionClosed, OSError, ProtocolError, trio.TooSlowError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._hub = None
            if not self.rejoin:
                log.info("left the hub", extra={"fields": {"cid": str(self.clip.root), "reason": reason}})
                return
            if self.my_id is not None:  # it had let us in: start the backoff over
                delay = REJOIN_FIRST
            log.info("hub lost; rejoining", extra={"fields": {"cid": str(self.clip.root), "reason": reason,
                                                               "in": delay}})  # fmt: skip
            await trio.sleep(delay)
            delay = min(REJOIN_MAX, delay * 2)

    async def _member(self, ws: WebSocketConnection) -> str:
        """Join through ``ws`` and take part until the hub goes; the reason it went."""
        await ws.send_message(pack({"t": "join", "have": bitfield(self.held, self.count)}))
        with trio.fail_after(JOIN_TIMEOUT):
            welcome = decode_hub_message(await ws.get_message())
        if isinstance(welcome, HubError):
            return f"refused: {welcome.reason}"
        if not isinstance(welcome, Welcome):
            raise ProtocolError("the hub's first message is 'welcome'")
        self.my_id = welcome.id
        self.report.new_membership()
        self._ice = list(dict.fromkeys([*welcome.ice, *self.stun]))
        self._hub = ws
        self._introduced(welcome.peers)
        # The reporter runs in the viewer's nursery: one opened here would wrap ConnectionClosed in a group.
        reporting = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._report, reporting)
        try:
            while True:
                message = decode_hub_message(await ws.get_message())
                if isinstance(message, HubError):
                    return f"hub error: {message.reason}"
                if isinstance(message, PeersList):
                    self._introduced(message.peers)
                elif isinstance(message, Signal):
                    self._signalled(message)
        finally:
            reporting.cancel()

    async def _send_hub(self, message: dict[str, Any]) -> None:
        ws = self._hub
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):  # the hub loop notices and rejoins (or not)
            await ws.send_message(pack(message))

    def _count_peer_bytes(self, peer: str, size: int, *, sent: bool) -> None:
        self.report.count_peer_bytes(peer, size, sent=sent)

    async def _send_stats(self) -> None:
        await self._send_hub({"t": "have", "have": bitfield(self.held, self.count)})
        if self._hub is None:
            return
        await self._send_hub(self.report.next_message(self.stats.bytes_from_http))

    async def _report(self, scope: trio.CancelScope) -> None:
        """Stats (and what we hold, if it changed) every STATS_EVERY; ask for peers when short of them."""
        held_reported: int | None = None
        asked = trio.current_time()
        with scope:
            while True:
                await trio.sleep(STATS_EVERY)
                now = trio.current_time()
                if len(self.held) != held_reported or self.report.pending(self.stats.bytes_from_http):
                    held_reported = len(self.held)
                    await self._send_stats()
                few = sum(1 for link in self.links.values() if link.open) < FEW_PEERS
                if not self.complete.is_set() and few and now - asked >= ASK_PEERS_EVERY:
                    asked = now
                    await self._send_hub({"t": "peers"})

    def _introduced(self, peers: Iterable[Introduction]) -> None:
        for peer in peers:
            if peer.id not in self.links and peer.id not in self.banned and peer.id != self.my_id:
                self._start_link(peer.id, offerer=True)

    def _signalled(self, message: Signal) -> None:
        sender, data = message.sender, message.data
        if sender in self.banned:
            return
        link = self.links.get(sender)
        if data.get("type") == "offer":
            if link is not None:
                # Both offered at once: the offer of the smaller id wins, the other side answers it.
                if link.open or not link.offerer or (self.my_id or "") < sender:
                    return
                link.scope.cancel()
                del self.links[sender]
                link = None
            link = self._start_link(sender, offerer=False)
        if link is not None:
            with contextlib.suppress(trio.WouldBlock):  # a peer flooding us with candidates loses them
                link.signals.send_nowait(data)

    # -- connections

    def _start_link(self, peer: str, offerer: bool) -> PeerLink | None:
        if len(self.links) >= MAX_PEER_CONNECTIONS or self._nursery is None:
            return None
        send, receive = trio.open_memory_channel[dict[str, Any]](SIGNAL_INBOX)
        link = PeerLink(peer, offerer, send, receive)
        self.links[peer] = link
        self._nursery.start_soon(self._run_link, link)
        return link

    def _drop(self, link: PeerLink, reason: str) -> None:
        """Close the connection to a misbehaving peer and never connect to it again."""
        if link.drop_reason is None:
            link.drop_reason = reason
            self.banned.add(link.peer)
            self.stats.peers_dropped += 1
            log.info("dropping viewer", extra={"fields": {"cid": str(self.clip.root), "peer": link.peer,
                                                          "reason": reason}})  # fmt: skip
        link.scope.cancel()

    async def _run_link(self, link: PeerLink) -> None:
        # Nothing below raises out of the nursery: its children catch their own errors and cancel the link.
        try:
            with link.scope:
                with trio.CancelScope(shield=True):  # quick, and the finally below must get it to close it
                    link.rtc = await self.bridge.open_peer(self._ice)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._negotiate, link)
                    with trio.move_on_after(CONNECT_TIMEOUT):
                        link.open = await link.wait_open()
                    if link.open:
                        self._opened(link)
                        nursery.start_soon(
                            link.serve,
                            self.source.read,
                            self.count,
                            functools.partial(self._served, link),
                            str(self.clip.root),
                        )
                        async for event in link.rtc.events:
                            if isinstance(event, ChannelMessage):
                                self._received(link, event.data)
                            elif isinstance(event, ChannelClosed):
                                break
                        if link.rtc.flooded:
                            self._drop(link, "sent more than its requests allow")
                    nursery.cancel_scope.cancel()
        except RtcError as exc:
            log.debug("connection failed", extra={"fields": {"peer": link.peer, "error": repr(exc)}})
        finally:
            if self.links.get(link.peer) is link:
                del self.links[link.peer]
            if self._picker is not None and link.open:
                self._picker.remove_peer(link.peer)
            link.open = False
            if link.rtc is not None:
                await link.rtc.close()
            self._progress()
            self._kick()

    async def _negotiate(self, link: PeerLink) -> None:
        """Offer (or wait for the offer), then apply the signals the peer sends through the hub."""
        rtc = link.rtc
        assert rtc is not None
        try:
            if link.offerer:
                await self._send_hub({"t": "signal", "to": link.peer, "data": await rtc.offer(DATA_CHANNEL_LABEL)})
            async for data in link.inbox:
                kind = data.get("type")
                if kind == "offer" and not link.offerer:
                    await self._send_hub({"t": "signal", "to": link.peer, "data": await rtc.answer(data)})
                elif kind == "answer" and link.offerer:
                    await rtc.accept_answer(data)
                elif "candidate" in data:
                    await rtc.add_candidate(data)
        except RtcError as exc:
            log.debug("negotiation failed", extra={"fields": {"peer": link.peer, "error": repr(exc)}})
            link.scope.cancel()

    def _opened(self, link: PeerLink) -> None:
        link.send(HaveAll(self.held), self.count)
        if self._picker is not None:
            self._picker.add_peer(link.peer)
        self._progress()
        self._kick()

    def _received(self, link: PeerLink, data: bytes) -> None:
        try:
            message = decode_peer_message(data, self.count)
            match message:
                case HaveAll(pieces):
                    self._announced(link, pieces)
                case HaveOne(index):
                    self._announced(link, (index,))
                case Request(index):
                    link.requested(index, index in self.held, self.count)
                case PieceChunk(index, offset, chunk):
                    self._chunk(link, index, offset, chunk)
                case Reject(index):
                    if self._picker is not None:
                        self._picker.rejected(link.peer, index)
                        self._kick()
                case Cancel(index):
                    link.cancelled(index)
        except (ProtocolError, PeerFault) as exc:
            self._drop(link, str(exc))

    def _announced(self, link: PeerLink, pieces: Iterable[int]) -> None:
        if self._picker is not None:
            self._picker.peer_has(link.peer, pieces)
            self._kick()

    def _chunk(self, link: PeerLink, index: int, offset: int, chunk: bytes) -> None:
        picker = self._picker
        if picker is None:  # we had everything from the start and asked for nothing
            raise PeerFault(f"piece {index} was not requested")
        piece = picker.receive(link.peer, index, offset, chunk, trio.current_time())
        self._kick()
        if piece is None:
            return
        if not self.clip.pieces[index].cid.verifies(piece):
            raise PeerFault(f"piece {index} does not match its CID")
        if index not in self.held:
            self.stats.bytes_from_peers += len(piece)
            self._count_peer_bytes(link.peer, len(piece), sent=False)
            self._got(index, piece)

    def _served(self, link: PeerLink, size: int) -> None:
        self.stats.bytes_served += size
        self._count_peer_bytes(link.peer, size, sent=True)
