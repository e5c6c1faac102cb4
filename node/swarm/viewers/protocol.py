"""The viewer swarm: people watching one clip trade its pieces over WebRTC.

Participants
    The *hub*: the node's gateway, at the WebSocket ``/api/v1/swarm/{cid}``
    (``hub.py`` the bookkeeping, ``node/gateway/signaling.py`` the socket).
    It introduces viewers of the same CID to each other, relays their SDP
    offers/answers and ICE candidates, and counts the bytes they report. It
    never carries piece data.
    *Viewers*: browser pages (``/watch/{cid}``, ``/feed``, embeds), the CLI
    viewer ``medianode watch``, and nodes that join as WebRTC seeders for
    content they store. All speak the same two message sets below.

Goals
    Take bandwidth off the gateway: a viewer gets pieces from other viewers
    first and over HTTP only when no peer has them in time. Nobody, the hub
    included, can make a viewer accept a wrong byte: a viewer learns the leaf
    CIDs by fetching the root and internal dag-pb blocks as ``?format=raw``
    and checking each against the CID that links to it, and checks every
    piece against its leaf CID (SHA-256) before using or passing it on.
    Every resource is bounded: viewers per swarm and per IP, message sizes,
    relays per second, outstanding requests per peer.

Non-goals
    TURN relaying (STUN only), hiding viewers' addresses from each other (a
    viewer who minds turns P2P off with ``?p2p=0``), live streams,
    directories, and swarms for content the node does not serve.

Pieces
    A clip's pieces are its UnixFS leaves in file order, numbered from 0; a
    piece's bytes are the leaf *block* (a raw leaf is the file's bytes; a
    dag-pb leaf carries them in its UnixFS Data). A single-block file is one
    piece. A *bitfield* is ``ceil(n / 8)`` bytes, piece ``i`` being bit
    ``7 - i % 8`` of byte ``i // 8`` (BitTorrent's order). Which file nodes
    make pieces, and which clips get a swarm (1 to ``MAX_PIECES`` pieces of 1
    to ``MAX_PIECE`` bytes each), is ``clip.py``'s to say.

Signaling (WebSocket binary messages, each a msgpack map with a ``t`` key, at
most ``MAX_SIGNAL`` bytes)
    viewer -> hub
        ``{t: "join", have: bitfield}``: first message, exactly once.
        ``{t: "have", have: bitfield}``: what the viewer holds now (the hub
        introduces newcomers to viewers that hold the most).
        ``{t: "signal", to: id, data: map}``: relay ``data`` (an SDP
        ``{type, sdp}`` or an ICE ``{candidate, sdpMid, sdpMLineIndex}``)
        to viewer ``to`` of the same swarm.
        ``{t: "peers"}``: ask for a fresh introduction list (peers left).
        ``{t: "stats", http: int, got: {id: int}, sent: {id: int}}``: byte
        counts of this membership (since this ``join``; a viewer that joins
        again starts from 0, carrying over only HTTP bytes it had not yet
        reported). ``http``: bytes of the clip received over HTTP. ``got``:
        bytes of pieces received from each peer (by its hub id), verified
        and kept; ``sent``: bytes of pieces sent whole to each peer. Every
        value is cumulative and never goes down; ``got`` and ``sent`` need
        list only the peers whose count changed since the last ``stats``, at
        most ``MAX_STATS_PEERS`` each (more wait for the next message). A
        viewer sends it about every ``STATS_EVERY`` seconds while something
        changed, and once more when it has every piece. Missing maps are
        empty; other keys (the total ``peer`` of older viewers) are ignored.
        What the hub counts (``hub.py`` has the exact rule): peer bytes
        only as far as both ends of a pair agree, the smaller of the
        receiver's ``got`` and the sender's ``sent``, at most the clip's
        size per receiving membership; HTTP bytes as claimed, at most the
        clip's size per membership. More than ``STATS_BURST`` stats in a
        burst, or more than ``STATS_PER_SECOND`` a second after it, are
        dropped.
    hub -> viewer
        ``{t: "welcome", id: id, peers: [{id, have}], ice: [url]}``: answer to
        ``join``: the viewer's own id, at most ``INTRODUCTIONS`` viewers
        to offer a connection to, and the STUN servers to use.
        ``{t: "peers", peers: [{id, have}]}``: answer to ``peers``.
        ``{t: "signal", from: id, data: map}``: relayed from viewer ``from``.
        ``{t: "error", reason: str}``: sent before the hub closes the socket.
    The newcomer sends offers; the introduced viewers answer. A viewer keeps
    at most ``MAX_PEER_CONNECTIONS`` connections and ignores offers past that.

Data channel (label ``pieces``, ordered and reliable; binary messages, each a
msgpack map with a ``t`` key, at most ``MAX_DATA_MESSAGE`` bytes)
    ``{t: "have", have: bitfield}``: sent first by both sides.
    ``{t: "have", i: index}``: a piece newly verified.
    ``{t: "request", i: index}``: ask for a piece the other side announced;
    at most ``MAX_OUTSTANDING`` outstanding per connection.
    ``{t: "piece", i: index, o: offset, d: bytes}``: a piece in order, in
    messages of at most ``PIECE_CHUNK`` bytes of ``d``; the piece is complete
    when ``o + len(d)`` reaches its size (known from the DAG).
    ``{t: "reject", i: index}``: will not send it (not held, or busy).
    ``{t: "cancel", i: index}``: no longer wanted; the sender stops.

Failure handling
    Hub: a malformed, oversized or out-of-order message closes that socket
    with an ``error``, and so does a byte count that goes down; a swarm or
    address over its limit (viewers at once, joins per minute) is refused at
    ``join``; relays and stats past their rate limits are dropped. The server itself never stops
    for a viewer's fault.
    Viewers: a piece whose bytes do not hash to its leaf CID, a piece or
    chunk not requested, or a malformed message gets the sender dropped
    (connection closed, never reopened in this session). A sender sends
    the pieces asked of it in the order asked, so a request times out when
    neither it nor its sender has made progress for ``REQUEST_TIMEOUT``
    seconds, or after ``max_outstanding_requests`` timeouts in all; it is
    then cancelled and asked of another peer or over HTTP. HTTP (``/ipfs/{leaf}?format=raw``, also
    verified) is the fallback for everything, so playback never depends on
    peers.

The constants live in ``contract.json`` beside this module, with their units
in their names, together with message vectors (frames and what they mean);
the browser player imports the same file, and both test suites check their
codec against the vectors. This module loads it at import and holds the
codecs (msgpack <-> checked dataclasses) of both directions, shared by the
hub and the Python viewer; it does no I/O beyond reading that file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

CONTRACT_PATH = Path(__file__).with_name("contract.json")
CONTRACT: dict[str, Any] = json.loads(CONTRACT_PATH.read_text())
_constants: dict[str, Any] = CONTRACT["constants"]

DATA_CHANNEL_LABEL: str = _constants["data_channel_label"]
MAX_PIECE: int = _constants["max_piece_bytes"]
MAX_PIECES: int = _constants["max_pieces"]  # bitfields up to 128 KiB would not fit a signal message anyway
MAX_DAG_NODE: int = _constants["max_dag_node_bytes"]  # largest dag-pb node a viewer takes from a gateway
MAX_SIGNAL: int = _constants["max_signal_bytes"]
MAX_DATA_MESSAGE: int = _constants["max_data_message_bytes"]
PIECE_CHUNK: int = _constants["piece_chunk_bytes"]  # room for the map around ``d``
INTRODUCTIONS: int = _constants["introductions"]
MAX_PEER_CONNECTIONS: int = _constants["max_peer_connections"]
MAX_OUTSTANDING: int = _constants["max_outstanding_requests"]
REQUEST_TIMEOUT: float = _constants["request_timeout_ms"] / 1000  # seconds, as trio counts them
TIMEOUTS_TO_DROP: int = _constants["max_request_timeouts_per_peer"]
PEER_PATIENCE: float = _constants["peer_patience_ms"] / 1000
HTTP_PARALLEL: int = _constants["http_parallel_fetches"]
CONNECT_TIMEOUT: float = _constants["connect_timeout_ms"] / 1000
JOIN_TIMEOUT: float = _constants["join_timeout_ms"] / 1000
ASK_PEERS_EVERY: float = _constants["ask_peers_every_ms"] / 1000
STATS_EVERY: float = _constants["stats_every_ms"] / 1000
STATS_PER_SECOND: float = _constants["stats_per_second"]  # the hub's rate limit on one viewer's stats
STATS_BURST: float = _constants["stats_burst"]
MAX_STATS_PEERS: int = _constants["max_stats_peers"]  # entries of ``got`` and of ``sent`` in one stats message
MAX_VIEWER_ID: int = _constants["max_viewer_id_chars"]  # of a peer id in stats (the hub's ids are 16)
CHANNEL_HIGH_WATER: int = _constants["channel_high_water_bytes"]  # queued on a data channel before a sender waits
CHANNEL_LOW_WATER: int = _constants["channel_low_water_bytes"]  # ... until it drains to this


class ProtocolError(ValueError):
    """A message that breaks the protocol; the one who sent it gets dropped."""


# ---------------------------------------------------------------- bitfields


def bitfield_bytes(count: int) -> int:
    return (count + 7) // 8


def bitfield(held: set[int] | list[int], count: int) -> bytes:
    out = bytearray(bitfield_bytes(count))
    for i in held:
        out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def pieces_in(field: bytes, count: int) -> set[int]:
    """The piece numbers set in ``field``; a field of the wrong length is a protocol error."""
    if len(field) != bitfield_bytes(count):
        raise ProtocolError(f"bitfield is {len(field)} bytes, {bitfield_bytes(count)} expected for {count} pieces")
    return {i for i in range(count) if field[i >> 3] & (0x80 >> (i & 7))}


# ---------------------------------------------------------------- codec helpers


def pack(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes, limit: int) -> dict[str, Any]:
    if len(data) > limit:
        raise ProtocolError(f"message of {len(data)} bytes, at most {limit} allowed")
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=limit, max_str_len=limit)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"not msgpack: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError("a message is a map with a string 't'")
    return message


def _field(message: dict[str, Any], name: str, kind: type) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{message['t']!r} needs {name!r} as {kind.__name__}")
    return value


def _index(message: dict[str, Any], count: int) -> int:
    index: int = _field(message, "i", int)
    if not 0 <= index < count:
        raise ProtocolError(f"piece {index} out of range 0..{count - 1}")
    return index


# ---------------------------------------------------------------- signaling


@dataclass(frozen=True, slots=True)
class Join:
    have: bytes


@dataclass(frozen=True, slots=True)
class Have:
    have: bytes


@dataclass(frozen=True, slots=True)
class Relay:
    to: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AskPeers:
    pass


@dataclass(frozen=True, slots=True)
class Stats:
    http: int
    got: dict[str, int]  # peer id -> bytes received from it
    sent: dict[str, int]  # peer id -> bytes sent to it


SignalFromViewer = Join | Have | Relay | AskPeers | Stats


def decode_signal(data: bytes) -> SignalFromViewer:
    """A viewer's message to the hub, checked."""
    message = _unpack(data, MAX_SIGNAL)
    kind = message["t"]
    if kind == "join":
        return Join(_field(message, "have", bytes))
    if kind == "have":
        return Have(_field(message, "have", bytes))
    if kind == "signal":
        to: str = _field(message, "to", str)
        payload: dict[str, Any] = _field(message, "data", dict)
        if not all(isinstance(k, str) for k in payload):
            raise ProtocolError("'data' keys are strings")
        return Relay(to, payload)
    if kind == "peers":
        return AskPeers()
    if kind == "stats":
        http: int = _field(message, "http", int)
        if http < 0:
            raise ProtocolError("byte counts are not negative")
        return Stats(http, _byte_counts(message, "got"), _byte_counts(message, "sent"))
    raise ProtocolError(f"unknown signaling message {kind!r}")


