"""Bounds on the HTTP connections of both listeners (gateway and S3), and the Hypercorn faults worked around.

What is bounded, and why (defaults below, each overridable from the environment):

- Request headers must be complete ``HEADER_TIMEOUT`` seconds after their first byte, or the client
  gets 408 and the connection closes: one that dribbles a byte a second would otherwise hold its
  connection (and, below, a slot of its address) until keep-alive idles it out.
- A gateway request body that pauses longer than ``BODY_IDLE_TIMEOUT`` gets 408 and the connection
  closes. The bound is per pause, never on the whole body, so a slow but steady upload (a phone on a
  bad link) goes on. The S3 listener's bodies already have this bound, with S3's own error
  (its ``BODY_IDLE_TIMEOUT``, the same default), so it is not applied twice there.
- A response the client stops reading for ``SEND_IDLE_TIMEOUT`` seconds (not 256 KiB of it taken)
  is dropped, so a reader that went away without closing does not hold a connection for ever.
- At most ``CONNECTIONS_PER_IP`` connections at a time per client address (IPv6: per /64, which one
  client usually has whole) on each listener; more are answered 503 with ``Retry-After`` and closed.
  An answer rather than a bare close: S3 SDKs and HTTP clients back off on a 503, while a reset is
  retried at once, which makes a flood worse. Loopback counts too: a reverse proxy in front shows
  as one address, and should then hold its own per-client bound, with this one raised.

The Hypercorn 0.18 faults (trio worker, HTTP/1.1):

- ``H11Protocol._maybe_recycle`` ends a connection that must close (HTTP/1.0, ``Connection: close``)
  from the application's own task, after handing it ``http.disconnect``. Starlette's
  ``StreamingResponse`` answers the disconnect by cancelling its task group, and the ``Cancelled``
  lands in ``TCPServer._close`` (at ``send_eof``'s checkpoint) before the socket is closed: the last
  chunk is sent and the client never sees EOF. :class:`GuardedTCPServer` shields the close.
- ``TCPServer.protocol_send`` shields ``send_all``, so the graceful-timeout cancel of a shutdown never
  reaches a send blocked on a client that stopped reading and ``serve`` does not stop.
  :class:`GuardedTCPServer` closes the socket when its connection is cancelled, which wakes the send.
- ``TCPServer._close`` half-closes the socket (``send_eof``) without the ``send_lock`` every other send
  takes. A WebSocket whose client sends its close frame as the app closes has two tasks on the socket:
  the app's task ends the connection (``send_eof``, which yields inside trio's send-conflict check) while
  the reading task answers the client's close frame (``send_all``). Trio raises ``BusyResourceError`` in
  the second, ``protocol_send`` catches only ``Broken``/``ClosedResourceError``, and from the reading task
  the error left ``TCPServer.run`` into the server's nursery: any client could end ``serve``.
  :class:`GuardedStream` serialises its sends and half-close on one lock, and :class:`GuardedTCPServer`
  ends (and logs) a connection on any error it raises, so no error of one connection reaches the others.
- The WebSocket ping task (``websocket_ping_interval``, 30 s in node/daemon.py) sleeps its interval
  before it sees that its socket closed, and ``TCPServer.run`` returns only when it has: a closed
  WebSocket held its slot of the per-address bound for up to 30 s. The connection's sleeps now end when
  its socket closes, and the slot is released once the socket is closed and no application call of the
  connection is still running (the work a client leaves behind still counts against its address).

- A request answered without its body read (a 401 to an upload, a 413) left the connection hung for its
  next request: Hypercorn queues the body's messages and, when the application has returned,
  ``http.disconnect`` into a channel of ``max_app_queue_size`` messages (2 here, node/daemon.py) that
  nobody reads; the disconnect is put from inside the application's last ``send``, which then never
  returns. :class:`GuardedTaskGroup` never waits to put a disconnect (it is kept until the application
  has read what is ahead of it), empties the channel when the application returns and drops what comes
  after.

Not a fault but a cost: Hypercorn's keep-alive timer spawned a task (``nursery.start``, a trip through the
scheduler) each time a request ended and cancelled it when the next began; :class:`KeepAlive` is one task
per connection whose deadline moves (one process serving 1 MiB ranges: ~1,050 -> ~1,400 requests/s).

Hypercorn builds its ``TCPServer`` by name inside ``hypercorn.trio.run``, and the ``TaskGroup`` of a
connection by name inside ``hypercorn.trio.tcp_server``; :func:`serve` puts the subclasses there (the
server behaves as Hypercorn's own for a config that is not a :class:`GuardedConfig`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import hypercorn.trio.run as hypercorn_run
import hypercorn.trio.tcp_server as hypercorn_tcp_server
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.task_group import _handle as hypercorn_handle
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import (
    AppWrapper,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    LifespanState,
)
from hypercorn.typing import Scope as HypercornScope
from starlette.types import Message, Receive, Scope, Send

from ..config import ConfigError, positive_from_environ
from . import zerocopy
from .zerocopy import FileSpan, RawFile, SendIdle, read_rest, send_file

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # the stubs libp2p installs hide trio's own TaskStatus from mypy

log = logging.getLogger("medianode.gateway")

App = Callable[..., Awaitable[None]]  # an ASGI app (the gateway's is typed with dicts, Starlette's with mappings)

HEADER_TIMEOUT = 30.0  # seconds from a request's first byte to the end of its headers
BODY_IDLE_TIMEOUT = 60.0  # seconds a gateway request body may pause; the S3 listener's own bound is the same
SEND_IDLE_TIMEOUT = 120.0  # seconds a response may wait on a client that does not read
KEEP_ALIVE_TIMEOUT = 75.0  # seconds an idle connection waits for its next request (beyond common proxies' 60 s)
CONNECTIONS_PER_IP = 64  # concurrent connections per client address per listener (benchmarks use 32)
# The send-idle bound restarts after each slice, so it is about progress (2 KiB/s at the default is below
# any real link), not speed; 64 KiB slices cost a third of a full GET's throughput on loopback, 256 KiB nothing.
SEND_SLICE = 256 * 1024
# Hypercorn reads 64 KiB at a time; an upload then costs an h11 event, an ASGI message and a wake-up per
# 64 KiB, which was a third of the S3 listener's CPU per GiB. Larger reads cut that (presigned PUT 165 ->
# 300 MiB/s at 1 MiB); 512 KiB keeps most of it while four parts of a multipart upload at once stay under
# the 150 MiB bound (1 MiB reads: 160-186 MiB). A short request still takes one read.
RECEIVE_SIZE = 512 * 1024
REFUSAL_LINGER = 1.0  # seconds a refused connection is drained, so the client reads the 503, not a reset
RETRY_AFTER = 2

ENVIRONMENT = {
    "header_timeout": "MEDIANODE_HEADER_TIMEOUT",
    "body_idle_timeout": "MEDIANODE_BODY_IDLE_TIMEOUT",
    "send_idle_timeout": "MEDIANODE_SEND_IDLE_TIMEOUT",
    "keep_alive_timeout": "MEDIANODE_KEEP_ALIVE_TIMEOUT",
    "per_ip": "MEDIANODE_CONNECTIONS_PER_IP",
}

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: %d\r\ncontent-length: 46\r\nconnection: close\r\n\r\n"
    b"too many connections from this address; retry\n" % RETRY_AFTER
)


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds of one listener; ``per_ip`` 0 means no bound on connections per address."""

    header_timeout: float = HEADER_TIMEOUT
    body_idle_timeout: float = BODY_IDLE_TIMEOUT
    send_idle_timeout: float = SEND_IDLE_TIMEOUT
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT
    per_ip: int = CONNECTIONS_PER_IP

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> ConnectionLimits:
        """The defaults, with ``MEDIANODE_HEADER_TIMEOUT``, ``MEDIANODE_BODY_IDLE_TIMEOUT``,
        ``MEDIANODE_SEND_IDLE_TIMEOUT``, ``MEDIANODE_KEEP_ALIVE_TIMEOUT`` (seconds) and
        ``MEDIANODE_CONNECTIONS_PER_IP`` where set."""
        defaults = cls()
        seconds = {
            field: positive_from_environ(environ, ENVIRONMENT[field], getattr(defaults, field), "seconds")
            for field in ("header_timeout", "body_idle_timeout", "send_idle_timeout", "keep_alive_timeout")
        }
        return cls(**seconds, per_ip=_count(environ, ENVIRONMENT["per_ip"], defaults.per_ip))


