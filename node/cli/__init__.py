"""The ``medianode`` command.

Every command that prints a result also prints it as one JSON object with
``--json``. Errors are one line on stderr and a non-zero exit (1 for a
failed operation, 2 for bad usage). Storage commands import nothing from
the network stack, so they start fast.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat as stat_mod
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import __version__
from .config import ConfigError, NodeConfig, default_data_dir, load, parse_size, url_host
from .logs import setup_logging
from .storage.car import CarError
from .storage.cid import CID, CIDError
from .storage.dagpb import DagPBError
from .storage.errors import StoreError
from .storage.importer import UnsupportedInputError
from .storage.layout import NotAFileError
from .storage.store import BlockStore
from .storage.transfer import export_car, import_car
from .storage.unixfs import UnixFSError

EXIT_FAILED = 1


class CommandError(Exception):
    """A failure to report as one line, with no traceback."""


def parse_cid_path(text: str) -> tuple[CID, str]:
    """Accept ``CID``, ``CID/a/b`` and ``/ipfs/CID/a/b``."""
    text = text.strip()
    if text.startswith("/ipfs/"):
        text = text[len("/ipfs/") :]
    head, _, rest = text.partition("/")
    try:
        return CID.parse(head), rest
    except CIDError as exc:
        raise CommandError(f"invalid CID {head!r}: {exc}") from None


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def result(self, data: dict[str, Any] | list[Any], text: str) -> None:
        if self.as_json:
            print(json.dumps(data, ensure_ascii=False))
        elif text:
            print(text)

    @contextmanager
    def progress(self, total: int | None, label: str) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr when it is a terminal and no JSON was asked for."""
        if self.as_json or not sys.stderr.isatty():
            yield lambda n: None
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
            yield bar.update


def open_store(args: argparse.Namespace) -> tuple[NodeConfig, BlockStore]:
    config = load(args.data_dir)
    return config, BlockStore(config.data_dir / "store", config.store)


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


def cmd_add(args: argparse.Namespace, out: Output) -> None:
    config, store = open_store(args)
    chunk_size = args.chunk_size or config.chunk_size
    path = args.path
    if path == "-":
        from .storage.importer import import_stream

        with out.progress(None, "add") as tick, store.batch() as batch:
            root = import_stream(sys.stdin.buffer, batch, chunk_size, tick)
            batch.commit([root.cid], args.name or "stdin", root.content_size, pin=not args.no_pin)
        name = args.name or "stdin"
    else:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        if stat_mod.S_ISDIR(info.st_mode) and not args.recursive:
            raise CommandError(f"{path} is a directory (use -r to add it)")
        if stat_mod.S_ISREG(info.st_mode) and not os.access(path, os.R_OK):
            raise CommandError(f"cannot read {path}: Permission denied")
        from .storage.importer import tree_size

        name = args.name or os.path.basename(os.path.normpath(path))
        with out.progress(tree_size(path, args.hidden), f"add {name}") as tick:
            root = store.add_path(path, chunk_size, pin=not args.no_pin, hidden=args.hidden, name=name, progress=tick)
    size = root.content_size if root.cid.codec == 0x55 or root.content_size else store.stat(root.cid).size
    url = gateway_url(config, root.cid)
    out.result(
        {"cid": str(root.cid), "size": size, "name": name, "pinned": not args.no_pin, "url": url},
        f"added {root.cid} {name}\n{url}",
    )


def gateway_url(config: NodeConfig, cid: CID) -> str:
    return f"{config.gateway.base_url()}/ipfs/{cid}"


