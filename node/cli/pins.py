"""What the store keeps: ``pin add|rm|ls`` (with ``--replicas``, copies on the operator's trusted peers), ``gc``,
``verify`` and ``repo stat``."""

from __future__ import annotations

import argparse
import sqlite3
from typing import Any

from ..swarm.replication import ReplicaBook
from .commands import Commands
from .content import open_store, parse_cid_path
from .output import EXIT_FAILED, CommandError, Output


def add_commands(commands: Commands) -> None:
    p = commands.add("pin", cmd_pin, "manage pins")
    pin_sub = p.add_subparsers(dest="pin_command", required=True, metavar="add|rm|ls")
    q = commands.nested(pin_sub, "add", "pin a CID and everything under it")
    q.add_argument("cid")
    q.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="also keep N copies on the trusted peers in [replication] (needs serve running)",
    )
    q = commands.nested(pin_sub, "rm", "remove a pin")
    q.add_argument("cid")
    commands.nested(pin_sub, "ls", "list pins")

    commands.add("gc", cmd_gc, "delete every block no pin needs")
    commands.add("verify", cmd_verify, "rehash every block; quarantine corrupt ones (exit 1 if any)")

    p = commands.add("repo", cmd_repo, "repository information")
    repo_sub = p.add_subparsers(dest="repo_command", required=True, metavar="stat")
    commands.nested(repo_sub, "stat", "size, quota, block count")


def cmd_pin(args: argparse.Namespace, out: Output) -> None:
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
    from ..gateway.posters import release_orphans  # loads no Starlette or PyAV

    _, store = open_store(args)
    release_orphans(store)  # posters whose clip nothing pins or holds any more: the store cannot tell
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