def _byte_counts(message: dict[str, Any], name: str) -> dict[str, int]:
    """A stats map of peer id -> bytes (missing: empty), checked."""
    if name not in message:
        return {}
    counts: dict[Any, Any] = _field(message, name, dict)
    if len(counts) > MAX_STATS_PEERS:
        raise ProtocolError(f"{name!r} lists {len(counts)} peers, at most {MAX_STATS_PEERS}")
    for peer, count in counts.items():
        if not isinstance(peer, str) or not 0 < len(peer) <= MAX_VIEWER_ID:
            raise ProtocolError(f"{name!r} keys are peer ids")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ProtocolError(f"{name!r} values are byte counts")
    return counts


@dataclass(frozen=True, slots=True)
class Introduction:
    id: str
    have: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    id: str
    peers: list[Introduction]
    ice: list[str]


@dataclass(frozen=True, slots=True)
class PeersList:
    peers: list[Introduction]


@dataclass(frozen=True, slots=True)
class Signal:
    sender: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HubError:
    reason: str


HubMessage = Welcome | PeersList | Signal | HubError


def decode_hub_message(data: bytes | str) -> HubMessage:
    """A message from the hub to a viewer, checked."""
    if not isinstance(data, bytes):
        raise ProtocolError("hub messages are binary msgpack")
    message = _unpack(data, MAX_SIGNAL)
    kind = message["t"]
    if kind == "welcome":
        viewer_id, ice = message.get("id"), message.get("ice", [])
        if not isinstance(viewer_id, str) or not isinstance(ice, list) or not all(isinstance(u, str) for u in ice):
            raise ProtocolError("'welcome' needs a string 'id' and a list of STUN urls 'ice'")
        return Welcome(viewer_id, _introductions(message), ice)
    if kind == "peers":
        return PeersList(_introductions(message))
    if kind == "signal":
        sender: str = _field(message, "from", str)
        return Signal(sender, _field(message, "data", dict))
    if kind == "error":
        return HubError(str(message.get("reason", "")))
    raise ProtocolError(f"unknown hub message {kind!r}")


