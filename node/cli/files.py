"""Files and directories in the store: ``add``, ``cat``, ``get``, ``ls``, ``stat``, and CAR ``export`` / ``import``.

``add`` of one video file also makes its poster (``node/gateway/posters.py``) once the file is stored; ``--json``
names it (``poster``: its CID; no key when the file has none, as the attachment has no ``icon`` then).

``get`` fetches what the store lacks from peers first (``fetch.py``); the others read and write the local store
only. ``get`` writes each file under a temporary name and renames it into place, so a failure leaves no half file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from ..gateway.posters import DB_NAME, poster_after_add
from ..storage.cid import CID, RAW
from ..storage.importer import import_stream, tree_size
from ..storage.store import BlockStore
from ..storage.transfer import export_car, import_car
from ..storage.unixfs import decode_unixfs
from .commands import Commands
from .content import gateway_url, open_store, parse_cid_path, resolve_target
from .fetch import fetch_from_peers
from .output import CommandError, Output


def add_commands(commands: Commands) -> None:
    p = commands.add("add", cmd_add, "add a file or directory (-r); prints its CID")
    p.add_argument("path", help="file, directory (with -r), or - for standard input")
    p.add_argument("-r", "--recursive", action="store_true", help="add a directory tree")
    p.add_argument("--chunk-size", type=int, help="bytes per chunk: 262144 (default) or 1048576")
    p.add_argument("--no-pin", action="store_true", help="keep as evictable cache instead of pinning")
    p.add_argument("--hidden", action="store_true", help="include dotfiles when adding a directory")
    p.add_argument("--name", help="name to record (default: the file name)")

    p = commands.add("cat", cmd_cat, "write a file's bytes to stdout")
    p.add_argument("cid", help="CID or CID/path")
    p.add_argument("--offset", type=int, default=0, help="first byte to write")
    p.add_argument("--length", type=int, help="number of bytes to write")

    p = commands.add("get", cmd_get, "save a file or directory, fetching what is missing from peers")
    p.add_argument("cid", help="CID or CID/path")
    p.add_argument("-o", "--output", help="where to write it (default: the CID)")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="MULTIADDR/p2p/PEERID",
        help="peer to fetch from, repeatable (the config's bootstrap peers are used too)",
    )

    p = commands.add("ls", cmd_ls, "list a directory")
    p.add_argument("cid")
    p = commands.add("stat", cmd_stat, "type, size and local completeness of a CID")
    p.add_argument("cid")

    p = commands.add("export", cmd_export, "write a CID's DAG as a CAR file (.car or .car.zst)")
    p.add_argument("cid")
    p.add_argument("-o", "--output", required=True, help="FILE.car or FILE.car.zst")

    p = commands.add("import", cmd_import, "import a CAR file (.car or .car.zst), verifying every block")
    p.add_argument("path")
    p.add_argument("--no-pin", action="store_true", help="do not pin the CAR's roots")


def cmd_add(args: argparse.Namespace, out: Output) -> None:
    config, store = open_store(args)
    chunk_size = args.chunk_size or config.chunk_size
    path = args.path
    if path == "-":
        with out.progress(None, "add") as tick, store.batch() as batch:
            root = import_stream(sys.stdin.buffer, batch, chunk_size, tick)
            batch.commit([root.cid], args.name or "stdin", root.content_size, pin=not args.no_pin)
        name = args.name or "stdin"
    else:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode) and not args.recursive:
            raise CommandError(f"{path} is a directory (use -r to add it)")
        if stat.S_ISREG(info.st_mode) and not os.access(path, os.R_OK):
            raise CommandError(f"cannot read {path}: Permission denied")
        name = args.name or os.path.basename(os.path.normpath(path))
        with out.progress(tree_size(path, args.hidden), f"add {name}") as tick:
            root = store.add_path(path, chunk_size, pin=not args.no_pin, hidden=args.hidden, name=name, progress=tick)
    size = root.content_size if root.cid.codec == RAW or root.content_size else store.stat(root.cid).size
    url = gateway_url(config, root.cid)
    added = {"cid": str(root.cid), "size": size, "name": name, "pinned": not args.no_pin, "url": url}
    if not args.recursive or not os.path.isdir(path):  # one file: its poster now (a tree's: when asked for)
        poster = poster_after_add(config.data_dir / DB_NAME, store, root.cid, chunk_size)
        if poster is not None:
            added["poster"] = str(poster.cid)
    out.result(added, f"added {root.cid} {name}\n{url}")


def cmd_cat(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    cid = resolve_target(store, args.cid)
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
        # The reader went away (``cat CID | head``): not an error, and Python's own flush at exit must not say so.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)


def cmd_get(args: argparse.Namespace, out: Output) -> None:
    config, store = open_store(args)
    root, _ = parse_cid_path(args.cid)
    peers = [*args.peer, *config.swarm.bootstrap]
    if peers and store.missing_in_dag(root):
        fetch_from_peers(config, store, root, peers, out)
    cid = resolve_target(store, args.cid)
    info = store.stat(cid)
    target = Path(args.output or str(cid))
    store.touch(cid)
    with out.progress(info.size if info.type == "file" else None, f"get {cid}") as tick:
        written = save_tree(store, cid, info.type, target, tick)
    out.result({"cid": str(cid), "path": str(target), "size": written}, f"saved {cid} to {target}")


def save_tree(store: BlockStore, cid: CID, kind: str, target: Path, tick: Callable[[int], None]) -> int:
    """Write the file, directory tree or symlink ``cid`` (of UnixFS type ``kind``) at ``target``; bytes written."""
    if kind == "directory":
        target.mkdir(parents=True, exist_ok=True)
        total = 0
        for entry in store.ls(cid):
            if "/" in entry.name or entry.name in ("", ".", ".."):
                raise CommandError(f"refusing unsafe name {entry.name!r} in {cid}")
            total += save_tree(store, entry.cid, entry.type, target / entry.name, tick)
        return total
    if kind == "symlink":
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
    cid = resolve_target(store, args.cid)
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
    cid = resolve_target(store, args.cid)
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


def cmd_export(args: argparse.Namespace, out: Output) -> None:
    _, store = open_store(args)
    cid = resolve_target(store, args.cid)
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
