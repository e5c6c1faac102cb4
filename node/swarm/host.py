"""The node's libp2p host: a persistent Ed25519 identity, TCP, Noise only, Yamux only.

py-libp2p's plain ``new_host()`` also offers ``/plaintext/2.0.0``, with which a
peer may claim any peer ID, plus TLS and secio; we pass the security and
muxer options explicitly so Noise and Yamux are all a peer can negotiate.
A stream handler's uncaught exception ends py-libp2p's ``host.run()`` for
everyone (py-libp2p 0.8.1), so every handler is wrapped by ``guarded``.
Importing libp2p costs about half a second: only ``serve`` and commands that
talk to peers import this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from ..errors import InvalidRequest, MedianodeError
from ..logs import adopt_libp2p_logging
from ..storage.files import replace_file

adopt_libp2p_logging()

log = logging.getLogger("medianode.swarm")

IDENTITY_FILE = "identity.key"
Handler = Callable[[INetStream], Awaitable[None]]


class SwarmError(InvalidRequest):
    """A peer address that is not one, to report in one line (the admin API answers 400)."""


class IdentityError(MedianodeError):
    """The node's own identity file is unusable: this node's data, not anyone's request."""


def load_identity(data_dir: Path) -> KeyPair:
    """The node's key pair from ``identity.key`` (a 32-byte Ed25519 seed), created on first use."""
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        replace_file(path, os.urandom(32))
    seed = path.read_bytes()
    if len(seed) != 32:
        raise IdentityError(f"{path} is not a 32-byte Ed25519 seed")
    private = Ed25519PrivateKey.from_bytes(seed)
    return KeyPair(private, private.get_public_key())


MAX_CONNECTIONS = 256


def make_host(key_pair: KeyPair, listen: list[multiaddr.Multiaddr]) -> IHost:
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    # py-libp2p's AutoConnector dials peers from its peerstore (which the DHT fills) up to
    # the middle of the two watermarks; that would also bring back peers we dropped for
    # misbehaving. Both watermarks at 0 turn it off: we choose whom to dial.
    connections = ConnectionConfig(
        max_connections=MAX_CONNECTIONS, min_connections=0, low_watermark=0, high_watermark=0
    )
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=listen,
        enable_mDNS=False,
        enable_upnp=False,
        connection_config=connections,
    )


def parse_peer_addr(text: str) -> PeerInfo:
    """``/ip4/…/tcp/…/p2p/PEERID`` into a PeerInfo, or a SwarmError saying what is wrong."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(text))
    except Exception as exc:  # multiaddr raises several unrelated types for bad input
        raise SwarmError(f"not a peer address (/ip4/HOST/tcp/PORT/p2p/PEERID): {text!r}: {exc}") from None


def peer_of(stream: INetStream) -> ID:
    return stream.muxed_conn.peer_id


def guarded(name: str, handler: Handler) -> Handler:
    """A stream handler that can fail without taking the host down: log, reset the stream."""

    async def run(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            log.info("stream handler failed", extra={"fields": {"protocol": name, "error": repr(exc)}})
            with contextlib.suppress(Exception):  # the stream may be gone already
                await stream.reset()

    return run


def set_handlers(host: IHost, protocols: tuple[str, ...], handler: Handler) -> None:
    for protocol in protocols:
        host.set_stream_handler(TProtocol(protocol), guarded(protocol, handler))
