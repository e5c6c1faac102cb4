"""Bitswap 1.2.0 message codec and framing, without sockets."""

from __future__ import annotations

import pytest

from node.storage.cid import CID, DAG_PB, RAW
from node.swarm.bitswap.wire import (
    BitswapMessage,
    BitswapWireError,
    FrameReader,
    Presence,
    WantEntry,
    WantType,
    cid_prefix,
    decode_message,
    encode_frame,
    encode_message,
    frame,
)


def block(data: bytes, codec: int = RAW) -> tuple[CID, bytes]:
    return CID.for_block(codec, data), data


def test_roundtrip_every_field() -> None:
    a, b = block(b"a"), block(b"bb", DAG_PB)
    message = BitswapMessage(
        wants=[
            WantEntry(a[0], priority=7, want_type=WantType.HAVE, send_dont_have=True),
            WantEntry(b[0], priority=1, cancel=True),
        ],
        full=True,
        blocks=[a, b],
        presences=[(a[0], Presence.HAVE), (b[0], Presence.DONT_HAVE)],
        pending_bytes=12345,
    )
    assert decode_message(encode_message(message)) == message
    assert encode_frame(message) == frame(encode_message(message))


def test_payload_prefix_is_kubos_cidv1_raw_prefix() -> None:
    """From the spec: a CIDv1 raw sha2-256 block's prefix is 01 55 12 20."""
    assert cid_prefix(CID.for_block(RAW, b"x")) == bytes.fromhex("01551220")
    v0 = CID.parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")
    assert cid_prefix(v0) == bytes.fromhex("00701220")


def test_payload_cid_comes_from_the_bytes_not_the_sender() -> None:
    """A block's CID is recomputed from its data: a tampered block decodes to a different CID."""
    cid, data = block(b"honest")
    wire = bytearray(encode_message(BitswapMessage(blocks=[(cid, data)])))
    wire[-1] ^= 1
    ((got, got_data),) = decode_message(bytes(wire)).blocks
    assert got != cid and got.verifies(got_data)


def test_bitswap_100_blocks_are_cidv0() -> None:
    data = b"\x0a\x00"  # an empty dag-pb node
    wire = b"\x12" + bytes([len(data)]) + data
    ((cid, got),) = decode_message(wire).blocks
    assert cid.version == 0 and cid.codec == DAG_PB and cid.verifies(got)


def test_negative_priority_and_unknown_fields() -> None:
    """boxo counts priorities down and may go negative: an int32 -5 takes a 10-byte varint."""
    cid = CID.for_block(RAW, b"p")
    negative = b"\x10" + b"\xfb\xff\xff\xff\xff\xff\xff\xff\xff\x01"
    entry = b"\x0a" + bytes([len(bytes(cid))]) + bytes(cid) + negative + b"\x30\x01"  # field 6 is unknown
    wire = b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    (want,) = decode_message(wire).wants
    assert want.cid == cid and want.priority == -5


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x1a\x04\x0a\x02\x01\x55", "bad block prefix"),
        (b"\x1a\x02\x12\x00", "without a prefix"),
        (b"\x1a\x08\x0a\x04\x01\x55\x13\x20\x12\x00", "unsupported multihash"),
        (b"\x0a\x04\x0a\x02\x10\x01", "entry without a usable CID"),
        (b"\x22\x02\x10\x01", "presence without a usable CID"),
        (b"\x0a\x05\x0a\x03\x0a\x01\x01", "bad CID"),
    ],
)
def test_odd_parts_are_skipped_not_errors(wire: bytes, reason: str) -> None:
    """Tried: a payload block whose prefix is cut short, one with no prefix, a prefix with a hash
    we cannot check, entries and presences without CIDs, a garbage CID. None of these proves a
    peer broken (an honest peer on a newer version may send them): each part is skipped, with why."""
    message = decode_message(wire)
    assert message.is_empty() and message.ignored and reason in message.ignored[0]


def test_presence_of_unknown_type_is_skipped() -> None:
    cid = CID.for_block(0x55, b"x")
    presence = b"\x0a" + bytes([len(bytes(cid))]) + bytes(cid) + b"\x10\x07"
    message = decode_message(b"\x22" + bytes([len(presence)]) + presence)
    assert message.presences == [] and "unknown type 7" in message.ignored[0]


def test_empty_block_without_data_field_is_a_block() -> None:
    """Helia answers a want for bafkqaaa, and encoders drop empty bytes: a payload with a prefix
    and no data field is the empty block, not an error (it used to get the sender banned)."""
    identity = CID.parse("bafkqaaa")
    prefix = bytes([1, 0x55, 0x00, 0x00])
    wire = b"\x1a" + bytes([len(prefix) + 2]) + b"\x0a" + bytes([len(prefix)]) + prefix
    assert decode_message(wire).blocks == [(identity, b"")]
    empty_raw = CID.for_block(0x55, b"")
    prefix = bytes([1, 0x55, 0x12, 0x20])
    wire = b"\x1a" + bytes([len(prefix) + 2]) + b"\x0a" + bytes([len(prefix)]) + prefix
    assert decode_message(wire).blocks == [(empty_raw, b"")]
    assert decode_message(encode_message(BitswapMessage(blocks=[(empty_raw, b"")]))).blocks == [(empty_raw, b"")]


def test_framing_that_does_not_parse_is_an_error() -> None:
    """A length that runs past the end: the stream cannot be read further, so the peer is dropped."""
    with pytest.raises(BitswapWireError, match="malformed"):
        decode_message(b"\x1a\xff")


def test_oversized_block_is_refused() -> None:
    cid, data = block(b"x" * 1000)
    with pytest.raises(BitswapWireError, match="over the 999-byte limit"):
        decode_message(encode_message(BitswapMessage(blocks=[(cid, data)])), max_block_size=999)


def test_frames_split_anywhere_reassemble() -> None:
    messages = [encode_message(BitswapMessage(blocks=[block(bytes([i]) * (i * 100))])) for i in range(1, 6)]
    messages.insert(2, b"")  # an empty message is one byte on the wire
    stream = b"".join(frame(m) for m in messages)
    for step in (1, 3, 7, 1000, len(stream)):
        reader = FrameReader()
        got: list[bytes] = []
        for start in range(0, len(stream), step):
            got += reader.feed(stream[start : start + step])
        assert got == messages and reader.pending == 0


def test_oversized_frame_refused_before_it_is_buffered() -> None:
    """Tried: a frame that announces 1 GiB; refused on its 5-byte length prefix alone."""
    reader = FrameReader(max_size=4 * 1024 * 1024)
    with pytest.raises(BitswapWireError, match="over the"):
        reader.feed(b"\x80\x80\x80\x80\x04")
    with pytest.raises(BitswapWireError, match="bad frame length"):
        FrameReader().feed(b"\xff" * 12)
