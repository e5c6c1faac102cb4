"""The node itself: ``init`` its data directory, add a ``demo`` clip, ``serve`` until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import NodeConfig, load, parse_listen, parse_size
from ..storage.cid import CID
from ..storage.store import BlockStore
from .commands import Commands
from .content import gateway_url, open_store
from .output import CommandError, Output


def add_commands(commands: Commands) -> None:
    p = commands.add("init", cmd_init, "create the data directory and its config (optional: every command does it)")
    p.add_argument("--quota", help="disk space for blocks, e.g. 50GiB (default 10GiB; 0 = no limit)")

    commands.add("demo", cmd_demo, "make a short demo clip and add it")

    p = commands.add("serve", cmd_serve, "run the node (HTTP gateway) until Ctrl-C or SIGTERM")
    p.add_argument("--gateway", metavar="HOST:PORT", help="gateway address (default from config: 127.0.0.1:8080)")
    p.add_argument("--demo", action="store_true", help="add a demo clip first and print its URL")
    p.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="libp2p listen address, repeatable (default from config: /ip4/127.0.0.1/tcp/4001)",
    )
    p.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR/p2p/PEERID",
        help="peer to stay connected to, repeatable",
    )
    p.add_argument("--no-dht", action="store_true", help="neither announce nor look up providers in the DHT")
    p.add_argument("--workers", type=worker_count, metavar="N",
                   help="processes answering the gateway's reads (default from config: 0, one per core)")  # fmt: skip
    s3 = p.add_mutually_exclusive_group()
    s3.add_argument("--s3", metavar="HOST:PORT", help="S3 API address (default from config: 127.0.0.1:9000)")
    s3.add_argument("--no-s3", action="store_true", help="do not run the S3 API")
    mdns = p.add_mutually_exclusive_group()
    mdns.add_argument(
        "--mdns", dest="mdns", action="store_true", default=None, help="find and announce peers on the LAN over mDNS"
    )
    mdns.add_argument("--no-mdns", dest="mdns", action="store_false", help="no mDNS (the default)")


def worker_count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 1024:
        raise argparse.ArgumentTypeError(f"a whole number from 0 (one per core) to 1024, got {text!r}")
    return int(text)


def cmd_init(args: argparse.Namespace, out: Output) -> None:
    existed = (args.data_dir / "config.toml").exists()
    if existed and args.quota is not None:
        raise CommandError(f"{args.data_dir} is already initialised; edit its config.toml to change the quota")
    if args.quota is not None:
        parse_size(args.quota)
    config = load(args.data_dir, quota=args.quota)
    BlockStore(config.data_dir / "store", config.store).close()
    out.result(
        {"data_dir": str(config.data_dir), "quota": config.store.quota, "created": not existed},
        f"{'using existing' if existed else 'initialised'} node at {config.data_dir}",
    )


def add_demo_clip(config: NodeConfig, store: BlockStore) -> tuple[CID, int]:
    """Make the demo clip under the data directory once, add it pinned; its CID and size."""
    from ..demo import make_demo_clip  # PyAV, which encodes the clip, is loaded only to make one

    clip = config.data_dir / "demo" / "medianode-demo.mp4"
    clip.parent.mkdir(exist_ok=True)
    if not clip.exists():
        make_demo_clip(clip)
    root = store.add_path(str(clip), config.chunk_size, pin=True, name=clip.name)
    return root.cid, root.content_size


def cmd_demo(args: argparse.Namespace, out: Output) -> None:
    config, store = open_store(args)
    cid, size = add_demo_clip(config, store)
    out.result(
        {"cid": str(cid), "size": size, "url": gateway_url(config, cid), "data_dir": str(config.data_dir)},
        f"added demo clip ({size} bytes): {cid}\nserve it with: medianode serve, then open {gateway_url(config, cid)}",
    )


def cmd_serve(args: argparse.Namespace, out: Output) -> None:
    # The event loop and the layers it runs (HTTP, libp2p, WebRTC) load only for serve: every other command would
    # pay a second or more to start otherwise.
    import trio

    from ..daemon import limit_malloc_arenas, run_node, with_overrides

    limit_malloc_arenas()  # before any thread allocates
    gateway = parse_listen(args.gateway) if args.gateway else None
    s3: tuple[str, int] | bool | None = False if args.no_s3 else (parse_listen(args.s3) if args.s3 else None)
    config = with_overrides(
        load(args.data_dir),
        gateway,
        args.listen,
        args.bootstrap,
        dht=not args.no_dht,
        mdns=args.mdns,
        s3=s3,
        workers=args.workers,
    )
    demo: tuple[CID, int] | None = None
    if args.demo:
        store = BlockStore(config.data_dir / "store", config.store)
        demo = add_demo_clip(config, store)
        store.close()

    def ready(node: dict[str, Any]) -> None:
        base = node["gateway"]
        info: dict[str, Any] = {**node, "console": f"{base}/", "data_dir": str(config.data_dir)}
        lines = [console_line(config, base), f"medianode serving {config.data_dir}", f"gateway: {base}/ipfs/CID",
                 f"peer id: {node['peer_id']}"]  # fmt: skip
        if node.get("s3"):
            lines.append(f"s3: {node['s3']} (keys: medianode s3 key create --name HOST)")
        lines += [f"swarm: {addr}" for addr in node["swarm"]]
        if demo is not None:
            info["demo"] = {"cid": str(demo[0]), "url": f"{base}/ipfs/{demo[0]}", "watch": f"{base}/watch/{demo[0]}"}
            lines.append(f"demo clip: {base}/ipfs/{demo[0]}")
            lines.append(f"watch it (viewers share it with each other): {base}/watch/{demo[0]}")
        lines.append("stop with Ctrl-C")
        out.result(info, "\n".join(lines))
        sys.stdout.flush()

    trio.run(run_node, config, ready)


def console_line(config: NodeConfig, base: str) -> str:
    """The console's login link (this run's admin token in its fragment) when stdout is a terminal; else,
    as in a service's log, the console's address and the command that prints the link."""
    from ..api_file import read_api_file
    from .console import login_url

    api = read_api_file(config.data_dir) if sys.stdout.isatty() else None
    if api is not None:
        return f"console (open this to manage the node): {login_url(base, api['token'])}"
    return f"console: {base}/ (log in with the link `medianode console` prints)"
