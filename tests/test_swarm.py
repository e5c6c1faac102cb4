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
