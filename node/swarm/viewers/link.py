"""One WebRTC connection from a Python viewer to a peer of the swarm, and the serving side of it.

A ``PeerLink`` carries the connection's state (who offered, the signals
relayed for it, whether its data channel is open) and serves the peer's
requests: at most ``MAX_OUTSTANDING`` queued or being sent (more are
rejected), one piece at a time, each sent as ``piece`` chunks paced by the
channel's buffered amount (``RtcPeer.send_paced``). A ``cancel`` takes a
piece off the queue or stops the one being sent. Which pieces to *ask* for
is the picker's business, and what arrives is the viewer's.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ...storage.errors import StoreError
from .protocol import MAX_OUTSTANDING, PIECE_CHUNK, PeerMessage, PieceChunk, Reject, encode_peer_message
from .rtc_bridge import ChannelClosed, ChannelOpen, RtcError, RtcPeer

log = logging.getLogger("medianode.viewers")


@dataclass(eq=False)
class PeerLink:
    peer: str
    offerer: bool
    signals: trio.MemorySendChannel[dict[str, Any]]
    inbox: trio.MemoryReceiveChannel[dict[str, Any]]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    rtc: RtcPeer | None = None
    open: bool = False
    queue: deque[int] = field(default_factory=deque)  # requests to serve, in order
    queued: trio.Event = field(default_factory=trio.Event)
    sending: int | None = None
    sending_scope: trio.CancelScope | None = None
    drop_reason: str | None = None  # set when we drop the peer for misbehaving

    def send(self, message: PeerMessage, count: int) -> None:
        if self.rtc is not None and self.open:
            self.rtc.send(encode_peer_message(message, count))

    async def wait_open(self) -> bool:
        """Whether the data channel opens (False: the connection ended first)."""
        assert self.rtc is not None
        async for event in self.rtc.events:
            if isinstance(event, ChannelOpen):
                return True
            if isinstance(event, ChannelClosed):
                return False
        return False

    # -- serving

    def requested(self, index: int, held: bool, count: int) -> None:
        """The peer asked for ``index``: queue it, or reject it when not held or the peer is over its share."""
        if index == self.sending or index in self.queue:
            return
        busy = len(self.queue) + (self.sending is not None) >= MAX_OUTSTANDING
        if busy or not held:
            self.send(Reject(index), count)
            return
        self.queue.append(index)
        self.queued.set()

    def cancelled(self, index: int) -> None:
        if index in self.queue:
            self.queue.remove(index)
        elif index == self.sending and self.sending_scope is not None:
            self.sending_scope.cancel()

    async def serve(self, read: Callable[[int], bytes], count: int, sent: Callable[[int], None], cid: str) -> None:
        """Send queued pieces (read with ``read``) until the link ends; ``sent`` gets each whole piece's size."""
        rtc = self.rtc
        assert rtc is not None
        while True:
            while not self.queue:
                await self.queued.wait()
                self.queued = trio.Event()
            index = self.queue.popleft()
            try:
                data = read(index)
            except (OSError, StoreError) as exc:
                log.warning("cannot read a piece", extra={"fields": {"cid": cid, "piece": index, "error": str(exc)}})
                self.send(Reject(index), count)
                continue
            chunks = [
                encode_peer_message(PieceChunk(index, offset, data[offset : offset + PIECE_CHUNK]), count)
                for offset in range(0, len(data), PIECE_CHUNK)
            ]
            with trio.CancelScope() as scope:
                self.sending, self.sending_scope = index, scope
                try:
                    await rtc.send_paced(chunks)
                except RtcError:
                    self.scope.cancel()
                    return
                sent(len(data))
            self.sending, self.sending_scope = None, None
