"""Viewer statistics an operator can trust (issue 11, item 8), through the real signaling WebSocket of a
real ``medianode serve``: forged byte counts, join/stats/leave cycles from one address, and senders and
receivers that disagree.

Every socket here comes from 127.0.0.1, so the hub sees all of them as one address. The forged messages
also carry ``peer``, the total a viewer reported before peer bytes needed the sender's agreement: a hub
that still believed it would count them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from conftest import Node, Served, gen
from node.swarm.viewers.hub import HubLimits
from node.swarm.viewers.protocol import pack

SIZE = 3 * 262144 + 5  # four pieces
HAVE_NONE = b"\0"
LIMITS = HubLimits()
SYNCS = itertools.count()


@pytest.fixture(scope="module")
def clip_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    base = tmp_path_factory.mktemp("stats")
    (base / "clip.bin").write_bytes(gen(SIZE, b"viewer-stats"))
    cid = Node(base / "node").ok("add", str(base / "clip.bin"), "--json").json["cid"]
    served = Served(base / "node", args=("--no-dht",))
    yield served, cid
    served.stop()


@pytest.fixture
def fresh_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Served, str]]:
    """A node of its own, for tests that use up the address's joins. Its listener's own bound on
    connections per address is off (``MEDIANODE_CONNECTIONS_PER_IP=0``), so what bounds the cycles
    below is the hub's: a closed WebSocket's TCP connection stays open on the server's side for about
    30 s, and that bound counts it meanwhile."""
    (tmp_path / "clip.bin").write_bytes(gen(SIZE, b"viewer-stats"))
    cid = Node(tmp_path / "node").ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
    monkeypatch.setenv("MEDIANODE_CONNECTIONS_PER_IP", "0")
    served = Served(tmp_path / "node", args=("--no-dht",))
    yield served, cid
    served.stop()


def ws_url(served: Served, cid: str) -> str:
    return served.url.replace("http://", "ws://") + f"/api/v1/swarm/{cid}"


def stats_of(served: Served, cid: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{served.url}/api/v1/swarm/{cid}/stats", timeout=10).json()
    return answer


def metric(served: Served, name: str) -> float:
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


class Member:
    """One joined socket, speaking raw msgpack to the hub."""

    def __init__(self, ws: WebSocketConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.id: str = welcome["id"]

    async def stats(self, http: int, got: dict[str, int] | None = None, sent: dict[str, int] | None = None,
                    peer: int | None = None) -> None:  # fmt: skip
        message: dict[str, Any] = {"t": "stats", "http": http, "got": got or {}, "sent": sent or {}}
        if peer is not None:
            message["peer"] = peer
        await self.ws.send_message(pack(message))

    async def handled(self, partner: Member | None = None) -> None:
        """Return once the hub has handled everything this member sent so far (it handles one socket's
        messages in order): a relay to ``partner`` has arrived there, or, with none, the answer to a
        ``peers`` (the hub answers one of those per viewer every 2 s, so only once in these tests)."""
        token = next(SYNCS)
        if partner is None:
            await self.ws.send_message(pack({"t": "peers"}))
            await expect(self, lambda reply: reply["t"] == "peers")
        else:
            await self.ws.send_message(pack({"t": "signal", "to": partner.id, "data": {"sync": token}}))
            await expect(partner, lambda reply: reply["t"] == "signal" and reply["data"] == {"sync": token})


async def expect(member: Member, wanted: Callable[[dict[str, Any]], bool]) -> None:
    while True:
        reply = msgpack.unpackb(await member.ws.get_message())
        assert reply["t"] != "error", reply
        if wanted(reply):
            return


@asynccontextmanager
async def member(served: Served, cid: str) -> AsyncIterator[Member]:
    async with open_websocket_url(ws_url(served, cid)) as ws:
        await ws.send_message(pack({"t": "join", "have": HAVE_NONE}))
        welcome = msgpack.unpackb(await ws.get_message())
        assert welcome["t"] == "welcome", welcome
        yield Member(ws, welcome)


async def wait_gone(served: Served, cid: str) -> None:
    """Poll until the hub has no viewer of ``cid`` (every closed socket's messages handled and left)."""
    with trio.fail_after(10):
        while stats_of(served, cid)["viewers"]:
            await trio.sleep(0.05)


def test_join_stats_leave_cycles_from_one_address_add_no_peer_bytes_and_one_viewer(fresh_node) -> None:  # type: ignore[no-untyped-def]
    """The measured attack: 100 cycles of join, claim a whole clip from a peer, leave."""
    served, cid = fresh_node
    before = metric(served, 'medianode_viewer_bytes_received_total{source="peers"}')
    refused = 0

    async def main() -> None:
        nonlocal refused
        with trio.fail_after(60):
            for _ in range(100):
                async with open_websocket_url(ws_url(served, cid)) as ws:
                    await ws.send_message(pack({"t": "join", "have": HAVE_NONE}))
                    try:
                        first = msgpack.unpackb(await ws.get_message())
                    except ConnectionClosed:
                        refused += 1
                        continue
                    if first["t"] == "error":
                        assert "joins from this address" in first["reason"], first
                        refused += 1
                        # Wait for the hub's close rather than close at the same moment: closing at once
                        # crashes the server (Hypercorn's two close frames; a fault of its own, reported).
                        with pytest.raises(ConnectionClosed):
                            await ws.get_message()
                        continue
                    forged = Member(ws, first)
                    await forged.stats(SIZE, got={"0123456789abcdef": SIZE}, peer=SIZE)
                    await forged.handled()
            await wait_gone(served, cid)

    trio.run(main)
    stats = stats_of(served, cid)
    assert stats["bytes_from_peers"] == 0, stats  # nobody said it sent anything
    assert stats["viewers_seen"] == 1, stats  # one address, one viewer at a time
    admitted = 100 - refused
    assert admitted <= LIMITS.join_burst + 5, admitted  # the address's joins are rate-bounded (a few refill)
    assert refused > 0
    assert stats["bytes_from_http"] == admitted * SIZE  # each session claims at most the clip, once
    assert metric(served, 'medianode_viewer_bytes_received_total{source="peers"}') == before
    assert metric(served, "medianode_viewers_seen") == 1


def test_peer_bytes_count_only_as_far_as_sender_and_receiver_agree(clip_node) -> None:  # type: ignore[no-untyped-def]
    served, cid = clip_node
    start = stats_of(served, cid)

    def added() -> int:
        return int(stats_of(served, cid)["bytes_from_peers"] - start["bytes_from_peers"])

    async def main() -> None:
        with trio.fail_after(30):
            async with member(served, cid) as sender, member(served, cid) as receiver:
                # A receiver's claim with no report from the sender counts nothing.
                await receiver.stats(0, got={sender.id: 100_000}, peer=100_000)
                await receiver.handled(sender)
                assert added() == 0
                # A sender claiming more than the receiver got: the receiver's figure counts.
                await sender.stats(0, sent={receiver.id: 300_000})
                await sender.handled(receiver)
                assert added() == 100_000
                # The receiver catches up: counted up to what both say, and once.
                await receiver.stats(0, got={sender.id: 250_000})
                await receiver.handled(sender)
                assert added() == 250_000
                await receiver.stats(0, got={sender.id: 250_000})
                await sender.stats(0, sent={receiver.id: 300_000})
                await sender.handled(receiver)
                await receiver.handled(sender)
                assert added() == 250_000
                # Both agreeing on more than the clip: the receiver counts for the clip's size at most.
                await receiver.stats(0, got={sender.id: 10**12})
                await sender.stats(0, sent={receiver.id: 10**12})
                await receiver.handled(sender)
                await sender.handled(receiver)
                assert added() == SIZE
                # Claims about a viewer that is not in the swarm count nothing either.
                await receiver.stats(0, got={"not-a-viewer": SIZE})
                await receiver.handled(sender)
                assert added() == SIZE
        await wait_gone(served, cid)

    trio.run(main)
    assert added() == SIZE


def test_the_sender_may_report_after_the_receiver_left(clip_node) -> None:  # type: ignore[no-untyped-def]
    """A receiver that is done leaves at once; its sender reports a second later and the bytes count."""
    served, cid = clip_node
    start = stats_of(served, cid)["bytes_from_peers"]

    async def main() -> None:
        with trio.fail_after(30):
            async with member(served, cid) as sender:
                async with member(served, cid) as receiver:
                    await receiver.stats(0, got={sender.id: 5000})
                    await receiver.handled(sender)
                    receiver_id = receiver.id
                while stats_of(served, cid)["viewers"] > 1:
                    await trio.sleep(0.05)
                await sender.stats(0, sent={receiver_id: 5000})
                await sender.handled()
                assert stats_of(served, cid)["bytes_from_peers"] - start == 5000

    trio.run(main)


def test_http_claims_are_bounded_and_only_grow(clip_node) -> None:  # type: ignore[no-untyped-def]
    served, cid = clip_node
    start = stats_of(served, cid)["bytes_from_http"]

    async def main() -> None:
        with trio.fail_after(30):
            async with member(served, cid) as viewer:
                await viewer.stats(1000)
                await viewer.stats(10 * SIZE)  # more than the clip: counts for the clip
                await viewer.handled()
                assert stats_of(served, cid)["bytes_from_http"] - start == SIZE
                await viewer.stats(10)  # a count going down breaks the protocol
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        reply = msgpack.unpackb(await viewer.ws.get_message())
                        if reply["t"] == "error":
                            assert "only grow" in reply["reason"], reply
                assert closed.value.reason.code == 1008
        await wait_gone(served, cid)

    trio.run(main)
    assert stats_of(served, cid)["bytes_from_http"] - start == SIZE
