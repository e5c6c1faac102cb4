"""The swarm as the rest of the node sees it: connected peers, and fetching what the store lacks.

``open_swarm`` owns the host's lifetime and the nursery of the swarm's
background tasks (keeping bootstrap peers connected, dialling peers found on
the LAN over mDNS, completing cached files, what ``start_background`` is
given); a ``Swarm`` is built with that nursery, so it cannot run without one.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from ..storage.cid import CID
from ..storage.store import BlockStore
from .bitswap import BlockExchange, FetchError
from .host import load_identity, make_host
from .routing import REPROVIDE_INTERVAL, ContentRouting, open_routing

log = logging.getLogger("medianode.swarm")

RECONNECT_EVERY = 30.0
CONNECT_TIMEOUT = 10.0
FIND_TIMEOUT = 10.0


class Swarm:
    def __init__(
        self,
        host: IHost,
        store: BlockStore,
        bootstrap: list[PeerInfo],
        routing: ContentRouting | None,
        background: trio.Nursery,
    ) -> None:
        self.host = host
        self.store = store
        self.exchange = BlockExchange(host, store)
        self.bootstrap = bootstrap
        self.routing = routing  # None with --no-dht
        self._background = background  # lives as long as the swarm: cancelled when it stops
        self._caching: set[CID] = set()

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id().to_base58())

    def addrs(self) -> list[str]:
        """Where other peers can dial us, with ``/p2p/PEERID``."""
        return [f"{a}/p2p/{self.peer_id}" for a in dialable(self.host)]

    def peers(self) -> list[ID]:
        """Connected peers we trade with (not those dropped for misbehaving)."""
        return [p for p in self.host.get_connected_peers() if not self.exchange.is_banned(p)]

    async def connect(self, info: PeerInfo) -> None:
        with trio.fail_after(CONNECT_TIMEOUT):
            await self.host.connect(info)

    async def _keep_bootstrap_connected(self) -> None:
        while True:
            connected = set(self.peers())
            for info in self.bootstrap:
                if info.peer_id not in connected and not self.exchange.is_banned(info.peer_id):
                    try:
                        await self.connect(info)
                    except Exception as exc:  # unreachable for now: try again next round
                        log.info("bootstrap peer unreachable", extra={"fields": {"peer": str(info.peer_id),
                                                                                  "error": repr(exc)}})  # fmt: skip
            await trio.sleep(RECONNECT_EVERY)

    async def _dial_discovered(self, found: trio.MemoryReceiveChannel[PeerInfo]) -> None:
        """Connect to each peer announced on the LAN (see ``mdns``) we are not connected to yet."""
        dialing: set[ID] = set()

        async def dial(info: PeerInfo) -> None:
            try:
                await self.connect(info)
                addrs = [str(a) for a in info.addrs]
                log.info("connected to a LAN peer", extra={"fields": {"peer": str(info.peer_id), "addrs": addrs}})
            except Exception as exc:  # announced but unreachable from here: it may announce again
                log.info("LAN peer unreachable", extra={"fields": {"peer": str(info.peer_id), "error": repr(exc)}})
            finally:
                dialing.discard(info.peer_id)

        async with found, trio.open_nursery() as nursery:
            async for info in found:
                peer = info.peer_id
                if peer in dialing or peer in self.host.get_connected_peers() or self.exchange.is_banned(peer):
                    continue
                dialing.add(peer)
                nursery.start_soon(dial, info)

    async def _need_peers(self) -> list[ID]:
        """Connected peers; with none, the bootstrap peers are dialled now rather than at the next round."""
        peers = self.peers()
        if not peers:
            for info in self.bootstrap:
                if not self.exchange.is_banned(info.peer_id):
                    with contextlib.suppress(Exception):  # unreachable: the next one may answer
                        await self.connect(info)
            peers = self.peers()
        if not peers:
            raise FetchError("no peers connected")
        return peers

    async def _with_providers(self, root: CID, fetch: Callable[[list[ID]], Awaitable[int]]) -> int:
        """Fetch from connected peers; if they cannot deliver, ask the DHT who can and try those."""
        try:
            return await fetch(await self._need_peers())
        except FetchError:
            if self.routing is None:
                raise
            found = []
            for info in await self.routing.find_providers(root, timeout=FIND_TIMEOUT):
                if self.exchange.is_banned(info.peer_id):
                    continue
                with contextlib.suppress(Exception):  # a stale record: try the next provider
                    await self.connect(info)
                    found.append(info.peer_id)
            if not found:
                raise
            log.info(
                "fetching from providers found in the DHT", extra={"fields": {"cid": str(root), "peers": len(found)}}
            )
            return await fetch(found + self.peers())

    async def fetch_block(self, cid: CID) -> None:
        await self._with_providers(cid, lambda peers: self.exchange.fetch_blocks([cid], peers))

    async def fetch_directory(self, cid: CID) -> None:
        """Fetch a directory's own blocks, not its entries: a flat directory's node, or every shard
        of a HAMT, a level per round (at most 8 levels: a few round trips, however many entries)."""
        await self._with_providers(cid, lambda peers: self.exchange.fetch_shards(cid, peers))

    async def fetch_range(self, root: CID, offset: int, length: int) -> None:
        await self._with_providers(root, lambda peers: self.exchange.fetch_range(root, offset, length, peers))

    async def fetch_dag(self, root: CID, on_block: Callable[[CID, int], None] | None = None) -> int:
        return await self._with_providers(root, lambda peers: self.exchange.fetch_dag(root, peers, on_block=on_block))

    async def provide(self, cid: CID) -> bool:
        return self.routing is not None and await self.routing.provide(cid)

    async def find_providers(self, cid: CID) -> list[PeerInfo]:
        return [] if self.routing is None else await self.routing.find_providers(cid, timeout=FIND_TIMEOUT)

    def start_background(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` for as long as the swarm runs (it is cancelled when the swarm stops)."""
        self._background.start_soon(task)

    def fetch_in_background(self, root: CID, offset: int = 0, length: int | None = None) -> None:
        """Keep fetching a partly read file in the background: all of it (``length`` None), or
        [offset, offset+length) as read-ahead; one such fetch per root at a time."""
        if root in self._caching:
            return
        self._caching.add(root)

        async def complete() -> None:
            try:
                if length is None:
                    await self.fetch_dag(root)
                else:
                    await self.fetch_range(root, offset, length)
            except (FetchError, trio.TooSlowError) as exc:
                log.info("background fetch stopped", extra={"fields": {"cid": str(root), "error": str(exc)}})
            finally:
                self._caching.discard(root)

        self._background.start_soon(complete)


