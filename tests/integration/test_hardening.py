"""What a hostile client tried against a real ``medianode serve``, and what the node must do instead.

- A 34 KB CAR whose five dag-pb blocks each link the same child 174 times claims ~900 million
  leaves: the viewer hub's join must refuse it at once, a Range read must still answer, a full GET
  must stream (and be cut by the client), and SIGTERM must still stop the server.
- A 20,000-deep chain made ``?format=car&dag-scope=entity`` die of RecursionError mid-body under a
  200 that ended cleanly: now a 422 up front, or (when only found later) a body that is cut.
- A full disk made reads of pinned content 500 (the last-access stamp could not be written) and
  ``medianode verify`` die with a traceback (opening the index wrote to it).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import httpx
import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from conftest import Node, Served, fill_filesystem, gen, mount_tmpfs, unmount
from dags import v0, write_car
from node.storage.cid import CID, RAW
from node.storage.dagpb import PBLink, PBNode, encode_node
from node.storage.layout import MAX_FILE_DEPTH, walk_file
from node.storage.unixfs import NodeType, UnixFSData, UnixFSError

MiB = 1024 * 1024
FANOUT = 174


def file_node(children: list[tuple[CID, int, int]], data: bytes | None = None) -> tuple[CID, bytes]:
    """A dag-pb UnixFS file node over (cid, tsize, content size) children, sizes all honest."""
    own = len(data or b"")
    unixfs = UnixFSData(
        NodeType.FILE, data=data, filesize=own + sum(c[2] for c in children), blocksizes=tuple(c[2] for c in children)
    )
    block = encode_node(PBNode(tuple(PBLink(c, "", t) for c, t, _ in children), unixfs.encode()))
    return v0(block), block


def bomb(levels: int = 4, leaf_bytes: int = 1024) -> tuple[CID, list[tuple[CID, bytes]], int]:
    """A kubo-shaped dag-pb leaf and ``levels`` nodes above it, each linking the one below FANOUT
    times: levels+1 distinct blocks describing FANOUT**levels leaves. Returns root, blocks, claimed size."""
    leaf_data = gen(leaf_bytes, b"bomb")
    cid, block = file_node([], leaf_data)
    blocks = [(cid, block)]
    size = leaf_bytes
    for _ in range(levels):
        cid, block = file_node([(cid, len(block), size)] * FANOUT)
        size *= FANOUT
        blocks.append((cid, block))
    return cid, blocks, size


def chain(depth: int, leaf: bytes = b"the bottom of a very deep chain") -> tuple[CID, list[tuple[CID, bytes]]]:
    """A file that is ``depth`` dag-pb nodes, each with one child, over one raw leaf."""
    cid = CID.for_block(RAW, leaf)
    blocks = [(cid, leaf)]
    tsize = len(leaf)
    for _ in range(depth):
        cid, block = file_node([(cid, tsize, len(leaf))])
        tsize += len(block)
        blocks.append((cid, block))
    return cid, blocks


def import_car(node: Node, path: Path, root: CID, blocks: list[tuple[CID, bytes]]) -> str:
    write_car(path, root, blocks)
    node.ok("import", str(path), "--json")
    return str(root)


def ws_url(served: Served, cid: str) -> str:
    return served.url.replace("http://", "ws://") + f"/api/v1/swarm/{cid}"


# ---------------------------------------------------------------- 1. the leaf bomb


def test_walk_file_refuses_a_bomb_by_name_without_expanding_it() -> None:
    root, blocks, _ = bomb()
    store = dict(blocks)
    started = time.monotonic()
    with pytest.raises(UnixFSError, match=str(root)):
        walk_file(root, store.__getitem__)
    assert time.monotonic() - started < 2, "the bomb was expanded before it was refused"
    # Depth is bounded without recursion: a 20,000-deep chain is refused by the block that goes too deep.
    deep, deep_blocks = chain(20_000)
    with pytest.raises(UnixFSError, match=f"deeper than {MAX_FILE_DEPTH}"):
        walk_file(deep, dict(deep_blocks).__getitem__)
    # An honest file with every chunk the same (zeros: one distinct leaf) is not a bomb.
    zeros, zero_blocks = chain(0, b"\0" * 1024)
    top, top_block = file_node([(zeros, 1024, 1024)] * 3000)
    layout = walk_file(top, {**dict(zero_blocks), top: top_block}.__getitem__)
    assert layout.size == 3000 * 1024 and len(layout.leaves) == 3000


def test_a_leaf_bomb_is_refused_by_the_hub_and_served_as_a_stream(tmp_path: Path) -> None:
    root, blocks, claimed = bomb()
    node = Node(tmp_path / "node")
    car = tmp_path / "bomb.car"
    cid = import_car(node, car, root, blocks)
    assert car.stat().st_size < 40_000
    served = Served(node.data_dir, args=("--no-dht",))
    try:
        # The viewer hub's join walked all ~900 million leaves (and the node with it): now it refuses at once.
        async def join() -> tuple[str | None, int | None]:
            error = None
            with trio.fail_after(10):
                async with open_websocket_url(ws_url(served, cid)) as ws:
                    await ws.send_message(msgpack.packb({"t": "join", "have": b"\0"}))
                    try:
                        while True:
                            reply = msgpack.unpackb(await ws.get_message())
                            if reply["t"] == "error":
                                error = reply["reason"]
                    except ConnectionClosed as closed:
                        return error, closed.reason.code if closed.reason else None
            return error, None

        started = time.monotonic()
        reason, code = trio.run(join)
        assert time.monotonic() - started < 10
        assert code is not None and code != 1000 and reason is not None and str(root) in reason, (code, reason)

        # A Range over the first MiB descends only the nodes over it.
        r = httpx.get(f"{served.url}/ipfs/{cid}", headers={"Range": "bytes=0-1048575"}, timeout=10)
        assert r.status_code == 206 and len(r.content) == MiB
        assert r.content == gen(1024, b"bomb") * 1024
        # The CAR of the whole DAG is its five distinct blocks, not 900 million copies of them.
        car_r = httpx.get(f"{served.url}/ipfs/{cid}?format=car", timeout=10)
        assert car_r.status_code == 200 and len(car_r.content) < 40_000
        entity = httpx.get(f"{served.url}/ipfs/{cid}?format=car&dag-scope=entity", timeout=10)
        assert entity.status_code == 200 and len(entity.content) < 40_000

        # A full GET streams (its Content-Length is what the DAG claims) and the client can cut it.
        with httpx.stream("GET", f"{served.url}/ipfs/{cid}", timeout=10) as full:
            assert full.status_code == 200 and full.headers["content-length"] == str(claimed)
            got = 0
            for piece in full.iter_bytes():
                got += len(piece)
                if got >= 8 * MiB:
                    break
        assert served.proc.poll() is None
        assert httpx.get(f"{served.url}/ipfs/{cid}", headers={"Range": "bytes=0-9"}, timeout=10).status_code == 206

        # SIGTERM while such a response is in flight (a client reading it as fast as it comes): serve
        # still stops within its shutdown bound, cutting the response.
        parsed = urllib.parse.urlsplit(served.url)
        assert parsed.hostname is not None
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        conn.request("GET", f"/ipfs/{cid}")
        response = conn.getresponse()
        assert response.status == 200 and len(response.read(MiB)) == MiB
        received = [MiB]

        def drain() -> None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                while piece := response.read1(MiB):
                    received[0] += len(piece)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        started = time.monotonic()
        served.proc.send_signal(15)
        assert served.proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 15
        reader.join(timeout=10)
        assert not reader.is_alive() and MiB < received[0] < claimed
        conn.close()
    finally:
        served.stop()


# ---------------------------------------------------------------- 2. deep DAGs and CAR streams


def raw_body(served: Served, path: str) -> tuple[int, bytes, bool]:
    """GET over a plain socket: the status, the de-chunked body, and whether the terminating chunk came."""
    parsed = urllib.parse.urlsplit(served.url)
    assert parsed.hostname is not None and parsed.port is not None
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while not data.endswith(b"\r\n0\r\n\r\n") and (chunk := sock.recv(65536)):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"transfer-encoding: chunked" in head.lower(), head
    body = b""
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return status, body, False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return status, body, True
        if len(rest) < size + 2:
            return status, body + rest[:size], False
        body += rest[:size]
        rest = rest[size + 2 :]


def test_deep_dags_are_refused_up_front_or_cut_never_ended_cleanly(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    deep, deep_blocks = chain(20_000)
    import_car(node, tmp_path / "deep.car", deep, deep_blocks)
    # Shallow at first, too deep later: a raw leaf, then a chain of MAX_FILE_DEPTH + 10 nodes.
    first = b"a shallow first leaf"
    first_cid = CID.for_block(RAW, first)
    late, late_blocks = chain(MAX_FILE_DEPTH + 10)
    late_size = len(b"the bottom of a very deep chain")
    mixed, mixed_block = file_node(
        [(first_cid, len(first), len(first)), (late, sum(len(b) for _, b in late_blocks), late_size)]
    )
    mixed_blocks = [(first_cid, first), *late_blocks, (mixed, mixed_block)]
    import_car(node, tmp_path / "mixed.car", mixed, mixed_blocks)
    served = Served(node.data_dir, args=("--no-dht",))
    try:
        # Was: 200, ~85 KB of CAR, then RecursionError and a cleanly ended body the client took as complete.
        r = httpx.get(f"{served.url}/ipfs/{deep}?format=car&dag-scope=entity", timeout=30)
        assert r.status_code == 422 and f"deeper than {MAX_FILE_DEPTH}" in r.text, (r.status_code, r.text[:200])
        # The whole DAG, any depth, with no recursion: every block, and a body that ends properly.
        status, body, ended = raw_body(served, f"/ipfs/{deep}?format=car&dag-scope=all")
        assert status == 200 and ended
        assert body.count(b"the bottom of a very deep chain") == 1 and len(body) > 20_000 * 40
        # Found too deep only after the response started: the body is cut, not ended.
        status, body, ended = raw_body(served, f"/ipfs/{mixed}?format=car&dag-scope=entity")
        assert status == 200 and not ended and first in body
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{served.url}/ipfs/{mixed}?format=car&dag-scope=entity", timeout=30)
        # The node goes on serving.
        assert httpx.get(f"{served.url}/ipfs/{first_cid}", timeout=10).content == first
    finally:
        assert served.stop() == 0


# ---------------------------------------------------------------- 3. a full disk


def test_a_full_disk_still_serves_and_verifies(tmp_path: Path) -> None:
    mount = mount_tmpfs(tmp_path / "small", 16)
    served: Served | None = None
    try:
        node = Node(mount / "node")
        content = gen(3 * MiB + 17, b"full disk")
        (tmp_path / "clip.bin").write_bytes(content)
        cid = node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        tok = node.ok("token", "create", "--name", "uploader").text.strip().splitlines()[-1]
        served = Served(node.data_dir, args=("--no-dht",))
        fill_filesystem(mount / "filler")
        assert os.statvfs(mount).f_bavail == 0
        # Was 500: the last-access stamp could not be written.
        r = httpx.get(f"{served.url}/ipfs/{cid}", timeout=30)
        assert r.status_code == 200 and r.content == content, (r.status_code, r.text[:200])
        ranged = httpx.get(f"{served.url}/ipfs/{cid}", headers={"Range": "bytes=100-199"}, timeout=30)
        assert ranged.status_code == 206 and ranged.content == content[100:200]
        # Was a traceback: opening the index wrote to it.
        result = node.run("verify", "--json")
        assert result.code == 0 and "Traceback" not in result.stderr, result.stderr
        assert result.json["checked"] > 0 and result.json["corrupt"] == []
        # Writing is what a full disk refuses.
        add = httpx.post(
            f"{served.url}/api/v1/add",
            params={"filename": "more.bin"},
            content=gen(2 * MiB, b"more"),
            headers={"Authorization": f"Bearer {tok}"},
            timeout=30,
        )
        assert add.status_code == 507, (add.status_code, add.text[:200])
        assert httpx.get(f"{served.url}/ipfs/{cid}", timeout=30).content == content
        assert served.stop() == 0
        served = None
        # With no server holding the index open there is no room even for its shared-memory file.
        result = node.run("verify", "--json")
        assert result.code == 0 and "Traceback" not in result.stderr, result.stderr
        assert result.json["corrupt"] == []
    finally:
        if served is not None:
            served.stop()
        unmount(mount)
