"""A Python member of a clip's viewer swarm: ``medianode watch`` and the node's WebRTC seeder both use it.

The protocol is specified in ``viewer_protocol.py``. The pieces of this
module:

``Clip``
    A file's pieces (its UnixFS leaves in order: CID, size, where they go in
    the file). ``learn_clip`` builds it from a gateway, fetching the root and
    every dag-pb node as ``?format=raw`` and checking each block against the
    CID that links to it; ``clip_from_store`` builds it from the BlockStore.
``PieceSource``
    Where held pieces are read from and verified pieces go: ``FilePieces``
    (a file being written, for ``watch``) or ``StorePieces`` (the node's
    store, for the seeder).
``SwarmViewer``
    One membership in one swarm: the hub's WebSocket (join, have, signal,
    peers, stats), a WebRTC connection per peer (through ``rtc_bridge``),
    the data-channel protocol both ways, and, while pieces are missing, the
    ``PiecePicker`` deciding what to ask of whom and what to take over HTTP.
    Every piece from a peer is checked against its leaf CID before it is
    written or announced; a peer that sends a bad piece, an unrequested
    chunk or a malformed message is dropped and never connected to again in
    this session. Serving is bounded per peer: ``MAX_OUTSTANDING`` requests
    queued or being sent (more are rejected), one piece sent at a time, and
    the data channel paced by its ``bufferedAmount``. It reports to the hub,
    per membership, the HTTP bytes it took and, per peer, the bytes of
    verified new pieces it got and of whole pieces it sent (the hub counts
    peer bytes only where both ends agree).
``watch_file``
    The whole of ``medianode watch``: learn the clip, fetch it through the
    swarm with the gateway as fallback, write and rename the file, then keep
    seeding until cancelled.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from ..storage.cid import CID, DAG_PB
from ..storage.dagpb import DagPBError, decode_node
from ..storage.errors import StoreError
from ..storage.layout import FileLayout, NotAFileError, walk_file
from ..storage.store import BlockStore
from ..storage.unixfs import UnixFSError, decode_unixfs
from .rtc_bridge import ChannelClosed, ChannelMessage, ChannelOpen, RtcBridge, RtcError, RtcPeer, open_rtc_bridge
from .viewer_picker import GRACE, PeerFault, PiecePicker
from .viewer_protocol import (
    DATA_CHANNEL_LABEL,
    MAX_OUTSTANDING,
    MAX_PEER_CONNECTIONS,
    MAX_PIECE,
    MAX_PIECES,
    MAX_SIGNAL,
    MAX_STATS_PEERS,
    PIECE_CHUNK,
    STATS_EVERY,
    Cancel,
    HaveAll,
    HaveOne,
    HubError,
    Introduction,
    PeerMessage,
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
    encode_peer_message,
    pack,
)

log = logging.getLogger("medianode.viewers")

RAW_TYPE = "application/vnd.ipld.raw"
MAX_NODE = 2 * 1024 * 1024  # largest dag-pb node accepted from a gateway
DAG_FETCHES = 8  # dag-pb nodes fetched at once while learning a clip
HTTP_ATTEMPTS = 3
HTTP_TIMEOUT = 30.0
CONNECT_TIMEOUT = 20.0  # seconds from starting a connection to its data channel being open
JOIN_TIMEOUT = 10.0  # seconds for the hub's welcome
ASK_PEERS_EVERY = 5.0  # while pieces are missing and few peers are connected
FEW_PEERS = 2
SIGNAL_INBOX = 64  # relayed signals waiting for one connection; more are dropped, as a lossy network would
REJOIN_FIRST, REJOIN_MAX = 1.0, 60.0  # backoff between attempts to rejoin a hub


class ViewerError(Exception):
    """The clip cannot be fetched (bad CID, gateway unreachable or without it, a DAG that is not a file)."""


# ---------------------------------------------------------------- the clip


@dataclass(frozen=True, slots=True)
class Piece:
    cid: CID
    size: int  # bytes of the piece (the leaf block)
    offset: int  # where its file bytes start
    embedded: bool  # a dag-pb leaf: its file bytes are the UnixFS Data inside the block


@dataclass(frozen=True)
class Clip:
    root: CID
    size: int
    pieces: list[Piece]

    @property
    def swarmable(self) -> bool:
        """Whether the protocol allows a swarm for it (the hub refuses the rest; an empty piece has no chunk)."""
        return 0 < len(self.pieces) <= MAX_PIECES and all(0 < p.size <= MAX_PIECE for p in self.pieces)

    def file_bytes(self, index: int, data: bytes) -> bytes:
        """The file's bytes inside piece ``index``."""
        if not self.pieces[index].embedded:
            return data
        return decode_unixfs(data)[1].data or b""


