"""Interoperability with Helia, a JavaScript IPFS implementation nobody here wrote.

Helia (pinned in tests/interop/package.json) is installed with npm into a cache
directory on first use. Both directions over TCP on 127.0.0.1: Helia fetches a
file from our node by CID over Bitswap 1.2.0, and our node fetches a file Helia
added. When npm cannot install Helia the tests fail, saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import INTEROP, Served, gen, interop_modules

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def helia() -> Path:
    """A directory with Helia installed and our node script beside it."""
    target = interop_modules()
    shutil.copy(INTEROP / "helia_node.mjs", target / "helia_node.mjs")
    return target


def test_helia_fetches_from_our_node(helia: Path, tmp_path: Path) -> None:
    data = gen(20 * MiB + 7, b"to-helia")
    (tmp_path / "clip.bin").write_bytes(data)
    ours = Served(tmp_path / "ours")
    try:
        cid = ours.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        out = tmp_path / "helia-got.bin"
        run = subprocess.run(
            ["node", "helia_node.mjs", "fetch", ours.swarm_addrs[0], cid, str(out)],
            cwd=helia, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        assert json.loads(run.stdout.strip().splitlines()[-1])["bytes"] == len(data)
        assert out.read_bytes() == data
    finally:
        assert ours.stop() == 0


def test_our_node_fetches_what_helia_added(helia: Path, tmp_path: Path) -> None:
    data = gen(12 * MiB + 3, b"from-helia")
    (tmp_path / "clip.bin").write_bytes(data)
    server = subprocess.Popen(
        ["node", "helia_node.mjs", "serve", str(tmp_path / "clip.bin")],
        cwd=helia, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ours: Served | None = None
    try:
        assert server.stdout is not None
        ready = json.loads(server.stdout.readline())
        # Helia's root CID for the same bytes is the one our importer gives: both are kubo's.
        check = Served(tmp_path / "check")
        assert check.node.ok("add", str(tmp_path / "clip.bin"), "--no-pin", "--json").json["cid"] == ready["cid"]
        assert check.stop() == 0
        address = next(a for a in ready["multiaddrs"] if a.startswith("/ip4/127.0.0.1/tcp/"))
        ours = Served(
            tmp_path / "ours", bootstrap=(address if "/p2p/" in address else f"{address}/p2p/{ready['peerId']}",)
        )
        with httpx.Client(timeout=90) as client:
            response = client.get(f"{ours.url}/ipfs/{ready['cid']}")
        assert response.status_code == 200 and response.content == data
    finally:
        server.terminate()
        server.wait(timeout=30)
        if ours is not None:
            assert ours.stop() == 0


def test_the_gateway_probe_and_an_empty_block_never_cost_us_helia(helia: Path, tmp_path: Path) -> None:
    """The issue's reproduction: `GET /ipfs/bafkqaaa` used to be asked of peers; Helia answered with
    the empty block, our decoder refused it and banned Helia, and its file then answered 504. Now
    the probe is answered from the CID, the empty block Helia does send (for an empty file) is
    accepted, and Helia's file still comes through."""
    data = gen(3 * MiB + 1, b"after-probe")
    (tmp_path / "clip.bin").write_bytes(data)
    (tmp_path / "empty.bin").write_bytes(b"")
    server = subprocess.Popen(
        ["node", "helia_node.mjs", "serve", str(tmp_path / "empty.bin"), str(tmp_path / "clip.bin")],
        cwd=helia, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ours: Served | None = None
    try:
        assert server.stdout is not None
        ready = json.loads(server.stdout.readline())
        empty_cid, clip_cid = ready["cids"]
        address = next(a for a in ready["multiaddrs"] if a.startswith("/ip4/127.0.0.1/tcp/"))
        ours = Served(
            tmp_path / "ours", bootstrap=(address if "/p2p/" in address else f"{address}/p2p/{ready['peerId']}",)
        )
        with httpx.Client(timeout=90) as client:
            for query in ("", "?format=raw"):
                probe = client.get(f"{ours.url}/ipfs/bafkqaaa{query}")
                assert probe.status_code == 200 and probe.content == b""
            empty = client.get(f"{ours.url}/ipfs/{empty_cid}?format=raw")
            assert empty.status_code == 200 and empty.content == b""
            response = client.get(f"{ours.url}/ipfs/{clip_cid}")
            assert response.status_code == 200 and response.content == data
        assert ready["peerId"] in ours.node.ok("peers", "--json").stdout.decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if ours is not None:
            assert ours.stop() == 0
