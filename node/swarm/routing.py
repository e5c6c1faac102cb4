"""Content routing: announcing what we store, and finding who stores a CID, over the IPFS Kademlia DHT.

Participants
    Every medianode host runs a DHT *server* on ``/ipfs/kad/1.0.0`` (py-libp2p's ``KadDHT`` in
    SERVER mode): it keeps a routing table, stores provider records other peers hand it, and
    answers FIND_NODE and GET_PROVIDERS. Bootstrap peers seed the routing table; any other
    libp2p peer speaking the same protocol (kubo, Helia with a DHT) can take part.

Goals
    - ``provide(cid)``: tell the peers closest to the CID's key that we can serve it.
    - ``find_providers(cid)``: an iterative GET_PROVIDERS lookup that ends within a time bound,
      returns whatever it found by then, and never returns ourselves.
    - Records are keyed the way kubo and Helia key them: by the CID's **multihash** (the
      ``key`` field of ADD_PROVIDER/GET_PROVIDERS), so a CIDv0, a CIDv1 dag-pb and a CIDv1 raw
      with the same hash share one record.

Non-goals
    Values (PUT_VALUE/GET_VALUE, IPNS), peer records and NAT traversal; choosing *which* CIDs to
    announce (the caller passes them: announce file roots, not every block, see below); any
    persistence: provider records live in memory and expire (48 h) like everyone else's.

What is announced, and how often
    An ADD_PROVIDER with our peer ID and our dialable addresses (``host.get_addrs()`` without
    ``/p2p``, unspecified ``0.0.0.0``/``::`` dropped; pass ``announce=`` when listening on a
    wildcard address), sent to the 20 closest peers that answered a FIND_NODE lookup for the
    key. ``reprovide`` announces every CID the caller lists, new ones within ``check_every``
    seconds and each again every ``interval``
    (kubo's default is 22 h, :data:`REPROVIDE_INTERVAL`; records expire after 48 h).
    py-libp2p servers accept at most 10 ADD_PROVIDER messages per sender per 10 s and reset the
    stream beyond that, so provide rounds are paced to 10 per 10.5 s: announcing N CIDs takes
    at least N seconds. Announce file roots, not blocks.

Failure handling
    Every remote call has its own timeout (:data:`RPC_TIMEOUT`); a peer that cannot be dialled,
    resets, times out or answers garbage is skipped, and the lookup goes on with the others.
    ``provide`` returns False when no peer acknowledged the record (also when we know no
    peers); ``find_providers`` returns the providers found before its deadline, possibly [].
    ``reprovide`` logs each round and never raises (except cancellation). A DHT stream
    handler's exception is logged and the stream reset (``guarded``); it cannot end the host.

Where py-libp2p 0.8.1 falls short, and what this module does about it
    - Its stream handler treats the normal end of a request stream (``StreamEOF`` from
      ``read``, never ``b""`` on Yamux) as an error: a WARNING and a *reset* after every RPC.
      We wrap the inbound stream so that end of stream reads as ``b""``.
    - Its handler is registered unguarded; an exception before its own ``try`` (e.g. in
      ``add_peer``) would end ``host.run()``. We register it again through ``guarded``.
    - Its ``provide`` sends ADD_PROVIDER without waiting for anything (so "True" means
      "written"), feeds its own 22-hour republisher, and its ``find_providers`` returns at
      once from the local store (which always holds *ourselves* after a provide), keeps
      duplicates, has no overall deadline (a lookup can take 30 s plus 10 s per peer) and
      loses closer peers' addresses. We run our own lookups, FIND_NODE for provide and
      GET_PROVIDERS for find, using its routing table and provider store, and count an
      ADD_PROVIDER as stored when the server answers or closes its end after our half-close
      (py-libp2p echoes the request; kubo closes after handling it).
    - Its peerstore keeps one TTL per peer, and the DHT overwrites it with 1 h for every peer
      it hears about, bootstrap peers included. We re-add the bootstrap addresses as permanent
      every :data:`RESEED_EVERY` seconds and put them back in the routing table if they fell out.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.common import PROTOCOL_ID
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from ..storage.cid import CID, decode_varint, encode_varint
from .host import set_handlers

log = logging.getLogger("medianode.swarm.routing")

K = 20  # replication parameter: records go to the K closest peers
ALPHA = 10  # concurrent requests in one lookup (libp2p Kademlia spec)
RPC_TIMEOUT = 5.0  # one request, dial included
PROVIDE_TIMEOUT = 30.0  # the FIND_NODE lookup of a provide
MAX_MESSAGE = 4 * 1024 * 1024
REPROVIDE_INTERVAL = 22 * 3600.0
RESEED_EVERY = 300.0
LEARNED_ADDR_TTL = 3600  # seconds, for addresses heard from other peers
# py-libp2p servers take at most 10 ADD_PROVIDER per sender in a 10 s window.
PROVIDE_BURST = 10
PROVIDE_WINDOW = 10.5


class _BadReply(Exception):
    """A peer's answer we cannot use."""


