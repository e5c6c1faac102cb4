"""The fetching side of Bitswap: wanting what the store lacks from given peers, and storing what arrives.

``fetch_dag`` wants the root first; each dag-pb node that arrives makes its
missing children wanted, so a file streams in order (``fetch_blocks``,
``fetch_shards`` and ``fetch_range`` want less). Which block to ask whom for
is decided by one ``wants.WantScheduler`` per fetch. A block is accepted only
if its bytes hash to a CID this fetch asked that peer for; anything else is
unwanted, and striking the peer for it is the exchange's (``ledger``).
Accepted blocks are stored through one import batch per fetch, committed
every few megabytes, so an interrupted fetch resumes from what was verified.
A block holds its slot in the peer's want window until it is stored, so what
a peer can make us buffer is what we asked it for (``window`` blocks per
fetch), however slow the disk. A peer that is merely slow is no longer asked
within that fetch, but stays connected. Identity CIDs are never wanted:
their bytes are in the CID. Every fetch has explicit deadlines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID

from ...errors import FetchError
from ...storage.cid import CID
from ...storage.dagpb import DagPBError, links_of
from ...storage.hamt import HAMTError, max_levels, sub_shards
from ...storage.layout import children_in_range
from ...storage.store import BlockStore, ImportBatch
from .ledger import PeerLedger
from .network import BitswapNetwork
from .wants import Verdict, WantScheduler
from .wire import BitswapMessage, WantEntry, WantType

log = logging.getLogger("medianode.swarm")

COMMIT_EVERY = 8 * 1024 * 1024
ARRIVAL_BATCH = 64  # blocks stored per trip to the worker thread

Arrival = tuple[ID, CID, bytes]


@dataclass
class _Fetch:
    scheduler: WantScheduler[ID]
    batch: ImportBatch
    arrived: trio.MemorySendChannel[Arrival]
    peers: set[ID] = field(default_factory=set)


class BlockClient:
    def __init__(self, store: BlockStore, ledger: PeerLedger[ID], network: BitswapNetwork) -> None:
        self.store = store
        self.ledger = ledger
        self.network = network
        self._fetches: list[_Fetch] = []
        self.blocks_fetched = 0
        self.bytes_fetched = 0

    # -- what the exchange hands over ------------------------------------------------------

    def on_block(self, peer: ID, cid: CID, data: bytes) -> bool:
        """A block from ``peer`` whose bytes hash to ``cid``; the fetches that want it get it.
        False when nobody asked this peer for it: unsolicited, or corrupt (its bytes hash to
        something else). A late copy of a block we did ask it for, after its fetch ended, is fine."""
        if cid.is_identity:
            return True  # never asked for (we have its bytes): harmless, as Helia answers a want for bafkqaaa
        verdicts = []
        now = trio.current_time()
        for fetch in list(self._fetches):
            verdict = fetch.scheduler.on_block(peer, cid, now)
            verdicts.append(verdict)
            if verdict is Verdict.WANTED:
                fetch.arrived.send_nowait((peer, cid, data))
                self.ledger.hold_unstored(peer, len(data))
        return self.ledger.was_asked(peer, cid) or any(v is not Verdict.UNWANTED for v in verdicts)

    def on_presence(self, peer: ID, cid: CID, have: bool) -> None:
        for fetch in self._fetches:
            fetch.scheduler.on_presence(peer, cid, have)

    def peer_gone(self, peer: ID) -> None:
        """``peer`` was dropped: no fetch asks it any more."""
        for fetch in self._fetches:
            fetch.scheduler.peer_gone(peer)
            fetch.peers.discard(peer)

    def leave_slow_peers(self) -> None:
        """A peer that timed out too often is no longer asked within that fetch: slow is not proof
        of anything, so it stays connected and other fetches may still ask it."""
        for fetch in self._fetches:
            for peer in fetch.scheduler.take_drops():
                log.info("peer too slow for a fetch", extra={"fields": {"peer": str(peer)}})
                fetch.scheduler.peer_gone(peer)
                fetch.peers.discard(peer)

    # -- fetching --------------------------------------------------------------------------

    async def fetch_dag(
        self,
        root: CID,
        peers: list[ID],
        *,
        timeout: float = 10.0,
        window: int = 32,
        idle_limit: float = 30.0,
        on_block: Callable[[CID, int], None] | None = None,
    ) -> int:
        """Fetch every block under ``root`` the store lacks; return how many were fetched.

        Raises FetchError when no peer has a wanted block, or nothing arrives for ``idle_limit``.
        """
        missing = await trio.to_thread.run_sync(self.store.missing_in_dag, root)
        return await self._fetch(missing, peers, root, _every, timeout, window, idle_limit, on_block)

    async def fetch_blocks(
        self, cids: list[CID], peers: list[ID], *, timeout: float = 10.0, idle_limit: float = 30.0
    ) -> int:
        """Fetch exactly these blocks (those the store lacks), not what they link to."""
        missing = [c for c in cids if not await trio.to_thread.run_sync(self.store.has, c)]
        return await self._fetch(missing, peers, None, _nothing, timeout, 32, idle_limit, None)

    async def fetch_shards(self, root: CID, peers: list[ID], *, timeout: float = 10.0) -> int:
        """Fetch the directory node ``root`` and, if it is a HAMT, all its shard nodes, one trie level
        per round; entries are not fetched. A shard that lies is refused when it is decoded."""
        fetched = 0
        level = [root]
        for _ in range(max_levels() + 1):  # the root's level and at most max_levels() below it
            fetched += await self.fetch_blocks(level, peers, timeout=timeout)
            blocks = [await trio.to_thread.run_sync(self.store.get_block, cid) for cid in level]
            level = [sub for cid, block in zip(level, blocks, strict=True) for sub in sub_shards(cid, block)]
            if not level:
                return fetched
        raise HAMTError(f"{root}: sharded deeper than any valid HAMT")

    async def fetch_range(
        self, root: CID, offset: int, length: int, peers: list[ID], *, timeout: float = 10.0, idle_limit: float = 30.0
    ) -> int:
        """Fetch the blocks that hold bytes [offset, offset+length) of the file at ``root``: one
        tree level per round, so a seek into a large file costs a few round trips, not the file."""
        fetched = 0
        level: list[tuple[CID, int]] = [(root, 0)]
        while level:
            fetched += await self.fetch_blocks([cid for cid, _ in level], peers, timeout=timeout, idle_limit=idle_limit)
            next_level: list[tuple[CID, int]] = []
            for cid, start in level:
                block = await trio.to_thread.run_sync(self.store.get_block, cid)
                next_level += children_in_range(cid, block, start, offset, offset + length - 1)
            level = next_level
        return fetched

    async def _fetch(
        self,
        missing: list[CID],
        peers: list[ID],
        root: CID | None,
        expand: Callable[[CID], bool],
        timeout: float,
        window: int,
        idle_limit: float,
        on_block: Callable[[CID, int], None] | None,
    ) -> int:
        missing = [cid for cid in missing if not cid.is_identity]
        if not missing:
            return 0
        if not peers:
            raise FetchError(f"no peers to fetch {missing[0]} from")
        what = root or missing[0]
        send_arrival, receive_arrival = trio.open_memory_channel[Arrival](float("inf"))
        scheduler: WantScheduler[ID] = WantScheduler(window=window, timeout=timeout)
        fetch = _Fetch(scheduler, self.store.new_batch(), send_arrival, set(peers))
        for peer in peers:
            scheduler.peer_connected(peer)
        scheduler.want(missing)
        self._fetches.append(fetch)
        fetched = 0
        uncommitted_bytes = 0
        try:
            last_progress = trio.current_time()
            # Arrivals are queued by the inbound handler after the scheduler counted them: drain them too.
            while not scheduler.done or receive_arrival.statistics().current_buffer_used:
                await self._send_requests(fetch)
                if not fetch.peers:
                    raise FetchError(f"no peer left to ask for {what}: each was dropped or too slow")
                deadline = scheduler.next_deadline()
                if deadline is None:  # nothing in flight: is that because nobody has what is left?
                    unavailable = scheduler.unavailable()
                    if unavailable and unavailable == scheduler.missing:
                        raise FetchError(
                            f"no peer has {len(unavailable)} blocks of {what}, e.g. {next(iter(unavailable))}"
                        )
                wait = 1.0 if deadline is None else max(0.01, min(1.0, deadline - trio.current_time()))
                arrivals = []
                with trio.move_on_after(wait):
                    arrivals.append(await receive_arrival.receive())
                while arrivals and len(arrivals) < ARRIVAL_BATCH:  # what else is waiting: one thread trip for all
                    try:
                        arrivals.append(receive_arrival.receive_nowait())
                    except trio.WouldBlock:
                        break
                if arrivals:
                    last_progress = trio.current_time()
                    try:
                        new_wants = await trio.to_thread.run_sync(self._store_arrivals, fetch.batch, arrivals, expand)
                    finally:
                        self._release_unstored(arrivals)
                    scheduler.stored(cid for _, cid, _ in arrivals)
                    scheduler.want(new_wants)
                    for _, cid, data in arrivals:
                        fetched += 1
                        self.blocks_fetched += 1
                        self.bytes_fetched += len(data)
                        uncommitted_bytes += len(data)
                        if on_block is not None:
                            on_block(cid, len(data))
                    if uncommitted_bytes >= COMMIT_EVERY:
                        # Committed blocks survive a crash, so a restarted fetch resumes from here.
                        await trio.to_thread.run_sync(fetch.batch.commit)
                        fetch.batch = self.store.new_batch()
                        uncommitted_bytes = 0
                if trio.current_time() - last_progress > idle_limit:
                    raise FetchError(f"no block of {what} arrived for {idle_limit:.0f} s")
            final = fetch.batch
            await trio.to_thread.run_sync(lambda: final.commit([root] if root else [], None, 0, False))
        finally:
            fetch.batch.abort()  # a no-op once committed
            self._fetches.remove(fetch)
            self._release_unstored(_drain(receive_arrival))  # what arrived after an error is not kept
            for peer, cids in scheduler.take_cancels().items():
                await self._send_cancels(peer, cids)
        return fetched

    def _release_unstored(self, arrivals: list[Arrival]) -> None:
        for peer, _, data in arrivals:
            self.ledger.release_unstored(peer, len(data))

    def _store_arrivals(self, batch: ImportBatch, arrivals: list[Arrival], expand: Callable[[CID], bool]) -> list[CID]:
        """Store verified blocks (in a worker thread); return the children now wanted."""
        wanted = []
        for _, cid, data in arrivals:
            # The CID was computed from these bytes when the message was decoded, and matched
            # what was asked: verified once, not hashed a second time here.
            batch.put(cid, data)
            for child in _children(cid, data):
                if expand(child) and child not in batch and not self.store.has(child):
                    wanted.append(child)
        return wanted

    async def _send_requests(self, fetch: _Fetch) -> None:
        now = trio.current_time()
        for request in fetch.scheduler.next_requests(now):
            self.ledger.asked(request.peer, request.cids, now)
            message = BitswapMessage(
                wants=[
                    WantEntry(cid, priority=1, want_type=WantType.BLOCK, send_dont_have=True) for cid in request.cids
                ]
            )
            try:
                await self.network.send(request.peer, message)
            except Exception as exc:
                log.info("peer unreachable", extra={"fields": {"peer": str(request.peer), "error": repr(exc)}})
                fetch.scheduler.peer_gone(request.peer)
                fetch.peers.discard(request.peer)
        for peer, cids in fetch.scheduler.take_cancels().items():
            await self._send_cancels(peer, cids)
        self.leave_slow_peers()

    async def _send_cancels(self, peer: ID, cids: list[CID]) -> None:
        if not self.network.has_stream(peer):
            return
        with trio.move_on_after(2):
            try:
                await self.network.send(peer, BitswapMessage(wants=[WantEntry(c, cancel=True) for c in cids]))
            except Exception as exc:  # the peer went away: nothing to cancel any more
                log.debug("cancel not sent", extra={"fields": {"peer": str(peer), "error": repr(exc)}})


def _every(cid: CID) -> bool:
    return True


def _nothing(cid: CID) -> bool:
    return False


def _drain(channel: trio.MemoryReceiveChannel[Arrival]) -> list[Arrival]:
    items = []
    while True:
        try:
            items.append(channel.receive_nowait())
        except trio.WouldBlock:
            return items


def _children(cid: CID, data: bytes) -> list[CID]:
    try:
        return [child for child in links_of(cid, data) if not child.is_identity]
    except DagPBError:
        return []