def _count(environ: Mapping[str, str], variable: str, default: int) -> int:
    text = environ.get(variable, "").strip()
    if not text:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ConfigError(f"{variable} must be a whole number (0: no bound), got {text!r}")
    return int(text)


class AddressCounter:
    """Open connections per client address, for one listener."""

    def __init__(self, per_ip: int) -> None:
        self.per_ip = per_ip
        self.open: dict[str, int] = {}

    def admit(self, key: str) -> bool:
        held = self.open.get(key, 0)
        if self.per_ip and held >= self.per_ip:
            return False
        self.open[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self.open.pop(key) - 1
        if held:
            self.open[key] = held


def address_key(peer: Any) -> str:
    """What one client is: its IPv4 address, or the /64 of its IPv6 one (an IPv4-mapped one as IPv4)."""
    host = peer[0] if isinstance(peer, tuple) else str(peer)
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host  # not an IP socket (a Unix socket has one "address"): bounded as one client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class GuardedConfig(HypercornConfig):
    """A Hypercorn config that carries its listener's :class:`ConnectionLimits` and address counts."""

    def __init__(self, limits: ConnectionLimits) -> None:
        super().__init__()
        self.limits = limits
        self.counter = AddressCounter(limits.per_ip)


class GuardedStream(trio.abc.HalfCloseableStream):
    """A connection's socket stream with the header and send-idle bounds; Hypercorn reads and writes
    through it. It tells apart waiting for a request's headers from the rest by the ``Updated`` events
    Hypercorn's protocol sends (see :meth:`GuardedTCPServer.protocol_send`)."""

    def __init__(self, inner: trio.SocketStream, limits: ConnectionLimits) -> None:
        self.inner = inner
        self.socket = inner.socket  # what Hypercorn asks a plain (not TLS) stream for
        self.limits = limits
        self.awaiting_headers = True
        self.header_deadline: float | None = None
        # Hypercorn's own lock covers its send_all calls but not the send_eof of its _close (see the module's
        # doc); every send of the socket takes this one, so trio never sees two at once.
        self.sending = trio.Lock()
        self.closed = trio.Event()  # set when the socket is closed, whoever closed it

    def close_socket(self) -> None:
        """Close the socket now: wakes a send or receive blocked on it, which then ends the connection."""
        self.inner.socket.close()
        self.closed.set()

    def headers_awaited(self, awaited: bool) -> None:
        self.awaiting_headers = awaited
        self.header_deadline = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        max_bytes = RECEIVE_SIZE if max_bytes is None else max(max_bytes, RECEIVE_SIZE)
        if self.header_deadline is None:
            # No deadline before a request's first byte: a quiet keep-alive connection is Hypercorn's
            # keep_alive_timeout's to close, silently, as clients expect of an idle connection.
            data = await self.inner.receive_some(max_bytes)
            if data and self.awaiting_headers:
                self.header_deadline = trio.current_time() + self.limits.header_timeout
            return data
        with trio.move_on_at(self.header_deadline):
            return await self.inner.receive_some(max_bytes)
        # Nothing of the response has been sent while its request's headers are still arriving.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send_all(REQUEST_TIMEOUT)
        raise trio.TooSlowError  # Hypercorn's reader takes this as the end of the connection

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        async with self.sending:
            for start in range(0, max(len(view), 1), SEND_SLICE):
                with trio.move_on_after(self.limits.send_idle_timeout):
                    await self.inner.send_all(view[start : start + SEND_SLICE])
                    continue
                self.close_socket()  # wakes the reader as well, so the whole connection ends
                raise trio.BrokenResourceError("the client stopped reading the response")

    async def send_file(self, head: bytes, span: FileSpan) -> None:
        """Send ``head``, then ``span`` straight from its file (node/gateway/zerocopy.py), with the same
        send-idle bound."""
        async with self.sending:
            try:
                done = await send_file(self.inner.socket, head, span, self.limits.send_idle_timeout)
            except SendIdle:
                self.close_socket()
                raise trio.BrokenResourceError("the client stopped reading the response") from None
        for piece in read_rest(span, done):
            await self.send_all(piece)

    async def wait_send_all_might_not_block(self) -> None:
        async with self.sending:
            await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        # After a send in progress (bounded by the send-idle bound, and woken by a close of the socket), so
        # what it sends (a WebSocket's close frame) reaches the client before the end.
        async with self.sending:
            await self.inner.send_eof()

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.closed.set()


class ConnectionContext:
    """One connection's view of the worker's :class:`WorkerContext`: the same in everything but ``sleep``,
    which ends early when the connection's socket is closed. Hypercorn's WebSocket ping task sleeps
    its interval (30 s) between pings, and ``TCPServer.run`` waits for it after the socket closed."""

    def __init__(self, worker: WorkerContext, closed: trio.Event) -> None:
        self._worker = worker
        self._closed = closed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._worker, name)

    async def sleep(self, wait: float) -> None:
        with trio.move_on_after(wait):
            await self._closed.wait()


