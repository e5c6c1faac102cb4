"""The viewer's side of the gateway: the watch page, the feed, the embeddable player.

``/watch/{cid}`` and ``/watch/feed`` (``/feed`` redirects there) are static
pages whose JavaScript, under ``/watch/player/``, does the work in the
browser: it verifies the clip's DAG and every piece, trades pieces with
other viewers over WebRTC, and feeds the ``<video>`` element through a
Service Worker (``/watch/sw.js``, scope ``/watch/``) that answers the
element's Range requests with verified bytes. Everything a page needs is
under ``/watch/`` so that one Service Worker scope covers it.

``GET /api/v1/feed`` lists the node's pinned clips (files whose first bytes
say video or audio), newest pin first: what ``/feed`` scrolls through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..storage.cid import CID
from ..storage.errors import StoreError
from ..storage.layout import NotAFileError
from ..storage.store import BlockStore
from ..storage.unixfs import UnixFSError
from .http import HTTPProblem, parse_cid, problem_response
from .mediatype import SNIFF_BYTES, is_media, sniff

STATIC = Path(__file__).parent / "static"
FEED_LENGTH = 200
NO_CACHE = {"Cache-Control": "no-cache"}  # pages and scripts change with the node's version


class ClipList:
    """Pinned clips for the feed; what a CID is never changes, so its media type is remembered."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self._types: dict[CID, str | None] = {}

    def clips(self) -> list[dict[str, Any]]:
        pins = sorted(self.store.pins(), key=lambda pin: pin[2], reverse=True)
        for forgotten in self._types.keys() - {cid for cid, _, _ in pins}:
            del self._types[forgotten]  # unpinned since: remembered no longer
        found = []
        for cid, name, pinned_at in pins:
            mime = self._media_type(cid, name)
            if mime is None:
                continue
            found.append({"cid": str(cid), "name": name, "type": mime, "size": self.store.file_size(cid),
                          "pinned_at": pinned_at})  # fmt: skip
            if len(found) >= FEED_LENGTH:
                break
        return found

    def _media_type(self, cid: CID, name: str | None) -> str | None:
        if cid not in self._types:
            try:
                head = b"".join(self.store.read_range(cid, 0, SNIFF_BYTES))
                mime = sniff(head, name)
                self._types[cid] = mime if is_media(mime) else None
            except (NotAFileError, UnixFSError, StoreError):
                self._types[cid] = None
        return self._types[cid]


def watch_routes(store: BlockStore) -> list[BaseRoute]:
    clip_list = ClipList(store)

    async def watch_page(request: Request) -> Response:
        try:
            parse_cid(request.path_params["cid"])
        except HTTPProblem as problem:
            return problem_response(problem)
        return FileResponse(STATIC / "watch.html", headers=NO_CACHE)

    async def feed_page(request: Request) -> Response:
        return FileResponse(STATIC / "feed.html", headers=NO_CACHE)

    async def service_worker(request: Request) -> Response:
        return FileResponse(STATIC / "sw.js", media_type="text/javascript", headers=NO_CACHE)

    async def feed(request: Request) -> Response:
        clips = await anyio.to_thread.run_sync(clip_list.clips)
        return JSONResponse({"clips": clips}, headers={"Cache-Control": "no-store"})

    async def to_feed(request: Request) -> Response:
        return RedirectResponse("/watch/feed", status_code=307)

    async def stream_without_worker(request: Request) -> Response:
        # The Service Worker answers these; without one the gateway does.
        return RedirectResponse(f"/ipfs/{request.path_params['cid']}", status_code=307)

    return [
        Route("/feed", to_feed, methods=["GET", "HEAD"]),
        Route("/api/v1/feed", feed, methods=["GET"]),
        Route("/watch/feed", feed_page, methods=["GET", "HEAD"]),
        Route("/watch/sw.js", service_worker, methods=["GET", "HEAD"]),
        Route("/watch/stream/{cid}", stream_without_worker, methods=["GET", "HEAD"]),
        Mount("/watch/player", StaticFiles(directory=STATIC / "player"), name="player"),
        Route("/watch/{cid}", watch_page, methods=["GET", "HEAD"]),
    ]