def _clip_from_walk(root: CID, blocks: dict[CID, bytes]) -> Clip:
    try:
        layout = walk_file(root, blocks.__getitem__)
    except KeyError as exc:
        raise ViewerError(f"{root}: block {exc.args[0]} is missing from its DAG") from None
    except NotAFileError as exc:
        raise ViewerError(str(exc)) from None
    except (UnixFSError, DagPBError) as exc:
        raise ViewerError(f"{root} is not a well-formed file: {exc}") from None
    return _clip(root, layout, lambda cid: len(blocks[cid]))


def clip_from_store(store: BlockStore, root: CID) -> Clip:
    """The clip of a file in the store (raises ``StoreError``, ``NotAFileError`` or ``UnixFSError``)."""
    layout, _ = store.layout(root)
    return _clip(root, layout, lambda cid: len(store.get_block(cid)))


def _clip(root: CID, layout: FileLayout, block_size: Callable[[CID], int]) -> Clip:
    """A piece per leaf; a dag-pb leaf's piece is its whole block, so its size is asked of ``block_size``."""
    pieces = [
        Piece(leaf.cid, block_size(leaf.cid) if leaf.embedded else leaf.size, leaf.offset, leaf.embedded)
        for leaf in layout.leaves
    ]
    return Clip(root, layout.size, pieces)


# ---------------------------------------------------------------- the gateway


class GatewayBlocks:
    """Raw blocks from a gateway (``/ipfs/{cid}?format=raw``), each checked against its CID."""

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    async def get(self, cid: CID, limit: int) -> bytes:
        """The block, retried on network and server errors; ``ViewerError`` when it cannot be had."""
        url = f"{self.base_url}/ipfs/{cid}?format=raw"
        reason = ""
        for attempt in range(HTTP_ATTEMPTS):
            if attempt:
                await trio.sleep(0.5 * 2**attempt)
            try:
                async with self.client.stream("GET", url, headers={"Accept": RAW_TYPE}) as response:
                    if response.status_code != 200:
                        detail = " ".join((await response.aread())[:200].decode("utf-8", "replace").split())
                        reason = f"the gateway does not serve {cid} (HTTP {response.status_code}: {detail})"
                        if response.status_code < 500:
                            raise ViewerError(reason)
                        continue  # the gateway may get it from its swarm yet
                    body = bytearray()
                    async for part in response.aiter_bytes():
                        body += part
                        if len(body) > limit:
                            raise ViewerError(f"the gateway sent more than {limit} bytes for block {cid}")
            except httpx.RequestError as exc:
                reason = f"cannot reach the gateway at {self.base_url}: {exc or type(exc).__name__}"
                continue
            data = bytes(body)
            if cid.verifies(data):
                return data
            reason = f"the gateway sent bytes that do not match {cid}"
        raise ViewerError(reason)


async def learn_clip(blocks: GatewayBlocks, root: CID) -> tuple[Clip, dict[int, bytes]]:
    """The clip at ``root`` and the pieces that fetching its DAG already brought (a one-block file,
    dag-pb leaves). Every dag-pb node is fetched, level by level, a few at a time."""
    fetched: dict[CID, bytes] = {}
    level = [root]
    while level:
        if len(fetched) + len(level) > MAX_PIECES:
            raise ViewerError(f"{root} has more than {MAX_PIECES} nodes")
        results = await _fetch_level(blocks, level)
        fetched.update(results)
        level = []
        for cid, block in results.items():
            if cid.codec == DAG_PB:
                try:
                    links = decode_node(block).links
                except DagPBError as exc:
                    raise ViewerError(f"{cid} is not a dag-pb node: {exc}") from None
                level += [link.cid for link in links if link.cid.codec == DAG_PB and link.cid not in fetched]
    clip = _clip_from_walk(root, fetched)
    brought = {i: fetched[p.cid] for i, p in enumerate(clip.pieces) if p.cid in fetched}
    return clip, brought


