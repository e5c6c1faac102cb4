"""Response bodies sent from a file with ``sendfile``: ASGI's ``http.response.zerocopysend`` for Hypercorn.

Participants. An application (the gateway answering a range of a stored
file), Hypercorn 0.18's HTTP/1.1 protocol on trio, and the connection's
socket. Hypercorn implements no zero-copy extension: every body goes through
``bytes``, h11's join and ``send``, so a 1 MiB range costs a ``pread`` into
Python and a copy back into the kernel. Here the pack file's pages go to the
socket without passing through Python.

Goals. The ASGI message ``{"type": "http.response.zerocopysend", "file": fd
or file object, "offset": n, "count": n, "more_body": bool}``, offered in
``scope["extensions"]`` on HTTP/1.x connections, after an
``http.response.start`` and mixed freely with ``http.response.body``
messages. h11 keeps the framing (it counts the span against Content-Length,
or chunks it); the send itself is :func:`send_file` on the socket,
``await``-ed like any other send, so the file may be closed once ``send``
returns.

An ``http.response.start`` that carries ``"zerocopy": True`` says the next
body message is a ``zerocopysend``: its head is then held and written just
before the span, in one trip through the connection's send path instead of
two. (Not with ``MSG_MORE`` or ``TCP_CORK``: with either, responses waited
up to 200 ms on loopback, and 1 MiB ranges from 32 connections fell from
1,050 to 195 requests/s with a p99 of 230 ms.)

Non-goals. HTTP/2 (Hypercorn's h2 streams never see the extension), TLS
(the gateway listens in plain HTTP behind a proxy) and ``count`` omitted
(the file's size is the application's to know).

How it is put into Hypercorn: :func:`install` replaces, by name,
``HTTPStream`` in ``hypercorn.protocol.h11`` and ``H11Protocol`` in
``hypercorn.protocol`` with the subclasses here. The stream turns the message
into a :class:`FileBody` event; the protocol turns that into h11's
``Data`` with a :class:`FileSpan` (h11's ``send_with_data_passthrough`` hands
such an object back untouched) and sends it on as :class:`RawFile`, which
the connection's ``protocol_send`` (node/gateway/connections.py) writes with
:func:`send_file`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from itertools import chain
from typing import Any, cast

import h11
import hypercorn.protocol as hypercorn_protocol
import hypercorn.protocol.h11 as hypercorn_h11
import trio
from hypercorn.events import Event, RawData
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.typing import AppWrapper
from hypercorn.utils import build_and_validate_headers, suppress_body

ZEROCOPY = "http.response.zerocopysend"
SENDFILE_MAX = 1 << 24  # bytes per sendfile call: a long body still yields to other connections between calls
BROKEN = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)


@dataclass(frozen=True, slots=True)
class FileSpan:
    """``count`` bytes at ``offset`` of the open file ``fd``; ``len`` is what h11 counts."""

    fd: int
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class FileBody(StreamEvent):
    """What the stream sends its protocol for a zero-copy message (beside Hypercorn's ``Body``), with the
    response's head when it was held for it."""

    span: FileSpan
    head: Response | None = None


@dataclass(frozen=True)
class RawFile(Event):
    """What the protocol sends the connection (beside Hypercorn's ``RawData``): ``head`` bytes, then the span."""

    span: FileSpan
    head: bytes = b""


class SendIdle(Exception):
    """The client took nothing of the span for the send-idle bound."""


async def send_file(sock: trio.socket.SocketType, head: bytes, span: FileSpan, idle_timeout: float) -> int:
    """Write ``head`` and then ``span`` to the non-blocking ``sock`` (the span with ``sendfile``), waiting
    for room between calls; the span's bytes written, which are fewer than its count only when the kernel
    cannot ``sendfile`` from this file (EINVAL, ENOSYS): the caller then sends the rest from :func:`read_rest`.

    Raises ``trio.BrokenResourceError`` when the client went away, ``trio.ClosedResourceError`` when
    the socket was closed, and :class:`SendIdle` when the client took nothing for ``idle_timeout``."""
    view = memoryview(head)
    while view:
        with trio.move_on_after(idle_timeout):
            try:
                view = view[await sock.send(view) :]
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from None
            continue
        raise SendIdle
    offset, end = span.offset, span.offset + span.count
    while offset < end:
        if sock.fileno() < 0:
            raise trio.ClosedResourceError("the connection's socket was closed")
        try:
            sent = os.sendfile(sock.fileno(), span.fd, offset, min(end - offset, SENDFILE_MAX))
        except BlockingIOError:
            with trio.move_on_after(idle_timeout):
                await trio.lowlevel.wait_writable(sock.fileno())
                continue
            raise SendIdle from None
        except OSError as exc:
            if exc.errno in BROKEN:
                raise trio.BrokenResourceError(str(exc)) from None
            if exc.errno in (errno.EINVAL, errno.ENOSYS) and offset == span.offset:
                return 0
            raise
        if sent == 0:
            raise OSError(errno.EIO, f"the file ends {end - offset} bytes before the span does")
        offset += sent
        await trio.lowlevel.checkpoint()
    return span.count


class ZeroCopyHTTPStream(HTTPStream):
    """Hypercorn's HTTP stream, offering and taking ``http.response.zerocopysend`` on HTTP/1.x."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(cast(AppWrapper, _Offering(app)), *args, **kwargs)
        self.held: Response | None = None  # a response's head kept for the span that follows it

    async def app_send(self, message: Any) -> None:
        if message is not None and self.closed:
            # The client is gone (a send failed, or it closed). Hypercorn would still frame what the app
            # sends: h11, which counted a whole span before it was sent, would then take the response for
            # complete and keep the dead connection for the next request until keep-alive ran out.
            return
        kind = None if message is None else message.get("type")
        if kind == "http.response.start" and message.get("zerocopy") and self.state == ASGIHTTPState.REQUEST:
            self.response = message
            headers = build_and_validate_headers(message.get("headers", []))
            self.held = Response(stream_id=self.stream_id, headers=headers, status_code=int(message["status"]))
            self.state = ASGIHTTPState.RESPONSE
            return
        held, self.held = self.held, None
        if kind != ZEROCOPY or self.state != ASGIHTTPState.RESPONSE:
            if held is not None:
                await self.send(held)
            await super().app_send(message)
            return
        file = message["file"]
        fd = file if isinstance(file, int) else file.fileno()
        span = FileSpan(fd, int(message.get("offset", 0)), int(message["count"]))
        if span.count and not suppress_body(self.scope["method"], int(self.response["status"])):
            await self.send(FileBody(stream_id=self.stream_id, span=span, head=held))
        elif held is not None:
            await self.send(held)
        if not message.get("more_body", False):
            await self._send_closed()


class _Offering:
    """The application behind a :class:`ZeroCopyHTTPStream`, told in its scope that it may send files."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, *args: Any) -> Any:
        scope["extensions"][ZEROCOPY] = {}
        return await self.app(scope, *args)


class ZeroCopyH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, framing a :class:`FileBody` with h11 and sending it as :class:`RawFile`."""

    async def stream_send(self, event: StreamEvent) -> None:
        if not isinstance(event, FileBody):
            await super().stream_send(event)
            return
        connection = self.connection
        assert isinstance(connection, h11.Connection)  # a WebSocket connection never has an HTTP stream
        try:
            head = b"" if event.head is None else connection.send(self._h11_response(event.head))
            parts = connection.send_with_data_passthrough(h11.Data(data=event.span))  # type: ignore[arg-type]
        except h11.LocalProtocolError:
            if connection.their_state != h11.ERROR:
                raise
            return
        before: list[bytes] = []  # framing ahead of the span (a chunk's size line) goes with the head
        for part in parts or ():
            if isinstance(part, FileSpan):
                await self.send(RawFile(part, head + b"".join(before)))
                head, before = b"", []
            elif head or before:
                before.append(part)
            else:
                await self.send(RawData(data=part))

    def _h11_response(self, response: Response) -> h11.Response:
        """What Hypercorn's own ``stream_send`` makes of a final response's head."""
        headers = list(chain(response.headers, self.config.response_headers("h11")))
        if self.keep_alive_requests >= self.config.keep_alive_max_requests:
            headers.append((b"connection", b"close"))
        return h11.Response(headers=headers, status_code=response.status_code)


def read_rest(span: FileSpan, done: int, piece: int = 1 << 20) -> Any:
    """The bytes of ``span`` after its first ``done``, in pieces: for a socket or file ``sendfile`` refuses."""
    offset, end = span.offset + done, span.offset + span.count
    while offset < end:
        data = os.pread(span.fd, min(piece, end - offset), offset)
        if not data:
            raise OSError(errno.EIO, f"the file ends {end - offset} bytes before the span does")
        offset += len(data)
        yield data


def install() -> None:
    """Have Hypercorn's HTTP/1.1 connections build the subclasses here (see the module's doc)."""
    current_stream = hypercorn_h11.HTTPStream  # type: ignore[attr-defined]
    if current_stream is not HTTPStream and current_stream is not ZeroCopyHTTPStream:
        raise RuntimeError(f"hypercorn.protocol.h11.HTTPStream is {current_stream!r}, not Hypercorn's")
    current_protocol = hypercorn_protocol.H11Protocol  # type: ignore[attr-defined]
    if current_protocol is not H11Protocol and current_protocol is not ZeroCopyH11Protocol:
        raise RuntimeError(f"hypercorn.protocol.H11Protocol is {current_protocol!r}, not Hypercorn's")
    hypercorn_h11.HTTPStream = ZeroCopyHTTPStream  # type: ignore[attr-defined]
    hypercorn_protocol.H11Protocol = ZeroCopyH11Protocol  # type: ignore[attr-defined]
