"""Responses whose body is a stored file's range as the store plans it (``BlockStore.read_spans``).

Runs of pack bytes go to the socket with ASGI's ``http.response.zerocopysend``
(node/gateway/zerocopy.py: ``sendfile``, no copy through Python); what must
be decoded or verified (compressed leaves, a store that hashes on read) goes
as ordinary bodies. The first batch is planned before the response starts,
so a block that cannot be read is still a status rather than a cut body; a
hot range of a layout already in memory is planned on the event loop with no
trip to a thread (``BlockStore.spans_if_ready``). Used by the path gateway
and the S3 listener's GetObject.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import trio
from starlette.responses import Response

from ..storage.cid import CID
from ..storage.reads import PackSpan
from ..storage.store import BlockStore
from .zerocopy import ZEROCOPY

SPANS_BATCH = 64  # spans planned per trip to the worker thread
HELD_BYTES = 4 * 1024 * 1024  # bytes of decoded body planned per trip, at most
ZEROCOPY_MIN = 64 * 1024  # bytes from which a body is sent from the pack file rather than read into Python

Item = bytes | PackSpan


def can_send_spans(scope: Any, length: int) -> bool:
    """Whether a body of ``length`` bytes is worth sending as spans on this connection (zero-copy is offered
    on HTTP/1.x; under ZEROCOPY_MIN a read into Python costs no more)."""
    return ZEROCOPY in scope.get("extensions", {}) and length >= ZEROCOPY_MIN


async def spans_response(
    store: BlockStore,
    cid: CID,
    start: int,
    length: int,
    status: int,
    headers: dict[str, str],
    media_type: str | None = None,
    served: Any = None,
    from_memory: bool = True,
    before: Callable[[], None] | None = None,
) -> SpansResponse:
    """``length`` bytes at ``start`` of the file ``cid`` as a response. ``from_memory`` allows planning a
    hot range on the event loop; otherwise (or when it is not hot) ``before`` runs in the planning thread
    first (the LRU stamp). ``served`` (an object with ``inc``) counts the bytes as they are sent."""
    ready = store.spans_if_ready(cid, start, length) if from_memory else None
    if ready is not None:
        return SpansResponse(list[Item](ready), None, status, headers, media_type, served)
    spans = store.read_spans(cid, start, length)
    first, done = await trio.to_thread.run_sync(take_spans, spans, before)
    return SpansResponse(first, None if done else spans, status, headers, media_type, served)


class SpansResponse(Response):
    """The items in order: spans with ``zerocopysend``, bytes as bodies. Every span's descriptor is closed
    once sent, or when the response ends early (the client went away, the task was cancelled)."""

    def __init__(
        self,
        first: list[Item],
        rest: Iterator[Item] | None,
        status: int,
        headers: dict[str, str],
        media_type: str | None,
        served: Any,
    ) -> None:
        super().__init__(status_code=status, headers=headers, media_type=media_type)
        self.first = first
        self.rest = rest
        self.served = served

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        batch, rest = self.first, self.rest
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            # A span comes first: the head goes out with it (node/gateway/zerocopy.py).
            await send({**start, "zerocopy": True} if batch and isinstance(batch[0], PackSpan) else start)
            while True:
                while batch:
                    item = batch[0]
                    if isinstance(item, PackSpan):
                        message = {"type": ZEROCOPY, "file": item.fd, "offset": item.offset, "count": item.length}
                        await send({**message, "more_body": True})
                        item.close()
                    else:
                        await send({"type": "http.response.body", "body": item, "more_body": True})
                    batch.pop(0)
                    if self.served is not None:
                        self.served.inc(item.length if isinstance(item, PackSpan) else len(item))
                if rest is None:
                    break
                batch, done = await trio.to_thread.run_sync(take_spans, rest, None)
                rest = None if done else rest
            await send({"type": "http.response.body", "body": b""})
        finally:
            close_spans(batch)


def take_spans(spans: Iterator[Item], before: Callable[[], None] | None) -> tuple[list[Item], bool]:
    """The next items, up to HELD_BYTES of bytes in memory or SPANS_BATCH items: (them, whether that is
    all). ``before`` runs first in the same trip to the thread."""
    taken: list[Item] = []
    held = 0
    try:
        if before is not None:
            before()
        while held < HELD_BYTES and len(taken) < SPANS_BATCH:
            item = next(spans, None)
            if item is None:
                return taken, True
            taken.append(item)
            held += 0 if isinstance(item, PackSpan) else len(item)
    except BaseException:
        close_spans(taken)
        raise
    return taken, False


def close_spans(items: list[Item]) -> None:
    for item in items:
        if isinstance(item, PackSpan):
            item.close()