def add_demo_clip(config: NodeConfig, store: BlockStore) -> tuple[CID, int]:
    from .demo import make_demo_clip

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
    import trio

    from .config import parse_listen
    from .daemon import run_node, with_overrides

    gateway = parse_listen(args.gateway) if args.gateway else None
    s3: tuple[str, int] | bool | None = False if args.no_s3 else (parse_listen(args.s3) if args.s3 else None)
    config = with_overrides(
        load(args.data_dir), gateway, args.listen, args.bootstrap, dht=not args.no_dht, mdns=args.mdns, s3=s3
    )
    demo: tuple[CID, int] | None = None
    if args.demo:
        store = BlockStore(config.data_dir / "store", config.store)
        demo = add_demo_clip(config, store)
        store.close()

    def ready(node: dict[str, Any]) -> None:
        base = node["gateway"]
        info: dict[str, Any] = {**node, "data_dir": str(config.data_dir)}
        lines = [f"medianode serving {config.data_dir}", f"gateway: {base}/ipfs/CID", f"peer id: {node['peer_id']}"]
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


def cmd_id(args: argparse.Namespace, out: Output) -> None:
    from .swarm.host import load_identity

    config = load(args.data_dir)
    from libp2p.peer.id import ID

    peer_id = ID.from_pubkey(load_identity(config.data_dir).public_key).to_base58()
    addrs = [f"{a}/p2p/{peer_id}" for a in config.swarm.listen]
    out.result({"peer_id": peer_id, "addrs": addrs}, "\n".join([peer_id, *addrs]))