class TrackedApp:
    """The ASGI app of one connection, counting its calls still running (see :class:`GuardedTCPServer`)."""

    def __init__(self, app: AppWrapper, ended: Callable[[], None]) -> None:
        self.app = app
        self.ended = ended
        self.running = 0

    async def __call__(
        self,
        scope: HypercornScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None:
        self.running += 1
        try:
            await self.app(scope, receive, send, sync_spawn, call_soon)
        finally:
            self.running -= 1
            self.ended()


class GuardedTaskGroup(TaskGroup):
    """Hypercorn's task group of one connection, where handing the application a message never waits on an
    application that will not read it (see the module's doc): a disconnect that finds the channel full is
    delivered once the application has read what is ahead of it, and messages for an application that has
    returned are dropped."""

    async def spawn_app(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        scope: HypercornScope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        sender, receiver = trio.open_memory_channel[ASGIReceiveEvent](config.max_app_queue_size)
        finished = False
        disconnect: ASGIReceiveEvent | None = None  # one that found the channel full

        async def run_app(scope: HypercornScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                          sync_spawn: Callable[..., Any], call_soon: Callable[..., Any]) -> None:  # fmt: skip
            nonlocal finished
            try:
                await app(scope, receive, send, sync_spawn, call_soon)
            finally:
                finished = True
                with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    while True:  # also takes what a put blocked on the full channel was waiting to hand over
                        receiver.receive_nowait()

        async def receive() -> ASGIReceiveEvent:
            if disconnect is not None:
                await trio.lowlevel.checkpoint()
                try:
                    return receiver.receive_nowait()
                except trio.WouldBlock:
                    return disconnect
            return await receiver.receive()

        async def put(message: ASGIReceiveEvent) -> None:
            nonlocal disconnect
            if finished:
                await trio.lowlevel.checkpoint()
            elif message["type"].endswith(".disconnect"):
                # Put from inside the application's own send once its response is complete, so waiting for
                # room here would wait on the application itself.
                await trio.lowlevel.checkpoint()
                try:
                    sender.send_nowait(message)
                except trio.WouldBlock:
                    disconnect = message
            else:
                await sender.send(message)

        assert self._nursery is not None
        self._nursery.start_soon(hypercorn_handle, run_app, config, scope, receive, send,
                                 trio.to_thread.run_sync, trio.from_thread.run)  # fmt: skip
        return put


class KeepAlive:
    """A connection's keep-alive timer, in place of Hypercorn's: one task for the connection's life that
    closes it when it has waited ``timeout`` seconds for a request, or as soon as it is idle once the
    server is stopping (see the module's doc). A request's start and end only move a deadline; Hypercorn
    calls :meth:`restart` and :meth:`stop` as it did on its own timer."""

    def __init__(self, timeout: float, terminated: Any, close: Callable[[], Awaitable[None]]) -> None:
        self.timeout = timeout
        self.terminated = terminated  # Hypercorn's context.terminated: set when the server stops
        self.close = close
        self.idle = False
        self.deadline = math.inf
        self._scope: trio.CancelScope | None = None

    async def restart(self, task_group: Any, action: Any) -> None:
        """The connection waits for its next request (Hypercorn's arguments are not needed)."""
        self.idle = True
        self.deadline = trio.current_time() + self.timeout
        if self._scope is not None:
            if self.terminated.is_set():
                self._scope.cancel()  # stopping: an idle connection closes now
            else:
                self._scope.deadline = self.deadline

    async def stop(self) -> None:
        """A request is in progress: no timeout."""
        self.idle = False
        self.deadline = math.inf
        if self._scope is not None:
            self._scope.deadline = math.inf

    async def watch(self) -> None:
        while True:
            with trio.CancelScope(deadline=self.deadline) as scope:
                self._scope = scope
                if self.terminated.is_set():
                    await trio.sleep_forever()  # busy while stopping: until the request ends (restart)
                else:
                    await self.terminated.wait()
            self._scope = None
            if self.idle and (self.terminated.is_set() or trio.current_time() >= self.deadline):
                break
        with trio.CancelScope(shield=True):
            await self.close()


class GuardedTCPServer(TCPServer):
    """Hypercorn's connection handler with the bounds of a :class:`GuardedConfig` and the two faults
    (see the module's doc) worked around; for any other config it is Hypercorn's own."""

    def __init__(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        context: WorkerContext,
        state: LifespanState,
        stream: trio.SSLStream,
    ) -> None:
        self.guarded: GuardedStream | None = None
        self.tracked: TrackedApp | None = None
        self.scope = trio.CancelScope()  # the whole connection, Hypercorn's tasks for it included
        self.release: Callable[[], None] | None = None  # frees this connection's slot of its address's bound
        if isinstance(config, GuardedConfig) and isinstance(stream, trio.SocketStream):
            self.guarded = GuardedStream(stream, config.limits)
            stream = cast(Any, self.guarded)  # Hypercorn takes a stream without do_handshake as plain TCP
            context = cast(WorkerContext, ConnectionContext(context, self.guarded.closed))
            self.tracked = TrackedApp(app, self._release_if_done)
            app = self.tracked
        super().__init__(app, config, context, state, stream)
        self.keep_alive: KeepAlive | None = None
        if self.guarded is not None:
            self.keep_alive = KeepAlive(config.keep_alive_timeout, self.context.terminated, self._initiate_server_close)
            self.idle_task = cast(Any, self.keep_alive)

    async def run(self) -> None:
        if self.guarded is None or not isinstance(self.config, GuardedConfig):
            await super().run()
            return
        counter = self.config.counter
        try:
            key = address_key(self.guarded.socket.getpeername())
        except OSError:  # gone already
            await self.guarded.aclose()
            return
        if not counter.admit(key):
            await self._refuse(self.guarded.inner)
            return
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                counter.release(key)

        self.release = release
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._close_when_cancelled)
                    nursery.start_soon(self._release_when_closed)
                    if self.keep_alive is not None:
                        nursery.start_soon(self.keep_alive.watch)
                    await super().run()
                    nursery.cancel_scope.cancel()
        except* Exception as errors:
            # Last resort: whatever Hypercorn, the stream or this class raised ends this connection, not
            # the server's nursery (and with it every other connection and serve).
            log.error(
                "connection ended by an unexpected error",
                exc_info=errors,
                extra={"fields": {"client": key, "error": repr(errors.exceptions[0])}},
            )
            self.guarded.close_socket()
        finally:
            release()

    async def _close_when_cancelled(self) -> None:
        """Hypercorn's sends are shielded: when this connection is cancelled (the end of a graceful
        stop), closing the socket is what makes a send blocked on a client that stopped reading return."""
        assert self.guarded is not None
        try:
            await trio.sleep_forever()
        finally:
            self.guarded.close_socket()

    async def _release_when_closed(self) -> None:
        assert self.guarded is not None
        await self.guarded.closed.wait()
        self._release_if_done()

    def _release_if_done(self) -> None:
        """The slot goes when the socket is closed and no application call of the connection runs: what
        else Hypercorn still has going for it (a WebSocket's ping task) holds nothing of the client's."""
        if (
            self.release is not None
            and self.guarded is not None
            and self.guarded.closed.is_set()
            and self.tracked is not None
            and not self.tracked.running
        ):
            self.release()

    @staticmethod
    async def _refuse(stream: trio.SocketStream) -> None:
        with trio.move_on_after(REFUSAL_LINGER):
            try:
                await stream.send_all(TOO_MANY)
                await stream.send_eof()
                while await stream.receive_some(65536):
                    pass  # what the client sends meanwhile; closing with it unread would reset the answer
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await stream.aclose()

    async def _read_data(self) -> None:
        await super()._read_data()
        if self.guarded is not None and self.guarded.awaiting_headers:
            # The client's side has ended (EOF, a read error, the header bound) with no request in
            # progress: nothing more can happen here. Hypercorn would keep the connection (and its slot of
            # the address's bound) until its keep-alive timer ran out.
            self.scope.cancel()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawFile):
            await self._send_file(event.head, event.span)
            return
        if isinstance(event, RawData) and not event.data and self.guarded is not None:
            return  # h11's end of a Content-Length body: nothing to send, and a send costs two locks
        if isinstance(event, Updated) and self.guarded is not None:
            # Hypercorn's protocol says idle=False when a request's headers are complete and idle=True
            # when the connection waits for the next request.
            self.guarded.headers_awaited(event.idle)
        await super().protocol_send(event)

    async def _send_file(self, head: bytes, span: FileSpan) -> None:
        if self.guarded is None:  # Hypercorn's own stream: the file's bytes as ordinary sends
            if head:
                await super().protocol_send(RawData(data=head))
            for piece in read_rest(span, 0):
                await super().protocol_send(RawData(data=piece))
            return
        async with self.send_lock:
            try:
                with trio.CancelScope(shield=True):  # as Hypercorn's sends: a cancelled connection closes the socket
                    await self.guarded.send_file(head, span)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())

    async def _close(self) -> None:
        if self.guarded is None:
            await super()._close()
            return
        with trio.CancelScope(shield=True):  # never blocks: half-close and close of the socket
            await super()._close()