@asynccontextmanager
async def open_swarm(
    store: BlockStore,
    data_dir: Path,
    listen: list[str],
    bootstrap: list[PeerInfo],
    dht: bool = False,
    mdns: bool = False,
    reprovide_interval: float = REPROVIDE_INTERVAL,
    announce_new_every: float = 30.0,
) -> AsyncIterator[Swarm]:
    """Start the host (and with ``dht`` the DHT, announcing new roots and pins within
    ``announce_new_every`` seconds and all of them each ``reprovide_interval``; with ``mdns``
    announcing ourselves on the LAN and dialling the peers found there) and the swarm's
    background tasks; stop them all on exit."""
    key_pair = load_identity(data_dir)
    addrs = [multiaddr.Multiaddr(a) for a in listen]
    host = make_host(key_pair, addrs)
    try:
        async with (
            host.run(listen_addrs=addrs),
            open_routing(host, bootstrap, dialable(host)) if dht else _no_routing() as routing,
            _open_mdns(host) if mdns else _no_discovery() as discovered,
            trio.open_nursery() as nursery,
        ):
            swarm = Swarm(host, store, bootstrap, routing, nursery)
            nursery.start_soon(swarm._keep_bootstrap_connected)
            if discovered is not None:
                nursery.start_soon(swarm._dial_discovered, discovered)
            if routing is not None:
                nursery.start_soon(routing.reprovide, store.root_cids, reprovide_interval, announce_new_every)
            try:
                yield swarm
            finally:
                nursery.cancel_scope.cancel()
    finally:
        # Leaving host.run() does not close the listening socket in py-libp2p 0.8.1; close() does.
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await host.close()


def dialable(host: IHost) -> list[multiaddr.Multiaddr]:
    """The host's bound addresses (real ports, also when 0 was asked for), wildcards expanded."""
    bound = [str(a).split("/p2p/")[0] for a in host.get_addrs()]
    return [multiaddr.Multiaddr(a) for a in announce_addrs(bound)]


def announce_addrs(listen: list[str]) -> list[str]:
    """Listen addresses as other peers can dial them: a wildcard host becomes this machine's
    own IPv4 addresses (loopback only when there is nothing else)."""
    out: list[str] = []
    for addr in listen:
        if not addr.startswith("/ip4/0.0.0.0/"):
            out.append(addr)
            continue
        rest = addr[len("/ip4/0.0.0.0") :]
        try:
            ips = socket.gethostbyname_ex(socket.gethostname())[2]
        except OSError:
            ips = []
        ips = [ip for ip in ips if not ip.startswith("127.")] or ["127.0.0.1"]
        out += [f"/ip4/{ip}{rest}" for ip in ips]
    return out


@asynccontextmanager
async def _no_routing() -> AsyncIterator[None]:
    yield None


@asynccontextmanager
async def _open_mdns(host: IHost) -> AsyncIterator[trio.MemoryReceiveChannel[PeerInfo]]:
    from .mdns import open_mdns  # zeroconf is imported only when mDNS is on

    bound = [str(a).split("/p2p/")[0] for a in host.get_addrs()]
    async with open_mdns(str(host.get_id().to_base58()), bound) as found:
        yield found


@asynccontextmanager
async def _no_discovery() -> AsyncIterator[None]:
    yield None
