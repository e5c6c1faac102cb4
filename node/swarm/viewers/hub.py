"""The signaling hub's bookkeeping: swarms of viewers per CID, limits, relays, byte counts.

Pure state, no sockets (the WebSocket layer in ``node/gateway/signaling.py`` wraps it):
``join`` admits a viewer or refuses it, ``handle`` turns one checked message
from a viewer into the messages to send and to whom, ``leave`` forgets a
viewer. Messages and their meaning are specified in
``protocol.py``.

Limits, all per node: viewers per swarm, sockets per address, swarms in
all, token buckets for joins per address and per swarm, and a token bucket
per viewer for relayed signals (ICE candidates come in bursts of a few
dozen, so the bucket allows that and no more) and one for stats. An
*address* is an IPv4 address, or the /64 an IPv6 address is in (one
subscriber's usual allocation).

What the counts mean (the README says it for operators):

``bytes_from_peers``
    Confirmed peer bytes. Every membership reports, per peer, the bytes it
    received from it (``got``) and the bytes it sent to it (``sent``); both
    only grow. For each ordered pair (sender, receiver) of one swarm the
    hub keeps the last claim of each end and counts
    ``min(sent, received)``, each increase once. A receiving membership
    counts for at most the clip's size in all. A pair's record is made when
    one end reports while the other is a member of the same swarm, and is
    kept until ``DEPARTED_GRACE`` seconds after one end left (time for the
    other end's last report), so neither end alone can count anything, and
    claims about ids that are not in the swarm count nothing.
``bytes_from_http``
    The viewers' own claims, at most the clip's size per membership, and
    only increases (a count that goes down is a protocol error).
``viewers_seen``
    Distinct viewers in a rolling hour, not joins: for each address, the
    most memberships of the CID it had at once, summed over the addresses
    that joined in the last hour (an address is forgotten an hour after its
    last join). Many joins one after another from one address are one
    viewer; a household watching on three devices at once is three.
``joins``
    Memberships admitted (for ``/metrics``), bounded by the join buckets.

So one address can add to the byte counts only through memberships it is
admitted to, at most ``join_burst`` at once and ``joins_per_minute`` after
that, each counting for at most a clip's size; peer bytes need two
memberships that agree (two from one address can still agree with each
other, within those bounds).
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ...config import ConfigError, positive_from_environ
from ...storage.cid import CID
from .protocol import (
    INTRODUCTIONS,
    STATS_BURST,
    STATS_PER_SECOND,
    AskPeers,
    Have,
    Join,
    ProtocolError,
    Relay,
    SignalFromViewer,
    Stats,
    bitfield_bytes,
)

Outgoing = list[tuple[str, dict[str, Any]]]  # (viewer id, message) pairs to send
K = TypeVar("K", bound=Hashable)

DEPARTED_GRACE = 10.0  # seconds a left viewer's transfers wait for the other end's last report
SEEN_WINDOW = 3600.0  # seconds an address counts in viewers_seen after its last join


@dataclass(frozen=True)
class HubLimits:
    viewers_per_swarm: int = 200
    sockets_per_ip: int = 32
    swarms: int = 10_000
    relays_per_second: float = 40.0
    relay_burst: float = 120.0
    peers_every: float = 2.0  # seconds between answered "peers" requests of one viewer
    remembered_cids: int = 100_000  # per-CID byte counts kept after the last viewer leaves
    joins_per_minute: float = 12.0  # per address, after its burst
    join_burst: float = 60.0
    swarm_joins_per_second: float = 20.0  # per CID, after its burst
    swarm_join_burst: float = 200.0
    stats_per_second: float = STATS_PER_SECOND
    stats_burst: float = STATS_BURST
    transfers_per_viewer: int = 256  # pair records one viewer can be party to; claims past that count nothing
    seen_entries: int = 200_000  # (CID, address) pairs kept for viewers_seen; the oldest go first past that

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> HubLimits:
        """The defaults, with the per-address bounds from ``MEDIANODE_HUB_SOCKETS_PER_IP``,
        ``MEDIANODE_HUB_JOIN_BURST`` and ``MEDIANODE_HUB_JOINS_PER_MINUTE`` where set: a node behind a
        reverse proxy sees every viewer at one address, and so do benchmarks of many browsers on loopback."""
        defaults = cls()
        sockets = positive_from_environ(environ, "MEDIANODE_HUB_SOCKETS_PER_IP", defaults.sockets_per_ip)
        burst = positive_from_environ(environ, "MEDIANODE_HUB_JOIN_BURST", defaults.join_burst)
        per_minute = positive_from_environ(environ, "MEDIANODE_HUB_JOINS_PER_MINUTE", defaults.joins_per_minute)
        if sockets != int(sockets):
            raise ConfigError(f"MEDIANODE_HUB_SOCKETS_PER_IP must be a whole number, got {sockets}")
        return cls(sockets_per_ip=int(sockets), join_burst=burst, joins_per_minute=per_minute)


class Refused(Exception):
    """A join the hub turns away; the reason goes to the viewer."""


def address_key(ip: str) -> str:
    """The address a viewer counts under: an IPv4 address, or an IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class TokenBucket:
    """At most ``burst`` tokens, refilled at ``rate`` per second since ``when``; each take costs one."""

    rate: float
    burst: float
    tokens: float
    when: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.when) * self.rate)
        self.when = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Buckets(Generic[K]):
    """Token buckets by key; a key whose bucket has refilled is forgotten, so memory follows recent use."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[K, TokenBucket] = {}  # least recently used first

    def take(self, key: K, now: float) -> bool:
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        while self._buckets:
            oldest = next(iter(self._buckets))
            if now - self._buckets[oldest].when < full_after:
                break
            del self._buckets[oldest]
        bucket = self._buckets.pop(key, None) or TokenBucket.full(self.rate, self.burst, now)
        self._buckets[key] = bucket
        return bucket.take(now)


class Audience:
    """``viewers_seen``: per (CID, address), the most memberships at once, for an hour after its last join."""

    def __init__(self, window: float, limit: int) -> None:
        self.window, self.limit = window, limit
        self._entries: dict[tuple[CID, str], tuple[int, float]] = {}  # -> (peak, last join), oldest join first
        self._per_cid: Counter[CID] = Counter()
        self.total = 0

    def joined(self, cid: CID, address: str, at_once: int, now: float) -> None:
        self.expire(now)
        peak, _ = self._entries.pop((cid, address), (0, now))
        self._entries[(cid, address)] = (max(peak, at_once), now)
        self._add(cid, max(peak, at_once) - peak)
        while len(self._entries) > self.limit:
            self._forget(next(iter(self._entries)))

    def expire(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries))
            if now - self._entries[oldest][1] < self.window:
                break
            self._forget(oldest)

    def count(self, cid: CID) -> int:
        return self._per_cid.get(cid, 0)

    def _forget(self, key: tuple[CID, str]) -> None:
        peak, _ = self._entries.pop(key)
        self._add(key[0], -peak)

    def _add(self, cid: CID, change: int) -> None:
        self._per_cid[cid] += change
        self.total += change
        if not self._per_cid[cid]:
            del self._per_cid[cid]


@dataclass
class Viewer:
    id: str
    cid: CID
    ip: str
    address: str
    have: bytes
    relay_tokens: TokenBucket
    stats_tokens: TokenBucket
    peers_asked: float = float("-inf")
    reported_http: int = 0
    peer_counted: int = 0  # confirmed bytes this membership received from peers
    left: float | None = None


@dataclass
class Transfer:
    """What the two ends of one (sender, receiver) pair said, and how much of it counted."""

    sent: int = 0  # the sender's claim
    received: int = 0  # the receiver's claim
    counted: int = 0


@dataclass
class Swarm:
    pieces: int
    size: int
    viewers: dict[str, Viewer] = field(default_factory=dict)
    departed: dict[str, Viewer] = field(default_factory=dict)  # left less than DEPARTED_GRACE ago, oldest first
    transfers: dict[tuple[str, str], Transfer] = field(default_factory=dict)  # (sender, receiver) ->
    parties: defaultdict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    per_address: Counter[str] = field(default_factory=Counter)  # memberships now, per address


@dataclass
class SwarmTotals:
    """What the hub counted for one CID (or all) since the node started; see the module docstring."""

    bytes_from_peers: int = 0
    bytes_from_http: int = 0
    joins: int = 0


class ViewerHub:
    def __init__(self, ice_servers: list[str], limits: HubLimits | None = None) -> None:
        self.ice_servers = ice_servers
        self.limits = limits or HubLimits.from_environ()
        self.swarms: dict[CID, Swarm] = {}
        self.totals: dict[CID, SwarmTotals] = defaultdict(SwarmTotals)
        self.overall = SwarmTotals()  # all CIDs, for /metrics
        self.viewers: dict[str, Viewer] = {}
        self.audience = Audience(SEEN_WINDOW, self.limits.seen_entries)
        self._per_address: dict[str, int] = defaultdict(int)
        self._address_joins = Buckets[str](self.limits.joins_per_minute / 60, self.limits.join_burst)
        self._swarm_joins = Buckets[CID](self.limits.swarm_joins_per_second, self.limits.swarm_join_burst)

    def join(self, cid: CID, ip: str, message: Join, pieces: int, size: int, now: float) -> tuple[str, Outgoing]:
        """Admit a viewer of ``cid`` (a file of ``pieces`` leaves and ``size`` bytes) or raise ``Refused``."""
        if len(message.have) != bitfield_bytes(pieces):
            raise ProtocolError(f"bitfield is {len(message.have)} bytes, {bitfield_bytes(pieces)} expected")
        address = address_key(ip)
        if self._per_address[address] >= self.limits.sockets_per_ip:
            raise Refused(f"at most {self.limits.sockets_per_ip} viewers per address")
        swarm = self.swarms.get(cid)
        if swarm is None:
            if len(self.swarms) >= self.limits.swarms:
                raise Refused("too many swarms on this node; try again later")
        elif len(swarm.viewers) >= self.limits.viewers_per_swarm:
            raise Refused(f"this swarm is full ({self.limits.viewers_per_swarm} viewers)")
        if not self._address_joins.take(address, now):
            raise Refused("too many joins from this address; try again later")
        if not self._swarm_joins.take(cid, now):
            raise Refused("too many joins to this swarm; try again later")
        if swarm is None:
            swarm = self.swarms[cid] = Swarm(pieces, size)
        self._expire(swarm, now)
        limits = self.limits
        relays = TokenBucket.full(limits.relays_per_second, limits.relay_burst, now)
        stats = TokenBucket.full(limits.stats_per_second, limits.stats_burst, now)
        viewer = Viewer(secrets.token_hex(8), cid, ip, address, message.have, relays, stats)
        introductions = self._introductions(swarm, viewer)
        swarm.viewers[viewer.id] = viewer
        swarm.per_address[address] += 1
        self.viewers[viewer.id] = viewer
        self._per_address[address] += 1
        self.audience.joined(cid, address, swarm.per_address[address], now)
        self.totals[cid].joins += 1
        self.overall.joins += 1
        welcome = {"t": "welcome", "id": viewer.id, "peers": introductions, "ice": self.ice_servers}
        return viewer.id, [(viewer.id, welcome)]

    def leave(self, viewer_id: str, now: float) -> None:
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is None:
            return
        self._per_address[viewer.address] -= 1
        if not self._per_address[viewer.address]:
            del self._per_address[viewer.address]
        swarm = self.swarms[viewer.cid]
        del swarm.viewers[viewer_id]
        swarm.per_address[viewer.address] -= 1
        if not swarm.per_address[viewer.address]:
            del swarm.per_address[viewer.address]
        if not swarm.viewers:
            # Nobody is left to report the other end of any transfer.
            del self.swarms[viewer.cid]
            # Counts of CIDs nobody watches now are kept for a while, oldest forgotten first.
            for cid in list(self.totals)[: max(0, len(self.totals) - self.limits.remembered_cids)]:
                if cid not in self.swarms:
                    del self.totals[cid]
            return
        viewer.left = now
        swarm.departed[viewer_id] = viewer
        self._expire(swarm, now)

    def handle(self, viewer_id: str, message: SignalFromViewer, now: float) -> Outgoing:
        """What to send, and to whom, for one message from a joined viewer."""
        viewer = self.viewers[viewer_id]
        swarm = self.swarms[viewer.cid]
        match message:
            case Join():
                raise ProtocolError("'join' is sent once")
            case Have(have):
                if len(have) != bitfield_bytes(swarm.pieces):
                    raise ProtocolError(f"bitfield is {len(have)} bytes, {bitfield_bytes(swarm.pieces)} expected")
                viewer.have = have
                return []
            case Relay(to, data):
                if not viewer.relay_tokens.take(now):
                    return []  # over the rate: dropped, as a lossy network would
                if to not in swarm.viewers or to == viewer_id:
                    return []  # that viewer left (or never was): its peer will time out the attempt
                return [(to, {"t": "signal", "from": viewer_id, "data": data})]
            case AskPeers():
                if now - viewer.peers_asked < self.limits.peers_every:
                    return []
                viewer.peers_asked = now
                return [(viewer_id, {"t": "peers", "peers": self._introductions(swarm, viewer)})]
            case Stats(http, got, sent):
                if viewer_id in got or viewer_id in sent:
                    raise ProtocolError("stats name the viewer itself as its peer")
                if not viewer.stats_tokens.take(now):
                    return []  # over the rate: dropped (the counts are cumulative; the next one catches up)
                self._expire(swarm, now)
                self._count_http(viewer, swarm, http)
                for peer, count in got.items():
                    self._claim(swarm, viewer, (peer, viewer_id), count, by_sender=False)
                for peer, count in sent.items():
                    self._claim(swarm, viewer, (viewer_id, peer), count, by_sender=True)
                return []
        raise ProtocolError(f"unexpected {message!r}")

    def stats(self, cid: CID, now: float) -> dict[str, int]:
        swarm = self.swarms.get(cid)
        totals = self.totals.get(cid, SwarmTotals())
        self.audience.expire(now)
        return {
            "viewers": len(swarm.viewers) if swarm else 0,
            "viewers_seen": self.audience.count(cid),
            "bytes_from_peers": totals.bytes_from_peers,
            "bytes_from_http": totals.bytes_from_http,
        }

    def viewers_seen(self, now: float) -> int:
        """Distinct viewers of all CIDs in the rolling window (the sum over CIDs)."""
        self.audience.expire(now)
        return self.audience.total

    def viewer_count(self) -> int:
        return len(self.viewers)

    def _introductions(self, swarm: Swarm, newcomer: Viewer) -> list[dict[str, Any]]:
        """Viewers holding the most pieces first (seeders), ties in random order."""
        others = [v for v in swarm.viewers.values() if v.id != newcomer.id]
        random.shuffle(others)
        others.sort(key=lambda v: sum(b.bit_count() for b in v.have), reverse=True)
        return [{"id": v.id, "have": v.have} for v in others[:INTRODUCTIONS]]

    def _count_http(self, viewer: Viewer, swarm: Swarm, http: int) -> None:
        """The viewer's own claim: the increase counts, up to the clip's size for this membership."""
        http = min(http, swarm.size)
        if http < viewer.reported_http:
            raise ProtocolError("byte counts only grow")
        for totals in (self.totals[viewer.cid], self.overall):
            totals.bytes_from_http += http - viewer.reported_http
        viewer.reported_http = http

    def _claim(self, swarm: Swarm, reporter: Viewer, pair: tuple[str, str], count: int, *, by_sender: bool) -> None:
        """One end's claim about the pair (sender, receiver); what both ends agree on beyond what counted, counts."""
        count = min(count, swarm.size)
        transfer = swarm.transfers.get(pair)
        if transfer is None:
            other = pair[1] if by_sender else pair[0]
            if other not in swarm.viewers or len(swarm.parties[reporter.id]) >= self.limits.transfers_per_viewer:
                return  # a stranger (or one who left) cannot confirm it; past the limit, it counts nothing
            transfer = swarm.transfers[pair] = Transfer()
            swarm.parties[pair[0]].add(pair)
            swarm.parties[pair[1]].add(pair)
        if count < (transfer.sent if by_sender else transfer.received):
            raise ProtocolError("byte counts only grow")
        if by_sender:
            transfer.sent = count
        else:
            transfer.received = count
        receiver = swarm.viewers.get(pair[1]) or swarm.departed[pair[1]]
        added = min(min(transfer.sent, transfer.received) - transfer.counted, swarm.size - receiver.peer_counted)
        if added <= 0:
            return
        transfer.counted += added
        receiver.peer_counted += added
        for totals in (self.totals[reporter.cid], self.overall):
            totals.bytes_from_peers += added

    def _expire(self, swarm: Swarm, now: float) -> None:
        """Forget viewers that left more than DEPARTED_GRACE ago, and the transfers they were party to."""
        while swarm.departed:
            gone = next(iter(swarm.departed.values()))
            assert gone.left is not None
            if now - gone.left < DEPARTED_GRACE:
                break
            del swarm.departed[gone.id]
            for pair in swarm.parties.pop(gone.id, set()):
                swarm.transfers.pop(pair, None)
                other = pair[1] if pair[0] == gone.id else pair[0]
                if other in swarm.parties:
                    swarm.parties[other].discard(pair)
