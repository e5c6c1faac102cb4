"""Finding other libp2p nodes on the local network over multicast DNS.

What it does. ``open_mdns`` announces this node as ``<random>._p2p._udp.local``
with one TXT string ``dnsaddr=/ip4/IP/tcp/PORT/p2p/PEERID`` per address (the
libp2p mDNS spec; the form go-libp2p, and so kubo, reads), browses
``_p2p._udp.local`` for the others, and yields a trio channel on which every
other peer it hears of arrives as a ``PeerInfo``. ``Swarm`` dials them.

Why it is built this way. zeroconf (python-zeroconf, a py-libp2p dependency)
does the multicast DNS: probing, announcing, answering, caching, goodbyes.
It is an asyncio library: it runs on the node's asyncio bridge
(``node.swarm.asyncio_bridge``, one loop in one thread, the one this module
adds; zeroconf attaches to that running loop instead of starting its own).
Every call into zeroconf is a coroutine run there with ``bridge.run``, so
trio never blocks on it. Browser callbacks run on that loop; a peer found
there crosses into trio with ``bridge.to_trio`` and ``send_nowait`` on a
bounded channel, which never waits for trio; a peer that finds the channel
full, closed or trio gone is dropped: it is announced again. py-libp2p 0.8.1's own ``MDNSDiscovery`` is not used: its
start blocks the caller for the whole probe (about a second), spawns an
ownerless trio system task, runs two more browser threads that write the
peerstore and sleep between retries, announces ``/ip4/0.0.0.0/...`` when
listening on the wildcard, names extra addresses ``dnsaddr2=``… (which
go-libp2p ignores) and reports peers through a process-global object.

Limits. IPv4 and TCP only. Listening on 0.0.0.0 makes zeroconf join the
multicast group on every interface and announce every non-loopback IPv4
address of the machine (reachable or not, docker bridges included);
listening on given addresses limits both to those (on 127.0.0.1, nodes of
one machine find each other over loopback), though zeroconf's receiving
socket is bound to *:5353 in every case. Interfaces and addresses are taken
once, at start: a node that changes networks needs a restart to be found.
A peer is dialled when it is announced or its record changes, not again if
the connection later drops while it stays up. Anyone on the LAN can
announce anything: an announcement is only a hint where to dial; Noise
checks the peer ID and every block is checked against its CID, so at worst
a neighbour makes us try a few dials (at most ``MAX_ADDRS`` addresses per
announcement).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import string
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import ifaddr
import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .asyncio_bridge import AsyncioBridge, open_asyncio_bridge

log = logging.getLogger("medianode.swarm")

SERVICE = "_p2p._udp.local."
TTL = 120  # seconds, every record: a peer that vanishes without a goodbye is forgotten after 2 minutes
QUEUE = 64  # peers waiting to be dialled
MAX_ADDRS = 8  # addresses taken from one announcement
RESOLVE_TIMEOUT_MS = 3000
STOP_TIMEOUT = 3.0

_TCP4 = re.compile(r"/ip4/([0-9.]+)/tcp/([0-9]+)")
_KEY = re.compile(rb"dnsaddr[0-9]*")  # py-libp2p 0.8.1 writes dnsaddr=, dnsaddr2=, dnsaddr3=...


def announced_addrs(listen: list[str]) -> tuple[list[str], list[str] | None]:
    """The ``/ip4/IP/tcp/PORT`` addresses to announce for the host's bound ``listen`` addresses,
    and the interface addresses to run mDNS on (None: all of them, for a wildcard)."""
    out: list[str] = []
    interfaces: set[str] | None = set()
    for addr in listen:
        match = _TCP4.fullmatch(addr)
        if not match:
            continue
        ip, port = match.groups()
        if ip == "0.0.0.0":
            interfaces = None
            out += [f"/ip4/{own}/tcp/{port}" for own in _own_ipv4()]
        else:
            out.append(addr)
            if interfaces is not None:
                interfaces.add(ip)
    return list(dict.fromkeys(out)), None if interfaces is None else sorted(interfaces)


def _own_ipv4() -> list[str]:
    ips = [str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4]
    return [ip for ip in ips if not ipaddress.IPv4Address(ip).is_loopback]


def encode_txt(addrs: list[str], peer_id: str) -> bytes:
    """TXT record data: one length-prefixed ``dnsaddr=ADDR/p2p/PEERID`` string per address."""
    out = b""
    for addr in addrs:
        item = f"dnsaddr={addr}/p2p/{peer_id}".encode()
        if len(item) <= 255:
            out += bytes([len(item)]) + item
    return out


def decode_txt(text: bytes) -> list[str]:
    """The ``dnsaddr`` values in TXT record data (malformed strings are skipped)."""
    values = []
    i = 0
    while i < len(text):
        item = text[i + 1 : i + 1 + text[i]]
        i += 1 + text[i]
        key, sep, value = item.partition(b"=")
        if sep and _KEY.fullmatch(key):
            with contextlib.suppress(UnicodeDecodeError):
                values.append(value.decode())
    return values


def peer_from_txt(text: bytes, own_id: str) -> PeerInfo | None:
    """The peer a TXT record announces, with its dialable TCP addresses; None for ourselves,
    for no usable address, or for addresses naming different peers (only the first is taken)."""
    peer: str | None = None
    addrs: list[multiaddr.Multiaddr] = []
    for value in decode_txt(text):
        addr, sep, pid = value.rpartition("/p2p/")
        if not sep or "/" in pid or (peer is not None and pid != peer):
            continue
        try:
            parsed = multiaddr.Multiaddr(addr)
            protocols = [p.name for p in parsed.protocols()]
            host = parsed.value_for_protocol(protocols[0]) if protocols else ""
        except Exception:  # multiaddr raises several unrelated types for bad input
            continue
        if protocols not in (["ip4", "tcp"], ["ip6", "tcp"]) or ipaddress.ip_address(host).is_unspecified:
            continue
        peer = pid
        if len(addrs) < MAX_ADDRS:
            addrs.append(parsed)
    if peer is None or peer == own_id:
        return None
    try:
        peer_id = ID.from_base58(peer)
    except ValueError:  # not base58
        return None
    raw = peer_id.to_bytes()  # a multihash: identity (0x00) or sha2-256 (0x12), then the digest's length
    if len(raw) < 2 or raw[0] not in (0x00, 0x12) or raw[1] != len(raw) - 2:
        return None
    return PeerInfo(peer_id, addrs)


class _Responder:
    """Our record and the browser, living on zeroconf's loop (every method runs there)."""

    def __init__(self, zc: Zeroconf, info: ServiceInfo, own_id: str, found: Callable[[PeerInfo], None]) -> None:
        self.zc = zc
        self.info = info
        self.own_id = own_id
        self.found = found
        self.browser: AsyncServiceBrowser | None = None
        self.registered = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.resolving: set[str] = set()

    async def start(self) -> None:
        self.browser = AsyncServiceBrowser(self.zc, [SERVICE], handlers=[self._changed])
        self._spawn(self._register())

    async def _register(self) -> None:
        try:
            announced = await self.zc.async_register_service(self.info, allow_name_change=True)
            self.registered = True
            await announced
        except Exception as exc:  # browsing still works; others just do not hear of us
            log.warning("mDNS announcement failed", extra={"fields": {"error": repr(exc)}})

    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed and name not in self.resolving:
            self.resolving.add(name)
            self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        try:
            info = AsyncServiceInfo(SERVICE, name)
            if not await info.async_request(self.zc, RESOLVE_TIMEOUT_MS):
                log.debug("mDNS record did not resolve", extra={"fields": {"name": name}})
                return
            peer = peer_from_txt(info.text or b"", self.own_id)
            if peer is not None:
                self.found(peer)
        except Exception as exc:  # zeroconf stopping, a malformed record: the next announcement may do
            log.debug("mDNS record unreadable", extra={"fields": {"name": name, "error": repr(exc)}})
        finally:
            self.resolving.discard(name)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        if self.browser is not None:
            await self.browser.async_cancel()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.registered:  # goodbye packets (TTL 0): the others forget us now, not in 2 minutes
            await (await self.zc.async_unregister_service(self.info))