def _distance(key_hash: int, peer: ID) -> int:
    """Kademlia distance: XOR of the SHA-256 of both keys (libp2p kad-dht spec)."""
    return key_hash ^ int.from_bytes(hashlib.sha256(peer.to_bytes()).digest(), "big")


def _key_hash(key: bytes) -> int:
    return int.from_bytes(hashlib.sha256(key).digest(), "big")


def _frame(message: Message) -> bytes:
    body = message.SerializeToString()
    return encode_varint(len(body)) + body


async def _read_some(stream: INetStream, n: int) -> bytes:
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


async def _read_frame(stream: INetStream) -> bytes | None:
    """One varint-length-prefixed message; None if the stream ended before it began."""
    prefix = bytearray()
    while True:
        byte = await _read_some(stream, 1)
        if not byte:
            if prefix:
                raise _BadReply("stream ended inside a length prefix")
            return None
        prefix += byte
        if byte[0] < 0x80:
            break
        if len(prefix) >= 10:
            raise _BadReply("length prefix too long")
    try:
        length, _ = decode_varint(prefix)
    except ValueError as exc:
        raise _BadReply(str(exc)) from None
    if length > MAX_MESSAGE:
        raise _BadReply(f"message of {length} bytes")
    body = bytearray()
    while len(body) < length:
        chunk = await _read_some(stream, length - len(body))
        if not chunk:
            raise _BadReply("stream ended inside a message")
        body += chunk
    return bytes(body)


def _peer_id(raw: bytes) -> ID | None:
    """A peer ID is a multihash: identity (inlined public key) or sha2-256."""
    try:
        code, pos = decode_varint(raw)
        length, pos = decode_varint(raw, pos)
    except ValueError:
        return None
    if pos + length != len(raw) or not ((code == 0x00 and length <= 64) or (code == 0x12 and length == 32)):
        return None
    return ID(raw)


def _addrs(raw: list[bytes]) -> list[multiaddr.Multiaddr]:
    out = []
    for item in raw:
        with suppress(Exception):  # py-multiaddr raises several types on bad bytes
            out.append(multiaddr.Multiaddr(item))
    return out


class _EndOfStreamReadsEmpty:
    """An inbound stream whose ``read`` returns ``b""`` at end of stream instead of raising.

    py-libp2p 0.8.1's DHT handler expects ``b""`` there; on Yamux ``read`` raises StreamEOF,
    which the handler logs as a WARNING and answers with a reset after every request.
    """

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream

    async def read(self, n: int | None = None) -> bytes:
        try:
            return await self._stream.read(n)
        except StreamEOF:
            return b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@dataclass
class _Lookup:
    """State of one iterative lookup, readable after its deadline cut it short."""

    key: bytes
    kind: Message.MessageType
    want: int  # stop after this many providers (0: do not stop early)
    key_hash: int = 0
    candidates: dict[ID, int] = field(default_factory=dict)  # peer -> distance to key
    queried: set[ID] = field(default_factory=set)
    answered: set[ID] = field(default_factory=set)
    providers: dict[ID, PeerInfo] = field(default_factory=dict)
    in_flight: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.key_hash = _key_hash(self.key)

    def consider(self, peer: ID) -> None:
        if peer not in self.candidates:
            self.candidates[peer] = _distance(self.key_hash, peer)

    def closest(self, peers: set[ID] | None = None) -> list[ID]:
        pool = self.candidates if peers is None else {p: self.candidates[p] for p in peers}
        return sorted(pool, key=pool.__getitem__)[:K]

    def next_peer(self) -> ID | None:
        return next((p for p in self.closest() if p not in self.queried), None)

    def satisfied(self) -> bool:
        return self.want > 0 and len(self.providers) >= self.want


