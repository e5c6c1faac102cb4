"""The signaling hub's bookkeeping: swarms of viewers per CID, limits, relays, byte counts.

Pure state, no sockets (the WebSocket layer in ``signaling.py`` wraps it):
``join`` admits a viewer or refuses it, ``handle`` turns one checked message
from a viewer into the messages to send and to whom, ``leave`` forgets a
viewer. Messages and their meaning are specified in
``node/swarm/viewer_protocol.py``.

Limits, all per node: viewers per swarm, sockets per IP address, swarms in
all, and a token bucket per viewer for relayed signals (ICE candidates come
in bursts of a few dozen, so the bucket allows that and no more).
"""

from __future__ import annotations

import random
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..storage.cid import CID
from ..swarm.viewer_protocol import (
    INTRODUCTIONS,
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


@dataclass(frozen=True)
class HubLimits:
    viewers_per_swarm: int = 200
    sockets_per_ip: int = 32
    swarms: int = 10_000
    relays_per_second: float = 40.0
    relay_burst: float = 120.0
    peers_every: float = 2.0  # seconds between answered "peers" requests of one viewer
    remembered_cids: int = 100_000  # per-CID byte counts kept after the last viewer leaves


class Refused(Exception):
    """A join the hub turns away; the reason goes to the viewer."""


@dataclass
class Viewer:
    id: str
    cid: CID
    ip: str
    have: bytes
    tokens: float
    refilled: float
    peers_asked: float = float("-inf")
    reported_peer: int = 0
    reported_http: int = 0


@dataclass
class Swarm:
    pieces: int
    size: int
    viewers: dict[str, Viewer] = field(default_factory=dict)


@dataclass
class SwarmTotals:
    """What viewers of one CID reported receiving since the node started."""

    bytes_from_peers: int = 0
    bytes_from_http: int = 0
    viewers_seen: int = 0


class ViewerHub:
    def __init__(self, ice_servers: list[str], limits: HubLimits | None = None) -> None:
        self.ice_servers = ice_servers
        self.limits = limits or HubLimits()
        self.swarms: dict[CID, Swarm] = {}
        self.totals: dict[CID, SwarmTotals] = defaultdict(SwarmTotals)
        self.overall = SwarmTotals()  # all CIDs, for /metrics
        self.viewers: dict[str, Viewer] = {}
        self._per_ip: dict[str, int] = defaultdict(int)

    def join(self, cid: CID, ip: str, message: Join, pieces: int, size: int, now: float) -> tuple[str, Outgoing]:
        """Admit a viewer of ``cid`` (a file of ``pieces`` leaves and ``size`` bytes) or raise ``Refused``."""
        if len(message.have) != bitfield_bytes(pieces):
            raise ProtocolError(f"bitfield is {len(message.have)} bytes, {bitfield_bytes(pieces)} expected")
        if self._per_ip[ip] >= self.limits.sockets_per_ip:
            raise Refused(f"at most {self.limits.sockets_per_ip} viewers per address")
        swarm = self.swarms.get(cid)
        if swarm is None:
            if len(self.swarms) >= self.limits.swarms:
                raise Refused("too many swarms on this node; try again later")
            swarm = self.swarms[cid] = Swarm(pieces, size)
        elif len(swarm.viewers) >= self.limits.viewers_per_swarm:
            raise Refused(f"this swarm is full ({self.limits.viewers_per_swarm} viewers)")
        viewer = Viewer(secrets.token_hex(8), cid, ip, message.have, self.limits.relay_burst, now)
        introductions = self._introductions(swarm, viewer)
        swarm.viewers[viewer.id] = viewer
        self.viewers[viewer.id] = viewer
        self._per_ip[ip] += 1
        self.totals[cid].viewers_seen += 1
        self.overall.viewers_seen += 1
        welcome = {"t": "welcome", "id": viewer.id, "peers": introductions, "ice": self.ice_servers}
        return viewer.id, [(viewer.id, welcome)]

    def leave(self, viewer_id: str) -> None:
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is None:
            return
        self._per_ip[viewer.ip] -= 1
        if not self._per_ip[viewer.ip]:
            del self._per_ip[viewer.ip]
        swarm = self.swarms[viewer.cid]
        del swarm.viewers[viewer_id]
        if not swarm.viewers:
            del self.swarms[viewer.cid]
            # Counts of CIDs nobody watches now are kept for a while, oldest forgotten first.
            for cid in list(self.totals)[: max(0, len(self.totals) - self.limits.remembered_cids)]:
                if cid not in self.swarms:
                    del self.totals[cid]

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
                if not self._take_token(viewer, now):
                    return []  # over the rate: dropped, as a lossy network would
                if to not in swarm.viewers or to == viewer_id:
                    return []  # that viewer left (or never was): its peer will time out the attempt
                return [(to, {"t": "signal", "from": viewer_id, "data": data})]
            case AskPeers():
                if now - viewer.peers_asked < self.limits.peers_every:
                    return []
                viewer.peers_asked = now
                return [(viewer_id, {"t": "peers", "peers": self._introductions(swarm, viewer)})]
            case Stats(peer, http):
                self._count(viewer, swarm, peer, http)
                return []
        raise ProtocolError(f"unexpected {message!r}")

    def stats(self, cid: CID) -> dict[str, int]:
        swarm = self.swarms.get(cid)
        totals = self.totals.get(cid, SwarmTotals())
        return {
            "viewers": len(swarm.viewers) if swarm else 0,
            "viewers_seen": totals.viewers_seen,
            "bytes_from_peers": totals.bytes_from_peers,
            "bytes_from_http": totals.bytes_from_http,
        }

    def viewer_count(self) -> int:
        return len(self.viewers)

    def _introductions(self, swarm: Swarm, newcomer: Viewer) -> list[dict[str, Any]]:
        """Viewers holding the most pieces first (seeders), ties in random order."""
        others = [v for v in swarm.viewers.values() if v.id != newcomer.id]
        random.shuffle(others)
        others.sort(key=lambda v: sum(b.bit_count() for b in v.have), reverse=True)
        return [{"id": v.id, "have": v.have} for v in others[:INTRODUCTIONS]]

    def _take_token(self, viewer: Viewer, now: float) -> bool:
        elapsed = max(0.0, now - viewer.refilled)
        viewer.tokens = min(self.limits.relay_burst, viewer.tokens + elapsed * self.limits.relays_per_second)
        viewer.refilled = now
        if viewer.tokens < 1:
            return False
        viewer.tokens -= 1
        return True

    def _count(self, viewer: Viewer, swarm: Swarm, peer: int, http: int) -> None:
        """Add what a viewer received since its last report; one viewer counts for at most the clip's size."""
        peer, http = min(peer, swarm.size), min(http, swarm.size)
        if peer < viewer.reported_peer or http < viewer.reported_http:
            raise ProtocolError("byte counts only grow")
        for totals in (self.totals[viewer.cid], self.overall):
            totals.bytes_from_peers += peer - viewer.reported_peer
            totals.bytes_from_http += http - viewer.reported_http
        viewer.reported_peer, viewer.reported_http = peer, http
