"""The node in the swarm: its ``id``, and, through the running ``serve``'s admin API, its ``peers``, a DHT
``provide`` or ``findprovs``, and ``swarm connect``."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import load
from .admin_client import call_admin_api
from .commands import Commands
from .content import parse_cid_path
from .output import CommandError, Output


def add_commands(commands: Commands) -> None:
    commands.add("id", cmd_id, "this node's peer ID and swarm addresses")
    commands.add("peers", cmd_peers, "peers the running node is connected to")
    p = commands.add("provide", cmd_provide, "announce a CID in the DHT now (serve also does it on a schedule)")
    p.add_argument("cid")
    p = commands.add("findprovs", cmd_findprovs, "peers the DHT says provide a CID")
    p.add_argument("cid")
    p = commands.add("swarm", cmd_swarm, "swarm operations on the running node")
    swarm_sub = p.add_subparsers(dest="swarm_command", required=True, metavar="connect")
    q = commands.nested(swarm_sub, "connect", "connect to a peer")
    q.add_argument("addr", metavar="MULTIADDR/p2p/PEERID")


def cmd_id(args: argparse.Namespace, out: Output) -> None:
    # libp2p loads only for id among these commands (the others ask serve): it costs a second to import.
    from libp2p.peer.id import ID

    from ..swarm.host import load_identity

    config = load(args.data_dir)
    peer_id = ID.from_pubkey(load_identity(config.data_dir).public_key).to_base58()
    addrs = [f"{a}/p2p/{peer_id}" for a in config.swarm.listen]
    out.result({"peer_id": peer_id, "addrs": addrs}, "\n".join([peer_id, *addrs]))


def cmd_peers(args: argparse.Namespace, out: Output) -> None:
    answer = call_admin_api(load(args.data_dir), "GET", "/api/v1/swarm/peers")
    out.result(answer, peer_lines(answer["peers"]))


def cmd_provide(args: argparse.Namespace, out: Output) -> None:
    cid, _ = parse_cid_path(args.cid)
    answer = call_admin_api(load(args.data_dir), "POST", f"/api/v1/routing/provide/{cid}")
    if not answer["provided"]:
        raise CommandError(f"no DHT peer took the record for {cid}")
    out.result(answer, f"announced {cid}")


def cmd_findprovs(args: argparse.Namespace, out: Output) -> None:
    cid, _ = parse_cid_path(args.cid)
    answer = call_admin_api(load(args.data_dir), "GET", f"/api/v1/routing/providers/{cid}")
    out.result(answer, peer_lines(answer["providers"]))


def peer_lines(peers: list[dict[str, Any]]) -> str:
    """One line a peer as the admin API lists it: its ID, then its addresses."""
    return "\n".join(f"{p['peer_id']} {' '.join(p['addrs'])}".rstrip() for p in peers)


def cmd_swarm(args: argparse.Namespace, out: Output) -> None:
    answer = call_admin_api(load(args.data_dir), "POST", "/api/v1/swarm/connect", {"addr": args.addr})
    out.result(answer, f"connected to {answer['peer_id']}")