class BoundedBodies:
    """ASGI middleware: a request body that pauses longer than ``idle_timeout`` is answered 408 (while no
    response has started) with the connection closed, and the app reads ``http.disconnect``. The clock
    runs only while the app waits in ``receive`` for more of the body, so an app that is slow to read
    (Hypercorn then stops reading the socket) never counts against the client."""

    def __init__(self, app: App, idle_timeout: float) -> None:
        self.app = app
        self.idle_timeout = idle_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        body_ended = False
        started = False
        answered = False

        async def bounded_receive() -> Message:
            nonlocal body_ended, answered
            if body_ended:
                return await receive()
            with trio.move_on_after(self.idle_timeout):
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body_ended = True
                return message
            body_ended = True
            if not started:
                answered = True
                await send_timeout(send)
            return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # after the 408 the app's own answer (to the disconnect) has no one to go to
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, bounded_receive, guarded_send)


def _has_body(scope: Scope) -> bool:
    """Whether the request says a body follows (most of the gateway's requests, GETs, say none)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def send_timeout(send: Send) -> None:
    body = json.dumps({"error": "the request body stopped arriving"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
               (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": 408, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install() -> None:
    """Have Hypercorn's trio worker build :class:`GuardedTCPServer` for its connections, and its HTTP/1.1
    connections take zero-copy bodies (node/gateway/zerocopy.py)."""
    current = hypercorn_run.TCPServer  # type: ignore[attr-defined]
    if current is not TCPServer and current is not GuardedTCPServer:
        raise RuntimeError(f"hypercorn.trio.run.TCPServer is {current!r}, not Hypercorn's TCPServer")
    hypercorn_run.TCPServer = GuardedTCPServer  # type: ignore[attr-defined]
    current_group = hypercorn_tcp_server.TaskGroup  # type: ignore[attr-defined]
    if current_group is not TaskGroup and current_group is not GuardedTaskGroup:
        raise RuntimeError(f"hypercorn.trio.tcp_server.TaskGroup is {current_group!r}, not Hypercorn's TaskGroup")
    hypercorn_tcp_server.TaskGroup = GuardedTaskGroup  # type: ignore[attr-defined]
    zerocopy.install()


async def serve(
    app: App,
    config: GuardedConfig,
    *,
    bound_bodies: bool,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hypercorn's ``serve`` with this module's bounds; ``bound_bodies`` for an app that does not bound
    its request bodies' pauses itself."""
    install()
    if bound_bodies:
        app = BoundedBodies(app, config.limits.body_idle_timeout)
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
