"""Bitswap 1.2.0 messages and their framing, with no I/O (ipfs/specs bitswap-protocol.md).

Participants: two libp2p peers. Either may want blocks from the other and
either may serve them; the protocol is symmetric.

Goals: move content-addressed blocks between peers that hold them and peers
that want them, compatibly with kubo (boxo) and Helia, so IPFS tools and our
nodes trade blocks in both directions.

Non-goals: discovering who has a block (that is content routing: the DHT),
and trusting anyone: every block received is checked against its CID by the
receiver before it is used.

Wire: each message is a protobuf ``Message`` preceded by its length as an
unsigned varint, on a stream negotiated as ``/ipfs/bitswap/1.2.0``. A peer
sends on a stream it opened itself; it reads what the other side sends on
streams the other side opened. One stream carries any number of messages.

``Message`` (field numbers as on the wire):
- ``wantlist`` (1): ``entries`` (1, repeated ``Entry``) and ``full`` (2, bool:
  this list replaces the previous one). ``Entry``: ``block`` (1, CID bytes),
  ``priority`` (2, int32, higher first), ``cancel`` (3, bool), ``wantType``
  (4: 0 = Block, send me the block; 1 = Have, tell me whether you have it),
  ``sendDontHave`` (5, bool: answer DontHave instead of staying silent).
- ``blocks`` (2, repeated bytes): Bitswap 1.0.0 blocks, implicitly CIDv0.
- ``payload`` (3, repeated ``Block``): ``prefix`` (1: CID version, codec,
  multihash type and length, as varints) and ``data`` (2).
- ``blockPresences`` (4, repeated): ``cid`` (1) and ``type`` (2: 0 = Have,
  1 = DontHave).
- ``pendingBytes`` (5, int32): bytes the sender still has queued for us.

Requests are wantlist entries; responses are payload blocks and block
presences, sent whenever ready (there is no request/response pairing). A
wanted block that arrives is answered by nothing; the wanter sends a cancel
to the other peers it asked. Failure handling lives in the exchange: this
module refuses, with ``BitswapWireError``, only what proves the peer broken
(framing or protobuf that cannot be parsed, oversized messages or blocks).
Parts that parse but that we cannot use are skipped and counted in
``ignored``, never an error: an entry or presence without a usable CID, a
presence of an unknown type, a block without a prefix, or one whose hash
function we cannot check. A block's ``data`` may be absent: protobuf encoders
leave out empty bytes, and the empty block is a real block (Helia sends it
for ``bafkqaaa``). Identity blocks (multihash 0x00) decode to their CID;
the exchange neither wants nor sends them, as boxo does not.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from ...storage.cid import CID, DAG_PB, IDENTITY, MAX_IDENTITY_DIGEST, SHA2_256, decode_varint, encode_varint
from ...storage.protobuf import ProtobufError, as_int32, bytes_field, key, read_fields, varint_field

PROTOCOL_ID = "/ipfs/bitswap/1.2.0"
PROTOCOLS = ("/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0")
MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # boxo and Helia refuse larger messages
MAX_BLOCK_SIZE = 2 * 1024 * 1024  # the largest block the spec promises to carry
LENGTH_DELIMITED = 2  # protobuf wire type


class BitswapWireError(ValueError):
    """A message or frame that is malformed or too large; the peer that sent it is misbehaving."""


class WantType(IntEnum):
    BLOCK = 0
    HAVE = 1


class Presence(IntEnum):
    HAVE = 0
    DONT_HAVE = 1


@dataclass(frozen=True)
class WantEntry:
    cid: CID
    priority: int = 1
    cancel: bool = False
    want_type: WantType = WantType.BLOCK
    send_dont_have: bool = False


@dataclass
class BitswapMessage:
    wants: list[WantEntry] = field(default_factory=list)
    full: bool = False
    blocks: list[tuple[CID, bytes]] = field(default_factory=list)
    presences: list[tuple[CID, Presence]] = field(default_factory=list)
    pending_bytes: int = 0
    ignored: list[str] = field(default_factory=list)  # why each skipped part was skipped

    def is_empty(self) -> bool:
        return not (self.wants or self.full or self.blocks or self.presences)


def cid_prefix(cid: CID) -> bytes:
    """version, codec, multihash code and digest length: what a payload block carries instead of its CID."""
    code, pos = decode_varint(cid.multihash, 0)
    length, _ = decode_varint(cid.multihash, pos)
    return encode_varint(cid.version) + encode_varint(cid.codec) + encode_varint(code) + encode_varint(length)


def cid_for_payload(prefix: bytes | memoryview, data: bytes | memoryview) -> CID:
    """The CID a payload block claims, computed from its prefix and bytes (sha2-256 only)."""
    try:
        version, pos = decode_varint(prefix, 0)
        codec, pos = decode_varint(prefix, pos)
        code, pos = decode_varint(prefix, pos)
        length, pos = decode_varint(prefix, pos)
    except ValueError as exc:
        raise BitswapWireError(f"bad block prefix: {exc}") from None
    if pos != len(prefix):
        raise BitswapWireError("bad block prefix: trailing bytes")
    if version not in (0, 1) or (version == 0 and (codec != DAG_PB or code != SHA2_256)):
        raise BitswapWireError(f"bad CID version {version} / codec 0x{codec:x} in block prefix")
    if code == IDENTITY and length == len(data) <= MAX_IDENTITY_DIGEST:
        return CID(1, codec, encode_varint(IDENTITY) + encode_varint(length) + bytes(data))
    if code != SHA2_256 or length != 32:
        raise BitswapWireError(f"unsupported multihash 0x{code:x}/{length} in block prefix")
    return CID(version, codec, b"\x12\x20" + hashlib.sha256(data).digest())


def encode_message(message: BitswapMessage) -> bytes:
    return b"".join(_message_parts(message))


def encode_frame(message: BitswapMessage) -> bytes:
    """``frame(encode_message(message))`` with each block copied once, not once per nesting level
    (a provider's CPU goes into copying 4 MiB replies otherwise)."""
    parts = _message_parts(message)
    return b"".join([encode_varint(sum(map(len, parts))), *parts])


def _message_parts(message: BitswapMessage) -> list[bytes]:
    """The encoded message as pieces to join; block data is one piece each, never copied here."""
    parts: list[bytes] = []
    if message.wants or message.full:
        entries = []
        for want in message.wants:
            entry = bytes_field(1, bytes(want.cid)) + varint_field(2, want.priority)
            if want.cancel:
                entry += varint_field(3, 1)
            if want.want_type != WantType.BLOCK:
                entry += varint_field(4, int(want.want_type))
            if want.send_dont_have:
                entry += varint_field(5, 1)
            entries.append(bytes_field(1, entry))
        wantlist = b"".join(entries) + (varint_field(2, 1) if message.full else b"")
        parts.append(bytes_field(1, wantlist))
    for cid, data in message.blocks:
        prefix = bytes_field(1, cid_prefix(cid))
        data_key = key(2, LENGTH_DELIMITED) + encode_varint(len(data))
        block_size = len(prefix) + len(data_key) + len(data)
        parts += [key(3, LENGTH_DELIMITED), encode_varint(block_size), prefix, data_key, data]
    for cid, presence in message.presences:
        parts.append(bytes_field(4, bytes_field(1, bytes(cid)) + varint_field(2, int(presence))))
    if message.pending_bytes:
        parts.append(varint_field(5, message.pending_bytes))
    return parts


def decode_message(buf: bytes | memoryview, max_block_size: int = MAX_BLOCK_SIZE) -> BitswapMessage:
    """Parse a message; payload blocks get the CID their prefix and bytes give (they still need
    to be checked against what was wanted: a block that hashes to a CID nobody asked for is
    unwanted, not verified)."""
    try:
        return _decode(buf, max_block_size)
    except ProtobufError as exc:
        raise BitswapWireError(f"malformed Bitswap message: {exc}") from None


def _decode(buf: bytes | memoryview, max_block_size: int) -> BitswapMessage:
    message = BitswapMessage()
    for number, _, value in read_fields(buf):
        if number == 1 and isinstance(value, memoryview):
            for inner, _, item in read_fields(value):
                if inner == 1 and isinstance(item, memoryview):
                    _decode_entry(item, message)
                elif inner == 2 and isinstance(item, int):
                    message.full = bool(item)
        elif number == 2 and isinstance(value, memoryview):
            _check_size(len(value), max_block_size)
            message.blocks.append((CID(0, DAG_PB, b"\x12\x20" + hashlib.sha256(value).digest()), bytes(value)))
        elif number == 3 and isinstance(value, memoryview):
            _decode_payload(value, message, max_block_size)
        elif number == 4 and isinstance(value, memoryview):
            _decode_presence(value, message)
        elif number == 5 and isinstance(value, int):
            message.pending_bytes = max(0, as_int32(value))
    return message


def _decode_payload(buf: memoryview, message: BitswapMessage, max_block_size: int) -> None:
    prefix: memoryview | None = None
    data: memoryview | bytes = b""  # absent when empty: encoders leave out empty bytes
    for number, _, value in read_fields(buf):
        if number == 1 and isinstance(value, memoryview):
            prefix = value
        elif number == 2 and isinstance(value, memoryview):
            data = value
    _check_size(len(data), max_block_size)
    if prefix is None:
        message.ignored.append("payload block without a prefix")
        return
    try:
        cid = cid_for_payload(prefix, data)
    except BitswapWireError as exc:  # a hash we cannot check, or a prefix we cannot read: not proof of anything
        message.ignored.append(str(exc))
        return
    message.blocks.append((cid, bytes(data)))


def _decode_presence(buf: memoryview, message: BitswapMessage) -> None:
    cid: CID | None = None
    kind: int = Presence.HAVE
    for number, _, value in read_fields(buf):
        if number == 1 and isinstance(value, memoryview):
            cid = _cid(value, message)
        elif number == 2 and isinstance(value, int):
            kind = value
    if cid is None:
        message.ignored.append("block presence without a usable CID")
    elif kind not in (Presence.HAVE, Presence.DONT_HAVE):
        message.ignored.append(f"block presence of unknown type {kind}")
    else:
        message.presences.append((cid, Presence(kind)))


def _decode_entry(buf: memoryview, message: BitswapMessage) -> None:
    cid: CID | None = None
    priority, cancel, want_type, send_dont_have = 1, False, WantType.BLOCK, False
    for number, _, value in read_fields(buf):
        if number == 1 and isinstance(value, memoryview):
            cid = _cid(value, message)
        elif number == 2 and isinstance(value, int):
            priority = as_int32(value)
        elif number == 3 and isinstance(value, int):
            cancel = bool(value)
        elif number == 4 and isinstance(value, int):
            want_type = WantType.HAVE if value == 1 else WantType.BLOCK
        elif number == 5 and isinstance(value, int):
            send_dont_have = bool(value)
    if cid is None:
        message.ignored.append("wantlist entry without a usable CID")
    else:
        message.wants.append(WantEntry(cid, priority, cancel, want_type, send_dont_have))


def _cid(buf: memoryview, message: BitswapMessage) -> CID | None:
    try:
        return CID.from_bytes(bytes(buf))
    except ValueError as exc:
        message.ignored.append(f"bad CID: {exc}")
        return None


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise BitswapWireError(f"block of {size} bytes is over the {limit}-byte limit")


def frame(payload: bytes) -> bytes:
    """Length-prefix an encoded message for the stream."""
    return encode_varint(len(payload)) + payload


class FrameReader:
    """Splits a byte stream into length-prefixed messages; refuses any frame over the limit
    as soon as its length is known, before buffering it. What arrives is kept as it came and
    each message is copied out once, when it is whole (appending to one growing buffer instead
    copied every message several times over as the buffer was reallocated)."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._chunks: deque[memoryview] = deque()
        self._buffered = 0
        self._length: int | None = None  # of the message being received, once its prefix is in
        self._max = max_size

    def feed(self, data: bytes) -> list[bytes]:
        if data:
            self._chunks.append(memoryview(data))
            self._buffered += len(data)
        out: list[bytes] = []
        while True:
            if self._length is None:
                if not self._buffered:
                    break
                head = self._peek(10)
                try:
                    length, prefix = decode_varint(head, 0)
                except ValueError as exc:
                    if "truncated" in str(exc) and len(head) < 10:
                        break  # the length prefix itself is not complete yet
                    raise BitswapWireError(f"bad frame length: {exc}") from None
                if length > self._max:
                    raise BitswapWireError(f"message of {length} bytes is over the {self._max}-byte limit")
                self._take(prefix)
                self._length = length
            if self._buffered < self._length:
                break
            out.append(self._take(self._length))
            self._length = None
        return out

    def _peek(self, n: int) -> bytes:
        head = bytearray()
        for chunk in self._chunks:
            head += chunk[: n - len(head)]
            if len(head) == n:
                break
        return bytes(head)

    def _take(self, n: int) -> bytes:
        parts = []
        self._buffered -= n
        while n:
            chunk = self._chunks[0]
            if len(chunk) <= n:
                parts.append(self._chunks.popleft())
                n -= len(chunk)
            else:
                parts.append(chunk[:n])
                self._chunks[0] = chunk[n:]
                n = 0
        return b"".join(parts)

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message (not counting a length prefix read)."""
        return self._buffered
