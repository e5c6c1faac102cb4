"""The block exchange: Bitswap 1.2.0 on libp2p streams, serving our blocks and fetching others'.

The protocol (messages, framing) is described in ``bitswap_wire``; which
block to ask whom for is decided by ``wants.WantScheduler``. This module is
the I/O around them:

- Serving: a want-block for a block we hold is answered with the block, a
  want-have with HAVE; for one we lack, DONT_HAVE when the peer asked for it.
  Wants wait in a queue per peer, answered in order by one task per peer, a
  reply of up to 4 MiB at a time; a cancel withdraws a queued want. What a
  peer can make us hold for serving is bounded: ``MAX_QUEUED_WANTS`` queued
  wants (more are ignored, as boxo ignores what exceeds its own 1024) and the
  one reply being sent. Reading a peer's messages never waits for serving
  it, so two nodes serving each other cannot block each other's reads.
- Fetching (``fetch_dag``): the root is wanted first; each dag-pb node that
  arrives makes its missing children wanted, so a file streams in order. A
  block is accepted only if its bytes hash to a CID this fetch asked that
  peer for; everything else is an unwanted block and a strike. Accepted
  blocks are stored through one import batch per fetch, committed every few
  megabytes, so an interrupted fetch resumes from what was verified. A block
  holds its slot in the peer's want window until it is stored, so what a peer
  can make us buffer is what we asked it for (``window`` blocks per fetch),
  however slow the disk.
- Drop and ban only on proof: a peer is disconnected and refused for
  ``BAN_SECONDS`` when its framing cannot be parsed, a message or block is
  oversized, or it sends ``MAX_STRIKES`` blocks that hash to no CID we asked
  it for (corrupt or unsolicited). Parts of a message we cannot use are
  skipped (see ``bitswap_wire``). A peer that is merely slow is no longer
  asked within that fetch, but stays connected. Identity CIDs are never
  wanted from or sent to a peer: their bytes are in the CID.

Every task lives in the caller's nursery (a peer's serve task in that of the
inbound stream that brought the wants); fetches have explicit deadlines.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from ..storage.cid import CID
from ..storage.dagpb import DagPBError, links_of
from ..storage.errors import StoreError
from ..storage.hamt import HAMTError, max_levels, sub_shards
from ..storage.layout import children_in_range
from ..storage.store import BlockStore, ImportBatch
from .bitswap_wire import (
    MAX_MESSAGE_SIZE,
    PROTOCOLS,
    BitswapMessage,
    BitswapWireError,
    FrameReader,
    Presence,
    WantEntry,
    WantType,
    decode_message,
    encode_frame,
)
from .host import peer_of, set_handlers
from .wants import Verdict, WantScheduler

log = logging.getLogger("medianode.swarm")

READ_SIZE = 256 * 1024
REPLY_BUDGET = MAX_MESSAGE_SIZE - 64 * 1024  # room for framing and presences
COMMIT_EVERY = 8 * 1024 * 1024
BAN_SECONDS = 600.0
MAX_STRIKES = 3
ARRIVAL_BATCH = 64  # blocks stored per trip to the worker thread
MAX_INBOUND_STREAMS = 8  # per peer: kubo uses one, Helia one per message, closed after it
ASKED_SECONDS = 120.0  # a block we asked for still counts as asked for this long
ASKED_MEMORY = 4096  # entries per peer before old ones are pruned
MAX_QUEUED_WANTS = 1024  # per peer: wants not answered yet (boxo's default); more are ignored
DECODE_IN_THREAD = 64 * 1024  # bytes of messages worth a thread trip: hashing blocks releases the GIL
SERVE_BATCH = 256  # queued wants looked at per trip to the store: a reply's worth of small blocks


class FetchError(Exception):
    """The swarm could not deliver what was asked (nobody has it, or nobody answered in time)."""


@dataclass
class _Fetch:
    scheduler: WantScheduler[ID]
    batch: ImportBatch
    arrived: trio.MemorySendChannel[tuple[ID, CID, bytes]]
    peers: set[ID] = field(default_factory=set)


@dataclass
class _ServeQueue:
    """What one peer asked us for that we have not answered yet, in the order asked."""

    wants: OrderedDict[CID, WantEntry] = field(default_factory=OrderedDict)
    serving: bool = False  # a task is answering these
    reply_bytes: int = 0  # block bytes read for the reply being sent


class BlockExchange:
    def __init__(self, host: IHost, store: BlockStore) -> None:
        self.host = host
        self.store = store
        self._streams: dict[ID, INetStream] = {}
        self._send_locks: dict[ID, trio.Lock] = {}
        self._fetches: list[_Fetch] = []
        self.blocks_served = 0
        self.bytes_served = 0
        self.blocks_fetched = 0
        self.bytes_fetched = 0
        self._banned: dict[ID, float] = {}  # peer -> until when (trio clock)
        self._strikes: dict[ID, int] = {}  # unwanted blocks per peer
        self._asked: dict[ID, dict[CID, float]] = {}  # what we asked each peer for, and when
        self._inbound_streams: dict[ID, int] = {}
        self._serve_queues: dict[ID, _ServeQueue] = {}
        self.unstored_bytes: dict[ID, int] = {}  # verified blocks from each peer waiting to be stored
        set_handlers(host, PROTOCOLS, self._inbound)

    def is_banned(self, peer: ID) -> bool:
        until = self._banned.get(peer)
        if until is None:
            return False
        if trio.current_time() >= until:
            del self._banned[peer]
            return False
        return True

    # -- inbound ------------------------------------------------------------------------------

    async def _inbound(self, stream: INetStream) -> None:
        peer = peer_of(stream)
        if self.is_banned(peer) or self._inbound_streams.get(peer, 0) >= MAX_INBOUND_STREAMS:
            # Each inbound stream may buffer up to one 4 MiB message: capping streams caps memory.
            await stream.reset()
            return
        self._inbound_streams[peer] = self._inbound_streams.get(peer, 0) + 1
        # The peer's serve task, when this handler starts it, lives in this nursery: leaving it
        # waits until what the peer asked for is answered (Helia closes a stream after one message).
        async with trio.open_nursery() as nursery:
            try:
                await self._read_messages(peer, stream, nursery)
            finally:
                self._inbound_streams[peer] -= 1
                if not self._inbound_streams[peer]:
                    del self._inbound_streams[peer]

    async def _read_messages(self, peer: ID, stream: INetStream, nursery: trio.Nursery) -> None:
        reader = FrameReader()
        while True:
            try:
                data = await stream.read(READ_SIZE)
            except StreamError:  # closed or reset: the peer's answers go out on our own stream anyway
                return
            if not data:
                return
            try:
                whole = reader.feed(data)
                if sum(map(len, whole)) >= DECODE_IN_THREAD:
                    messages = await trio.to_thread.run_sync(_decode_all, whole)
                else:
                    messages = _decode_all(whole)
            except BitswapWireError as exc:
                await self._drop(peer, f"bad Bitswap message: {exc}")
                return
            for message in messages:
                if self.is_banned(peer):
                    return
                await self._on_message(peer, message, nursery)

    async def _on_message(self, peer: ID, message: BitswapMessage, nursery: trio.Nursery) -> None:
        if message.ignored:
            log.debug("skipped parts of a message", extra={"fields": {"peer": str(peer), "why": message.ignored[:5]}})
        if message.wants or message.full:
            self._queue_wants(peer, message)
            queue = self._serve_queues.get(peer)
            if queue is not None and not queue.serving:
                queue.serving = True
                nursery.start_soon(self._serve, peer, queue)
        for cid, data in message.blocks:
            await self._on_block(peer, cid, data)
        for cid, presence in message.presences:
            for fetch in self._fetches:
                fetch.scheduler.on_presence(peer, cid, presence == Presence.HAVE)
        await self._enforce_strikes()

    def _queue_wants(self, peer: ID, message: BitswapMessage) -> None:
        queue = self._serve_queues.setdefault(peer, _ServeQueue())
        if message.full:  # the peer's whole want list: what is not on it is no longer wanted
            queue.wants.clear()
        ignored = 0
        for want in message.wants:
            if want.cid.is_identity:
                continue  # the peer has its bytes already (boxo drops these too)
            if want.cancel:
                queue.wants.pop(want.cid, None)
            elif want.cid in queue.wants or len(queue.wants) < MAX_QUEUED_WANTS:
                queue.wants[want.cid] = want  # a repeated want keeps its place in line
            else:
                ignored += 1
        if ignored:
            log.info("want queue full", extra={"fields": {"peer": str(peer), "ignored": ignored}})
        if not queue.wants and not queue.serving:
            del self._serve_queues[peer]

    async def _serve(self, peer: ID, queue: _ServeQueue) -> None:
        """Answer the peer's queued wants in order, one reply of up to REPLY_BUDGET at a time."""
        try:
            while queue.wants:
                looked_at = list(itertools.islice(queue.wants.values(), SERVE_BATCH))
                answers = await trio.to_thread.run_sync(self._answer, looked_at)
                reply = BitswapMessage()
                for want, answer in answers:
                    if queue.wants.get(want.cid) is not want:
                        continue  # cancelled, or asked again differently, while we read it
                    del queue.wants[want.cid]
                    if isinstance(answer, bytes):
                        reply.blocks.append((want.cid, answer))
                        queue.reply_bytes += len(answer)
                    elif answer is not None:
                        reply.presences.append((want.cid, answer))
                if not reply.is_empty():
                    await self.send(peer, reply)
                    self.blocks_served += len(reply.blocks)
                    self.bytes_served += queue.reply_bytes
                queue.reply_bytes = 0
        except Exception as exc:
            log.info("serving stopped", extra={"fields": {"peer": str(peer), "error": repr(exc)}})
        finally:
            # All answered, or the peer went away or stopped reading: either way, forget it.
            queue.wants.clear()
            queue.reply_bytes = 0
            del self._serve_queues[peer]

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

    def serve_backlog(self, peer: ID) -> tuple[int, int]:
        """Wants of ``peer`` waiting for an answer, and block bytes held for the reply being sent."""
        queue = self._serve_queues.get(peer)
        return (len(queue.wants), queue.reply_bytes) if queue is not None else (0, 0)

    def _block_or_none(self, cid: CID) -> bytes | None:
        """The block, or None when we lack it or it is withheld (only private S3 objects keep it)."""
        try:
            if self.store.is_withheld(cid):
                return None
            return self.store.get_block(cid)
        except StoreError:
            return None

    async def _on_block(self, peer: ID, cid: CID, data: bytes) -> None:
        if cid.is_identity:
            return  # never asked for (we have its bytes): harmless, as Helia answers a want for bafkqaaa
        verdicts = []
        now = trio.current_time()
        for fetch in list(self._fetches):
            verdict = fetch.scheduler.on_block(peer, cid, now)
            verdicts.append(verdict)
            if verdict is Verdict.WANTED:
                fetch.arrived.send_nowait((peer, cid, data))
                self.unstored_bytes[peer] = self.unstored_bytes.get(peer, 0) + len(data)
        asked = cid.to_v1() in self._asked.get(peer, {})
        if not asked and all(v is Verdict.UNWANTED for v in verdicts):
            # Nobody asked this peer for it: unsolicited, or corrupt (its bytes hash to something
            # else). Either way it is not stored, and the peer gets a strike. (A late copy of a
            # block we did ask for, after its fetch ended, is neither.)
            log.info("unwanted block", extra={"fields": {"peer": str(peer), "cid": str(cid)}})
            self._strikes[peer] = self._strikes.get(peer, 0) + 1
            if self._strikes[peer] >= MAX_STRIKES:
                await self._drop(peer, "sent blocks nobody asked it for")

    async def _enforce_strikes(self) -> None:
        """A peer that timed out too often is no longer asked within that fetch: slow is not proof
        of anything, so it stays connected and other fetches may still ask it."""
        for fetch in self._fetches:
            for peer in fetch.scheduler.take_drops():
                log.info("peer too slow for a fetch", extra={"fields": {"peer": str(peer)}})
                fetch.scheduler.peer_gone(peer)
                fetch.peers.discard(peer)

    async def _drop(self, peer: ID, reason: str) -> None:
        """Disconnect a misbehaving peer and refuse it for BAN_SECONDS."""
        log.info("dropping peer", extra={"fields": {"peer": str(peer), "reason": reason}})
        self._banned[peer] = trio.current_time() + BAN_SECONDS
        self._strikes.pop(peer, None)
        for fetch in self._fetches:
            fetch.scheduler.peer_gone(peer)
            fetch.peers.discard(peer)
        stream = self._streams.pop(peer, None)
        if stream is not None:
            with trio.move_on_after(2):
                await stream.reset()
        with trio.move_on_after(5):
            try:
                await self.host.disconnect(peer)
            except Exception as exc:  # already gone: nothing to undo
                log.debug("disconnect failed", extra={"fields": {"peer": str(peer), "error": repr(exc)}})

    # -- outbound -----------------------------------------------------------------------------

    async def send(self, peer: ID, message: BitswapMessage) -> None:
        """Send on our own stream to ``peer``, opening it on first use. Helia resets a stream that
        stays idle for 10 s, so a write that fails on an old stream is retried once on a new one."""
        payload = encode_frame(message)
        lock = self._send_locks.setdefault(peer, trio.Lock())
        async with lock:
            for attempt in (1, 2):
                stream = self._streams.get(peer)
                fresh = stream is None
                if stream is None:
                    stream = await self.host.new_stream(peer, [TProtocol(p) for p in PROTOCOLS])
                    self._streams[peer] = stream
                try:
                    await stream.write(payload)
                    return
                except Exception:
                    self._streams.pop(peer, None)
                    if fresh or attempt == 2:
                        raise

    # -- fetching -----------------------------------------------------------------------------

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
        send_arrival, receive_arrival = trio.open_memory_channel[tuple[ID, CID, bytes]](float("inf"))
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

    def _release_unstored(self, arrivals: list[tuple[ID, CID, bytes]]) -> None:
        for peer, _, data in arrivals:
            left = self.unstored_bytes[peer] - len(data)
            if left:
                self.unstored_bytes[peer] = left
            else:
                del self.unstored_bytes[peer]

    def _remember_asked(self, peer: ID, cids: list[CID], now: float) -> None:
        asked = self._asked.setdefault(peer, {})
        if len(asked) > ASKED_MEMORY:
            for cid in [c for c, t in asked.items() if now - t > ASKED_SECONDS]:
                del asked[cid]
        for cid in cids:
            asked[cid.to_v1()] = now

    def _store_arrivals(
        self, batch: ImportBatch, arrivals: list[tuple[ID, CID, bytes]], expand: Callable[[CID], bool]
    ) -> list[CID]:
        """Store verified blocks (in a worker thread); return the children now wanted."""
        wanted = []
        for _, cid, data in arrivals:
            # The CID was computed from these bytes when the message was decoded, and matched
            # what was asked: verified once, not hashed a second time here.
            batch.put_hashed(cid, data)
            for child in _children(cid, data):
                if expand(child) and child not in batch and not self.store.has(child):
                    wanted.append(child)
        return wanted

    async def _send_requests(self, fetch: _Fetch) -> None:
        now = trio.current_time()
        for request in fetch.scheduler.next_requests(now):
            self._remember_asked(request.peer, request.cids, now)
            message = BitswapMessage(
                wants=[
                    WantEntry(cid, priority=1, want_type=WantType.BLOCK, send_dont_have=True) for cid in request.cids
                ]
            )
            try:
                await self.send(request.peer, message)
            except Exception as exc:
                log.info("peer unreachable", extra={"fields": {"peer": str(request.peer), "error": repr(exc)}})
                fetch.scheduler.peer_gone(request.peer)
                fetch.peers.discard(request.peer)
        for peer, cids in fetch.scheduler.take_cancels().items():
            await self._send_cancels(peer, cids)
        await self._enforce_strikes()

    async def _send_cancels(self, peer: ID, cids: list[CID]) -> None:
        if peer not in self._streams:
            return
        with trio.move_on_after(2):
            try:
                await self.send(peer, BitswapMessage(wants=[WantEntry(c, cancel=True) for c in cids]))
            except Exception as exc:  # the peer went away: nothing to cancel any more
                log.debug("cancel not sent", extra={"fields": {"peer": str(peer), "error": repr(exc)}})


def _every(cid: CID) -> bool:
    return True


def _nothing(cid: CID) -> bool:
    return False


def _decode_all(raws: list[bytes]) -> list[BitswapMessage]:
    return [decode_message(raw) for raw in raws]


def _drain(channel: trio.MemoryReceiveChannel[tuple[ID, CID, bytes]]) -> list[tuple[ID, CID, bytes]]:
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
