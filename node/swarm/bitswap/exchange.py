"""The block exchange: Bitswap 1.2.0 on one host, serving our blocks and fetching others'.

It composes the parts as boxo's bitswap does: the streams (``network``), the
server, the client, and the per-peer ledger they share, and it routes what
arrives on the streams peers open to us: wants to the server, blocks and
presences to the client. It is also where a peer is dropped, since a drop
concerns every part.

Drop and ban only on proof: a peer is disconnected and refused for
``ledger.BAN_SECONDS`` when its framing cannot be parsed, a message or block
is oversized, or it sends ``ledger.MAX_STRIKES`` blocks that hash to no CID
we asked it for (corrupt or unsolicited). Parts of a message we cannot use
are skipped (see ``wire``).

Every task lives in a nursery its caller owns: a peer's serve task in that of
the inbound stream that brought the wants (leaving it waits until what the
peer asked for is answered: Helia closes a stream after one message), a
fetch in its caller's.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from ...storage.store import BlockStore
from ..host import peer_of, set_handlers
from .client import BlockClient
from .ledger import PeerLedger
from .network import BitswapNetwork, InboundMessages
from .server import BlockServer
from .wire import PROTOCOLS, BitswapMessage, BitswapWireError, Presence

log = logging.getLogger("medianode.swarm")


class BlockExchange:
    """Bitswap for ``host`` over ``store``. The parts' classes may be given to run a variant of one
    (a misbehaving peer, in the tests)."""

    def __init__(
        self,
        host: IHost,
        store: BlockStore,
        *,
        network_class: type[BitswapNetwork] = BitswapNetwork,
        server_class: type[BlockServer] = BlockServer,
        client_class: type[BlockClient] = BlockClient,
    ) -> None:
        self.host = host
        self.store = store
        self.ledger: PeerLedger[ID] = PeerLedger()
        self.network = network_class(host)
        self.server = server_class(store, self.ledger, self.network)
        self.client = client_class(store, self.ledger, self.network)
        # What the rest of the node calls to fetch: the client's.
        self.fetch_dag = self.client.fetch_dag
        self.fetch_blocks = self.client.fetch_blocks
        self.fetch_shards = self.client.fetch_shards
        self.fetch_range = self.client.fetch_range
        set_handlers(host, PROTOCOLS, self._inbound)

    def is_banned(self, peer: ID) -> bool:
        # The clock only for a peer that was banned: /metrics asks from a worker thread, without one.
        return self.ledger.ban_ends(peer) is not None and self.ledger.is_banned(peer, trio.current_time())

    @property
    def blocks_served(self) -> int:
        return self.server.blocks_served

    @property
    def bytes_served(self) -> int:
        return self.server.bytes_served

    @property
    def blocks_fetched(self) -> int:
        return self.client.blocks_fetched

    @property
    def bytes_fetched(self) -> int:
        return self.client.bytes_fetched

    async def _inbound(self, stream: INetStream) -> None:
        peer = peer_of(stream)
        if not self.ledger.open_inbound(peer, trio.current_time()):
            # Each inbound stream may buffer up to one 4 MiB message: capping streams caps memory.
            await stream.reset()
            return
        async with trio.open_nursery() as serving:  # the peer's serve task, if these wants start it
            try:
                await self._read_messages(peer, InboundMessages(stream), serving)
            finally:
                self.ledger.close_inbound(peer)  # the stream's slot frees when reading ends

    async def _read_messages(self, peer: ID, inbound: InboundMessages, serving: trio.Nursery) -> None:
        while True:
            try:
                messages = await inbound.receive()
            except BitswapWireError as exc:
                await self._drop(peer, f"bad Bitswap message: {exc}")
                return
            if messages is None:
                return
            for message in messages:
                if self.is_banned(peer):
                    return
                await self._on_message(peer, message, serving)

    async def _on_message(self, peer: ID, message: BitswapMessage, serving: trio.Nursery) -> None:
        if message.ignored:
            log.debug("skipped parts of a message", extra={"fields": {"peer": str(peer), "why": message.ignored[:5]}})
        if message.wants or message.full:
            self.server.on_wants(peer, message, serving)
        for cid, data in message.blocks:
            if not self.client.on_block(peer, cid, data):
                # Not stored; and proof enough, after MAX_STRIKES, that the peer is broken or lying.
                log.info("unwanted block", extra={"fields": {"peer": str(peer), "cid": str(cid)}})
                if self.ledger.strike(peer):
                    await self._drop(peer, "sent blocks nobody asked it for")
        for cid, presence in message.presences:
            self.client.on_presence(peer, cid, presence == Presence.HAVE)
        self.client.leave_slow_peers()

    async def _drop(self, peer: ID, reason: str) -> None:
        """Disconnect a misbehaving peer and refuse it for BAN_SECONDS."""
        log.info("dropping peer", extra={"fields": {"peer": str(peer), "reason": reason}})
        self.ledger.ban(peer, trio.current_time())
        self.client.peer_gone(peer)
        await self.network.disconnect(peer)
