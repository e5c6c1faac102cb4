"""Nodes trading blocks over real libp2p hosts on 127.0.0.1 (Noise, Yamux, Bitswap 1.2.0)."""

from __future__ import annotations

from pathlib import Path

import multiaddr
import trio

from conftest import gen
from node.storage.cid import CID
from node.storage.store import BlockStore

MiB = 1024 * 1024
LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def add(store: BlockStore, tmp_path: Path, data: bytes, name: str) -> CID:
    (tmp_path / name).write_bytes(data)
    return store.add_path(str(tmp_path / name), 262144).cid


def test_a_node_fetches_a_file_from_another(tmp_path: Path) -> None:
    from libp2p.peer.peerinfo import PeerInfo

    from node.swarm.bitswap import BlockExchange
    from node.swarm.host import load_identity, make_host

    data = gen(5 * MiB + 3)
    store_a = BlockStore(tmp_path / "a")
    store_b = BlockStore(tmp_path / "b")
    cid = add(store_a, tmp_path, data, "clip")

    async def main() -> int:
        host_a = make_host(load_identity(tmp_path / "a"), [LOOPBACK])
        host_b = make_host(load_identity(tmp_path / "b"), [LOOPBACK])
        async with host_a.run(listen_addrs=[LOOPBACK]), host_b.run(listen_addrs=[LOOPBACK]):
            BlockExchange(host_a, store_a)
            exchange_b = BlockExchange(host_b, store_b)
            with trio.fail_after(30):
                await host_b.connect(PeerInfo(host_a.get_id(), host_a.get_addrs()))
                return await exchange_b.fetch_dag(cid, [host_a.get_id()])

    fetched = trio.run(main)
    assert fetched == 22  # 21 leaves and the root
    assert b"".join(store_b.read_range(cid)) == data
    assert store_b.dag_counts(cid)[1] == 0


def test_gateway_serves_a_file_only_a_peer_has(tmp_path: Path) -> None:
    """Node A stores a clip; node B (bootstrapped to A) serves it over HTTP, ranges included,
    fetching from A, and keeps it: B serves it again after A is gone."""
    import httpx

    from conftest import Served

    data = gen(3 * MiB + 5, b"peer-only")
    a = Served(tmp_path / "a")
    b: Served | None = None
    try:
        (tmp_path / "clip.bin").write_bytes(data)
        cid = a.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        b = Served(tmp_path / "b", bootstrap=(a.swarm_addrs[0],))
        with httpx.Client(timeout=30) as client:
            ranged = client.get(f"{b.url}/ipfs/{cid}", headers={"Range": "bytes=1000000-1999999"})
            assert ranged.status_code == 206 and ranged.content == data[1000000:2000000]
            whole = client.get(f"{b.url}/ipfs/{cid}")
            assert whole.status_code == 200 and whole.content == data
        assert a.stop() == 0
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{b.url}/ipfs/{cid}").content == data
            absent = "bafkreie43rmrkrsaa3d6wejceoptbb6eplcakj44pjyagbkuf6chzrf7nu"
            missing = client.get(f"{b.url}/ipfs/{absent}")
            assert missing.status_code == 504 and missing.headers["retry-after"]
    finally:
        a.stop()
        if b is not None:
            assert b.stop() == 0