def call_node(config: NodeConfig, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the running node's admin API (found through api.json in the data directory)."""
    import urllib.error
    import urllib.request

    try:
        api = json.loads((config.data_dir / "api.json").read_text())
    except (OSError, ValueError):
        raise CommandError(f"medianode serve is not running for {config.data_dir}") from None
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api["url"] + path, data=data, method=method, headers={
        "Authorization": f"Bearer {api['token']}", "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            reason = str(exc)
        raise CommandError(reason) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CommandError(f"medianode serve is not answering at {api['url']}: {exc}") from None


def cmd_peers(args: argparse.Namespace, out: Output) -> None:
    answer = call_node(load(args.data_dir), "GET", "/api/v1/swarm/peers")
    out.result(answer, "\n".join(f"{p['peer_id']} {' '.join(p['addrs'])}".rstrip() for p in answer["peers"]))


def cmd_provide(args: argparse.Namespace, out: Output) -> None:
    cid, _ = parse_cid_path(args.cid)
    answer = call_node(load(args.data_dir), "POST", f"/api/v1/routing/provide/{cid}")
    if not answer["provided"]:
        raise CommandError(f"no DHT peer took the record for {cid}")
    out.result(answer, f"announced {cid}")


def cmd_findprovs(args: argparse.Namespace, out: Output) -> None:
    cid, _ = parse_cid_path(args.cid)
    answer = call_node(load(args.data_dir), "GET", f"/api/v1/routing/providers/{cid}")
    out.result(answer, "\n".join(f"{p['peer_id']} {' '.join(p['addrs'])}".rstrip() for p in answer["providers"]))


def cmd_swarm(args: argparse.Namespace, out: Output) -> None:
    answer = call_node(load(args.data_dir), "POST", "/api/v1/swarm/connect", {"addr": args.addr})
    out.result(answer, f"connected to {answer['peer_id']}")


def cmd_token(args: argparse.Namespace, out: Output) -> None:
    from .gateway.tokens import TokenError, TokenStore

    config = load(args.data_dir)
    tokens = TokenStore(config.data_dir / "gateway.sqlite")
    try:
        if args.token_command == "create":
            limit = parse_size(args.limit) if args.limit else 0
            token = tokens.create(args.name, limit)
            out.result(
                {"name": args.name, "limit": limit, "token": token},
                f"created token {args.name!r}; it is shown only now:\n{token}",
            )
        elif args.token_command == "revoke":
            tokens.revoke(args.name)
            out.result({"name": args.name, "revoked": True}, f"revoked token {args.name!r}")
        else:
            listed = tokens.list()
            out.result(
                {"tokens": [{"name": t.name, "created": t.created, "limit": t.limit, "used": t.used} for t in listed]},
                "\n".join(f"{t.name} used {t.used} of {t.limit or 'unlimited'}" for t in listed),
            )
    except TokenError as exc:
        raise CommandError(str(exc)) from None
    finally:
        tokens.close()


def cmd_s3(args: argparse.Namespace, out: Output) -> None:
    from .gateway.s3.catalog import Catalog, CatalogError

    config = load(args.data_dir)
    catalog = Catalog(config.data_dir / "s3.sqlite")
    try:
        if args.s3_command == "create":
            limit = parse_size(args.limit) if args.limit else 0
            from .gateway.s3.errors import S3Error
            from .gateway.s3.names import validate_bucket_name

            try:
                for bucket in args.bucket:
                    validate_bucket_name(bucket)
            except S3Error as exc:
                raise CommandError(f"{bucket!r}: {exc.message}") from None
            taken = [b for b in args.bucket if catalog.bucket(b) is not None]
            if taken:
                raise CommandError(f"bucket {taken[0]!r} exists already")
            key = catalog.create_key(args.name, limit)
            for bucket in args.bucket:
                catalog.create_bucket(bucket, key.access_key_id)
            out.result(
                {"name": key.name, "access_key_id": key.access_key_id, "secret_access_key": key.secret,
                 "limit": key.limit, "buckets": list(args.bucket),
                 "endpoint": f"http://{url_host(config.s3.listen[0])}:{config.s3.listen[1]}"},
                f"created S3 key {key.name!r}; the secret is shown only now:\n"
                f"access key id:     {key.access_key_id}\nsecret access key: {key.secret}",
            )  # fmt: skip
        elif args.s3_command == "revoke":
            key = catalog.revoke_key(args.name)
            out.result({"name": key.name, "access_key_id": key.access_key_id, "revoked": True},
                       f"revoked S3 key {key.name!r} ({key.access_key_id})")  # fmt: skip
        else:
            keys = [
                {"name": k.name, "access_key_id": k.access_key_id, "limit": k.limit, "created": k.created,
                 "used": catalog.used_bytes(k.access_key_id),
                 "buckets": [b.name for b in catalog.buckets(k.access_key_id)]}
                for k in catalog.access_keys()
            ]  # fmt: skip
            out.result(
                {"keys": keys},
                "\n".join(f"{k['name']} {k['access_key_id']} used {k['used']} of {k['limit'] or 'unlimited'}"
                          f" buckets: {', '.join(k['buckets']) or '-'}" for k in keys),  # type: ignore[arg-type]
            )  # fmt: skip
    except CatalogError as exc:
        raise CommandError(str(exc)) from None
    finally:
        catalog.close()


def _resolve(store: BlockStore, target: str) -> CID:
    cid, path = parse_cid_path(target)
    return store.resolve(cid, path) if path else cid


def cmd_cat(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    cid = _resolve(store, args.cid)
    size = store.file_size(cid)
    offset = args.offset
    if offset > size:
        raise CommandError(f"offset {offset} is past the end of {cid} ({size} bytes)")
    length = size - offset if args.length is None else min(args.length, size - offset)
    store.touch(cid)
    sys.stdout.flush()
    fd = sys.stdout.fileno()
    try:
        if offset == 0 and length == size:
            store.copy_to_fd(cid, fd)
        else:
            for piece in store.read_range(cid, offset, length):
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)


def fetch_from_peers(config: NodeConfig, store: BlockStore, root: CID, peers: list[str], out: Output) -> int:
    """Fetch what the store lacks of ``root`` from ``peers`` with a host of our own on loopback."""
    import trio

    from .swarm.bitswap import FetchError
    from .swarm.host import SwarmError, parse_peer_addr
    from .swarm.node import open_swarm

    try:
        infos = [parse_peer_addr(p) for p in peers]
    except SwarmError as exc:
        raise CommandError(str(exc)) from None

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


def cmd_get(args: argparse.Namespace, out: Output) -> None:
    config, store = open_store(args)
    root, _ = parse_cid_path(args.cid)
    peers = [*args.peer, *config.swarm.bootstrap]
    if peers and store.missing_in_dag(root):
        fetch_from_peers(config, store, root, peers, out)
    cid = _resolve(store, args.cid)
    info = store.stat(cid)
    target = Path(args.output or str(cid))
    store.touch(cid)
    with out.progress(info.size if info.type == "file" else None, f"get {cid}") as tick:
        written = _get_tree(store, cid, info.type, target, tick)
    out.result({"cid": str(cid), "path": str(target), "size": written}, f"saved {cid} to {target}")


def cmd_watch(args: argparse.Namespace, out: Output) -> None:
    import signal

    import trio

    from .swarm.viewer_peer import ViewerError, WatchResult, watch_file

    config = load(args.data_dir)
    root, path = parse_cid_path(args.cid)
    if path:
        raise CommandError("watch takes the CID of a file, not a path inside a directory")
    gateway = (args.gateway or config.gateway.base_url()).rstrip("/")
    if not gateway.startswith(("http://", "https://")):
        raise CommandError(f"--gateway must be an http:// or https:// URL, got {gateway!r}")
    target = Path(args.output or str(root))
    bar = WatchProgress(out, f"watch {root}")

    def saved(result: WatchResult) -> None:
        bar.close()
        seeding = "" if args.exit_when_done else "\nseeding to other viewers until Ctrl-C"
        out.result(
            {"cid": result.cid, "bytes": result.bytes, "bytes_from_peers": result.bytes_from_peers,
             "bytes_from_http": result.bytes_from_http, "path": result.path},
            f"saved {result.cid} to {result.path}: {result.bytes_from_peers} bytes from peers, "
            f"{result.bytes_from_http} over HTTP{seeding}",
        )  # fmt: skip
        sys.stdout.flush()

    async def watch() -> str | None:
        failure: str | None = None
        async with trio.open_nursery() as nursery:

            async def until_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

            async def run() -> None:
                nonlocal failure
                try:
                    await watch_file(gateway, root, target, stun=config.viewers.stun,
                                     loopback_only=config.viewers.loopback_only, seed=not args.exit_when_done,
                                     on_progress=bar.show, on_saved=saved)  # fmt: skip
                except ViewerError as exc:
                    failure = str(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_signal)
            nursery.start_soon(run)
        return failure

    try:
        failure = trio.run(watch)
    finally:
        bar.close()
    if failure is not None:
        raise CommandError(f"cannot watch {root}: {failure}")


class WatchProgress:
    """``watch``'s progress bar on stderr: bytes held, split into peer and HTTP bytes (not with --json)."""

    def __init__(self, out: Output, label: str) -> None:
        self.bar: Any = None
        self.shown = 0
        self.enabled = not out.as_json and sys.stderr.isatty()
        self.label = label

    def show(self, clip: Any, stats: Any) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=clip.size, desc=self.label, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
        received = stats.bytes_from_peers + stats.bytes_from_http
        self.bar.set_postfix_str(
            f"peers {stats.bytes_from_peers >> 10} KiB, http {stats.bytes_from_http >> 10} KiB, "
            f"{stats.peers_open} connected",
            refresh=False,
        )
        self.bar.update(received - self.shown)
        self.shown = received

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.enabled = False


def _get_tree(store: BlockStore, cid: CID, kind: str, target: Path, tick: Callable[[int], None]) -> int:
    if kind == "directory":
        target.mkdir(parents=True, exist_ok=True)
        total = 0
        for entry in store.ls(cid):
            if "/" in entry.name or entry.name in ("", ".", ".."):
                raise CommandError(f"refusing unsafe name {entry.name!r} in {cid}")
            total += _get_tree(store, entry.cid, entry.type, target / entry.name, tick)
        return total
    if kind == "symlink":
        from .storage.unixfs import decode_unixfs

        _, data = decode_unixfs(store.get_block(cid))
        os.symlink((data.data or b"").decode("utf-8", "replace"), target)
        return 0
    # A short name of its own: the entry's name may already be at the file system's 255-byte limit.
    tmp = target.with_name(f".medianode-part-{hashlib.sha256(target.name.encode()).hexdigest()[:16]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        written = store.copy_to_fd(cid, fd, tick)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, target)
    return written


def cmd_ls(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    cid = _resolve(store, args.cid)
    entries = store.ls(cid)
    out.result(
        {
            "cid": str(cid),
            "entries": [{"name": e.name, "cid": str(e.cid), "type": e.type, "size": e.size} for e in entries],
        },
        "\n".join(f"{e.cid} {e.size:>12} {e.name}{'/' if e.type == 'directory' else ''}" for e in entries),
    )


def cmd_stat(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    cid = _resolve(store, args.cid)
    s = store.stat(cid)
    data = {
        "cid": str(s.cid),
        "type": s.type,
        "size": s.size,
        "dag_size": s.dag_size,
        "blocks": s.blocks,
        "missing_blocks": s.missing,
        "pinned": s.pinned,
        "codec": s.cid.codec_name,
    }
    out.result(data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def cmd_pin(args: argparse.Namespace, out: Output) -> None:
    from .swarm.replication import ReplicaBook

    config, store = open_store(args)
    book = ReplicaBook(config.data_dir / "replication.sqlite")
    if args.pin_command == "ls":
        pins = store.pins()
        wanted = dict(book.wanted())
        rows: list[dict[str, Any]] = []
        lines = []
        for c, n, t in pins:
            holders = book.holders(c)
            want = wanted.get(c, 0)
            rows.append({"cid": str(c), "name": n, "created": t, "replicas_wanted": want, "replicas": holders})
            extra = f"  replicas {len(holders)}/{want}: {' '.join(holders)}" if want else ""
            lines.append(f"{c} {n or ''}".rstrip() + extra)
        out.result({"pins": rows}, "\n".join(lines))
        return
    cid, path = parse_cid_path(args.cid)
    if path:
        cid = store.resolve(cid, path)
    if args.pin_command == "add":
        store.pin_add(cid)
        if args.replicas is not None:
            if args.replicas < 0:
                raise CommandError("--replicas must be 0 or more")
            book.want(cid, args.replicas)
        out.result({"cid": str(cid), "pinned": True, "replicas_wanted": args.replicas}, f"pinned {cid}")
    else:
        store.pin_rm(cid)
        book.want(cid, 0)
        out.result({"cid": str(cid), "pinned": False}, f"unpinned {cid}")


def cmd_gc(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    r = store.gc()
    out.result(
        {
            "blocks_removed": r.blocks_removed,
            "bytes_freed": r.bytes_freed,
            "packs_removed": r.packs_removed,
            "packs_compacted": r.packs_compacted,
        },
        f"removed {r.blocks_removed} blocks ({r.bytes_freed} bytes); {r.packs_removed} packs deleted, "
        f"{r.packs_compacted} compacted",
    )


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    import sqlite3

    try:
        _, store = open_store(args)
        with out.progress(store.usage(), "verify") as tick:
            bad = store.verify(tick)
        checked = store.repo_stat().blocks + len(bad)
    except sqlite3.Error as exc:  # the index could not be opened or read (a full disk, say)
        raise CommandError(f"cannot use the index in {args.data_dir}: {exc}") from None
    out.result(
        {"checked": checked, "corrupt": [{"cid": str(r.cid), "reason": r.reason} for r in bad]},
        "\n".join(
            [f"corrupt {r.cid}: {r.reason} (quarantined)" for r in bad]
            + [f"verified {checked} blocks, {len(bad)} corrupt"]
        ),
    )
    return EXIT_FAILED if bad else 0


def cmd_export(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    cid = _resolve(store, args.cid)
    blocks, missing, dag_size = store.dag_counts(cid)
    if missing:
        raise CommandError(f"cannot export {cid}: {missing} of its {blocks} blocks are not in the store")
    with out.progress(dag_size, f"export {cid}") as tick:
        count, written = export_car(store, cid, args.output, tick)
    out.result(
        {"cid": str(cid), "path": args.output, "blocks": count, "bytes": written},
        f"exported {cid} ({count} blocks) to {args.output}",
    )


def cmd_import(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    try:
        size = os.path.getsize(args.path)
    except OSError as exc:
        raise CommandError(f"cannot read {args.path}: {exc.strerror}") from None
    with out.progress(size, f"import {os.path.basename(args.path)}") as tick:
        result = import_car(store, args.path, pin=not args.no_pin, progress=tick)
    out.result(
        {"roots": [str(r) for r in result.roots], "blocks": result.blocks, "pinned": not args.no_pin},
        "\n".join(f"imported {r}" for r in result.roots) or f"imported {result.blocks} blocks (no roots)",
    )


def cmd_repo(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    s = store.repo_stat()
    data = {
        "size": s.size,
        "quota": s.quota,
        "blocks": s.blocks,
        "pins": s.pinned,
        "pinned_bytes": s.pinned_bytes,
        "packs": s.packs,
        "data_dir": str(args.data_dir),
    }
    out.result(data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON")
    common.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="node directory (default: $MEDIANODE_DATA or ~/.local/share/medianode)",
    )
    parser = argparse.ArgumentParser(
        prog="medianode", description="Peer-to-peer storage node for fediverse media.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"medianode {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (repeat for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[..., Any], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = command("init", cmd_init, "create the data directory and its config (optional: every command does it)")
    p.add_argument("--quota", help="disk space for blocks, e.g. 50GiB (default 10GiB; 0 = no limit)")

    p = command("add", cmd_add, "add a file or directory (-r); prints its CID")
    p.add_argument("path", help="file, directory (with -r), or - for standard input")
    p.add_argument("-r", "--recursive", action="store_true", help="add a directory tree")
    p.add_argument("--chunk-size", type=int, help="bytes per chunk: 262144 (default) or 1048576")
    p.add_argument("--no-pin", action="store_true", help="keep as evictable cache instead of pinning")
    p.add_argument("--hidden", action="store_true", help="include dotfiles when adding a directory")
    p.add_argument("--name", help="name to record (default: the file name)")

    command("demo", cmd_demo, "make a short demo clip and add it")

    p = command("serve", cmd_serve, "run the node (HTTP gateway) until Ctrl-C or SIGTERM")
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
    s3 = p.add_mutually_exclusive_group()
    s3.add_argument("--s3", metavar="HOST:PORT", help="S3 API address (default from config: 127.0.0.1:9000)")
    s3.add_argument("--no-s3", action="store_true", help="do not run the S3 API")
    mdns = p.add_mutually_exclusive_group()
    mdns.add_argument(
        "--mdns", dest="mdns", action="store_true", default=None, help="find and announce peers on the LAN over mDNS"
    )
    mdns.add_argument("--no-mdns", dest="mdns", action="store_false", help="no mDNS (the default)")

    command("id", cmd_id, "this node's peer ID and swarm addresses")
    command("peers", cmd_peers, "peers the running node is connected to")
    p = command("provide", cmd_provide, "announce a CID in the DHT now (serve also does it on a schedule)")
    p.add_argument("cid")
    p = command("findprovs", cmd_findprovs, "peers the DHT says provide a CID")
    p.add_argument("cid")
    p = command("swarm", cmd_swarm, "swarm operations on the running node")
    swarm_sub = p.add_subparsers(dest="swarm_command", required=True, metavar="connect")
    q = swarm_sub.add_parser("connect", parents=[common], help="connect to a peer")
    q.add_argument("addr", metavar="MULTIADDR/p2p/PEERID")

    p = command("token", cmd_token, "manage upload tokens for the write API")
    token_sub = p.add_subparsers(dest="token_command", required=True, metavar="create|revoke|ls")
    q = token_sub.add_parser("create", parents=[common], help="create a token (printed once, on the last line)")
    q.add_argument("--name", required=True, help="who the token is for, e.g. the instance's host name")
    q.add_argument("--limit", help="total bytes this token may upload, e.g. 50GiB (default: no limit)")
    q = token_sub.add_parser("revoke", parents=[common], help="revoke a token")
    q.add_argument("name")
    token_sub.add_parser("ls", parents=[common], help="list tokens")

    p = command("s3", cmd_s3, "manage keys for the S3 API (one per fediverse server)")
    s3_sub = p.add_subparsers(dest="s3_command", required=True, metavar="key")
    q = s3_sub.add_parser("key", parents=[common], help="create, list or revoke access keys")
    key_sub = q.add_subparsers(dest="s3_command", required=True, metavar="create|ls|revoke")
    r = key_sub.add_parser("create", parents=[common], help="create a key (its secret is printed once)")
    r.add_argument("--name", required=True, help="who the key is for, e.g. the instance's host name")
    r.add_argument("--limit", help="bytes of objects this key may keep, e.g. 500GiB (default: no limit)")
    r.add_argument(
        "--bucket", action="append", default=[], help="create this bucket for the key (repeatable; or CreateBucket)"
    )
    r = key_sub.add_parser("revoke", parents=[common], help="revoke a key (its buckets and objects stay)")
    r.add_argument("name", help="the key's name or access key id")
    key_sub.add_parser("ls", parents=[common], help="list keys, their usage and buckets")

    p = command("cat", cmd_cat, "write a file's bytes to stdout")
    p.add_argument("cid", help="CID or CID/path")
    p.add_argument("--offset", type=int, default=0, help="first byte to write")
    p.add_argument("--length", type=int, help="number of bytes to write")

    p = command("get", cmd_get, "save a file or directory, fetching what is missing from peers")
    p.add_argument("cid", help="CID or CID/path")
    p.add_argument("-o", "--output", help="where to write it (default: the CID)")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="MULTIADDR/p2p/PEERID",
        help="peer to fetch from, repeatable (the config's bootstrap peers are used too)",
    )

    p = command("watch", cmd_watch, "fetch a file through its viewer swarm (gateway as fallback), then seed it")
    p.add_argument("cid", help="CID of a file")
    p.add_argument("--gateway", metavar="URL", help="gateway whose swarm to join (default: this node's gateway)")
    p.add_argument("-o", "--output", help="where to write it (default: the CID)")
    p.add_argument("--exit-when-done", action="store_true", help="stop once the file is saved instead of seeding")

    p = command("ls", cmd_ls, "list a directory")
    p.add_argument("cid")
    p = command("stat", cmd_stat, "type, size and local completeness of a CID")
    p.add_argument("cid")

    p = command("pin", cmd_pin, "manage pins")
    pin_sub = p.add_subparsers(dest="pin_command", required=True, metavar="add|rm|ls")
    for name, text in (("add", "pin a CID and everything under it"), ("rm", "remove a pin")):
        q = pin_sub.add_parser(name, parents=[common], help=text)
        q.add_argument("cid")
        if name == "add":
            q.add_argument(
                "--replicas",
                type=int,
                metavar="N",
                help="also keep N copies on the trusted peers in [replication] (needs serve running)",
            )
    pin_sub.add_parser("ls", parents=[common], help="list pins")

    command("gc", cmd_gc, "delete every block no pin needs")
    command("verify", cmd_verify, "rehash every block; quarantine corrupt ones (exit 1 if any)")

    p = command("export", cmd_export, "write a CID's DAG as a CAR file (.car or .car.zst)")
    p.add_argument("cid")
    p.add_argument("-o", "--output", required=True, help="FILE.car or FILE.car.zst")

    p = command("import", cmd_import, "import a CAR file (.car or .car.zst), verifying every block")
    p.add_argument("path")
    p.add_argument("--no-pin", action="store_true", help="do not pin the CAR's roots")

    p = command("repo", cmd_repo, "repository information")
    repo_sub = p.add_subparsers(dest="repo_command", required=True, metavar="stat")
    repo_sub.add_parser("stat", parents=[common], help="size, quota, block count")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    args.data_dir = Path(getattr(args, "data_dir", None) or default_data_dir()).expanduser()
    setup_logging(args.verbose)
    out = Output(args.json)
    try:
        code = args.func(args, out)
    except (
        CommandError, StoreError, CIDError, CarError, ConfigError, UnsupportedInputError,
        UnixFSError, DagPBError, NotAFileError,
    ) as exc:  # fmt: skip
        print(f"medianode: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"medianode: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("medianode: interrupted; nothing partial was stored", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
