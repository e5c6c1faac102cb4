"""Real Bitswap messages must decode: frames Helia and kubo sent, as they sent them.

tests/vectors/bitswap/ holds frames (varint length, then the protobuf Message) recorded by
tests/vectors/capture_bitswap.py from Helia 7 and kubo v0.22 on loopback, and index.json says what
each holds, read by that script's own protobuf reader. Each frame must come out of ``FrameReader``
whole and ``decode_message`` must give exactly the wants, blocks (CIDs, sizes), presences and
pendingBytes the index lists. The corpus must also keep covering every kind of message each
implementation was seen to send, so regenerating it cannot quietly lose one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from conftest import TESTS
from node.swarm.bitswap.wire import MAX_MESSAGE_SIZE, FrameReader, Presence, WantType, decode_message

CORPUS = TESTS / "vectors" / "bitswap"
INDEX: dict[str, Any] = json.loads((CORPUS / "index.json").read_text())
FRAMES: list[dict[str, Any]] = INDEX["frames"]

# What each implementation sends in practice (the capture's kinds; see capture_bitswap.kinds_of).
# Helia sends neither want-have nor cancels, nor pendingBytes; kubo never sent a full wantlist and
# ignores wants for identity CIDs, so it never sends a block-identity.
EXPECTED_KINDS = {
    "helia": {"full", "want-block", "send-dont-have", "block-raw", "block-dagpb", "block-v0", "block-empty",
              "block-identity", "have", "dont-have"},
    "kubo": {"want-block", "want-have", "send-dont-have", "cancel", "block-raw", "block-dagpb", "block-v0",
             "block-empty", "block-v100", "have", "dont-have", "pending"},
}  # fmt: skip


def test_corpus_covers_what_each_peer_sends() -> None:
    for sender, expected in EXPECTED_KINDS.items():
        seen = {kind for frame in FRAMES if frame["from"] == sender for kind in frame["kinds"]}
        assert expected <= seen, f"{sender}: no frame of kind {sorted(expected - seen)}"
    total = sum((CORPUS / frame["file"]).stat().st_size for frame in FRAMES)
    assert total < 2 * 1024 * 1024
    assert sorted(p.name for p in CORPUS.glob("*.bin")) == sorted(frame["file"] for frame in FRAMES)


@pytest.mark.parametrize("frame", FRAMES, ids=[frame["file"] for frame in FRAMES])
def test_frame_decodes_to_what_the_index_says(frame: dict[str, Any]) -> None:
    raw = (CORPUS / frame["file"]).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == frame["sha256"]
    reader = FrameReader(MAX_MESSAGE_SIZE)
    messages = reader.feed(raw)
    assert len(messages) == 1 and reader.pending == 0, "one whole frame"

    message = decode_message(messages[0])
    assert not getattr(message, "ignored", []), "real peers' messages have no parts to skip"

    wantlist = frame["wantlist"] or {"full": None, "entries": []}
    assert message.full == bool(wantlist["full"])
    assert [str(want.cid) for want in message.wants] == [entry["cid"] for entry in wantlist["entries"]]
    for want, entry in zip(message.wants, wantlist["entries"], strict=True):
        assert want.cancel == bool(entry["cancel"])
        assert want.want_type == (WantType.HAVE if entry["want_type"] == 1 else WantType.BLOCK)
        assert want.send_dont_have == bool(entry["send_dont_have"])
        if entry["priority"] is not None:  # absent on the wire (kubo's cancels): the decoder's default
            assert want.priority == entry["priority"]

    assert [(str(cid), len(data)) for cid, data in message.blocks] == [(b["cid"], b["size"]) for b in frame["blocks"]]
    for cid, data in message.blocks:
        assert cid.verifies(data)

    kinds = {"have": Presence.HAVE, "dont-have": Presence.DONT_HAVE}
    expected = [(p["cid"], kinds[p["type"]]) for p in frame["presences"]]
    assert [(str(cid), presence) for cid, presence in message.presences] == expected
    assert message.pending_bytes == (frame["pending_bytes"] or 0)
