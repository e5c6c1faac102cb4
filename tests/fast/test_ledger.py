"""The per-peer Bitswap ledger as a pure state machine: no sockets, the clock is a number we pass in."""

from __future__ import annotations

from node.storage.cid import CID, RAW
from node.swarm.bitswap.ledger import (
    ASKED_MEMORY,
    ASKED_SECONDS,
    BAN_SECONDS,
    MAX_INBOUND_STREAMS,
    MAX_QUEUED_WANTS,
    MAX_STRIKES,
    PeerLedger,
)
from node.swarm.bitswap.wire import WantEntry, WantType


def cids(n: int, tag: bytes = b"") -> list[CID]:
    return [CID.for_block(RAW, tag + i.to_bytes(4, "big")) for i in range(n)]


def test_strikes_up_to_the_limit_drop_a_peer_and_its_ban_ends() -> None:
    ledger: PeerLedger[str] = PeerLedger()
    assert [ledger.strike("liar") for _ in range(MAX_STRIKES)] == [False] * (MAX_STRIKES - 1) + [True]
    assert not ledger.strike("other")  # strikes are per peer
    ledger.ban("liar", 100.0)
    assert ledger.is_banned("liar", 100.0) and ledger.is_banned("liar", 100.0 + BAN_SECONDS - 0.1)
    assert ledger.ban_ends("liar") == 100.0 + BAN_SECONDS
    assert not ledger.is_banned("liar", 100.0 + BAN_SECONDS)
    assert ledger.ban_ends("liar") is None
    assert not ledger.is_banned("other", 100.0)
    # The ban wiped its strikes: after it, the peer starts afresh.
    assert [ledger.strike("liar") for _ in range(MAX_STRIKES)] == [False] * (MAX_STRIKES - 1) + [True]


def test_what_we_asked_for_is_remembered_by_content_and_forgotten_when_old() -> None:
    ledger: PeerLedger[str] = PeerLedger()
    v0 = CID.parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n")
    ledger.asked("a", [v0], 0.0)
    assert ledger.was_asked("a", v0) and ledger.was_asked("a", v0.to_v1())  # either version of the CID
    assert not ledger.was_asked("b", v0)
    old = cids(ASKED_MEMORY + 1, b"old")
    ledger.asked("a", old, 1.0)
    ledger.asked("a", cids(1, b"new"), 1.0 + ASKED_SECONDS)  # over the memory, but none old enough yet
    assert ledger.was_asked("a", old[0])
    ledger.asked("a", cids(1, b"newer"), 1.0 + ASKED_SECONDS + 0.1)  # now they are: pruned
    assert not ledger.was_asked("a", old[0]) and not ledger.was_asked("a", v0)
    assert ledger.was_asked("a", cids(1, b"new")[0]) and ledger.was_asked("a", cids(1, b"newer")[0])


def test_inbound_streams_are_capped_per_peer_and_refused_while_banned() -> None:
    ledger: PeerLedger[str] = PeerLedger()
    assert all(ledger.open_inbound("a", 0.0) for _ in range(MAX_INBOUND_STREAMS))
    assert not ledger.open_inbound("a", 0.0)
    assert ledger.open_inbound("b", 0.0)  # another peer's streams are its own
    ledger.close_inbound("a")
    assert ledger.open_inbound("a", 0.0) and not ledger.open_inbound("a", 0.0)
    ledger.ban("c", 0.0)
    assert not ledger.open_inbound("c", 1.0)
    assert ledger.open_inbound("c", BAN_SECONDS)


def test_wants_queue_in_order_and_one_task_serves_them() -> None:
    ledger: PeerLedger[str] = PeerLedger()
    first, second, third = (WantEntry(cid) for cid in cids(3))
    assert ledger.queue_wants("a", [first, second], full=False) == (True, 0)  # start serving
    assert ledger.queue_wants("a", [third, first], full=False) == (False, 0)  # already being served
    assert [w.cid for w in ledger.next_wants("a", 10)] == [first.cid, second.cid, third.cid]  # a repeat keeps its place
    assert [w.cid for w in ledger.next_wants("a", 2)] == [first.cid, second.cid]
    assert ledger.serve_backlog("a") == (3, 0)
    # Answered while a cancel and a changed want arrived: those are not answered now.
    read = ledger.next_wants("a", 3)
    changed = WantEntry(third.cid, want_type=WantType.HAVE)
    ledger.queue_wants("a", [WantEntry(second.cid, cancel=True), changed], full=False)
    assert [ledger.take_answered("a", want, 100) for want in read] == [True, False, False]
    assert ledger.serve_backlog("a") == (1, 100)  # one still queued; one block held for the reply
    ledger.reply_sent("a")
    assert ledger.serve_backlog("a") == (1, 0)
    assert ledger.next_wants("a", 10) == [changed]
    ledger.serving_ended("a")
    assert ledger.serve_backlog("a") == (0, 0)
    assert ledger.queue_wants("a", [first], full=False) == (True, 0)  # a new task for new wants


def test_a_full_want_list_replaces_the_queue_and_identity_wants_are_skipped() -> None:
    ledger: PeerLedger[str] = PeerLedger()
    old, new = (WantEntry(cid) for cid in cids(2))
    ledger.queue_wants("a", [old], full=False)
    identity = WantEntry(CID.parse("bafkqac3imvwgy3zao5xxe3de"))
    ledger.queue_wants("a", [new, identity], full=True)
    assert ledger.next_wants("a", 10) == [new]
    ledger.serving_ended("a")
    # Nothing left to answer: no queue is kept and no task is to start.
    assert ledger.queue_wants("b", [identity], full=False) == (False, 0)
    assert ledger.queue_wants("b", [WantEntry(old.cid, cancel=True)], full=False) == (False, 0)
    assert ledger.serve_backlog("b") == (0, 0)


def test_a_peer_queues_at_most_the_cap_and_the_rest_is_ignored() -> None:
    ledger: PeerLedger[str] = PeerLedger()
    wants = [WantEntry(cid) for cid in cids(MAX_QUEUED_WANTS + 5)]
    assert ledger.queue_wants("a", wants, full=False) == (True, 5)
    assert ledger.serve_backlog("a") == (MAX_QUEUED_WANTS, 0)
    assert ledger.queue_wants("a", wants[:3], full=False) == (False, 0)  # repeats, not more
    ledger.queue_wants("a", [WantEntry(wants[0].cid, cancel=True)], full=False)
    assert ledger.queue_wants("a", wants[-1:], full=False) == (False, 0)  # a cancel made room
    assert ledger.serve_backlog("a") == (MAX_QUEUED_WANTS, 0)


def test_unstored_bytes_are_held_per_peer_until_released() -> None:
    ledger: PeerLedger[str] = PeerLedger()
    ledger.hold_unstored("a", 100)
    ledger.hold_unstored("a", 50)
    ledger.hold_unstored("b", 7)
    ledger.release_unstored("a", 100)
    assert ledger.unstored_bytes == {"a": 50, "b": 7}
    ledger.release_unstored("a", 50)
    ledger.release_unstored("b", 7)
    assert ledger.unstored_bytes == {}
