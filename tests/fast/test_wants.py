"""The want scheduler as a pure state machine: no sockets, the clock is a number we pass in."""

from __future__ import annotations

import random

from node.storage.cid import CID, RAW
from node.swarm.bitswap.wants import Verdict, WantScheduler


def cids(n: int, tag: bytes = b"") -> list[CID]:
    return [CID.for_block(RAW, tag + i.to_bytes(4, "big")) for i in range(n)]


def asked(requests: list, peer: str) -> list[CID]:  # type: ignore[type-arg]
    return [c for r in requests if r.peer == peer for c in r.cids]


def test_blocks_are_striped_across_peers_in_order() -> None:
    s = WantScheduler(window=4)
    want = cids(10)
    s.want(want)
    s.peer_connected("a")
    s.peer_connected("b")
    first = s.next_requests(0.0)
    got_a, got_b = asked(first, "a"), asked(first, "b")
    assert len(got_a) == 4 and len(got_b) == 4 and not set(got_a) & set(got_b)
    assert set(got_a + got_b) == set(want[:8])  # the first eight, in order of want
    assert s.next_requests(0.1) == []  # windows are full
    assert s.on_block("a", got_a[0], 0.2) is Verdict.WANTED
    s.stored([got_a[0]])
    assert asked(s.next_requests(0.2), "a") == [want[8]]


def test_a_block_holds_its_slot_until_it_is_stored() -> None:
    """However slow the disk, a peer gets no more want-blocks than its window of unstored ones:
    what it can make us buffer is what we asked it for."""
    s = WantScheduler(window=4)
    want = cids(10)
    s.want(want)
    s.peer_connected("a")
    first = asked(s.next_requests(0.0), "a")
    for cid in first:
        assert s.on_block("a", cid, 0.1) is Verdict.WANTED
    assert s.next_requests(0.2) == []  # all four arrived, none stored yet
    s.stored(first[:2])
    assert asked(s.next_requests(0.3), "a") == want[4:6]


def test_dont_have_moves_the_block_to_a_peer_that_has_it() -> None:
    s = WantScheduler(window=1)
    (block,) = cids(1)
    s.want([block])
    s.peer_connected("a")
    assert asked(s.next_requests(0), "a") == [block]
    s.on_presence("a", block, have=False)
    s.peer_connected("b")
    assert asked(s.next_requests(1), "b") == [block]
    assert s.unavailable() == set()
    s.on_presence("b", block, have=False)
    assert s.unavailable() == {block}


def test_a_peer_that_says_have_is_preferred() -> None:
    s = WantScheduler(window=5)
    (block,) = cids(1)
    for p in ("a", "b", "c"):
        s.peer_connected(p)
    s.on_presence("c", block, have=True)
    s.want([block])
    assert [r.peer for r in s.next_requests(0)] == ["c"]


def test_timeouts_strike_the_slow_peer_and_reassign() -> None:
    s = WantScheduler(window=8, timeout=5.0, max_timeouts=2)
    want = cids(4)
    s.want(want)
    s.peer_connected("slow")
    assert asked(s.next_requests(0), "slow") == want
    assert s.next_deadline() == 5.0
    s.peer_connected("fast")
    moved = s.next_requests(5.0)
    assert asked(moved, "fast") == want and asked(moved, "slow") == []
    # A late copy from the slow peer is harmless; a block nobody asked for is a strike.
    assert s.on_block("slow", want[0], 5.1) is Verdict.WANTED
    assert s.take_cancels() == {"fast": [want[0]]}
    assert s.on_block("slow", cids(1, b"junk")[0], 5.1) is Verdict.UNWANTED
    assert s.take_drops() == []  # unwanted is the ledger's to count, not a timeout here


def test_corrupt_or_unasked_blocks_are_reported_unwanted() -> None:
    """A corrupt block hashes to a CID nobody asked for: UNWANTED, and the wanted blocks stay wanted."""
    s = WantScheduler(max_timeouts=3)
    s.peer_connected("liar")
    s.want(cids(3))
    s.next_requests(0)
    for junk in cids(3, b"junk"):
        assert s.on_block("liar", junk, 0.1) is Verdict.UNWANTED
    assert s.take_drops() == []  # the ledger counts these (tests/integration/test_swarm.py: the liar is dropped)
    assert s.missing == set(cids(3))


