"""What each peer has done to us and made us hold, and what that costs it: no I/O, no clock.

The exchange tells the ledger what a peer did (opened a stream, sent wants,
sent a block nobody asked it for, was asked for blocks) and asks it what
follows (refuse the stream, start serving, drop the peer), passing the
current time in, the house style of ``wants``. Every per-peer bound of the
exchange is here, so each is kept in one place and tested without sockets.

Policy:
- Proof, not suspicion: a peer earns a strike for each block that hashes to
  no CID we asked it for (corrupt or unsolicited); ``MAX_STRIKES`` and it is
  to be dropped and banned for ``BAN_SECONDS``. A late copy of a block we did
  ask it for (within ``ASKED_SECONDS``) is no strike. Slowness is judged per
  fetch by ``wants.WantScheduler``, never here: it is proof of nothing.
- A peer may hold ``MAX_INBOUND_STREAMS`` streams open to us (each may buffer
  one 4 MiB message) and ``MAX_QUEUED_WANTS`` unanswered wants (boxo's
  default; more are ignored), answered in the order asked, one task at a
  time; a cancel withdraws a queued want, a full want list replaces the
  queue, a repeated want keeps its place in line.
- Blocks a peer sent that are verified and not yet stored count against it
  (``unstored_bytes``); the want window bounds them, this makes that visible.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ...storage.cid import CID
from .wire import WantEntry

Peer = TypeVar("Peer", bound=Hashable)

BAN_SECONDS = 600.0
MAX_STRIKES = 3
MAX_INBOUND_STREAMS = 8  # per peer: kubo uses one, Helia one per message, closed after it
ASKED_SECONDS = 120.0  # a block we asked for still counts as asked for this long
ASKED_MEMORY = 4096  # entries per peer before old ones are pruned
MAX_QUEUED_WANTS = 1024  # per peer: wants not answered yet (boxo's default); more are ignored


@dataclass
class _ServeQueue:
    """What one peer asked us for that we have not answered yet, in the order asked."""

    wants: OrderedDict[CID, WantEntry] = field(default_factory=OrderedDict)
    serving: bool = False  # a task is answering these
    reply_bytes: int = 0  # block bytes read for the reply being sent


class PeerLedger(Generic[Peer]):
    def __init__(self) -> None:
        self._banned: dict[Peer, float] = {}  # peer -> until when
        self._strikes: dict[Peer, int] = {}  # unwanted blocks per peer
        self._asked: dict[Peer, dict[CID, float]] = {}  # what we asked each peer for, and when
        self._inbound_streams: dict[Peer, int] = {}
        self._serve_queues: dict[Peer, _ServeQueue] = {}
        self.unstored_bytes: dict[Peer, int] = {}  # verified blocks from each peer waiting to be stored

    # -- bans and strikes ------------------------------------------------------------------

    def is_banned(self, peer: Peer, now: float) -> bool:
        until = self._banned.get(peer)
        if until is None:
            return False
        if now >= until:
            del self._banned[peer]
            return False
        return True

    def ban_ends(self, peer: Peer) -> float | None:
        """When the peer's ban ends (None: not banned, or its ban was seen to end)."""
        return self._banned.get(peer)

    def strike(self, peer: Peer) -> bool:
        """The peer sent a block nobody asked it for; True when that makes it one to drop."""
        self._strikes[peer] = self._strikes.get(peer, 0) + 1
        return self._strikes[peer] >= MAX_STRIKES

    def ban(self, peer: Peer, now: float) -> None:
        """The peer is dropped: refuse it for BAN_SECONDS; it starts afresh after that."""
        self._banned[peer] = now + BAN_SECONDS
        self._strikes.pop(peer, None)

    # -- what we asked for -----------------------------------------------------------------

    def asked(self, peer: Peer, cids: Iterable[CID], now: float) -> None:
        asked = self._asked.setdefault(peer, {})
        if len(asked) > ASKED_MEMORY:
            for cid in [c for c, t in asked.items() if now - t > ASKED_SECONDS]:
                del asked[cid]
        for cid in cids:
            asked[cid.to_v1()] = now

    def was_asked(self, peer: Peer, cid: CID) -> bool:
        return cid.to_v1() in self._asked.get(peer, {})

    # -- inbound streams -------------------------------------------------------------------

    def open_inbound(self, peer: Peer, now: float) -> bool:
        """A stream from ``peer`` opened: False when it is to be refused (banned, or at its cap)."""
        if self.is_banned(peer, now) or self._inbound_streams.get(peer, 0) >= MAX_INBOUND_STREAMS:
            return False
        self._inbound_streams[peer] = self._inbound_streams.get(peer, 0) + 1
        return True

    def close_inbound(self, peer: Peer) -> None:
        self._inbound_streams[peer] -= 1
        if not self._inbound_streams[peer]:
            del self._inbound_streams[peer]

    # -- wants queued for serving ----------------------------------------------------------

    def queue_wants(self, peer: Peer, wants: Iterable[WantEntry], full: bool) -> tuple[bool, int]:
        """Queue a message's wants (``full``: they replace the queue). Returns whether a task is
        now to serve them (none was, and some are queued: call ``serving_ended`` when it ends)
        and how many wants were ignored because the queue was full."""
        queue = self._serve_queues.setdefault(peer, _ServeQueue())
        if full:  # the peer's whole want list: what is not on it is no longer wanted
            queue.wants.clear()
        ignored = 0
        for want in wants:
            if want.cid.is_identity:
                continue  # the peer has its bytes already (boxo drops these too)
            if want.cancel:
                queue.wants.pop(want.cid, None)
            elif want.cid in queue.wants or len(queue.wants) < MAX_QUEUED_WANTS:
                queue.wants[want.cid] = want  # a repeated want keeps its place in line
            else:
                ignored += 1
        if queue.serving:
            return False, ignored
        if not queue.wants:
            del self._serve_queues[peer]
            return False, ignored
        queue.serving = True
        return True, ignored

    def next_wants(self, peer: Peer, most: int) -> list[WantEntry]:
        """The first ``most`` wants still queued, in order (they stay queued until answered)."""
        queue = self._serve_queues[peer]
        return list(itertools.islice(queue.wants.values(), most))

    def take_answered(self, peer: Peer, want: WantEntry, block_bytes: int) -> bool:
        """``want`` is answered (with a block of ``block_bytes``, 0 for a presence), unless it was
        cancelled or asked again differently while it was read: then False, and nothing changes."""
        queue = self._serve_queues[peer]
        if queue.wants.get(want.cid) is not want:
            return False
        del queue.wants[want.cid]
        queue.reply_bytes += block_bytes
        return True

    def reply_sent(self, peer: Peer) -> None:
        """The reply is out: its blocks are no longer held for the peer."""
        self._serve_queues[peer].reply_bytes = 0

    def serving_ended(self, peer: Peer) -> None:
        """All answered, or the peer went away or stopped reading: either way, forget its wants."""
        del self._serve_queues[peer]

    def serve_backlog(self, peer: Peer) -> tuple[int, int]:
        """Wants of ``peer`` waiting for an answer, and block bytes held for the reply being sent."""
        queue = self._serve_queues.get(peer)
        return (len(queue.wants), queue.reply_bytes) if queue is not None else (0, 0)

    # -- blocks received, not stored yet ---------------------------------------------------

    def hold_unstored(self, peer: Peer, size: int) -> None:
        self.unstored_bytes[peer] = self.unstored_bytes.get(peer, 0) + size

    def release_unstored(self, peer: Peer, size: int) -> None:
        left = self.unstored_bytes[peer] - size
        if left:
            self.unstored_bytes[peer] = left
        else:
            del self.unstored_bytes[peer]
