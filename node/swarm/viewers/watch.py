"""``medianode watch``: fetch a file through its viewer swarm, the gateway as fallback, then seed it.

``watch_file`` learns the clip from the gateway (``from_gateway.py``), takes
what fetching the DAG already brought, runs one ``SwarmViewer`` into a
partial file beside the target, and renames it into place once every piece
is verified; with ``seed`` it goes on serving the swarm until cancelled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from ...storage.cid import CID
from .clip import Clip, ViewerError
from .from_gateway import GatewayBlocks, learn_clip
from .pieces import FilePieces
from .rtc_bridge import open_rtc_bridge
from .viewer import SwarmViewer, ViewerStats

__all__ = ["ViewerError", "WatchResult", "watch_file"]  # what the ``watch`` command needs, its error included

HTTP_TIMEOUT = 30.0


@dataclass(frozen=True)
class WatchResult:
    cid: str
    bytes: int
    bytes_from_peers: int
    bytes_from_http: int
    path: str


async def watch_file(
    gateway: str,
    root: CID,
    target: Path,
    *,
    stun: Sequence[str] = (),
    loopback_only: bool = False,
    seed: bool = True,
    on_progress: Callable[[Clip, ViewerStats], None] | None = None,
    on_saved: Callable[[WatchResult], None] | None = None,
) -> WatchResult:
    """Fetch the file at ``root`` through its viewer swarm at ``gateway`` (HTTP from the gateway
    where peers fall short), verified piece by piece, into ``target``; then, with ``seed``, keep
    serving it to the swarm until cancelled. ``on_saved`` is called once the file is in place."""
    part = target.with_name(f".{target.name}.medianode-part")
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        blocks = GatewayBlocks(client, gateway)
        clip, brought = await learn_clip(blocks, root)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        saved: WatchResult | None = None
        try:
            os.ftruncate(fd, clip.size)
            source = FilePieces(fd, clip)
            for index, data in brought.items():
                source.write(index, data)
            async with open_rtc_bridge(loopback_only) as bridge:
                viewer = SwarmViewer(bridge, gateway, clip, source, http=blocks, stun=stun,
                                     stop_when_complete=not seed)  # fmt: skip
                viewer.stats.bytes_from_http = sum(len(data) for data in brought.values())

                def progress(stats: ViewerStats) -> None:
                    if on_progress is not None:
                        on_progress(clip, stats)

                def complete() -> None:
                    nonlocal saved
                    os.fsync(fd)
                    os.replace(part, target)
                    saved = WatchResult(str(root), clip.size, viewer.stats.bytes_from_peers,
                                        viewer.stats.bytes_from_http, str(target))  # fmt: skip
                    if on_saved is not None:
                        on_saved(saved)

                viewer.on_progress, viewer.on_complete = progress, complete
                await viewer.run()
        finally:
            os.close(fd)
            if saved is None:
                part.unlink(missing_ok=True)
    if saved is None:
        raise ViewerError("stopped before the file was complete")
    return saved
