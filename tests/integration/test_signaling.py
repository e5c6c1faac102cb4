"""The viewer-swarm signaling hub: its bookkeeping without sockets, then the real WebSocket endpoint."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from conftest import Served, gen
from node.storage.cid import CID, RAW
from node.swarm.viewers.hub import HubLimits, Refused, ViewerHub
from node.swarm.viewers.protocol import (
    AskPeers,
    Have,
    Join,
    PieceChunk,
    ProtocolError,
    Relay,
    Request,
    Stats,
    bitfield,
    decode_peer_message,
    decode_signal,
    encode_peer_message,
    pack,
    pieces_in,
)

CLIP = CID.parse("bafybeibvrisopsw5l2aqugzr3bt7sh3wpyveon4ozz27ai4lokjb7cm2ci")
OTHER = CID.parse("bafkqaaa")


def test_bitfields_round_trip_and_wrong_lengths_are_refused() -> None:
    assert bitfield({0, 9}, 10) == bytes([0x80, 0x40])
    assert pieces_in(bitfield({0, 3, 9}, 10), 10) == {0, 3, 9}
    with pytest.raises(ProtocolError, match="bitfield is 1 bytes, 2 expected"):
        pieces_in(b"\xff", 10)


def test_peer_messages_round_trip_and_bad_ones_are_protocol_errors() -> None:
    chunk = PieceChunk(3, 16320, b"x" * 100)
    assert decode_peer_message(encode_peer_message(chunk, 10), 10) == chunk
    assert decode_peer_message(encode_peer_message(Request(9), 10), 10) == Request(9)
    tried = {
        "piece out of range": pack({"t": "request", "i": 10}),
        "index not an int": pack({"t": "request", "i": "1"}),
        "bool is not an index": pack({"t": "cancel", "i": True}),
        "unknown type": pack({"t": "gimme"}),
        "not a map": pack([1, 2]),
        "not msgpack": b"\xc1\xc1",
        "chunk too big": pack({"t": "piece", "i": 0, "o": 0, "d": b"x" * 20000}),
        "negative offset": pack({"t": "piece", "i": 0, "o": -1, "d": b"x"}),
    }
    for what, data in tried.items():
        with pytest.raises(ProtocolError):
            decode_peer_message(data, 10)
            pytest.fail(what)


def test_signal_messages_are_checked() -> None:
    assert decode_signal(pack({"t": "join", "have": b"\0"})) == Join(b"\0")
    assert decode_signal(pack({"t": "signal", "to": "ab", "data": {"type": "offer"}})) == Relay("ab", {"type": "offer"})
    assert decode_signal(pack({"t": "peers"})) == AskPeers()
    assert decode_signal(pack({"t": "stats", "http": 5, "got": {"a": 1}, "peer": 9})) == Stats(5, {"a": 1}, {})
    for bad in (
        {"t": "stats", "http": -1},
        {"t": "stats", "http": 0, "got": {"a": -1}},
        {"t": "stats", "http": 0, "sent": {"a": True}},
        {"t": "stats", "http": 0, "sent": {"": 1}},
        {"t": "stats", "http": 0, "got": {str(i): 1 for i in range(65)}},
        {"t": "stats", "http": 0, "got": [1]},
        {"t": "signal", "to": 5, "data": {}},
        {"t": "join"},
    ):
        with pytest.raises(ProtocolError):
            decode_signal(pack(bad))
    with pytest.raises(ProtocolError, match="at most"):
        decode_signal(pack({"t": "signal", "to": "a", "data": {"sdp": "x" * 20000}}))


def test_hub_introduces_seeders_first_and_relays_within_a_swarm() -> None:
    hub = ViewerHub(["stun:stun.example:3478"])
    seeder, out = hub.join(CLIP, "10.0.0.1", Join(bitfield(set(range(10)), 10)), 10, 1000, now=0)
    assert out[0][1]["peers"] == [] and out[0][1]["ice"] == ["stun:stun.example:3478"]
    partial, _ = hub.join(CLIP, "10.0.0.2", Join(bitfield({1}, 10)), 10, 1000, now=0)
    newcomer, out = hub.join(CLIP, "10.0.0.3", Join(bitfield(set(), 10)), 10, 1000, now=0)
    assert [p["id"] for p in out[0][1]["peers"]] == [seeder, partial]
    relay = hub.handle(newcomer, Relay(seeder, {"type": "offer", "sdp": "v=0"}), now=1)
    assert relay == [(seeder, {"t": "signal", "from": newcomer, "data": {"type": "offer", "sdp": "v=0"}})]
    stranger, _ = hub.join(OTHER, "10.0.0.4", Join(b"\0"), 1, 0, now=0)
    assert hub.handle(stranger, Relay(seeder, {"type": "offer"}), now=1) == []  # other swarm: not relayed
    hub.leave(seeder, now=2)
    assert hub.handle(newcomer, Relay(seeder, {"type": "offer"}), now=2) == []
    assert hub.stats(CLIP, now=2)["viewers"] == 2


def test_hub_limits_per_address_per_swarm_and_relay_rate() -> None:
    hub = ViewerHub([], HubLimits(viewers_per_swarm=3, sockets_per_ip=2, relays_per_second=1, relay_burst=3))
    first, _ = hub.join(CLIP, "10.0.0.1", Join(b"\0"), 1, 10, now=0)
    hub.join(CLIP, "10.0.0.1", Join(b"\0"), 1, 10, now=0)
    with pytest.raises(Refused, match="per address"):
        hub.join(CLIP, "10.0.0.1", Join(b"\0"), 1, 10, now=0)
    last, _ = hub.join(CLIP, "10.0.0.2", Join(b"\0"), 1, 10, now=0)
    with pytest.raises(Refused, match="full"):
        hub.join(CLIP, "10.0.0.3", Join(b"\0"), 1, 10, now=0)
    relayed = [hub.handle(first, Relay(last, {"candidate": "c"}), now=0) for _ in range(5)]
    assert sum(1 for r in relayed if r) == 3  # the burst, then dropped
    assert hub.handle(first, Relay(last, {"candidate": "c"}), now=1.0)  # one more a second later
    with pytest.raises(ProtocolError):
        hub.join(CLIP, "10.0.0.2", Join(b"\0\0"), 1, 10, now=0)  # bitfield of the wrong length


def test_hub_counts_reported_bytes_once_and_at_most_the_clip_size() -> None:
    hub = ViewerHub([])
    viewer, _ = hub.join(CLIP, "10.0.0.1", Join(b"\0"), 1, 1000, now=0)
    sender, _ = hub.join(CLIP, "10.0.0.2", Join(b"\0"), 1, 1000, now=0)
    hub.handle(sender, Stats(http=0, got={}, sent={viewer: 10**12}), now=1)
    hub.handle(viewer, Stats(http=100, got={sender: 300}, sent={}), now=1)
    hub.handle(viewer, Stats(http=100, got={sender: 700}, sent={}), now=2)
    hub.handle(viewer, Stats(http=10**12, got={sender: 10**12}, sent={}), now=3)  # the clip's size at most
    assert hub.stats(CLIP, now=3) == {"viewers": 2, "viewers_seen": 2, "bytes_from_peers": 1000,
                                      "bytes_from_http": 1000}  # fmt: skip
    with pytest.raises(ProtocolError, match="only grow"):
        hub.handle(viewer, Stats(http=10, got={}, sent={}), now=4)
    hub.handle(viewer, Have(b"\x80"), now=5)
    with pytest.raises(ProtocolError):
        hub.handle(viewer, Have(b"\x80\x00"), now=5)


# ---------------------------------------------------------------- the real endpoint


@pytest.fixture
def clip_node(tmp_path: Path):  # type: ignore[no-untyped-def]
    data = tmp_path / "node"
    (tmp_path / "clip.bin").write_bytes(gen(3 * 262144 + 5))
    from conftest import Node

    cid = Node(data).ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
    served = Served(data, args=("--no-dht",))
    yield served, cid
    served.stop()


def ws_url(served: Served, cid: str) -> str:
    return served.url.replace("http://", "ws://") + f"/api/v1/swarm/{cid}"


async def closed_with(url: str, *messages: bytes | str) -> tuple[dict | None, int | None]:  # type: ignore[type-arg]
    """Send messages, return the error message the hub sent and the close code."""
    error = None
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws:
            for m in messages:
                await ws.send_message(m)
            try:
                while True:
                    reply = msgpack.unpackb(await ws.get_message())
                    if reply["t"] == "error":
                        error = reply
            except ConnectionClosed as closed:
                return error, closed.reason.code
    return error, None


def test_two_viewers_are_introduced_and_relay_through_the_real_hub(clip_node) -> None:  # type: ignore[no-untyped-def]
    served, cid = clip_node

    async def main() -> None:
        join = pack({"t": "join", "have": b"\0"})
        with trio.fail_after(10):
            async with open_websocket_url(ws_url(served, cid)) as first:
                await first.send_message(join)
                welcome_first = msgpack.unpackb(await first.get_message())
                assert welcome_first["t"] == "welcome" and welcome_first["peers"] == []
                async with open_websocket_url(ws_url(served, cid)) as second:
                    await second.send_message(join)
                    welcome = msgpack.unpackb(await second.get_message())
                    assert [p["id"] for p in welcome["peers"]] == [welcome_first["id"]]
                    offer = {"type": "offer", "sdp": "v=0 fake"}
                    await second.send_message(pack({"t": "signal", "to": welcome_first["id"], "data": offer}))
                    relayed = msgpack.unpackb(await first.get_message())
                    assert relayed == {"t": "signal", "from": welcome["id"], "data": offer}
                    sender, receiver = welcome_first["id"], welcome["id"]
                    await first.send_message(pack({"t": "stats", "http": 0, "got": {}, "sent": {receiver: 786432}}))
                    await second.send_message(pack({"t": "stats", "http": 5, "got": {sender: 786432}, "sent": {}}))
                    stats = httpx.get(f"{served.url}/api/v1/swarm/{cid}/stats").json()
                    while stats["bytes_from_peers"] < 786432 or stats["bytes_from_http"] < 5:  # under fail_after
                        await trio.sleep(0.05)
                        stats = httpx.get(f"{served.url}/api/v1/swarm/{cid}/stats").json()
                    assert stats["viewers"] == 2 and stats["bytes_from_peers"] == 786432
                    assert stats["bytes_from_http"] == 5
        metrics = httpx.get(f"{served.url}/metrics").text
        assert 'medianode_viewer_bytes_received_total{source="peers"} 786432.0' in metrics

    trio.run(main)


def test_the_hub_hands_out_the_configured_stun_servers(tmp_path: Path) -> None:
    from conftest import Node

    data = tmp_path / "node"
    (tmp_path / "clip.bin").write_bytes(gen(1000))
    cid = Node(data).ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
    config = data / "config.toml"
    config.write_text(config.read_text().replace("stun = []", 'stun = ["stun:stun.example.org:3478"]'))
    served = Served(data, args=("--no-dht",))
    try:

        async def welcome() -> dict:  # type: ignore[type-arg]
            with trio.fail_after(10):
                async with open_websocket_url(ws_url(served, cid)) as ws:
                    await ws.send_message(pack({"t": "join", "have": b"\0"}))
                    return msgpack.unpackb(await ws.get_message())  # type: ignore[no-any-return]

        assert trio.run(welcome)["ice"] == ["stun:stun.example.org:3478"]
    finally:
        served.stop()


def test_bad_signaling_input_closes_that_socket_and_the_hub_goes_on(clip_node) -> None:  # type: ignore[no-untyped-def]
    served, cid = clip_node
    url = ws_url(served, cid)

    async def main() -> None:
        tried = {
            "text instead of msgpack": (["hello"], "binary msgpack"),
            "garbage bytes": ([b"\xc1\xc1\xc1"], "not msgpack"),
            "first message not join": ([pack({"t": "peers"})], "first message is 'join'"),
            "wrong bitfield length": ([pack({"t": "join", "have": b"\0\0\0"})], "bitfield"),
            "join twice": ([pack({"t": "join", "have": b"\0"}), pack({"t": "join", "have": b"\0"})], "once"),
            "oversized": ([pack({"t": "join", "have": b"\0" * 40000})], "at most"),
        }
        for what, (messages, reason) in tried.items():
            error, code = await closed_with(url, *messages)
            assert code in (1008, 1009), what
            if code == 1008:
                assert error is not None and reason in error["reason"], (what, error)
        error, code = await closed_with(ws_url(served, "not-a-cid"), pack({"t": "join", "have": b""}))
        assert code == 1013 and error is not None and "malformed CID" in error["reason"]
        unknown = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        error, code = await closed_with(ws_url(served, unknown), pack({"t": "join", "have": b"\0"}))
        assert code == 1013 and error is not None and "does not serve" in error["reason"]
        # After all that, a well-behaved viewer still gets in.
        async with open_websocket_url(url) as ws:
            await ws.send_message(pack({"t": "join", "have": b"\0"}))
            assert msgpack.unpackb(await ws.get_message())["t"] == "welcome"

    trio.run(main)
    assert served.proc.poll() is None
    assert httpx.get(f"{served.url}/api/v1/swarm/not-a-cid/stats").status_code == 400


def test_hub_forgets_counts_of_the_oldest_unwatched_cids_past_its_limit() -> None:
    hub = ViewerHub([], HubLimits(remembered_cids=2))
    cids = [CID.for_block(RAW, data) for data in (b"a", b"b", b"c")]
    for cid in cids:
        viewer, _ = hub.join(cid, "10.0.0.1", Join(b"\0"), 1, 10, now=0)
        hub.handle(viewer, Stats(http=5, got={}, sent={}), now=1)
        hub.leave(viewer, now=1)
    assert hub.stats(cids[0], now=1)["bytes_from_http"] == 0  # forgotten
    assert hub.stats(cids[2], now=1)["bytes_from_http"] == 5
    assert hub.overall.bytes_from_http == 15  # /metrics totals are never forgotten
