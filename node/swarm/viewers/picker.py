"""Which piece to ask of which peer, and when to take one over HTTP instead: a viewer's download plan.

Pure state with no I/O and no clock of its own (every call that depends on
time takes ``now``), in the manner of h11: the viewer feeds in what happened
(a peer connected or announced pieces, a chunk arrived, a request was
rejected, an HTTP fetch ended) and asks what to do next (``requests``,
``expire``, ``http_fetches``, ``next_deadline``). It is for a viewer that
wants the whole clip (``medianode watch``); seeders need none of it.

Order: sequential, lowest missing index first. The swarm's other members are
mostly browsers that play from the start, so a Python viewer holding the
early pieces first is useful to them soonest, and rarest-first's reason to
exist (a piece vanishing when its last holder leaves) does not apply when
HTTP always has every piece. Sequential order also keeps the scans short: a
cursor skips the finished prefix.

HTTP takes a piece when a peer request for it timed out, or once ``grace``
seconds (``PEER_PATIENCE``) have passed since the start and no connected
peer has announced it (the grace gives the first peers time to connect and send their bitfields).
Pieces some connected peer has wait for that peer, even while it is busy:
peers are preferred. HTTP goes in order too, but from ``http_start`` round
to the beginning, and the start jumps to a random piece (from ``rng``)
whenever a peer announces a piece we are fetching over HTTP ourselves:
viewers that start together then soon take different pieces from the
gateway and trade the rest, instead of fetching the same ones in lockstep.

Faults: a chunk that was not requested, that does not continue the piece at
the next offset, or that runs past the piece's end raises ``PeerFault`` (the
viewer drops that peer and ``remove_peer`` frees its requests). Chunks still
in flight after we cancelled a request are let through and discarded, and
that piece is never asked of that peer again. A request is cancelled, its
piece goes to HTTP, and the peer gets a strike when neither the request nor
its peer has made progress for ``REQUEST_TIMEOUT`` (a sender works through its
queue in order, so a request behind others shows none of its own while the
peer is busy with them), or when it has been open ``MAX_OUTSTANDING`` timeouts
in all; ``TIMEOUTS_TO_DROP`` strikes and ``expire`` says to drop it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .protocol import HTTP_PARALLEL, MAX_OUTSTANDING, PEER_PATIENCE, REQUEST_TIMEOUT, TIMEOUTS_TO_DROP


class PeerFault(Exception):
    """A peer broke the data-channel protocol; drop it."""


@dataclass(frozen=True, slots=True)
class Expired:
    peer: str
    index: int
    drop: bool  # the peer has reached TIMEOUTS_TO_DROP


@dataclass
class _Request:
    asked: float
    progressed: float
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class _Peer:
    pieces: set[int] = field(default_factory=set)
    requests: dict[int, _Request] = field(default_factory=dict)
    cancelled: dict[int, int] = field(default_factory=dict)  # piece -> offset its stale chunks continue at
    strikes: int = 0
    moved: float = float("-inf")  # when its last chunk (of any piece) came


class PiecePicker:
    def __init__(
        self,
        sizes: Sequence[int],
        held: Iterable[int],
        now: float,
        grace: float = PEER_PATIENCE,
        http_parallel: int = HTTP_PARALLEL,
        request_timeout: float = REQUEST_TIMEOUT,
        http_start: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.sizes = list(sizes)
        self.done: set[int] = set(held)
        self.http: set[int] = set()  # pieces being fetched over HTTP
        self.peers: dict[str, _Peer] = {}
        self.grace_ends = now + grace
        self.http_parallel = http_parallel
        self.request_timeout = request_timeout
        self.http_start = http_start
        self._rng = rng or random.Random(0)
        self._holders = [0] * len(self.sizes)  # connected peers that announced each piece
        self._orphans = len(self.sizes) - len(self.done)  # missing pieces no connected peer announced
        self._timed_out: set[int] = set()  # pieces HTTP should take because a peer did not deliver
        self._assigned: dict[int, str] = {}  # piece -> the peer it is requested from
        self._cursor = 0  # every piece below it is done

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.sizes)

    def missing(self) -> int:
        return len(self.sizes) - len(self.done)

    # -- peers

    def add_peer(self, peer: str) -> None:
        self.peers.setdefault(peer, _Peer())

    def remove_peer(self, peer: str) -> None:
        """The peer is gone (closed, or dropped by us): forget what it has and free its requests."""
        state = self.peers.pop(peer, None)
        if state is None:
            return
        for index in state.requests:
            del self._assigned[index]
        for index in state.pieces:
            self._count_holder(index, -1)

    def peer_has(self, peer: str, pieces: Iterable[int]) -> None:
        state = self.peers.get(peer)
        if state is None:
            return
        for index in pieces:
            if index not in state.pieces:
                state.pieces.add(index)
                self._count_holder(index, +1)
            if index in self.http:  # we and that peer fetched the same piece from the gateway
                self.http_start = self._rng.randrange(len(self.sizes))

    def rejected(self, peer: str, index: int) -> None:
        """The peer will not send ``index``: free the request and stop thinking it has the piece."""
        state = self.peers.get(peer)
        if state is None:
            return
        if state.requests.pop(index, None) is not None:
            del self._assigned[index]
        if index in state.pieces:
            state.pieces.discard(index)
            self._count_holder(index, -1)

    def _count_holder(self, index: int, change: int) -> None:
        before = self._holders[index]
        self._holders[index] = before + change
        if index not in self.done and (before == 0) != (self._holders[index] == 0):
            self._orphans += -1 if before == 0 else 1

    # -- data

    def receive(self, peer: str, index: int, offset: int, data: bytes, now: float) -> bytes | None:
        """A chunk from ``peer``; the whole piece (still to be verified) once its last chunk is in."""
        state = self.peers.get(peer)
        if state is None:
            raise PeerFault("chunk from a peer that is not connected")
        size = self.sizes[index]
        state.moved = now
        stale = state.cancelled.get(index)
        if stale is not None:
            if offset != stale or offset + len(data) > size:
                raise PeerFault(f"piece {index}: chunk at {offset} does not continue the cancelled piece")
            if offset + len(data) == size:
                del state.cancelled[index]
            else:
                state.cancelled[index] = offset + len(data)
            return None
        request = state.requests.get(index)
        if request is None:
            raise PeerFault(f"piece {index} was not requested")
        if offset != len(request.buffer):
            raise PeerFault(f"piece {index}: chunk at {offset}, {len(request.buffer)} expected")
        if offset + len(data) > size:
            raise PeerFault(f"piece {index}: chunk runs past its {size} bytes")
        request.buffer += data
        request.progressed = now
        if len(request.buffer) < size:
            return None
        del state.requests[index]
        del self._assigned[index]
        return bytes(request.buffer)

    def piece_done(self, index: int) -> None:
        """``index`` is verified and stored, whoever brought it."""
        if index in self.done:
            return
        self.done.add(index)
        if self._holders[index] == 0:
            self._orphans -= 1
        self._timed_out.discard(index)
        while self._cursor < len(self.sizes) and self._cursor in self.done:
            self._cursor += 1

    def http_finished(self, index: int) -> None:
        """The HTTP fetch of ``index`` ended; call ``piece_done`` too if it brought the piece."""
        self.http.discard(index)

    # -- decisions

    def _free(self, index: int) -> bool:
        return index not in self.done and index not in self._assigned and index not in self.http

    def requests(self, now: float) -> list[tuple[str, int]]:
        """New requests to send, as (peer, piece); recorded as outstanding."""
        out: list[tuple[str, int]] = []
        # Least busy peers first spreads the load; those with fewer pieces are then not starved.
        for peer, state in sorted(self.peers.items(), key=lambda item: len(item[1].requests)):
            if len(state.requests) >= MAX_OUTSTANDING:
                continue
            remaining = len(self.sizes) - self._cursor
            # Walk whichever is shorter: the pieces left, or the pieces this peer has.
            if len(state.pieces) < remaining:
                candidates: Iterable[int] = sorted(i for i in state.pieces if i >= self._cursor)
            else:
                candidates = range(self._cursor, len(self.sizes))
            for index in candidates:
                if len(state.requests) >= MAX_OUTSTANDING:
                    break
                if (
                    index in state.pieces
                    and index not in state.cancelled
                    and index not in self._timed_out
                    and self._free(index)
                ):
                    state.requests[index] = _Request(now, now)
                    self._assigned[index] = peer
                    out.append((peer, index))
        return out

    def expire(self, now: float) -> list[Expired]:
        """Requests with no progress for the timeout: cancelled here; send ``cancel`` for each."""
        out: list[Expired] = []
        for peer, state in self.peers.items():
            for index, request in list(state.requests.items()):
                if now < self._expires(state, request):
                    continue
                del state.requests[index]
                del self._assigned[index]
                state.cancelled[index] = len(request.buffer)
                self._timed_out.add(index)
                state.strikes += 1
                out.append(Expired(peer, index, state.strikes >= TIMEOUTS_TO_DROP))
        return out

    def _expires(self, state: _Peer, request: _Request) -> float:
        moved = max(request.progressed, state.moved)
        return min(moved + self.request_timeout, request.asked + MAX_OUTSTANDING * self.request_timeout)

    def http_fetches(self, now: float) -> list[int]:
        """Pieces to fetch over HTTP now; recorded as in flight until ``http_finished``."""
        room = self.http_parallel - len(self.http)
        out: list[int] = []
        for index in sorted(self._timed_out):
            if room <= len(out):
                return self._start_http(out)
            if self._free(index):
                out.append(index)
        if now >= self.grace_ends and self._orphans:
            first, end = max(self._cursor, self.http_start), len(self.sizes)
            for index in itertools.chain(range(first, end), range(self._cursor, min(first, end))):
                if room <= len(out):
                    break
                if self._holders[index] == 0 and self._free(index) and index not in out:
                    out.append(index)
        return self._start_http(out)

    def _start_http(self, pieces: list[int]) -> list[int]:
        self.http.update(pieces)
        return pieces

    def next_deadline(self, now: float) -> float | None:
        """When ``expire`` or ``http_fetches`` may have something new without any event coming in."""
        times = [self._expires(s, r) for s in self.peers.values() for r in s.requests.values()]
        if now < self.grace_ends:
            times.append(self.grace_ends)
        return min(times, default=None)
