"""The viewer's piece picker, without sockets: order, limits, assembly, faults, timeouts, HTTP fallback."""

from __future__ import annotations

import random

import pytest

from node.swarm.viewers.picker import PeerFault, PiecePicker
from node.swarm.viewers.protocol import HTTP_PARALLEL, MAX_OUTSTANDING, PEER_PATIENCE, REQUEST_TIMEOUT, TIMEOUTS_TO_DROP

SIZE = 100


def picker(count: int = 10, held: tuple[int, ...] = (), now: float = 0.0) -> PiecePicker:
    return PiecePicker([SIZE] * count, held, now)


def deliver(p: PiecePicker, peer: str, index: int, now: float = 1.0) -> bytes | None:
    first = p.receive(peer, index, 0, b"a" * 60, now)
    assert first is None
    return p.receive(peer, index, 60, b"b" * 40, now)


def test_requests_go_in_order_and_stop_at_the_limit_per_peer() -> None:
    p = picker()
    p.add_peer("a")
    p.peer_has("a", range(10))
    asked = p.requests(0.0)
    assert asked == [("a", i) for i in range(MAX_OUTSTANDING)]
    assert p.requests(0.0) == []  # nothing more until something comes back


def test_pieces_are_spread_over_peers_and_never_asked_twice() -> None:
    p = picker()
    for peer in ("a", "b"):
        p.add_peer(peer)
        p.peer_has(peer, range(10))
    asked = p.requests(0.0)
    assert len(asked) == 2 * MAX_OUTSTANDING
    assert len({index for _, index in asked}) == len(asked)
    assert {peer for peer, _ in asked} == {"a", "b"}


def test_only_pieces_a_peer_announced_are_asked_of_it() -> None:
    p = picker()
    p.add_peer("a")
    p.peer_has("a", [7, 3])
    assert p.requests(0.0) == [("a", 3), ("a", 7)]


def test_held_pieces_are_not_asked_for() -> None:
    p = picker(held=(0, 1))
    p.add_peer("a")
    p.peer_has("a", range(10))
    assert [i for _, i in p.requests(0.0)] == [2, 3, 4, 5]


def test_chunks_assemble_the_piece() -> None:
    p = picker()
    p.add_peer("a")
    p.peer_has("a", [0])
    p.requests(0.0)
    assert deliver(p, "a", 0) == b"a" * 60 + b"b" * 40
    p.piece_done(0)
    assert 0 in p.done


def test_a_finished_request_frees_a_slot() -> None:
    p = picker()
    p.add_peer("a")
    p.peer_has("a", range(10))
    p.requests(0.0)
    deliver(p, "a", 0)
    p.piece_done(0)
    assert p.requests(1.0) == [("a", MAX_OUTSTANDING)]


@pytest.mark.parametrize(
    ("index", "offset", "length", "why"),
    [
        (5, 0, 10, "not requested"),
        (0, 10, 10, "chunk at 10"),
        (0, 0, SIZE + 1, "runs past"),
    ],
)
def test_bad_chunks_are_faults(index: int, offset: int, length: int, why: str) -> None:
    p = picker()
    p.add_peer("a")
    p.peer_has("a", [0])
    p.requests(0.0)
    with pytest.raises(PeerFault, match=why):
        p.receive("a", index, offset, b"x" * length, 1.0)


def test_a_chunk_from_an_unknown_peer_is_a_fault() -> None:
    with pytest.raises(PeerFault):
        picker().receive("nobody", 0, 0, b"x", 0.0)


def test_removing_a_peer_frees_its_requests_for_others() -> None:
    p = picker(count=2)
    for peer in ("a", "b"):
        p.add_peer(peer)
    p.peer_has("a", [0, 1])
    assert len(p.requests(0.0)) == 2
    p.peer_has("b", [0, 1])
    assert p.requests(0.0) == []
    p.remove_peer("a")
    assert p.requests(0.0) == [("b", 0), ("b", 1)]


def test_a_rejected_piece_is_not_asked_of_that_peer_again() -> None:
    p = picker(count=1)
    p.add_peer("a")
    p.peer_has("a", [0])
    p.requests(0.0)
    p.rejected("a", 0)
    assert p.requests(0.0) == []
    assert p.http_fetches(PEER_PATIENCE) == [0]  # nobody else has it: HTTP takes it


def test_nothing_goes_to_http_during_the_grace_unless_peers_fail() -> None:
    p = picker(count=3)
    assert p.http_fetches(0.0) == []
    assert p.next_deadline(0.0) == PEER_PATIENCE
    assert p.http_fetches(PEER_PATIENCE) == [0, 1, 2]


def test_http_takes_only_pieces_no_connected_peer_has() -> None:
    p = PiecePicker([SIZE] * 6, (), 0.0, http_parallel=4)  # room for every piece no peer has
    p.add_peer("a")
    p.peer_has("a", [0, 1])
    assert sorted(p.http_fetches(PEER_PATIENCE)) == [2, 3, 4, 5]
    assert [i for _, i in p.requests(PEER_PATIENCE)] == [0, 1]


def test_http_fetches_are_bounded_and_resume_when_one_ends() -> None:
    p = picker(count=HTTP_PARALLEL + 2)
    first = p.http_fetches(PEER_PATIENCE)
    assert first == list(range(HTTP_PARALLEL))
    assert p.http_fetches(PEER_PATIENCE) == []
    p.http_finished(0)
    p.piece_done(0)
    assert p.http_fetches(PEER_PATIENCE) == [HTTP_PARALLEL]


def test_http_starts_where_asked_and_wraps_around() -> None:
    p = PiecePicker([SIZE] * 6, [4], 0.0, http_start=3, http_parallel=4)
    assert p.http_fetches(PEER_PATIENCE) == [3, 5, 0, 1]


