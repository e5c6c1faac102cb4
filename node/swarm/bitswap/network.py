"""Bitswap messages on libp2p streams: our one stream to each peer, and the streams peers open to us.

A peer sends on a stream it opened itself and reads what the other side sends
on streams the other side opened (``wire``). So ``BitswapNetwork`` keeps one
outbound stream per peer, opened on first use, for the client's wants and
the server's replies alike, and ``InboundMessages`` reads the messages of one
inbound stream. What to do with them is the exchange's (``exchange``).
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from .wire import PROTOCOLS, BitswapMessage, FrameReader, decode_message, encode_frame

log = logging.getLogger("medianode.swarm")

READ_SIZE = 256 * 1024
DECODE_IN_THREAD = 64 * 1024  # bytes of messages worth a thread trip: hashing blocks releases the GIL


class BitswapNetwork:
    def __init__(self, host: IHost) -> None:
        self.host = host
        self._streams: dict[ID, INetStream] = {}
        self._send_locks: dict[ID, trio.Lock] = {}

    def has_stream(self, peer: ID) -> bool:
        return peer in self._streams

    async def send(self, peer: ID, message: BitswapMessage) -> None:
        """Send on our own stream to ``peer``, opening it on first use. Helia resets a stream that
        stays idle for 10 s, so a write that fails on an old stream is retried once on a new one."""
        payload = encode_frame(message)
        lock = self._send_locks.setdefault(peer, trio.Lock())
        async with lock:
            for attempt in (1, 2):
                stream = self._streams.get(peer)
                fresh = stream is None
                if stream is None:
                    stream = await self.host.new_stream(peer, [TProtocol(p) for p in PROTOCOLS])
                    self._streams[peer] = stream
                try:
                    await stream.write(payload)
                    return
                except Exception:
                    self._streams.pop(peer, None)
                    if fresh or attempt == 2:
                        raise

    async def disconnect(self, peer: ID) -> None:
        """Reset our stream to ``peer`` and close the connection (a dropped peer)."""
        stream = self._streams.pop(peer, None)
        if stream is not None:
            with trio.move_on_after(2):
                await stream.reset()
        with trio.move_on_after(5):
            try:
                await self.host.disconnect(peer)
            except Exception as exc:  # already gone: nothing to undo
                log.debug("disconnect failed", extra={"fields": {"peer": str(peer), "error": repr(exc)}})


class InboundMessages:
    """The messages a peer sends on one stream it opened to us, as they arrive."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._frames = FrameReader()

    async def receive(self) -> list[BitswapMessage] | None:
        """The messages completed by the next read (maybe none); None once the stream ended.
        Raises ``BitswapWireError`` for what proves the peer broken."""
        try:
            data = await self._stream.read(READ_SIZE)
        except StreamError:  # closed or reset: the peer's answers go out on our own stream anyway
            return None
        if not data:
            return None
        whole = self._frames.feed(data)
        if sum(map(len, whole)) >= DECODE_IN_THREAD:
            return await trio.to_thread.run_sync(_decode_all, whole)
        return _decode_all(whole)


def _decode_all(raws: list[bytes]) -> list[BitswapMessage]:
    return [decode_message(raw) for raw in raws]
