"""``watch``: a command-line viewer. It fetches a file through the viewer swarm of a gateway (the gateway itself as
fallback), verifies every piece, saves the file and seeds it to other viewers until Ctrl-C or SIGTERM
(``--exit-when-done`` stops once it is saved)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, Protocol

from ..config import load
from .commands import Commands
from .content import parse_cid_path
from .output import CommandError, Output


def add_commands(commands: Commands) -> None:
    p = commands.add("watch", cmd_watch, "fetch a file through its viewer swarm (gateway as fallback), then seed it")
    p.add_argument("cid", help="CID of a file")
    p.add_argument("--gateway", metavar="URL", help="gateway whose swarm to join (default: this node's gateway)")
    p.add_argument("-o", "--output", help="where to write it (default: the CID)")
    p.add_argument("--exit-when-done", action="store_true", help="stop once the file is saved instead of seeding")


def cmd_watch(args: argparse.Namespace, out: Output) -> None:
    # The event loop and the viewer swarm (aiortc, httpx) load only for watch: they cost every command's start.
    import trio

    from ..swarm.viewers.watch import ViewerError, WatchResult, watch_file

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
                    # Kept, not raised: the nursery would wrap it in an exception group.
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


class SizedClip(Protocol):
    """What the bar reads of the viewer swarm's clip."""

    @property
    def size(self) -> int: ...


class ViewerCounts(Protocol):
    """What the bar reads of the viewer swarm's running totals."""

    @property
    def bytes_from_peers(self) -> int: ...
    @property
    def bytes_from_http(self) -> int: ...
    @property
    def peers_open(self) -> int: ...


class WatchProgress:
    """``watch``'s progress bar on stderr: bytes held, split into peer and HTTP bytes (not with --json)."""

    def __init__(self, out: Output, label: str) -> None:
        self.bar: Any = None  # a tqdm bar once the clip's size is known
        self.shown = 0
        self.enabled = not out.as_json and sys.stderr.isatty()
        self.label = label

    def show(self, clip: SizedClip, stats: ViewerCounts) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm  # loaded only when a bar is drawn, as in Output.progress

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
