"""The viewer protocol's wire contract (``node/swarm/viewers/contract.json``) against the Python codecs, and
the shared clip vectors (``tests/vectors/viewer_clips.json``) against the Python clip builder. The browser's
side of both runs under Node.js (``tests/js/contract.test.mjs``, ``tests/js/clip.test.mjs``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgpack
import pytest

from conftest import TESTS
from node.storage.cid import CID
from node.swarm.viewers import protocol
from node.swarm.viewers.clip import ViewerError, clip_from_blocks
from node.swarm.viewers.protocol import (
    CONTRACT,
    HaveAll,
    ProtocolError,
    decode_hub_message,
    decode_peer_message,
    decode_signal,
    encode_peer_message,
    pack,
)

CLIPS = json.loads((TESTS / "vectors" / "viewer_clips.json").read_text())["cases"]
PIECES = CONTRACT["data_channel_pieces"]


def meaning(value: Any) -> Any:
    """A vector's message with ``{"bin": hex}`` turned into bytes."""
    if isinstance(value, dict):
        if set(value) == {"bin"}:
            return bytes.fromhex(value["bin"])
        return {key: meaning(item) for key, item in value.items()}
    if isinstance(value, list):
        return [meaning(item) for item in value]
    return value


def test_constants_carry_their_units_and_the_modules_use_them() -> None:
    constants = CONTRACT["constants"]
    assert protocol.MAX_PIECE == constants["max_piece_bytes"] == 2 * 1024 * 1024
    assert constants["request_timeout_ms"] == protocol.REQUEST_TIMEOUT * 1000
    assert protocol.PIECE_CHUNK + 64 == protocol.MAX_DATA_MESSAGE  # room for the map around a chunk
    unit_free = [name for name in constants if not name.endswith(("_bytes", "_ms", "_chars", "_label"))]
    assert sorted(unit_free) == sorted([
        "max_pieces", "introductions", "max_peer_connections", "max_outstanding_requests",
        "max_request_timeouts_per_peer", "http_parallel_fetches", "stats_per_second", "stats_burst",
        "max_stats_peers",
    ])  # fmt: skip


@pytest.mark.parametrize("channel", ["signaling_from_viewer", "signaling_from_hub", "data_channel"])
def test_every_vector_encodes_to_its_frame(channel: str) -> None:
    for vector in CONTRACT[channel]:
        assert pack(meaning(vector["message"])).hex() == vector["frame"], vector


def test_viewer_messages_decode_to_their_meaning() -> None:
    for vector in CONTRACT["signaling_from_viewer"]:
        message = decode_signal(bytes.fromhex(vector["frame"]))
        expected = meaning(vector["message"])
        assert msgpack.unpackb(bytes.fromhex(vector["frame"])) == expected
        assert type(message).__name__.lower() in {"join", "have", "relay", "askpeers", "stats"}
        if expected["t"] == "stats":
            assert dataclasses.astuple(message) == (expected["http"], expected["got"], expected["sent"])
    for vector in CONTRACT["signaling_from_viewer_refused"]:
        with pytest.raises(ProtocolError):
            decode_signal(bytes.fromhex(vector["frame"]))
            pytest.fail(vector["refused"])


def test_hub_messages_decode() -> None:
    for vector in CONTRACT["signaling_from_hub"]:
        message = decode_hub_message(bytes.fromhex(vector["frame"]))
        assert type(message).__name__ in {"Welcome", "PeersList", "Signal", "HubError"}, vector


def test_data_channel_messages_decode_to_their_meaning_and_back() -> None:
    for vector in CONTRACT["data_channel"]:
        frame = bytes.fromhex(vector["frame"])
        message = decode_peer_message(frame, PIECES)
        if "pieces" in vector:
            assert message == HaveAll(set(vector["pieces"]))
        assert encode_peer_message(message, PIECES) == frame
    for vector in CONTRACT["data_channel_refused"]:
        with pytest.raises(ProtocolError):
            decode_peer_message(bytes.fromhex(vector["frame"]), PIECES)
            pytest.fail(vector["refused"])


@pytest.mark.parametrize("vector", CLIPS, ids=[c["name"] for c in CLIPS])
def test_the_clip_builder_accepts_and_cuts_as_the_vectors_say(vector: dict[str, Any]) -> None:
    blocks = {CID.parse(cid): bytes.fromhex(block) for cid, block in vector["blocks"].items()}
    root = CID.parse(vector["root"])
    if vector.get("refused"):
        with pytest.raises(ViewerError):
            clip_from_blocks(root, blocks)
        return
    clip = clip_from_blocks(root, blocks)
    assert clip.size == vector["size"]
    got = [{"cid": str(p.cid), "offset": p.offset, "block_bytes": p.size} for p in clip.pieces]
    assert got == vector["pieces"]
    assert clip.swarmable is vector["swarm"]