def _introductions(message: dict[str, Any]) -> list[Introduction]:
    peers = message.get("peers", [])
    if not isinstance(peers, list):
        raise ProtocolError("'peers' is a list")
    out = []
    for peer in peers:
        if not isinstance(peer, dict) or not isinstance(peer.get("id"), str) or not isinstance(peer.get("have"), bytes):
            raise ProtocolError("a peer is {id, have}")
        out.append(Introduction(peer["id"], peer["have"]))
    return out


# ---------------------------------------------------------------- data channel


@dataclass(frozen=True, slots=True)
class HaveAll:
    pieces: set[int]


@dataclass(frozen=True, slots=True)
class HaveOne:
    index: int


@dataclass(frozen=True, slots=True)
class Request:
    index: int


@dataclass(frozen=True, slots=True)
class PieceChunk:
    index: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    index: int


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int


PeerMessage = HaveAll | HaveOne | Request | PieceChunk | Reject | Cancel


def decode_peer_message(data: bytes, count: int) -> PeerMessage:
    """A data-channel message from a peer of a clip with ``count`` pieces, checked."""
    message = _unpack(data, MAX_DATA_MESSAGE)
    kind = message["t"]
    if kind == "have":
        if "have" in message:
            return HaveAll(pieces_in(_field(message, "have", bytes), count))
        return HaveOne(_index(message, count))
    if kind == "request":
        return Request(_index(message, count))
    if kind == "piece":
        offset: int = _field(message, "o", int)
        chunk: bytes = _field(message, "d", bytes)
        if offset < 0 or offset + len(chunk) > MAX_PIECE or len(chunk) > PIECE_CHUNK or not chunk:
            raise ProtocolError(f"piece chunk at {offset} of {len(chunk)} bytes is out of bounds")
        return PieceChunk(_index(message, count), offset, chunk)
    if kind == "reject":
        return Reject(_index(message, count))
    if kind == "cancel":
        return Cancel(_index(message, count))
    raise ProtocolError(f"unknown data-channel message {kind!r}")


def encode_peer_message(message: PeerMessage, count: int) -> bytes:
    match message:
        case HaveAll(pieces):
            return pack({"t": "have", "have": bitfield(pieces, count)})
        case HaveOne(index):
            return pack({"t": "have", "i": index})
        case Request(index):
            return pack({"t": "request", "i": index})
        case PieceChunk(index, offset, chunk):
            return pack({"t": "piece", "i": index, "o": offset, "d": chunk})
        case Reject(index):
            return pack({"t": "reject", "i": index})
        case Cancel(index):
            return pack({"t": "cancel", "i": index})
    raise TypeError(message)