async def _fetch_level(blocks: GatewayBlocks, cids: list[CID]) -> dict[CID, bytes]:
    results: dict[CID, bytes] = {}
    limiter = trio.Semaphore(DAG_FETCHES)

    async def fetch(cid: CID) -> None:
        async with limiter:
            results[cid] = await blocks.get(cid, MAX_NODE if cid.codec == DAG_PB else MAX_PIECE)

    try:
        async with trio.open_nursery() as nursery:
            for cid in cids:
                nursery.start_soon(fetch, cid)
    except BaseExceptionGroup as group:
        errors = group.split(ViewerError)[0]
        if errors is None:
            raise
        raise _first_leaf(errors) from None
    return results


def _first_leaf(group: BaseExceptionGroup[ViewerError]) -> ViewerError:
    first = group.exceptions[0]
    return first if isinstance(first, ViewerError) else _first_leaf(first)


# ---------------------------------------------------------------- piece sources


class PieceSource(Protocol):
    def held(self) -> set[int]:
        """Pieces it can serve now."""
        ...

    def read(self, index: int) -> bytes:
        """A held piece's bytes (the leaf block)."""
        ...

    def write(self, index: int, data: bytes) -> None:
        """Keep a verified piece."""
        ...


class FilePieces:
    """Pieces in a file being written at their offsets (for ``watch``).

    The file holds only the file bytes of a dag-pb leaf, so such pieces are
    kept whole in memory to be served; fetching the DAG brought them into
    memory anyway, and kubo-style raw-leaf clips have none.
    """

    def __init__(self, fd: int, clip: Clip) -> None:
        self.fd = fd
        self.clip = clip
        self._held: set[int] = set()
        self._embedded: dict[int, bytes] = {}

    def held(self) -> set[int]:
        return set(self._held)

    def read(self, index: int) -> bytes:
        if index in self._embedded:
            return self._embedded[index]
        piece = self.clip.pieces[index]
        data = os.pread(self.fd, piece.size, piece.offset)
        if len(data) != piece.size:
            raise OSError(f"short read of piece {index}")
        return data

    def write(self, index: int, data: bytes) -> None:
        piece = self.clip.pieces[index]
        view = memoryview(self.clip.file_bytes(index, data))
        offset = piece.offset
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written
        if piece.embedded:
            self._embedded[index] = data
        self._held.add(index)


class StorePieces:
    """Pieces as blocks of the node's store (for the seeder)."""

    def __init__(self, store: BlockStore, clip: Clip) -> None:
        self.store = store
        self.clip = clip

    def held(self) -> set[int]:
        return {i for i, piece in enumerate(self.clip.pieces) if self.store.has(piece.cid)}

    def read(self, index: int) -> bytes:
        return self.store.get_block(self.clip.pieces[index].cid)

    def write(self, index: int, data: bytes) -> None:
        self.store.put_verified(self.clip.pieces[index].cid, data)


# ---------------------------------------------------------------- hub messages


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


