"""The node as a WebRTC seeder: it joins the viewer swarms of the files it has pinned.

A node that gateways cannot reach (a personal node at home behind NAT) can
still serve browsers: it joins, as one more viewer holding every piece, the
swarm of each of its pinned files at each hub in ``[viewers] seed_hubs``,
and browsers there connect to it through STUN hole punching. Pieces come
straight from the BlockStore. At most ``seed_max`` files are seeded, the
most recently pinned first; the set is looked at again every
``RESCAN_EVERY`` seconds, so new pins join and removed ones leave. A hub
that drops the node is rejoined with backoff (``SwarmViewer(rejoin=True)``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ...config import ViewersConfig
from ...storage.cid import CID
from ...storage.errors import StoreError
from ...storage.layout import NotAFileError
from ...storage.store import BlockStore
from ...storage.unixfs import UnixFSError
from .clip import Clip, ViewerError, stored_clip
from .pieces import StorePieces
from .rtc_bridge import RtcBridge, open_rtc_bridge
from .viewer import SwarmViewer

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # the stubs libp2p installs hide trio's own TaskStatus from mypy

log = logging.getLogger("medianode.viewers")

RESCAN_EVERY = 60.0


async def run_seeder(
    store: BlockStore, config: ViewersConfig, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Seed pinned files to ``config.seed_hubs`` until cancelled (returns at once when there are none).

    Reports started once the first set of swarms has been set off (joining
    them goes on in the background).
    """
    if not config.seed_hubs or not config.seed_max:
        task_status.started()
        return
    async with open_rtc_bridge(config.loopback_only) as bridge, trio.open_nursery() as nursery:
        seeding: dict[CID, list[trio.CancelScope]] = {}
        while True:
            clips = seedable(store, config.seed_max)
            for root in [r for r in seeding if r not in clips]:
                for scope in seeding.pop(root):
                    scope.cancel()
            for root, clip in clips.items():
                if root not in seeding:
                    seeding[root] = [trio.CancelScope() for _ in config.seed_hubs]
                    for hub, scope in zip(config.seed_hubs, seeding[root], strict=True):
                        nursery.start_soon(_seed, bridge, hub, clip, store, config.stun, scope)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(RESCAN_EVERY)


def seedable(store: BlockStore, limit: int) -> dict[CID, Clip]:
    """Up to ``limit`` pinned files the store holds whole and a swarm can carry, newest pin first."""
    out: dict[CID, Clip] = {}
    for root, _name, _created in reversed(store.pins()):
        if len(out) >= limit:
            break
        try:
            clip = stored_clip(store, root)
        except (StoreError, NotAFileError, UnixFSError):
            continue  # a directory, or blocks gone: nothing to seed
        if clip is not None and clip.swarmable:
            out[root] = clip
    return out


async def _seed(
    bridge: RtcBridge, hub: str, clip: Clip, store: BlockStore, stun: Sequence[str], scope: trio.CancelScope
) -> None:
    with scope:
        viewer = SwarmViewer(bridge, hub, clip, StorePieces(store, clip), http=None, stun=stun, rejoin=True)
        log.info("seeding", extra={"fields": {"cid": str(clip.root), "hub": hub}})
        try:
            await viewer.run()
        except ViewerError as exc:
            log.warning("cannot seed", extra={"fields": {"cid": str(clip.root), "hub": hub, "error": str(exc)}})
