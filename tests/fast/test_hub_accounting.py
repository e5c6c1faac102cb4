"""The signaling hub's byte and viewer accounting, as the pure state machine it is (no sockets, time passed in)."""

from __future__ import annotations

import pytest

from node.storage.cid import CID, RAW
from node.swarm.viewers.hub import DEPARTED_GRACE, SEEN_WINDOW, HubLimits, Refused, ViewerHub, address_key
from node.swarm.viewers.protocol import Join, ProtocolError, Stats

CLIP = CID.for_block(RAW, b"clip")
OTHER = CID.for_block(RAW, b"other clip")
SIZE = 1000


def join(hub: ViewerHub, ip: str, now: float = 0, cid: CID = CLIP) -> str:
    viewer, _ = hub.join(cid, ip, Join(b"\0"), 1, SIZE, now)
    return viewer


def got(hub: ViewerHub, viewer: str, now: float, http: int = 0, **peers: int) -> None:
    hub.handle(viewer, Stats(http, dict(peers), {}), now)


def sent(hub: ViewerHub, viewer: str, now: float, **peers: int) -> None:
    hub.handle(viewer, Stats(0, {}, dict(peers)), now)


def from_peers(hub: ViewerHub, cid: CID = CLIP) -> int:
    return hub.stats(cid, now=0)["bytes_from_peers"]


def test_peer_bytes_count_the_smaller_of_what_both_ends_said_and_each_increase_once() -> None:
    hub = ViewerHub([])
    a, b = join(hub, "10.0.0.1"), join(hub, "10.0.0.2")
    got(hub, b, 1, **{a: 400})
    assert from_peers(hub) == 0  # the receiver alone
    sent(hub, a, 1, **{b: 300})
    assert from_peers(hub) == 300  # the sender said less
    sent(hub, a, 2, **{b: 900})
    assert from_peers(hub) == 400  # now the receiver did
    got(hub, b, 2, **{a: 400})
    sent(hub, a, 3, **{b: 900})
    assert from_peers(hub) == 400  # repeating a claim adds nothing
    got(hub, b, 3, **{a: 600})
    assert from_peers(hub) == 600
    assert hub.overall.bytes_from_peers == 600


def test_a_sender_alone_counts_nothing_and_neither_do_claims_about_strangers() -> None:
    hub = ViewerHub([])
    a, b = join(hub, "10.0.0.1"), join(hub, "10.0.0.2")
    elsewhere = join(hub, "10.0.0.3", cid=OTHER)
    sent(hub, a, 1, **{b: SIZE})
    assert from_peers(hub) == 0
    got(hub, b, 1, **{"0123456789abcdef": SIZE, elsewhere: SIZE})
    sent(hub, elsewhere, 1, **{b: SIZE})
    assert from_peers(hub) == 0 and from_peers(hub, OTHER) == 0
    # Only the pair that was reported while both were in the swarm has a record.
    assert set(hub.swarms[CLIP].transfers) == {(a, b)} and not hub.swarms[OTHER].transfers


def test_a_receiving_membership_counts_for_the_clip_size_at_most_whatever_its_senders_agree_to() -> None:
    hub = ViewerHub([])
    receiver = join(hub, "10.0.0.9")
    senders = [join(hub, f"10.0.0.{i}") for i in range(1, 4)]
    for sender in senders:
        sent(hub, sender, 1, **{receiver: 10**12})
    got(hub, receiver, 1, **dict.fromkeys(senders, 10**12))
    assert from_peers(hub) == SIZE
    # The next membership from the same place starts over, as a new viewer session.
    hub.leave(receiver, now=2)
    again = join(hub, "10.0.0.9", now=2)
    sent(hub, senders[0], 3, **{again: 700})
    got(hub, again, 3, **{senders[0]: 700})
    assert from_peers(hub) == SIZE + 700


def test_the_other_end_may_report_for_a_while_after_one_left_and_then_its_records_go() -> None:
    hub = ViewerHub([])
    a, b, c = join(hub, "10.0.0.1"), join(hub, "10.0.0.2"), join(hub, "10.0.0.3")
    got(hub, b, 1, **{a: 500})
    got(hub, c, 1, **{a: 200})
    hub.leave(b, now=1)
    hub.leave(c, now=1)
    sent(hub, a, 1 + DEPARTED_GRACE / 2, **{b: 500})
    assert from_peers(hub) == 500  # b had left, within the grace
    sent(hub, a, 1 + DEPARTED_GRACE, **{c: 200})
    assert from_peers(hub) == 500  # c left too long ago: its record is gone
    assert not hub.swarms[CLIP].transfers and not hub.swarms[CLIP].departed
    # A claim about one who left, with no record yet, makes none: nobody could confirm it.
    d = join(hub, "10.0.0.4", now=20)
    hub.leave(d, now=20)
    sent(hub, a, 21, **{d: 100})
    assert not hub.swarms[CLIP].transfers


def test_counts_that_go_down_or_name_the_viewer_itself_break_the_protocol() -> None:
    hub = ViewerHub([])
    a, b = join(hub, "10.0.0.1"), join(hub, "10.0.0.2")
    got(hub, b, 1, http=50, **{a: 300})
    with pytest.raises(ProtocolError, match="only grow"):
        got(hub, b, 2, http=50, **{a: 200})
    with pytest.raises(ProtocolError, match="only grow"):
        got(hub, b, 2, http=40)
    with pytest.raises(ProtocolError, match="itself"):
        sent(hub, a, 2, **{a: 1})