@dataclass(eq=False)
class _Link:
    """One WebRTC connection to a peer of the swarm."""

    peer: str
    offerer: bool
    signals: trio.MemorySendChannel[dict[str, Any]]
    inbox: trio.MemoryReceiveChannel[dict[str, Any]]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    rtc: RtcPeer | None = None
    open: bool = False
    queue: deque[int] = field(default_factory=deque)  # requests to serve, in order
    queued: trio.Event = field(default_factory=trio.Event)
    sending: int | None = None
    sending_scope: trio.CancelScope | None = None
    drop_reason: str | None = None  # set when we drop the peer for misbehaving

    def send(self, message: PeerMessage, count: int) -> None:
        if self.rtc is not None and self.open:
            self.rtc.send(encode_peer_message(message, count))


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
        self.links: dict[str, _Link] = {}
        self.banned: set[str] = set()
        self.my_id: str | None = None
        self._ice: list[str] = list(stun)
        self._hub: WebSocketConnection | None = None
        self._picker: PiecePicker | None = None
        self._wake = trio.Event()
        self._failure: str | None = None
        self._nursery: trio.Nursery | None = None
        # What this membership of the hub reports (see "stats" in viewer_protocol): per peer id, bytes
        # got from it and sent to it, and which of those changed since the last report.
        self._got_from: dict[str, int] = {}
        self._sent_to: dict[str, int] = {}
        self._unreported: tuple[set[str], set[str]] = (set(), set())  # (got, sent)
        self._http_before = 0  # HTTP bytes reported by earlier memberships
        self._http_reported = 0  # by this one

    # -- the whole

    async def run(self) -> None:
        if not self.clip.swarmable and self.http is None:
            raise ViewerError(f"{self.clip.root} cannot have a swarm (empty, or pieces over {MAX_PIECE} bytes)")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if len(self.held) == self.count:
                self._completed()
            else:
                # Without a swarm there is nobody to wait for before going to HTTP.
                grace = GRACE if self.clip.swarmable else 0.0
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
        self._new_membership()
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

    def _new_membership(self) -> None:
        """The hub let us in (again): counts start from 0, but for HTTP bytes no membership reported yet."""
        self._http_before += self._http_reported
        self._http_reported = 0
        self._got_from.clear()
        self._sent_to.clear()
        for unreported in self._unreported:
            unreported.clear()

    def _count_peer_bytes(self, peer: str, size: int, *, sent: bool) -> None:
        counts = self._sent_to if sent else self._got_from
        counts[peer] = counts.get(peer, 0) + size
        self._unreported[1 if sent else 0].add(peer)

    def _stats_pending(self) -> bool:
        return any(self._unreported) or self.stats.bytes_from_http - self._http_before != self._http_reported

    async def _send_stats(self) -> None:
        await self._send_hub({"t": "have", "have": bitfield(self.held, self.count)})
        if self._hub is None:
            return
        # Peers past MAX_STATS_PEERS wait for the next report; taken off the sets before sending, so a count
        # that changes meanwhile is reported again.
        got_peers, sent_peers = (list(itertools.islice(peers, MAX_STATS_PEERS)) for peers in self._unreported)
        self._unreported[0].difference_update(got_peers)
        self._unreported[1].difference_update(sent_peers)
        self._http_reported = self.stats.bytes_from_http - self._http_before
        await self._send_hub({"t": "stats", "http": self._http_reported,
                              "got": {peer: self._got_from[peer] for peer in got_peers},
                              "sent": {peer: self._sent_to[peer] for peer in sent_peers}})  # fmt: skip

    async def _report(self, scope: trio.CancelScope) -> None:
        """Stats (and what we hold, if it changed) every STATS_EVERY; ask for peers when short of them."""
        held_reported: int | None = None
        asked = trio.current_time()
        with scope:
            while True:
                await trio.sleep(STATS_EVERY)
                now = trio.current_time()
                if len(self.held) != held_reported or self._stats_pending():
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

    def _start_link(self, peer: str, offerer: bool) -> _Link | None:
        if len(self.links) >= MAX_PEER_CONNECTIONS or self._nursery is None:
            return None
        send, receive = trio.open_memory_channel[dict[str, Any]](SIGNAL_INBOX)
        link = _Link(peer, offerer, send, receive)
        self.links[peer] = link
        self._nursery.start_soon(self._run_link, link)
        return link

    def _drop(self, link: _Link, reason: str) -> None:
        """Close the connection to a misbehaving peer and never connect to it again."""
        if link.drop_reason is None:
            link.drop_reason = reason
            self.banned.add(link.peer)
            self.stats.peers_dropped += 1
            log.info("dropping viewer", extra={"fields": {"cid": str(self.clip.root), "peer": link.peer,
                                                          "reason": reason}})  # fmt: skip
        link.scope.cancel()

    async def _run_link(self, link: _Link) -> None:
        # Nothing below raises out of the nursery: its children catch their own errors and cancel the link.
        try:
            with link.scope:
                with trio.CancelScope(shield=True):  # quick, and the finally below must get it to close it
                    link.rtc = await self.bridge.open_peer(self._ice)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._negotiate, link)
                    with trio.move_on_after(CONNECT_TIMEOUT):
                        link.open = await _wait_open(link.rtc)
                    if link.open:
                        self._opened(link)
                        nursery.start_soon(self._serve, link)
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

    async def _negotiate(self, link: _Link) -> None:
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

    def _opened(self, link: _Link) -> None:
        link.send(HaveAll(self.held), self.count)
        if self._picker is not None:
            self._picker.add_peer(link.peer)
        self._progress()
        self._kick()

    def _received(self, link: _Link, data: bytes) -> None:
        try:
            message = decode_peer_message(data, self.count)
            match message:
                case HaveAll(pieces):
                    self._announced(link, pieces)
                case HaveOne(index):
                    self._announced(link, (index,))
                case Request(index):
                    self._requested(link, index)
                case PieceChunk(index, offset, chunk):
                    self._chunk(link, index, offset, chunk)
                case Reject(index):
                    if self._picker is not None:
                        self._picker.rejected(link.peer, index)
                        self._kick()
                case Cancel(index):
                    self._cancelled(link, index)
        except (ProtocolError, PeerFault) as exc:
            self._drop(link, str(exc))

    def _announced(self, link: _Link, pieces: Iterable[int]) -> None:
        if self._picker is not None:
            self._picker.peer_has(link.peer, pieces)
            self._kick()

    def _chunk(self, link: _Link, index: int, offset: int, chunk: bytes) -> None:
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

    # -- serving

    def _requested(self, link: _Link, index: int) -> None:
        if index == link.sending or index in link.queue:
            return
        busy = len(link.queue) + (link.sending is not None) >= MAX_OUTSTANDING
        if busy or index not in self.held:
            link.send(Reject(index), self.count)
            return
        link.queue.append(index)
        link.queued.set()

    def _cancelled(self, link: _Link, index: int) -> None:
        if index in link.queue:
            link.queue.remove(index)
        elif index == link.sending and link.sending_scope is not None:
            link.sending_scope.cancel()

    async def _serve(self, link: _Link) -> None:
        rtc = link.rtc
        assert rtc is not None
        while True:
            while not link.queue:
                await link.queued.wait()
                link.queued = trio.Event()
            index = link.queue.popleft()
            try:
                data = self.source.read(index)
            except (OSError, StoreError) as exc:
                log.warning("cannot read a piece", extra={"fields": {"cid": str(self.clip.root), "piece": index,
                                                                     "error": str(exc)}})  # fmt: skip
                link.send(Reject(index), self.count)
                continue
            chunks = [
                encode_peer_message(PieceChunk(index, offset, data[offset : offset + PIECE_CHUNK]), self.count)
                for offset in range(0, len(data), PIECE_CHUNK)
            ]
            with trio.CancelScope() as scope:
                link.sending, link.sending_scope = index, scope
                try:
                    await rtc.send_paced(chunks)
                except RtcError:
                    link.scope.cancel()
                    return
                self.stats.bytes_served += len(data)
                self._count_peer_bytes(link.peer, len(data), sent=True)
            link.sending, link.sending_scope = None, None