def _adopt_zeroconf_logging() -> None:
    """zeroconf logs socket errors as warnings to Python's last-resort handler: keep them in
    our format, and only with ``-vv``/``MEDIANODE_LOG=debug`` (as py-libp2p's, see node.logs)."""
    ours = logging.getLogger("medianode")
    theirs = logging.getLogger("zeroconf")
    theirs.propagate = False
    verbose = ours.level <= logging.DEBUG and ours.handlers
    theirs.handlers[:] = list(ours.handlers) if verbose else [logging.NullHandler()]


@asynccontextmanager
async def open_mdns(peer_id: str, listen: list[str]) -> AsyncIterator[trio.MemoryReceiveChannel[PeerInfo]]:
    """Announce ``peer_id`` at the bound ``listen`` addresses and browse for other peers, which
    arrive on the yielded channel, until exit. Never fails the caller: without mDNS (no IPv4
    TCP address, sockets refused) it logs why and yields a channel that stays empty."""
    send, receive = trio.open_memory_channel[PeerInfo](QUEUE)
    addrs, interfaces = announced_addrs(listen)
    if not addrs:
        log.info("mDNS off: no IPv4 TCP address to announce", extra={"fields": {"listen": listen}})
        async with send:
            yield receive
        return
    _adopt_zeroconf_logging()
    async with open_asyncio_bridge(AsyncioBridge(trio.lowlevel.current_trio_token())) as bridge:

        async def start_zeroconf() -> AsyncZeroconf:  # on the bridge's loop, so zeroconf adopts it
            return AsyncZeroconf(interfaces=interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only)

        try:
            azc = await bridge.run(start_zeroconf)
        except (OSError, RuntimeError) as exc:
            log.warning("mDNS unavailable", extra={"fields": {"error": repr(exc)}})
            async with send:
                yield receive
            return

        def deliver(peer: PeerInfo) -> None:  # in trio: must not raise
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                send.send_nowait(peer)

        def found(peer: PeerInfo) -> None:  # on the bridge's loop
            log.debug("peer announced on the LAN", extra={"fields": {"peer": str(peer.peer_id)}})
            bridge.to_trio(deliver, peer)

        name = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(32))
        ips = list(dict.fromkeys(a.split("/")[2] for a in addrs))
        info = ServiceInfo(
            SERVICE,
            f"{name}.{SERVICE}",
            port=int(addrs[0].rsplit("/", 1)[1]),
            properties=encode_txt(addrs, peer_id),
            server=f"{name}.local.",
            host_ttl=TTL,
            other_ttl=TTL,
            parsed_addresses=ips,
        )
        responder = _Responder(azc.zeroconf, info, peer_id, found)
        try:
            try:
                await bridge.run(responder.start)
                log.info("mDNS on", extra={"fields": {"announce": addrs, "interfaces": interfaces or "all"}})
            except Exception as exc:
                log.warning("mDNS unavailable", extra={"fields": {"error": repr(exc)}})
            yield receive
        finally:
            # Stopping anyway: the goodbye is a courtesy, so its failure is not reported.
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await bridge.run(responder.stop, timeout=STOP_TIMEOUT)
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await bridge.run(azc.async_close, timeout=STOP_TIMEOUT)
            send.close()