def test_http_moves_elsewhere_when_a_peer_fetched_the_same_piece() -> None:
    p = PiecePicker([SIZE] * 100, [], 0.0, rng=random.Random(7), http_parallel=4)
    assert p.http_fetches(PEER_PATIENCE) == [0, 1, 2, 3]
    p.add_peer("a")
    p.peer_has("a", [0])  # "a" got piece 0 while we were fetching it too
    for index in (0, 1, 2, 3):
        p.http_finished(index)
        p.piece_done(index)
    start = random.Random(7).randrange(100)
    assert p.http_fetches(PEER_PATIENCE)[0] == start


def test_a_failed_http_fetch_is_tried_again() -> None:
    p = picker(count=1)
    assert p.http_fetches(PEER_PATIENCE) == [0]
    p.http_finished(0)
    assert p.http_fetches(PEER_PATIENCE) == [0]


def test_a_peer_that_leaves_makes_its_pieces_http_candidates() -> None:
    p = picker(count=2)
    p.add_peer("a")
    p.peer_has("a", [0, 1])
    assert p.http_fetches(PEER_PATIENCE) == []
    p.remove_peer("a")
    assert p.http_fetches(PEER_PATIENCE) == [0, 1]


def test_a_stalled_request_times_out_goes_to_http_and_strikes_the_peer() -> None:
    p = picker(count=2)
    p.add_peer("a")
    p.peer_has("a", [0])
    p.add_peer("b")
    p.peer_has("b", [1])
    assert p.requests(0.0) == [("a", 0), ("b", 1)]
    p.receive("a", 0, 0, b"x" * 10, 1.0)  # progress on 0 moves its clock
    assert p.next_deadline(PEER_PATIENCE + 0.1) == REQUEST_TIMEOUT
    expired = p.expire(REQUEST_TIMEOUT)
    assert [(e.peer, e.index, e.drop) for e in expired] == [("b", 1, False)]
    assert p.http_fetches(REQUEST_TIMEOUT) == [1]
    assert p.requests(REQUEST_TIMEOUT) == []  # 1 is HTTP's now (and never b's again), 0 is still with a
    assert [e.index for e in p.expire(1.0 + REQUEST_TIMEOUT)] == [0]


def test_a_request_queued_behind_a_moving_one_waits_for_its_peer_to_stop() -> None:
    # What was tried: a sends piece 0 slowly while 1 waits in its queue. 1 shows no progress of its own, but a is
    # not stuck: it is struck only once a stops moving, or once 1 has waited MAX_OUTSTANDING timeouts in all.
    p = picker(count=2)
    p.add_peer("a")
    p.peer_has("a", [0, 1])
    p.requests(0.0)
    for k in range(1, 5):
        p.receive("a", 0, (k - 1) * 10, b"x" * 10, float(k))
    assert p.expire(4.0 + REQUEST_TIMEOUT - 0.01) == []
    assert p.next_deadline(5.0) == 4.0 + REQUEST_TIMEOUT
    assert [e.index for e in p.expire(4.0 + REQUEST_TIMEOUT)] == [0, 1]
    assert p.peers["a"].strikes == 2


def test_a_request_open_max_outstanding_timeouts_is_given_up_however_its_peer_trickles() -> None:
    p = picker(count=2)
    p.add_peer("a")
    p.peer_has("a", [0, 1])
    p.requests(0.0)
    ceiling = MAX_OUTSTANDING * REQUEST_TIMEOUT
    for k in range(1, int(ceiling) + 1):
        p.receive("a", 0, k - 1, b"x", float(k))  # a byte a second of piece 0, never a byte of 1
    assert p.expire(ceiling - 0.01) == []
    assert [e.index for e in p.expire(ceiling)] == [0, 1]


def test_chunks_of_a_cancelled_request_are_discarded_not_faults() -> None:
    p = picker(count=1)
    p.add_peer("a")
    p.peer_has("a", [0])
    p.requests(0.0)
    p.receive("a", 0, 0, b"x" * 30, 0.0)
    p.expire(REQUEST_TIMEOUT)
    assert p.receive("a", 0, 30, b"x" * 30, 5.0) is None
    assert p.receive("a", 0, 60, b"x" * 40, 5.0) is None
    with pytest.raises(PeerFault):  # the piece is over: more is unrequested
        p.receive("a", 0, 0, b"x", 5.0)


def test_a_cancelled_piece_is_never_asked_of_that_peer_again() -> None:
    p = picker(count=1)
    p.add_peer("a")
    p.peer_has("a", [0])
    p.requests(0.0)
    p.expire(REQUEST_TIMEOUT)
    p.http_fetches(REQUEST_TIMEOUT)
    p.http_finished(0)  # HTTP failed: the piece is free again, but not for "a"
    assert p.requests(REQUEST_TIMEOUT) == []


def test_repeated_timeouts_say_drop() -> None:
    p = picker(count=TIMEOUTS_TO_DROP)
    p.add_peer("a")
    p.peer_has("a", range(TIMEOUTS_TO_DROP))
    p.requests(0.0)
    drops = [e.drop for e in p.expire(REQUEST_TIMEOUT)]
    assert drops == [False] * (TIMEOUTS_TO_DROP - 1) + [True]


def test_complete_when_every_piece_is_done() -> None:
    p = picker(count=2, held=(1,))
    assert not p.complete and p.missing() == 1
    p.piece_done(0)
    assert p.complete and p.missing() == 0
    assert p.http_fetches(PEER_PATIENCE) == [] and p.requests(PEER_PATIENCE) == []