def test_http_bytes_are_the_claim_bounded_by_the_clip_size_per_membership() -> None:
    hub = ViewerHub([])
    viewer = join(hub, "10.0.0.1")
    got(hub, viewer, 1, http=300)
    got(hub, viewer, 2, http=10**12)
    got(hub, viewer, 3, http=10**12)
    assert hub.stats(CLIP, now=3)["bytes_from_http"] == SIZE


def test_join_stats_leave_cycles_from_one_address_are_rate_bounded_and_one_viewer() -> None:
    limits = HubLimits(join_burst=10, joins_per_minute=6)
    hub = ViewerHub([], limits)
    admitted = 0
    for i in range(100):
        try:
            viewer = join(hub, "192.0.2.7", now=i * 0.01)
        except Refused as refused:
            assert "joins from this address" in str(refused)
            continue
        admitted += 1
        got(hub, viewer, i * 0.01, http=SIZE, **{"0123456789abcdef": SIZE})
        hub.leave(viewer, now=i * 0.01)
    assert admitted == 10
    stats = hub.stats(CLIP, now=1)
    assert stats["bytes_from_peers"] == 0 and stats["bytes_from_http"] == 10 * SIZE
    assert stats["viewers_seen"] == 1 and hub.viewers_seen(now=1) == 1
    assert hub.overall.joins == 10
    join(hub, "192.0.2.7", now=1 + 10)  # one more join 10 s later: 6 a minute
    with pytest.raises(Refused):
        join(hub, "192.0.2.7", now=1 + 10)
    join(hub, "192.0.2.8", now=11)  # another address has its own bucket


def test_an_ipv6_address_counts_as_its_slash_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    hub = ViewerHub([], HubLimits(join_burst=2, joins_per_minute=1))
    join(hub, "2001:db8:1:2::1")
    join(hub, "2001:db8:1:2::2")
    with pytest.raises(Refused, match="joins from this address"):
        join(hub, "2001:db8:1:2:ffff::3")
    join(hub, "2001:db8:1:3::1")


def test_joins_to_one_swarm_are_rate_bounded_even_when_it_empties_between_them() -> None:
    hub = ViewerHub([], HubLimits(swarm_join_burst=5, swarm_joins_per_second=1))
    for i in range(5):
        hub.leave(join(hub, f"10.0.1.{i}", now=0), now=0)
    with pytest.raises(Refused, match="joins to this swarm"):
        join(hub, "10.0.1.99", now=0)
    join(hub, "10.0.1.99", now=1)
    join(hub, "10.0.1.98", now=1, cid=OTHER)  # another swarm has its own bucket


def test_viewers_seen_is_the_most_at_once_per_address_in_a_rolling_hour() -> None:
    hub = ViewerHub([])
    household = [join(hub, "198.51.100.1", now=0) for _ in range(3)]  # three devices at once
    join(hub, "198.51.100.2", now=0)
    assert hub.stats(CLIP, now=0)["viewers_seen"] == 4
    for viewer in household:
        hub.leave(viewer, now=10)
    for t in range(20, 40):  # one of them coming and going many times is still at most three
        hub.leave(join(hub, "198.51.100.1", now=t), now=t)
    assert hub.stats(CLIP, now=40)["viewers_seen"] == 4
    join(hub, "198.51.100.3", now=50, cid=OTHER)
    assert hub.viewers_seen(now=50) == 5
    assert hub.stats(CLIP, now=38 + SEEN_WINDOW)["viewers_seen"] == 3  # the household's last join was at 39
    assert hub.stats(CLIP, now=39 + SEEN_WINDOW)["viewers_seen"] == 0
    assert hub.viewers_seen(now=39 + SEEN_WINDOW) == 1
    assert hub.viewers_seen(now=50 + SEEN_WINDOW) == 0


def test_viewers_seen_keeps_a_bounded_number_of_addresses() -> None:
    hub = ViewerHub([], HubLimits(seen_entries=3))
    for i in range(5):
        hub.leave(join(hub, f"10.2.0.{i}", now=i), now=i)
    assert hub.stats(CLIP, now=5)["viewers_seen"] == 3


def test_stats_past_their_rate_are_dropped_and_the_next_one_catches_up() -> None:
    hub = ViewerHub([], HubLimits(stats_burst=2, stats_per_second=1))
    viewer = join(hub, "10.0.0.1")
    for http in (100, 200, 300, 400):
        got(hub, viewer, 0, http=http)
    assert hub.stats(CLIP, now=0)["bytes_from_http"] == 200
    got(hub, viewer, 1, http=400)
    assert hub.stats(CLIP, now=1)["bytes_from_http"] == 400


def test_one_viewer_can_be_party_to_a_bounded_number_of_transfer_records() -> None:
    hub = ViewerHub([], HubLimits(transfers_per_viewer=2))
    talker = join(hub, "10.0.0.1")
    others = [join(hub, f"10.0.0.{i}") for i in range(2, 6)]
    got(hub, talker, 1, **dict.fromkeys(others, 10))
    assert len(hub.swarms[CLIP].transfers) == 2
    sent(hub, others[3], 1, **{talker: 10})  # the other end may still make the record
    assert len(hub.swarms[CLIP].transfers) == 3
