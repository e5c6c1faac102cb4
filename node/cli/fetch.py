"""``get``'s fetch from peers: a libp2p host of the command's own, on loopback, that dials the peers given and
fetches over Bitswap what the store lacks of a DAG, every block verified before it is stored.

The swarm loads only when a ``get`` has something to fetch (libp2p costs every command's start otherwise).
"""

from __future__ import annotations

from ..config import NodeConfig
from ..storage.cid import CID
from ..storage.store import BlockStore
from .output import CommandError, Output


def fetch_from_peers(config: NodeConfig, store: BlockStore, root: CID, peers: list[str], out: Output) -> int:
    """Fetch what the store lacks of ``root`` from ``peers``; the number of blocks fetched."""
    import trio

    from ..swarm.bitswap import FetchError
    from ..swarm.host import parse_peer_addr
    from ..swarm.node import open_swarm

    infos = [parse_peer_addr(p) for p in peers]

    async def fetch() -> int | str:
        unreachable = []
        async with open_swarm(store, config.data_dir, ["/ip4/127.0.0.1/tcp/0"], []) as swarm:
            for info in infos:
                try:
                    await swarm.connect(info)
                except Exception:  # one unreachable peer is not fatal while another answers
                    unreachable.append(str(info.peer_id))
            try:
                with out.progress(None, f"fetch {root}") as tick:
                    return await swarm.fetch_dag(root, on_block=lambda _cid, size: tick(size))
            except FetchError as exc:
                # Returned, not raised: py-libp2p's nurseries would wrap it in exception groups.
                return f"{exc}" + (f" ({len(unreachable)} of {len(infos)} peers unreachable)" if unreachable else "")

    result = trio.run(fetch)
    if isinstance(result, str):
        raise CommandError(f"cannot fetch {root}: {result}")
    return result