class ContentRouting:
    """Provider records over the IPFS DHT for one host. Build it with :func:`open_routing`."""

    def __init__(
        self, host: IHost, background: trio.Nursery, announce: list[multiaddr.Multiaddr] | None = None
    ) -> None:
        self.host = host
        self.dht = KadDHT(host, DHTMode.SERVER)
        self._announce = announce
        self._seeds: dict[ID, PeerInfo] = {}
        self._background = background  # routing-table additions learned from lookups run here
        self._sent: deque[float] = deque()
        self._send_lock = trio.Lock()
        self._warned_no_addrs = False
        # Replace the handler KadDHT registered with a guarded, end-of-stream-tolerant one.
        set_handlers(host, (str(PROTOCOL_ID),), self._serve)

    @property
    def me(self) -> ID:
        return self.host.get_id()

    async def _serve(self, stream: INetStream) -> None:
        await self.dht.handle_stream(cast(INetStream, _EndOfStreamReadsEmpty(stream)))

    # ----- peers -----

    def add_peer(self, info: PeerInfo) -> None:
        """Remember a known peer (bootstrap): permanent addresses, looked up first, kept in the
        routing table (``open_routing`` puts it there before the DHT service starts)."""
        if info.peer_id == self.me:
            return
        self._seeds[info.peer_id] = info
        self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 0)  # 0: never expires

    async def _table_add(self, info: PeerInfo, *, known_server: bool = False) -> None:
        try:
            await self.dht.routing_table.add_peer(info, skip_server_mode_check=known_server)
        except Exception as exc:  # a full bucket pings its oldest peer; any failure just leaves it out
            log.debug("routing table add failed", extra={"fields": {"peer": str(info.peer_id), "error": repr(exc)}})

    def _remember_addrs(self, peer: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        if addrs:
            ttl = 0 if peer in self._seeds else LEARNED_ADDR_TTL
            self.host.get_peerstore().add_addrs(peer, addrs, ttl)

    def _known_addrs(self, peer: ID) -> list[multiaddr.Multiaddr]:
        try:
            return list(self.host.get_peerstore().addrs(peer))
        except Exception:  # PeerStoreError: unknown or expired
            return []

    async def _keep_seeds(self) -> None:
        """Re-add bootstrap peers' addresses as permanent, and to the table if they fell out."""
        while True:
            await trio.sleep(RESEED_EVERY)
            for info in list(self._seeds.values()):
                self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 0)
                if not self.dht.routing_table.peer_in_table(info.peer_id):
                    await self._table_add(info)

    # ----- one request -----

    async def _request(self, peer: ID, message: Message) -> bytes | None:
        """Send one message and read one reply (None: the peer closed its end without one)."""
        stream: INetStream | None = None
        clean = False
        try:
            with trio.fail_after(RPC_TIMEOUT):
                stream = await self.host.new_stream(peer, [PROTOCOL_ID])
                await stream.write(_frame(message))
                # Half-close: a kubo server closes its end once it has handled the message.
                close_write = getattr(stream, "close_write", None)
                if close_write is not None:
                    await close_write()
                reply = await _read_frame(stream)
            clean = True
            return reply
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1), suppress(Exception):
                    await (stream.close() if clean else stream.reset())

    async def _ask(self, lookup: _Lookup, peer: ID) -> None:
        try:
            raw = await self._request(peer, Message(type=lookup.kind, key=lookup.key))
            if raw is None:
                raise _BadReply("no reply")
            reply = Message.FromString(raw)
            if reply.type != lookup.kind:
                raise _BadReply(f"reply of type {reply.type}")
            self._learn(lookup, peer, reply)
        except Exception as exc:
            log.debug("dht request failed", extra={"fields": {"peer": str(peer), "error": repr(exc)}})
        finally:
            lookup.in_flight -= 1
            lookup.changed.set()

    def _learn(self, lookup: _Lookup, peer: ID, reply: Message) -> None:
        lookup.answered.add(peer)
        if not self.dht.routing_table.peer_in_table(peer):
            addrs = self._known_addrs(peer)
            if addrs:  # it answered on the DHT protocol: a server, worth a place in the table
                self._background.start_soon(partial(self._table_add, PeerInfo(peer, addrs), known_server=True))
        for provider in reply.providerPeers:
            provider_id = _peer_id(provider.id)
            if provider_id is None or provider_id == self.me or provider_id in lookup.providers:
                continue
            addrs = _addrs(list(provider.addrs)) or self._known_addrs(provider_id)
            lookup.providers[provider_id] = PeerInfo(provider_id, addrs)
        for closer in reply.closerPeers:
            closer_id = _peer_id(closer.id)
            if closer_id is None or closer_id == self.me:
                continue
            self._remember_addrs(closer_id, _addrs(list(closer.addrs)))
            if self._known_addrs(closer_id):
                lookup.consider(closer_id)

    async def _run(self, lookup: _Lookup) -> None:
        """Ask the closest unasked peers, ALPHA at a time, until the K closest known have answered
        or failed (or enough providers are known). The caller bounds the time; ``lookup`` keeps
        what was learned."""
        for peer in self.dht.routing_table.find_local_closest_peers(lookup.key, K):
            lookup.consider(peer)
        for peer in self._seeds:
            lookup.consider(peer)
        if len(lookup.candidates) < ALPHA:  # a young table: ask whoever we are connected to
            for peer in self.host.get_connected_peers():
                lookup.consider(peer)
        lookup.candidates.pop(self.me, None)
        async with trio.open_nursery() as nursery:
            while not lookup.satisfied():
                ask = lookup.next_peer() if lookup.in_flight < ALPHA else None
                if ask is not None:
                    lookup.queried.add(ask)
                    lookup.in_flight += 1
                    nursery.start_soon(self._ask, lookup, ask)
                    continue
                if lookup.in_flight == 0:
                    break
                lookup.changed = trio.Event()
                await lookup.changed.wait()
            nursery.cancel_scope.cancel()

    # ----- providing -----

    def _announced_addrs(self) -> list[multiaddr.Multiaddr]:
        if self._announce is not None:
            return list(self._announce)
        out: list[multiaddr.Multiaddr] = []
        for addr in self.host.get_addrs():
            text = str(addr).split("/p2p/")[0]
            if text.startswith(("/ip4/0.0.0.0/", "/ip6/::/")):
                continue
            ma = multiaddr.Multiaddr(text)
            if ma not in out:
                out.append(ma)
        return out

    async def _wait_send_slot(self) -> None:
        """At most PROVIDE_BURST provide rounds per PROVIDE_WINDOW seconds (py-libp2p servers' limit)."""
        async with self._send_lock:
            while len(self._sent) >= PROVIDE_BURST:
                wait = self._sent[0] + PROVIDE_WINDOW - trio.current_time()
                if wait <= 0:
                    self._sent.popleft()
                else:
                    await trio.sleep(wait)
            self._sent.append(trio.current_time())

    async def _add_provider(self, peer: ID, message: Message) -> bool:
        try:
            reply = await self._request(peer, message)
            # py-libp2p echoes the request; kubo sends nothing and closes after handling it.
            return reply is None or Message.FromString(reply).type == Message.ADD_PROVIDER
        except Exception as exc:  # reset (py-libp2p's rate limit), timeout, dial failure, garbage
            log.debug("ADD_PROVIDER failed", extra={"fields": {"peer": str(peer), "error": repr(exc)}})
            return False

    async def provide(self, cid: CID, *, timeout: float = PROVIDE_TIMEOUT) -> bool:
        """Announce that we can serve ``cid``; True if at least one peer took the record.

        The record goes into our own provider store first (we answer GET_PROVIDERS with
        ourselves), then to the K closest peers a FIND_NODE lookup (bounded by ``timeout``)
        reached. Rounds are paced (see the module docstring); the wait is not part of ``timeout``.
        """
        if cid.is_identity:
            return False  # the CID carries its own data; nobody needs to find it
        key = cid.multihash
        addrs = self._announced_addrs()
        if not addrs:
            if not self._warned_no_addrs:
                self._warned_no_addrs = True
                log.warning("no dialable address to announce; pass announce= when listening on 0.0.0.0")
            return False
        self.dht.provider_store.add_provider(key, PeerInfo(self.me, addrs))
        started = trio.current_time()
        lookup = _Lookup(key, Message.FIND_NODE, want=0)
        with trio.move_on_after(timeout):
            await self._run(lookup)
        closest = lookup.closest(lookup.answered)
        if not closest:
            log.info("provide: no DHT peer reachable", extra={"fields": {"cid": str(cid)}})
            return False
        message = Message(type=Message.ADD_PROVIDER, key=key)
        message.providerPeers.add(id=self.me.to_bytes(), addrs=[a.to_bytes() for a in addrs])
        await self._wait_send_slot()
        stored: list[ID] = []

        async def send(peer: ID) -> None:
            if await self._add_provider(peer, message):
                stored.append(peer)

        async with trio.open_nursery() as nursery:
            for peer in closest:
                nursery.start_soon(send, peer)
        log.info(
            "provided",
            extra={"fields": {"cid": str(cid), "peers": len(closest), "stored": len(stored),
                              "seconds": round(trio.current_time() - started, 3)}},
        )  # fmt: skip
        return bool(stored)

    async def reprovide(self, cids: Callable[[], list[CID]], interval: float, check_every: float = 30.0) -> None:
        """Forever: every ``check_every`` seconds, provide each CID ``cids()`` lists that was never
        announced, whose last announcement failed, or was announced ``interval`` ago or more. So
        content added while the node runs (by the CLI, an upload, an import) is announced within
        ``check_every`` seconds, and everything again each ``interval``.

        A failed round (``cids()`` raising included) is logged; the loop goes on.
        """
        check_every = min(check_every, interval)
        announced: dict[CID, float] = {}
        while True:
            started = trio.current_time()
            try:
                due = [c for c in cids() if started - announced.get(c.to_v1(), float("-inf")) >= interval]
                stored = 0
                for cid in due:
                    try:
                        if await self.provide(cid):
                            announced[cid.to_v1()] = started
                            stored += 1
                    except Exception as exc:  # one bad CID does not end the round
                        log.info("reprovide failed", extra={"fields": {"cid": str(cid), "error": repr(exc)}})
                if due:
                    log.info(
                        "reprovide round",
                        extra={"fields": {"cids": len(due), "stored": stored,
                                          "seconds": round(trio.current_time() - started, 3)}},
                    )  # fmt: skip
            except Exception as exc:
                log.warning("reprovide round failed", extra={"fields": {"error": repr(exc)}})
            await trio.sleep(check_every)

    # ----- finding -----

    async def find_providers(self, cid: CID, limit: int = 20, timeout: float = 10.0) -> list[PeerInfo]:
        """Peers that announced ``cid`` (never ourselves), at most ``limit``, found within ``timeout``.

        Records stored with us come first, then an iterative GET_PROVIDERS lookup. A provider's
        addresses come from its record, else from our peerstore; they may be empty.
        """
        key = cid.multihash
        lookup = _Lookup(key, Message.GET_PROVIDERS, want=limit)
        for info in self.dht.provider_store.get_providers(key):
            if info.peer_id != self.me and info.peer_id not in lookup.providers:
                lookup.providers[info.peer_id] = info
        started = trio.current_time()
        if not lookup.satisfied():
            with trio.move_on_after(timeout):
                await self._run(lookup)
        found = list(lookup.providers.values())[:limit]
        log.info(
            "find providers",
            extra={"fields": {"cid": str(cid), "found": len(found), "asked": len(lookup.queried),
                              "seconds": round(trio.current_time() - started, 3)}},
        )  # fmt: skip
        return found


@asynccontextmanager
async def open_routing(
    host: IHost, bootstrap: list[PeerInfo], announce: list[multiaddr.Multiaddr] | None = None
) -> AsyncIterator[ContentRouting]:
    """Run the DHT for ``host`` (inside its ``host.run()``), seeded with ``bootstrap``; stop it on exit.

    The DHT service and our background tasks run in nurseries this context owns. The seeds are
    in the routing table before the service starts: py-libp2p's service looks itself up through
    them at once, and refreshes every 10 minutes.
    """
    try:
        async with trio.open_nursery() as background:
            routing = ContentRouting(host, background, announce)
            for info in bootstrap:
                routing.add_peer(info)
                await routing._table_add(info)
            background.start_soon(routing._keep_seeds)
            try:
                async with background_trio_service(routing.dht):
                    yield routing
            finally:
                background.cancel_scope.cancel()
    finally:
        with suppress(Exception):
            host.remove_stream_handler(PROTOCOL_ID)
