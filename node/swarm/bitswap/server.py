"""The serving side of Bitswap: answering the wants peers send us from our store.

A want-block for a block we hold is answered with the block, a want-have
with HAVE; for one we lack (or withhold: only private S3 objects keep it),
DONT_HAVE when the peer asked for it, otherwise nothing. Wants wait in the
peer's queue in the ledger (``ledger``: its bounds) and are answered in
order by one task per peer, a reply of up to ``REPLY_BUDGET`` at a time, so
what a peer can make us hold is its queue and the one reply being sent.
That task runs in the nursery of the inbound stream that brought the wants
(see ``exchange``), so reading a peer's messages never waits for serving it.
Identity CIDs are never sent: their bytes are in the CID.
"""

from __future__ import annotations

import logging

import trio
from libp2p.peer.id import ID

from ...storage.cid import CID
from ...storage.errors import StoreError
from ...storage.store import BlockStore
from .ledger import PeerLedger
from .network import BitswapNetwork
from .wire import MAX_MESSAGE_SIZE, BitswapMessage, Presence, WantEntry, WantType

log = logging.getLogger("medianode.swarm")

REPLY_BUDGET = MAX_MESSAGE_SIZE - 64 * 1024  # room for framing and presences
SERVE_BATCH = 256  # queued wants looked at per trip to the store: a reply's worth of small blocks


class BlockServer:
    def __init__(self, store: BlockStore, ledger: PeerLedger[ID], network: BitswapNetwork) -> None:
        self.store = store
        self.ledger = ledger
        self.network = network
        self.blocks_served = 0
        self.bytes_served = 0

    def on_wants(self, peer: ID, message: BitswapMessage, nursery: trio.Nursery) -> None:
        """Queue the wants (and cancels) of ``message``; start the peer's serve task in ``nursery``
        when none is running."""
        start, ignored = self.ledger.queue_wants(peer, message.wants, message.full)
        if ignored:
            log.info("want queue full", extra={"fields": {"peer": str(peer), "ignored": ignored}})
        if start:
            nursery.start_soon(self._serve, peer)

    async def _serve(self, peer: ID) -> None:
        """Answer the peer's queued wants in order, one reply of up to REPLY_BUDGET at a time."""
        try:
            while wants := self.ledger.next_wants(peer, SERVE_BATCH):
                answers = await trio.to_thread.run_sync(self._answer, wants)
                reply = BitswapMessage()
                reply_bytes = 0
                for want, answer in answers:
                    block_bytes = len(answer) if isinstance(answer, bytes) else 0
                    if not self.ledger.take_answered(peer, want, block_bytes):
                        continue  # cancelled, or asked again differently, while we read it
                    if isinstance(answer, bytes):
                        reply.blocks.append((want.cid, answer))
                        reply_bytes += block_bytes
                    elif answer is not None:
                        reply.presences.append((want.cid, answer))
                if not reply.is_empty():
                    await self.network.send(peer, reply)
                    self.blocks_served += len(reply.blocks)
                    self.bytes_served += reply_bytes
                self.ledger.reply_sent(peer)
        except Exception as exc:
            log.info("serving stopped", extra={"fields": {"peer": str(peer), "error": repr(exc)}})
        finally:
            self.ledger.serving_ended(peer)

    def _answer(self, wants: list[WantEntry]) -> list[tuple[WantEntry, bytes | Presence | None]]:
        """Answers to the first of ``wants`` (in a worker thread), as many as fit in one reply:
        the block, HAVE, DONT_HAVE, or None for a block we lack that the peer wants no word about."""
        answers: list[tuple[WantEntry, bytes | Presence | None]] = []
        size = 0
        for want in wants:
            block = self._block_or_none(want.cid)
            if block is None:
                answers.append((want, Presence.DONT_HAVE if want.send_dont_have else None))
            elif want.want_type == WantType.HAVE:
                answers.append((want, Presence.HAVE))
            elif size + len(block) > REPLY_BUDGET and size:
                break  # the next reply starts with it (read again then: reads are cheap, memory is not)
            else:
                answers.append((want, block))
                size += len(block)
        return answers

    def _block_or_none(self, cid: CID) -> bytes | None:
        """The block, or None when we lack it or it is withheld (only private S3 objects keep it)."""
        try:
            if self.store.is_withheld(cid):
                return None
            return self.store.get_block(cid)
        except StoreError:
            return None