def test_peer_gone_requeues_its_blocks() -> None:
    s = WantScheduler(window=3)
    s.want(cids(3))
    s.peer_connected("a")
    s.next_requests(0)
    s.peer_gone("a")
    s.peer_connected("b")
    assert asked(s.next_requests(1), "b") == cids(3)


def test_endgame_asks_idle_peers_and_cancels_the_rest() -> None:
    s = WantScheduler(window=4)
    want = cids(2)
    s.want(want)
    s.peer_connected("a")
    first = s.next_requests(0)
    assert asked(first, "a") == want
    s.peer_connected("b")
    second = s.next_requests(1)
    assert asked(second, "b") == want  # nothing queued, nothing arrived yet: the idle peer duplicates at once
    assert s.on_block("b", want[0], 1.1) is Verdict.WANTED
    assert s.take_cancels() == {"a": [want[0]]}
    assert s.on_block("a", want[1], 1.2) is Verdict.WANTED
    assert s.take_cancels() == {"b": [want[1]]}
    assert s.done


def test_endgame_asks_twice_only_for_blocks_overdue_against_the_typical_wait() -> None:
    """Two equally fast providers: at the end the idle one is not asked for the other's block
    while it is on time (that would send the last window twice); once it has waited twice the
    typical time it is asked of the idle peer, long before the timeout."""
    s = WantScheduler(window=2, timeout=10.0)
    want = cids(6)
    s.want(want)
    s.peer_connected("a")
    s.peer_connected("b")
    first = s.next_requests(0.0)
    assert sorted(asked(first, "a") + asked(first, "b"), key=want.index) == want[:4]
    for cid in want[:4]:
        peer = "a" if cid in asked(first, "a") else "b"
        assert s.on_block(peer, cid, 0.1) is Verdict.WANTED  # every block so far took 0.1 s
    s.stored(want[:4])
    second = s.next_requests(0.1)
    (late_at_a,), (late_at_b,) = asked(second, "a"), asked(second, "b")  # the last two, one each
    assert s.on_block("b", late_at_b, 0.2) is Verdict.WANTED
    s.stored([late_at_b])
    assert s.next_requests(0.25) == []  # a's block has waited 0.15 s: on time
    assert s.next_deadline() == 0.1 + 2 * 0.1  # when it becomes overdue
    assert asked(s.next_requests(0.31), "b") == [late_at_a]
    assert s.on_block("b", late_at_a, 0.4) is Verdict.WANTED
    assert s.take_cancels() == {"a": [late_at_a]}


def test_simulated_swarm_with_a_provider_dying_mid_transfer() -> None:
    """Three providers answer after random delays; one dies a third of the way in. Every block
    arrives exactly once as WANTED, and each live provider carried part of the load."""
    rng = random.Random(5)
    s = WantScheduler(window=8, timeout=2.0)
    want = cids(300)
    s.want(want)
    for p in ("a", "b", "c"):
        s.peer_connected(p)
    now = 0.0
    pending: list[tuple[float, str, CID]] = []
    received: list[CID] = []
    alive = {"a", "b", "c"}
    while not s.done and now < 200:
        for request in s.next_requests(now):
            for cid in request.cids:
                pending.append((now + rng.uniform(0.01, 0.2), str(request.peer), cid))
        s.take_cancels()
        pending.sort(key=lambda item: item[0])
        if not pending:
            now += 0.5
            continue
        at, peer, cid = pending.pop(0)
        now = max(now, at)
        if len(received) == 100 and "b" in alive:
            alive.discard("b")  # b dies: what it owed never comes
            pending = [p for p in pending if p[1] != "b"]
        if peer in alive and s.on_block(peer, cid, now) is Verdict.WANTED:
            received.append(cid)
            s.stored([cid])
    assert sorted(received, key=want.index) == want
    assert s.delivered("a") > 50 and s.delivered("c") > 50