async def _wait_open(rtc: RtcPeer) -> bool:
    """Whether the data channel opens (False: the connection ended first)."""
    async for event in rtc.events:
        if isinstance(event, ChannelOpen):
            return True
        if isinstance(event, ChannelClosed):
            return False
    return False


# ---------------------------------------------------------------- medianode watch


@dataclass(frozen=True)
class WatchResult:
    cid: str
    bytes: int
    bytes_from_peers: int
    bytes_from_http: int
    path: str


async def watch_file(
    gateway: str,
    root: CID,
    target: Path,
    *,
    stun: Sequence[str] = (),
    loopback_only: bool = False,
    seed: bool = True,
    on_progress: Callable[[Clip, ViewerStats], None] | None = None,
    on_saved: Callable[[WatchResult], None] | None = None,
) -> WatchResult:
    """Fetch the file at ``root`` through its viewer swarm at ``gateway`` (HTTP from the gateway
    where peers fall short), verified piece by piece, into ``target``; then, with ``seed``, keep
    serving it to the swarm until cancelled. ``on_saved`` is called once the file is in place."""
    part = target.with_name(f".{target.name}.medianode-part")
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        blocks = GatewayBlocks(client, gateway)
        clip, brought = await learn_clip(blocks, root)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        saved: WatchResult | None = None
        try:
            os.ftruncate(fd, clip.size)
            source = FilePieces(fd, clip)
            for index, data in brought.items():
                source.write(index, data)
            async with open_rtc_bridge(loopback_only) as bridge:
                viewer = SwarmViewer(bridge, gateway, clip, source, http=blocks, stun=stun,
                                     stop_when_complete=not seed)  # fmt: skip
                viewer.stats.bytes_from_http = sum(len(data) for data in brought.values())

                def progress(stats: ViewerStats) -> None:
                    if on_progress is not None:
                        on_progress(clip, stats)

                def complete() -> None:
                    nonlocal saved
                    os.fsync(fd)
                    os.replace(part, target)
                    saved = WatchResult(str(root), clip.size, viewer.stats.bytes_from_peers,
                                        viewer.stats.bytes_from_http, str(target))  # fmt: skip
                    if on_saved is not None:
                        on_saved(saved)

                viewer.on_progress, viewer.on_complete = progress, complete
                await viewer.run()
        finally:
            os.close(fd)
            if saved is None:
                part.unlink(missing_ok=True)
    if saved is None:
        raise ViewerError("stopped before the file was complete")
    return saved
