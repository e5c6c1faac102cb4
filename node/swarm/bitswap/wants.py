"""Which block to ask which peer for, and what to do when they answer or do not: no I/O, no clock.

The block exchange's client feeds this scheduler what happens (a peer connected, a
block or a presence arrived, a peer went away) and asks it what to send
next, passing the current time in. That keeps every decision testable
without sockets, the way h11 keeps HTTP.

Policy:
- Wants are served in the order given (a seek gets a fetch of its own for
  the blocks under the range, so it does not wait behind a whole file).
- Each peer has a window of blocks asked for and not yet stored (``stored``
  frees a slot, not the arrival), so its connection stays busy while what a
  peer can make us hold is bounded by what we asked it for, however slow the
  disk; different blocks go to different peers, so several providers add up.
- A peer that said DONT_HAVE for a block is not asked for it again; one that
  said HAVE is preferred.
- A want-block unanswered after ``timeout`` goes back to the queue (to a
  different peer when there is one) and counts as one of the slow peer's timeouts.
- A block nobody asked for (or one whose bytes hash to a CID we did not ask
  that peer for, i.e. corrupt) is reported UNWANTED; striking the peer for
  it is the ledger's job (``ledger.PeerLedger``), since only the exchange sees
  every fetch. Here a peer's timeouts are counted: ``max_timeouts`` and it is
  no longer asked within this fetch (slow is not proof: it is not banned).
- Endgame: when nothing is left to assign but blocks are still in flight, idle
  peers are asked for them too once they have waited twice as long as blocks
  typically take to arrive (at once before any has arrived); the first copy
  wins and the others get a cancel. Asking at once would make equally fast
  providers send the file's last window twice; waiting that long still gets
  the blocks a dead provider owes from another within a fraction of a second
  once nothing else is left to ask for, rather than after a timeout.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from ...storage.cid import CID

Peer = TypeVar("Peer", bound=Hashable)


class Verdict(Enum):
    WANTED = "wanted"  # first copy of a block we want: store it
    DUPLICATE = "duplicate"  # wanted, but another peer was faster: ignore it
    UNWANTED = "unwanted"  # nobody asked this peer for it: ignore it (the ledger strikes the peer)


@dataclass
class Request(Generic[Peer]):
    peer: Peer
    cids: list[CID]


@dataclass
class _PeerState:
    in_flight: dict[CID, float] = field(default_factory=dict)  # cid -> when asked
    unstored: set[CID] = field(default_factory=set)  # arrived from this peer, not stored yet
    has: set[CID] = field(default_factory=set)
    lacks: set[CID] = field(default_factory=set)
    timeouts: int = 0
    delivered: int = 0


# Weight of the newest arrival in the typical wait (as TCP smooths its round-trip time).
WAIT_SMOOTHING = 1 / 8
# In endgame a block is asked of a second peer once it has waited this many typical waits.
OVERDUE_FACTOR = 2.0


class WantScheduler(Generic[Peer]):
    def __init__(self, window: int = 32, timeout: float = 10.0, max_timeouts: int = 3) -> None:
        self.window = window
        self.timeout = timeout
        self.max_timeouts = max_timeouts
        self._queue: OrderedDict[CID, None] = OrderedDict()  # wanted, not in flight anywhere
        self._wanted: set[CID] = set()  # everything wanted and not yet received
        self._unstored: dict[CID, Peer] = {}  # arrived, not stored yet: whose window it holds
        self._typical_wait: float | None = None  # from asking a peer to its block arriving
        self._peers: dict[Peer, _PeerState] = {}
        self._cancels: dict[Peer, list[CID]] = {}
        self._to_drop: list[Peer] = []

    # -- what the exchange tells the scheduler -----------------------------------------------

    def want(self, cids: Iterable[CID]) -> None:
        fresh = [c.to_v1() for c in cids if c.to_v1() not in self._wanted]
        self._wanted.update(fresh)
        for cid in fresh:
            self._queue[cid] = None

    def peer_connected(self, peer: Peer) -> None:
        self._peers.setdefault(peer, _PeerState())

    def peer_gone(self, peer: Peer) -> None:
        state = self._peers.pop(peer, None)
        self._cancels.pop(peer, None)
        if state is not None:
            self._requeue(state.in_flight)

    def on_presence(self, peer: Peer, cid: CID, have: bool) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        cid = cid.to_v1()
        if have:
            state.has.add(cid)
            return
        state.lacks.add(cid)
        if state.in_flight.pop(cid, None) is not None and cid in self._wanted:
            self._requeue({cid: 0.0})

    def on_block(self, peer: Peer, cid: CID, now: float) -> Verdict:
        """A block arrived from ``peer``; ``cid`` is what its bytes hash to. A WANTED block keeps
        its slot in the peer's window until ``stored``."""
        cid = cid.to_v1()
        state = self._peers.get(peer)
        asked_at = state.in_flight.pop(cid, None) if state is not None else None
        if cid in self._wanted:
            self._wanted.discard(cid)
            self._queue.pop(cid, None)
            if state is not None:
                state.delivered += 1
                state.unstored.add(cid)
                self._unstored[cid] = peer
            if asked_at is not None:
                self._note_wait(now - asked_at)
            for other, other_state in self._peers.items():
                if other_state.in_flight.pop(cid, None) is not None:
                    self._cancels.setdefault(other, []).append(cid)
            return Verdict.WANTED
        if asked_at is not None:
            return Verdict.DUPLICATE
        # Unwanted here; whether that is the peer's fault depends on the other fetches
        # sharing the connection, so the ledger keeps that count.
        return Verdict.UNWANTED

    # -- what the scheduler tells the exchange -------------------------------------------------

    def next_requests(self, now: float) -> list[Request[Peer]]:
        """Want-blocks to send now; also expires overdue ones and moves them elsewhere.

        Called after every arrival, so it stops scanning the queue as soon as every peer's
        window is full: its cost follows the free slots, not the size of the file.
        """
        self._expire(now)
        assigned: dict[Peer, list[CID]] = {}
        peers = self._ranked_peers()
        room = {p: self._free(p) for p in peers}
        if sum(room.values()) > 0:
            taken = []
            for cid in self._queue:
                candidates = [p for p in peers if room[p] > 0 and self._may_ask(p, cid)]
                if not candidates:
                    continue
                # A peer that said HAVE first, then the one with fewer timeouts, then the most room.
                best = max(candidates, key=lambda p: self._preference(p, cid, room))
                assigned.setdefault(best, []).append(cid)
                room[best] -= 1
                taken.append(cid)
                if not any(room.values()):
                    break
            for cid in taken:
                del self._queue[cid]
            if not self._queue:
                self._endgame(peers, assigned, now)
        requests = []
        for peer, cids in assigned.items():
            state = self._peers[peer]
            for cid in cids:
                state.in_flight[cid] = now
            requests.append(Request(peer, cids))
        return requests

    def stored(self, cids: Iterable[CID]) -> None:
        """These arrived blocks are stored: the slots they held in their peers' windows are free."""
        for cid in cids:
            peer = self._unstored.pop(cid.to_v1(), None)
            state = self._peers.get(peer) if peer is not None else None
            if state is not None:
                state.unstored.discard(cid.to_v1())

    def take_cancels(self) -> dict[Peer, list[CID]]:
        cancels, self._cancels = self._cancels, {}
        return cancels

    def take_drops(self) -> list[Peer]:
        drops, self._to_drop = self._to_drop, []
        return drops

    @property
    def done(self) -> bool:
        return not self._wanted

    @property
    def missing(self) -> set[CID]:
        return set(self._wanted)

    def unavailable(self) -> set[CID]:
        """Wanted blocks every connected peer has said it lacks."""
        if not self._peers:
            return set(self._wanted)
        return {c for c in self._wanted if all(c in s.lacks for s in self._peers.values())}

    def next_deadline(self) -> float | None:
        """When ``next_requests`` next has something to do without an arrival (for the exchange's
        sleep): the oldest request in flight times out, or in endgame one becomes overdue."""
        times = [t for s in self._peers.values() for t in s.in_flight.values()]
        if not times:
            return None
        deadline = min(times) + self.timeout
        if not self._queue:
            overdue = [asked_at + self._overdue_after() for asked_at, _ in self._endgame_candidates()]
            deadline = min([deadline, *overdue])
        return deadline

    def delivered(self, peer: Peer) -> int:
        state = self._peers.get(peer)
        return state.delivered if state else 0

    # -- internals -------------------------------------------------------------------------

    def _preference(self, peer: Peer, cid: CID, room: dict[Peer, int]) -> tuple[bool, int, int]:
        state = self._peers[peer]
        return cid in state.has, -state.timeouts, room[peer]

    def _free(self, peer: Peer) -> int:
        state = self._peers[peer]
        return self.window - len(state.in_flight) - len(state.unstored)

    def _may_ask(self, peer: Peer, cid: CID) -> bool:
        state = self._peers[peer]
        return cid not in state.lacks and cid not in state.in_flight

    def _ranked_peers(self) -> list[Peer]:
        return sorted(self._peers, key=lambda p: (self._peers[p].timeouts, -self._peers[p].delivered))

    def _endgame(self, peers: list[Peer], assigned: dict[Peer, list[CID]], now: float) -> None:
        overdue_after = self._overdue_after()
        for asked_at, cid in self._endgame_candidates():
            if now - asked_at < overdue_after:
                break  # the candidates come oldest first
            for peer in peers:
                if self._free(peer) > len(assigned.get(peer, [])) and self._may_ask(peer, cid):
                    if cid not in assigned.get(peer, []):
                        assigned.setdefault(peer, []).append(cid)
                    break

    def _endgame_candidates(self) -> list[tuple[float, CID]]:
        """Blocks in flight that some other peer with a free slot could be asked for, oldest first."""
        free = [p for p in self._peers if self._free(p) > 0]
        waiting = [
            (asked_at, cid)
            for peer, state in self._peers.items()
            for cid, asked_at in state.in_flight.items()
            if any(other != peer and self._may_ask(other, cid) for other in free)
        ]
        return sorted(waiting, key=lambda item: item[0])

    def _overdue_after(self) -> float:
        return 0.0 if self._typical_wait is None else OVERDUE_FACTOR * self._typical_wait

    def _note_wait(self, seconds: float) -> None:
        if self._typical_wait is None:
            self._typical_wait = seconds
        else:
            self._typical_wait += WAIT_SMOOTHING * (seconds - self._typical_wait)

    def _expire(self, now: float) -> None:
        for peer, state in list(self._peers.items()):
            overdue = {cid: t for cid, t in state.in_flight.items() if now - t >= self.timeout}
            if not overdue:
                continue
            for cid in overdue:
                del state.in_flight[cid]
            self._time_out(peer)
            self._requeue(overdue)

    def _requeue(self, cids: dict[CID, float]) -> None:
        # Back to the front: these were due first.
        for cid in reversed(list(cids)):
            if cid in self._wanted and not any(cid in s.in_flight for s in self._peers.values()):
                self._queue[cid] = None
                self._queue.move_to_end(cid, last=False)

    def _time_out(self, peer: Peer) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        state.timeouts += 1
        if state.timeouts >= self.max_timeouts and peer not in self._to_drop:
            self._to_drop.append(peer)
