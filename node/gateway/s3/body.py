"""Reading an S3 request's body from ASGI ``receive``: batches, an idle bound, its Content-Length.

Uploads are the S3 listener's heaviest path, so the body is read here straight
from the ASGI messages rather than through Starlette's per-chunk stream and
layers of async generators: messages (64 KiB from Hypercorn) are gathered into
batches of about ``batch`` bytes, joined once, and only batches go on to the
aws-chunked decoder and the hashing threads. One cancel scope per batch holds
the idle bound; its deadline moves with every message, so a slow but steady
upload (a phone on a bad link) keeps going while one that stops is refused.

The reader remembers whether the body has ended, so a refused request can drain
what is left of it (bounded) without waiting on a ``receive`` that has nothing
more to give.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from .errors import S3Error

BODY_IDLE_TIMEOUT = 60.0  # seconds a request body may pause before the request is refused
DRAIN_LIMIT = 64 * 1024 * 1024  # bytes of a refused upload read and dropped before answering
DRAIN_SECONDS = 30.0
TIMEOUT = "Your socket connection to the server was not read from or written to within the timeout period."
SHORT_BODY = "You did not provide the number of bytes specified by the Content-Length HTTP header"
LONG_BODY = "The body is longer than its Content-Length"


class BodyReader:
    """One request's body, read once: :meth:`batches` for the handler, :meth:`drain` after a refusal."""

    def __init__(self, receive: Receive, idle_timeout: float = BODY_IDLE_TIMEOUT) -> None:
        self._receive = receive
        self._idle_timeout = idle_timeout
        self.ended = False  # the last body message has arrived (or the client went away)
        self.started = False

    async def _next(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.ended = True
            raise ClientDisconnect()
        if not message.get("more_body", False):
            self.ended = True
        body: bytes = message.get("body", b"")
        return body

    async def batches(self, length: int | None, batch: int) -> AsyncIterator[bytes]:
        """The body in pieces of at least ``batch`` bytes (the last may be shorter; none for an empty
        body), refused if it pauses longer than the idle bound or disagrees with ``length``."""
        if self.started:
            raise RuntimeError("the request body has been read already")
        self.started = True
        seen = 0
        while not self.ended:
            pieces: list[bytes] = []
            held = 0
            with trio.move_on_after(self._idle_timeout) as scope:
                while not self.ended and held < batch:
                    chunk = await self._next()
                    scope.deadline = trio.current_time() + self._idle_timeout
                    if chunk:
                        pieces.append(chunk)
                        held += len(chunk)
            if scope.cancelled_caught:
                raise S3Error("RequestTimeout", 400, TIMEOUT)
            seen += held
            if length is not None and seen > length:
                raise S3Error("InvalidRequest", 400, LONG_BODY)
            if held:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if length is not None and seen < length:
            raise S3Error("IncompleteBody", 400, SHORT_BODY)

    async def drain(self) -> None:
        """Read and drop what is left of the body (at most ``DRAIN_LIMIT`` bytes and ``DRAIN_SECONDS``), so
        a client still sending gets the error instead of a reset connection."""
        left = DRAIN_LIMIT
        with trio.move_on_after(DRAIN_SECONDS):
            try:
                while not self.ended and left >= 0:
                    left -= len(await self._next())
            except ClientDisconnect:
                return
