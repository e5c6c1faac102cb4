"""What one membership of a hub reports in its ``stats`` messages: pure bookkeeping, no I/O.

Per membership (see "stats" in ``protocol.py``): the HTTP bytes this viewer
took that no earlier membership reported, and per peer id the bytes of
verified new pieces got from it and of whole pieces sent to it. Counts only
grow; a message names only the peers whose count changed since the last one,
at most ``MAX_STATS_PEERS`` of each kind, the rest waiting for the next.
"""

from __future__ import annotations

import itertools
from typing import Any

from .protocol import MAX_STATS_PEERS


class MembershipReport:
    def __init__(self) -> None:
        self._got_from: dict[str, int] = {}
        self._sent_to: dict[str, int] = {}
        self._unreported: tuple[set[str], set[str]] = (set(), set())  # (got, sent)
        self._http_before = 0  # HTTP bytes reported by earlier memberships
        self._http_reported = 0  # by this one

    def new_membership(self) -> None:
        """The hub let us in (again): counts start from 0, but for HTTP bytes no membership reported yet."""
        self._http_before += self._http_reported
        self._http_reported = 0
        self._got_from.clear()
        self._sent_to.clear()
        for unreported in self._unreported:
            unreported.clear()

    def count_peer_bytes(self, peer: str, size: int, *, sent: bool) -> None:
        counts = self._sent_to if sent else self._got_from
        counts[peer] = counts.get(peer, 0) + size
        self._unreported[1 if sent else 0].add(peer)

    def pending(self, http_total: int) -> bool:
        """Whether a report would say something new; ``http_total`` is every HTTP byte this viewer took."""
        return any(self._unreported) or http_total - self._http_before != self._http_reported

    def next_message(self, http_total: int) -> dict[str, Any]:
        """The next ``stats`` message; what it names counts as reported (a count that changes later is
        reported again)."""
        got_peers, sent_peers = (list(itertools.islice(peers, MAX_STATS_PEERS)) for peers in self._unreported)
        self._unreported[0].difference_update(got_peers)
        self._unreported[1].difference_update(sent_peers)
        self._http_reported = http_total - self._http_before
        return {"t": "stats", "http": self._http_reported,
                "got": {peer: self._got_from[peer] for peer in got_peers},
                "sent": {peer: self._sent_to[peer] for peer in sent_peers}}  # fmt: skip
