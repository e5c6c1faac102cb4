"""Nodes trading blocks over real libp2p hosts on 127.0.0.1 (Noise, Yamux, Bitswap 1.2.0)."""

from __future__ import annotations

from pathlib import Path

import multiaddr
import trio

from conftest import gen
from node.storage.cid import CID
from node.storage.store import BlockStore

MiB = 1024 * 1024
LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def add(store: BlockStore, tmp_path: Path, data: bytes, name: str) -> CID:
    (tmp_path / name).write_bytes(data)
    return store.add_path(str(tmp_path / name), 262144).cid


def test_a_node_fetches_a_file_from_another(tmp_path: Path) -> None:
    from libp2p.peer.peerinfo import PeerInfo

    from node.swarm.bitswap import BlockExchange
    from node.swarm.host import load_identity, make_host

    data = gen(5 * MiB + 3)
    store_a = BlockStore(tmp_path / "a")
    store_b = BlockStore(tmp_path / "b")
    cid = add(store_a, tmp_path, data, "clip")

    async def main() -> int:
        host_a = make_host(load_identity(tmp_path / "a"), [LOOPBACK])
        host_b = make_host(load_identity(tmp_path / "b"), [LOOPBACK])
        async with host_a.run(listen_addrs=[LOOPBACK]), host_b.run(listen_addrs=[LOOPBACK]):
            BlockExchange(host_a, store_a)
            exchange_b = BlockExchange(host_b, store_b)
            with trio.fail_after(30):
                await host_b.connect(PeerInfo(host_a.get_id(), host_a.get_addrs()))
                return await exchange_b.fetch_dag(cid, [host_a.get_id()])

    fetched = trio.run(main)
    assert fetched == 22  # 21 leaves and the root
    assert b"".join(store_b.read_range(cid)) == data
    assert store_b.dag_counts(cid)[1] == 0


def test_gateway_serves_a_file_only_a_peer_has(tmp_path: Path) -> None:
    """Node A stores a clip; node B (bootstrapped to A) serves it over HTTP, ranges included,
    fetching from A, and keeps it: B serves it again after A is gone."""
    import httpx

    from conftest import Served

    data = gen(3 * MiB + 5, b"peer-only")
    a = Served(tmp_path / "a")
    b: Served | None = None
    try:
        (tmp_path / "clip.bin").write_bytes(data)
        cid = a.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        b = Served(tmp_path / "b", bootstrap=(a.swarm_addrs[0],))
        with httpx.Client(timeout=30) as client:
            ranged = client.get(f"{b.url}/ipfs/{cid}", headers={"Range": "bytes=1000000-1999999"})
            assert ranged.status_code == 206 and ranged.content == data[1000000:2000000]
            whole = client.get(f"{b.url}/ipfs/{cid}")
            assert whole.status_code == 200 and whole.content == data
        assert a.stop() == 0
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{b.url}/ipfs/{cid}").content == data
            absent = "bafkreie43rmrkrsaa3d6wejceoptbb6eplcakj44pjyagbkuf6chzrf7nu"
            missing = client.get(f"{b.url}/ipfs/{absent}")
            assert missing.status_code == 504 and missing.headers["retry-after"]
    finally:
        a.stop()
        if b is not None:
            assert b.stop() == 0


class _Nodes:
    """Several real libp2p hosts in one trio run, each with its own store and exchange."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    async def start(self, stack: object, name: str, **part_classes: type) -> tuple[object, object]:
        """A host and its exchange; ``part_classes`` (``server_class=`` …) make one part misbehave."""
        from contextlib import AsyncExitStack

        from node.swarm.bitswap import BlockExchange
        from node.swarm.host import load_identity, make_host

        assert isinstance(stack, AsyncExitStack)
        store = BlockStore(self.tmp_path / name)
        host = make_host(load_identity(self.tmp_path / name), [LOOPBACK])
        await stack.enter_async_context(host.run(listen_addrs=[LOOPBACK]))
        return host, BlockExchange(host, store, **part_classes)


def _corrupting_server() -> type:
    from node.swarm.bitswap.server import BlockServer

    class Corrupting(BlockServer):
        """Serves every block with one byte flipped."""

        def _block_or_none(self, cid: CID) -> bytes | None:
            block = super()._block_or_none(cid)
            return None if block is None else bytes([block[0] ^ 1]) + block[1:]

    return Corrupting


def _silent_server() -> type:
    from node.swarm.bitswap.server import BlockServer

    class Silent(BlockServer):
        """Accepts wants and never answers them."""

        async def _serve(self, peer: object) -> None:  # type: ignore[override]
            return None

    return Silent


def test_corrupt_provider_is_dropped_and_the_honest_one_delivers(tmp_path: Path) -> None:
    """Tried: a provider that sends every block with a flipped byte. Asked alone, its blocks hash to
    CIDs nobody asked for: it is dropped after three and banned, the fetch fails, nothing it sent is
    stored. Asked beside an honest provider, the file arrives whole and verifies."""
    from contextlib import AsyncExitStack

    from libp2p.peer.peerinfo import PeerInfo

    from node.swarm.bitswap import FetchError

    data = gen(4 * MiB, b"honest")
    nodes = _Nodes(tmp_path)

    async def main() -> tuple[BlockStore, CID, str, bool]:
        async with AsyncExitStack() as stack:
            liar_host, liar = await nodes.start(stack, "liar", server_class=_corrupting_server())
            honest_host, honest = await nodes.start(stack, "honest")
            me_host, me = await nodes.start(stack, "me")
            cid = add(liar.store, tmp_path, data, "clip")  # type: ignore[attr-defined]
            assert add(honest.store, tmp_path, data, "clip") == cid  # type: ignore[attr-defined]
            liar_id, honest_id = liar_host.get_id(), honest_host.get_id()  # type: ignore[attr-defined]
            with trio.fail_after(60):
                for other in (liar_host, honest_host):
                    await me_host.connect(PeerInfo(other.get_id(), other.get_addrs()))  # type: ignore[attr-defined]
                try:
                    await me.fetch_dag(cid, [liar_id], timeout=1.0)  # type: ignore[attr-defined]
                    alone = "fetched"
                except FetchError as exc:
                    alone = str(exc)
                banned = me.is_banned(liar_id)  # type: ignore[attr-defined]
                assert me.store.repo_stat().blocks == 0  # type: ignore[attr-defined]
                await me.fetch_dag(cid, [liar_id, honest_id])  # type: ignore[attr-defined]
            return me.store, cid, alone, banned  # type: ignore[attr-defined]

    store, cid, alone, banned = trio.run(main)
    assert "dropped" in alone and banned
    assert b"".join(store.read_range(cid)) == data
    assert store.verify() == []


def test_silent_provider_times_out_and_another_delivers(tmp_path: Path) -> None:
    """Tried: a provider that takes wants and never answers; after the timeout its wants move on."""
    from contextlib import AsyncExitStack

    from libp2p.peer.peerinfo import PeerInfo

    data = gen(2 * MiB, b"slow")
    nodes = _Nodes(tmp_path)

    async def main() -> tuple[BlockStore, CID, float, bool]:
        async with AsyncExitStack() as stack:
            silent_host, silent = await nodes.start(stack, "silent", server_class=_silent_server())
            good_host, good = await nodes.start(stack, "good")
            me_host, me = await nodes.start(stack, "me")
            cid = add(silent.store, tmp_path, data, "clip")  # type: ignore[attr-defined]
            add(good.store, tmp_path, data, "clip")  # type: ignore[attr-defined]
            for other in (silent_host, good_host):
                await me_host.connect(PeerInfo(other.get_id(), other.get_addrs()))  # type: ignore[attr-defined]
            started = trio.current_time()
            with trio.fail_after(30):
                await me.fetch_dag(cid, [silent_host.get_id(), good_host.get_id()], timeout=1.0)  # type: ignore[attr-defined]
            # Slow is not proof of anything: it left that fetch, not the swarm.
            kept = not me.is_banned(silent_host.get_id())  # type: ignore[attr-defined]
            kept = kept and silent_host.get_id() in me_host.get_connected_peers()  # type: ignore[attr-defined]
            return me.store, cid, trio.current_time() - started, kept  # type: ignore[attr-defined]

    store, cid, took, kept = trio.run(main)
    assert b"".join(store.read_range(cid)) == data
    assert took < 10
    assert kept


def test_nothing_but_noise_is_spoken(tmp_path: Path) -> None:
    """Tried: a peer offering only /plaintext/2.0.0 (which lets it claim any peer ID); refused."""
    from libp2p import new_host
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux

    from node.swarm.host import load_identity, make_host

    async def main() -> str:
        ours = make_host(load_identity(tmp_path / "ours"), [LOOPBACK])
        key = load_identity(tmp_path / "plain")
        plain = new_host(key_pair=key, sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key)},
                         muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux}, listen_addrs=[LOOPBACK])  # fmt: skip
        async with ours.run(listen_addrs=[LOOPBACK]), plain.run(listen_addrs=[LOOPBACK]):
            try:
                with trio.fail_after(15):
                    await plain.connect(PeerInfo(ours.get_id(), ours.get_addrs()))
            except Exception as exc:
                return type(exc).__name__
            return "connected"

    outcome = trio.run(main)
    assert outcome != "connected"


def test_killing_a_provider_mid_stream_does_not_break_the_download(tmp_path: Path) -> None:
    """A and B both hold a 48 MiB clip; C, connected to both, streams it through its gateway.
    A is killed (SIGKILL) once the first bytes have arrived; the download completes from B."""
    import signal

    import httpx

    from conftest import Served

    data = gen(48 * MiB, b"replicated")
    (tmp_path / "clip.bin").write_bytes(data)
    a = Served(tmp_path / "a")
    b = Served(tmp_path / "b")
    c: Served | None = None
    try:
        cid = a.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        assert b.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"] == cid
        c = Served(tmp_path / "c", bootstrap=(a.swarm_addrs[0], b.swarm_addrs[0]))
        received = bytearray()
        with httpx.Client(timeout=60) as client, client.stream("GET", f"{c.url}/ipfs/{cid}") as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += chunk
                if a.proc.poll() is None and len(received) >= 4 * MiB:
                    a.proc.send_signal(signal.SIGKILL)
        assert len(received) == len(data) and bytes(received) == data
    finally:
        a.stop()
        assert b.stop() == 0
        if c is not None:
            assert c.stop() == 0


def test_a_restarted_fetch_resumes_from_what_was_verified(tmp_path: Path) -> None:
    """C fetches part of a file from A, is killed, restarts, and only fetches the rest."""
    import signal

    import httpx

    from conftest import Served

    data = gen(40 * MiB, b"resume")
    (tmp_path / "clip.bin").write_bytes(data)
    a = Served(tmp_path / "a")
    c: Served | None = None
    try:
        cid = a.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        c = Served(tmp_path / "c", bootstrap=(a.swarm_addrs[0],))
        with httpx.Client(timeout=60) as client, client.stream("GET", f"{c.url}/ipfs/{cid}") as response:
            got = 0
            for chunk in response.iter_bytes():
                got += len(chunk)
                if got >= 24 * MiB:
                    break
        c.stop(signal.SIGKILL)
        stored_before = c.node.ok("repo", "stat", "--json").json["blocks"]
        assert stored_before > 60  # committed batches of verified blocks survived the kill
        assert c.node.ok("verify", "--json").json["corrupt"] == []
        c = Served(tmp_path / "c", bootstrap=(a.swarm_addrs[0],))
        with httpx.Client(timeout=60) as client:
            assert client.get(f"{c.url}/ipfs/{cid}").content == data
        metrics = httpx.get(f"{c.url}/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith("medianode_bitswap_blocks_fetched_total "))
        fetched_after_restart = float(line.split()[1])
        assert fetched_after_restart <= 161 - stored_before  # 160 leaves and a root: only what was missing
    finally:
        a.stop()
        if c is not None:
            c.stop()


def test_cli_get_fetches_from_a_peer(tmp_path: Path) -> None:
    """`medianode get CID --peer ADDR` on a node without the file fetches, verifies and saves it;
    a peer that does not answer is a one-line error."""
    from conftest import Node, Served

    data = gen(6 * MiB + 1, b"cli-get")
    (tmp_path / "clip.bin").write_bytes(data)
    a = Served(tmp_path / "a")
    try:
        cid = a.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        b = Node(tmp_path / "b")
        got = b.ok("get", cid, "-o", str(tmp_path / "out.bin"), "--peer", a.swarm_addrs[0], "--json").json
        assert got["size"] == len(data) and (tmp_path / "out.bin").read_bytes() == data
        assert b.ok("stat", cid, "--json").json["missing_blocks"] == 0
    finally:
        assert a.stop() == 0
    other = Node(tmp_path / "c")
    other.fails("get", cid, "--peer", a.swarm_addrs[0], match="cannot fetch")
    other.fails("get", cid, "--peer", "/ip4/127.0.0.1/tcp/1", match="not a peer address")


def test_peers_and_swarm_connect_talk_to_the_running_node(tmp_path: Path) -> None:
    """`peers` and `swarm connect` go through the running node's admin API (token in api.json, 0600).
    Tried: a malformed address, an unreachable peer, a node that is not running, a wrong admin token."""
    import httpx

    from conftest import Node, Served

    a = Served(tmp_path / "a")
    b = Served(tmp_path / "b")
    try:
        assert a.node.ok("peers", "--json").json["peers"] == []
        assert oct((tmp_path / "a" / "api.json").stat().st_mode & 0o777) == "0o600"
        connected = a.node.ok("swarm", "connect", b.swarm_addrs[0], "--json").json
        assert connected == {"peer_id": b.peer_id, "connected": True}
        assert [p["peer_id"] for p in a.node.ok("peers", "--json").json["peers"]] == [b.peer_id]
        a.node.fails("swarm", "connect", "/ip4/127.0.0.1/tcp/9", match="not a peer address")
        nobody = Node(tmp_path / "nobody").ok("id", "--json").json["peer_id"]  # an identity no node runs
        a.node.fails("swarm", "connect", f"/ip4/127.0.0.1/tcp/9/p2p/{nobody}", match="could not connect")
        denied = httpx.get(f"{a.url}/api/v1/swarm/peers", headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    assert not (tmp_path / "a" / "api.json").exists()
    Node(tmp_path / "a").fails("peers", match="not running")


def test_a_node_finds_providers_through_the_dht(tmp_path: Path) -> None:
    """A holds a clip and announces it; C knows only B (which knows A). C's gateway asks its peers,
    none has it, so C asks the DHT, finds A, connects and serves the clip. `provide` and
    `findprovs` work on the running nodes."""
    import httpx

    from conftest import Served

    data = gen(3 * MiB, b"dht")
    (tmp_path / "clip.bin").write_bytes(data)
    a = Served(tmp_path / "a")
    b = Served(tmp_path / "b", bootstrap=(a.swarm_addrs[0],))
    c: Served | None = None
    try:
        cid = a.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        assert a.node.ok("provide", cid, "--json").json["provided"]
        c = Served(tmp_path / "c", bootstrap=(b.swarm_addrs[0],))
        providers = c.node.ok("findprovs", cid, "--json").json["providers"]
        assert [p["peer_id"] for p in providers] == [a.peer_id]
        with httpx.Client(timeout=60) as client:
            response = client.get(f"{c.url}/ipfs/{cid}")
        assert response.status_code == 200 and response.content == data
        nobody = "bafkreie43rmrkrsaa3d6wejceoptbb6eplcakj44pjyagbkuf6chzrf7nu"
        assert c.node.ok("findprovs", nobody, "--json").json["providers"] == []
        c.node.fails("findprovs", "notacid", match="invalid CID")
    finally:
        for node in (a, b, c):
            if node is not None:
                assert node.stop() == 0


def test_wildcard_listen_addresses_are_announced_as_dialable_ones() -> None:
    from node.swarm.node import announce_addrs

    assert announce_addrs(["/ip4/127.0.0.1/tcp/5"]) == ["/ip4/127.0.0.1/tcp/5"]
    expanded = announce_addrs(["/ip4/0.0.0.0/tcp/4001"])
    assert expanded and all(a.startswith("/ip4/") and a.endswith("/tcp/4001") and "0.0.0.0" not in a for a in expanded)


def test_a_peer_cannot_open_unbounded_bitswap_streams(tmp_path: Path) -> None:
    """Tried: one peer holding more inbound Bitswap streams open than the cap (each may buffer a
    4 MiB message). The streams past the cap are reset; the ones within it still work."""
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import PeerInfo

    from node.swarm.bitswap import BlockExchange
    from node.swarm.bitswap.ledger import MAX_INBOUND_STREAMS
    from node.swarm.bitswap.wire import PROTOCOL_ID, BitswapMessage, WantEntry, encode_message, frame
    from node.swarm.host import load_identity, make_host

    store = BlockStore(tmp_path / "a")
    # A block of its own per stream: wants for one block from one peer are one want, answered once.
    cids = [add(store, tmp_path, b"small block %d" % i, f"f{i}") for i in range(MAX_INBOUND_STREAMS + 3)]

    async def main() -> tuple[int, int]:
        host_a = make_host(load_identity(tmp_path / "a"), [LOOPBACK])
        host_b = make_host(load_identity(tmp_path / "b"), [LOOPBACK])
        async with host_a.run(listen_addrs=[LOOPBACK]), host_b.run(listen_addrs=[LOOPBACK]):
            exchange = BlockExchange(host_a, store)

            async def take_replies(stream: object) -> None:  # B accepts A's answers and drops them
                while await stream.read(65536):  # type: ignore[attr-defined]
                    pass

            host_b.set_stream_handler(TProtocol(PROTOCOL_ID), take_replies)
            with trio.fail_after(30):
                await host_b.connect(PeerInfo(host_a.get_id(), host_a.get_addrs()))
                streams, refused = [], 0
                for cid in cids:
                    try:
                        stream = await host_b.new_stream(host_a.get_id(), [TProtocol(PROTOCOL_ID)])
                        await stream.write(frame(encode_message(BitswapMessage(wants=[WantEntry(cid)]))))
                        streams.append(stream)
                    except Exception:  # reset by A as soon as it was negotiated: the cap at work
                        refused += 1
                await trio.sleep(1.0)
            return exchange.blocks_served, refused

    served, refused = trio.run(main)
    assert served == MAX_INBOUND_STREAMS  # one answered want per stream inside the cap, none beyond it
    assert refused <= 3


def test_trustless_car_of_a_file_only_a_peer_has(tmp_path: Path) -> None:
    """A CAR through B's gateway of a file only A holds comes out whole and verifiable."""
    import io

    import httpx

    from conftest import Served
    from node.storage.car import read_car
    from node.storage.layout import walk_file

    data = gen(2 * MiB + 9, b"car-from-peer")
    (tmp_path / "clip.bin").write_bytes(data)
    a = Served(tmp_path / "a")
    b: Served | None = None
    try:
        cid = a.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        b = Served(tmp_path / "b", bootstrap=(a.swarm_addrs[0],))
        with httpx.Client(timeout=60) as client:
            response = client.get(f"{b.url}/ipfs/{cid}", params={"format": "car"})
        assert response.status_code == 200
        roots, blocks = read_car(io.BytesIO(response.content))
        found = {}
        for block_cid, block in blocks:
            assert block_cid.verifies(block)
            found[block_cid] = block
        layout = walk_file(roots[0], found.__getitem__)
        assert b"".join(found[leaf.cid] for leaf in layout.leaves) == data
    finally:
        assert a.stop() == 0
        if b is not None:
            assert b.stop() == 0


def test_content_added_while_serving_is_announced(tmp_path: Path) -> None:
    """A file added with the CLI while A serves is announced in the DHT without a restart."""
    import time

    from conftest import Node, Served

    node_a = Node(tmp_path / "a")
    node_a.ok("init")
    config = tmp_path / "a" / "config.toml"
    config.write_text(config.read_text().replace("announce_new_every = 30", "announce_new_every = 0.5"))
    a = Served(tmp_path / "a")
    b = Served(tmp_path / "b", bootstrap=(a.swarm_addrs[0],))
    try:
        (tmp_path / "late.bin").write_bytes(gen(300_000, b"late"))
        cid = a.node.ok("add", str(tmp_path / "late.bin"), "--json").json["cid"]
        deadline = time.monotonic() + 20
        found: list[str] = []
        while time.monotonic() < deadline and not found:
            found = [p["peer_id"] for p in b.node.ok("findprovs", cid, "--json").json["providers"]]
            time.sleep(0.5)
        assert found == [a.peer_id]
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_a_peer_flooding_wants_is_held_to_its_queue_cap_while_others_are_served(tmp_path: Path) -> None:
    """Tried: a peer that asks A for 100,000 blocks (the 33 A holds first, then ones it lacks) and
    does not read the answers. A queues at most MAX_QUEUED_WANTS of its wants and holds at most one
    reply's blocks for it; meanwhile another peer fetches a file from A at full speed. Once the
    flooder disconnects, A forgets what it asked."""
    from contextlib import AsyncExitStack

    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import PeerInfo

    from node.storage.cid import RAW
    from node.storage.dagpb import decode_node
    from node.swarm.bitswap.ledger import MAX_QUEUED_WANTS
    from node.swarm.bitswap.server import REPLY_BUDGET
    from node.swarm.bitswap.wire import PROTOCOL_ID, BitswapMessage, WantEntry, encode_message, frame

    data = gen(8 * MiB, b"flooded")
    other = gen(4 * MiB, b"served meanwhile")
    nodes = _Nodes(tmp_path)

    async def main() -> tuple[int, int, float, tuple[int, int]]:
        async with AsyncExitStack() as stack:
            a_host, a = await nodes.start(stack, "a")
            b_host, _ = await nodes.start(stack, "b")
            c_host, c = await nodes.start(stack, "c")
            flooded = add(a.store, tmp_path, data, "clip")  # type: ignore[attr-defined]
            wanted_by_c = add(a.store, tmp_path, other, "other")  # type: ignore[attr-defined]
            held = [flooded, *(link.cid for link in decode_node(a.store.get_block(flooded)).links)]  # type: ignore[attr-defined]
            lacked = [CID.for_block(RAW, i.to_bytes(4, "big")) for i in range(100_000 - len(held))]
            a_id, b_id = a_host.get_id(), b_host.get_id()  # type: ignore[attr-defined]
            peak = [0, 0]

            async def never_read(stream: object) -> None:  # A's first reply to B stays stuck
                await trio.sleep_forever()

            async def watch() -> None:
                while True:
                    entries, reply_bytes = a.ledger.serve_backlog(b_id)  # type: ignore[attr-defined]
                    peak[0], peak[1] = max(peak[0], entries), max(peak[1], reply_bytes)
                    await trio.sleep(0.002)

            b_host.set_stream_handler(TProtocol(PROTOCOL_ID), never_read)  # type: ignore[attr-defined]
            with trio.fail_after(30):
                for host in (b_host, c_host):
                    await host.connect(PeerInfo(a_id, a_host.get_addrs()))  # type: ignore[attr-defined]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    stream = await b_host.new_stream(a_id, [TProtocol(PROTOCOL_ID)])  # type: ignore[attr-defined]
                    flood = held + lacked
                    for start in range(0, len(flood), 25_000):
                        wants = [WantEntry(cid) for cid in flood[start : start + 25_000]]
                        await stream.write(frame(encode_message(BitswapMessage(wants=wants))))
                    await trio.sleep(0.5)  # A has read the flood and is busy answering it
                    started = trio.current_time()
                    await c.fetch_dag(wanted_by_c, [a_id])  # type: ignore[attr-defined]
                    took = trio.current_time() - started
                    during = a.ledger.serve_backlog(b_id)  # type: ignore[attr-defined]
                    await b_host.disconnect(a_id)  # type: ignore[attr-defined]
                    while a.ledger.serve_backlog(b_id) != (0, 0):  # type: ignore[attr-defined]
                        await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()
            assert b"".join(c.store.read_range(wanted_by_c)) == other  # type: ignore[attr-defined]
            return peak[0], peak[1], took, during

    peak_entries, peak_reply_bytes, took, during = trio.run(main)
    assert peak_entries == MAX_QUEUED_WANTS  # the cap was reached, never passed
    assert 0 < peak_reply_bytes <= REPLY_BUDGET
    assert during[0] > 0  # still busy with the flooder while C was served
    assert took < 3


def test_fast_providers_cannot_make_a_slow_disk_buffer_more_than_asked(tmp_path: Path) -> None:
    """Tried: two providers delivering far faster than the fetching node stores (20 ms per block).
    What each can make it hold, verified but not yet stored, stays within the want window."""
    import time
    from contextlib import AsyncExitStack

    from libp2p.peer.peerinfo import PeerInfo

    from node.swarm.bitswap.client import BlockClient

    data = gen(16 * MiB, b"slow disk")
    window = 6
    nodes = _Nodes(tmp_path)
    peak: dict[object, int] = {}

    class SlowDisk(BlockClient):
        def on_block(self, peer: object, cid: CID, data: bytes) -> bool:  # type: ignore[override]
            asked = super().on_block(peer, cid, data)  # type: ignore[arg-type]
            peak[peer] = max(peak.get(peer, 0), self.ledger.unstored_bytes.get(peer, 0))  # type: ignore[call-overload]
            return asked

        def _store_arrivals(self, batch, arrivals, expand):  # type: ignore[no-untyped-def]
            time.sleep(0.02 * len(arrivals))
            return super()._store_arrivals(batch, arrivals, expand)

    async def main() -> tuple[BlockStore, CID]:
        async with AsyncExitStack() as stack:
            hosts = []
            for name in ("p1", "p2"):
                host, provider = await nodes.start(stack, name)
                cid = add(provider.store, tmp_path, data, "clip")  # type: ignore[attr-defined]
                hosts.append(host)
            me_host, me = await nodes.start(stack, "me", client_class=SlowDisk)
            with trio.fail_after(30):
                for host in hosts:
                    await me_host.connect(PeerInfo(host.get_id(), host.get_addrs()))  # type: ignore[attr-defined]
                await me.fetch_dag(cid, [h.get_id() for h in hosts], window=window)  # type: ignore[attr-defined]
            assert me.ledger.unstored_bytes == {}  # type: ignore[attr-defined]
            return me.store, cid  # type: ignore[attr-defined]

    store, cid = trio.run(main)
    assert b"".join(store.read_range(cid)) == data
    assert len(peak) == 2 and all(0 < held <= window * 262144 for held in peak.values())


def _metric(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_seek_into_cidv0_content_fetches_its_path_and_the_read_ahead_only(tmp_path: Path) -> None:
    """kubo's default content (CIDv0, dag-pb leaves) only A holds; B serves a 1 MiB Range from the
    middle. B used to fetch every dag-pb block (every leaf) before the first byte, then the whole
    file in the background; now it fetches the nodes over the range, then read_ahead bytes past it."""
    import httpx

    from conftest import Served
    from dags import file_dag, write_car

    data = gen(24 * MiB + 11, b"v0-seek")
    root, blocks = file_dag(data)
    write_car(tmp_path / "v0.car", root, blocks)
    a = Served(tmp_path / "a")
    b: Served | None = None
    try:
        a.node.ok("import", str(tmp_path / "v0.car"))
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "config.toml").write_text('[gateway]\ncache_whole_max = "1MiB"\nread_ahead = "2MiB"\n')
        b = Served(tmp_path / "b", bootstrap=(a.swarm_addrs[0],))
        offset = 12 * MiB + 12345
        with httpx.Client(timeout=60) as client:
            ranged = client.get(f"{b.url}/ipfs/{root}", headers={"Range": f"bytes={offset}-{offset + MiB - 1}"})
        assert ranged.status_code == 206 and ranged.content == data[offset : offset + MiB]
        import time

        # The read-ahead runs in the background: wait until its 2 MiB have arrived, then count.
        until = time.monotonic() + 30
        while time.monotonic() < until and _metric(b.url, "medianode_bitswap_bytes_fetched") < 3 * MiB:
            time.sleep(0.1)
        fetched = _metric(b.url, "medianode_bitswap_bytes_fetched")
        assert 3 * MiB <= fetched <= MiB + 4 * MiB + 2 * MiB, fetched
        blocks_fetched = _metric(b.url, "medianode_bitswap_blocks_fetched")
        assert blocks_fetched <= 2 + 4 + 1 + 16, blocks_fetched  # root, one inner node, leaves, read-ahead
    finally:
        assert a.stop() == 0
        if b is not None:
            assert b.stop() == 0


def _odd_network() -> type:
    from node.swarm.bitswap.network import BitswapNetwork
    from node.swarm.bitswap.wire import BitswapMessage, Presence, frame

    class Odd(BitswapNetwork):
        """An honest provider that also sends what real peers send and we cannot use: identity
        blocks, presences for CIDs nobody asked about, and parts we cannot parse the meaning of."""

        async def send(self, peer: object, message: BitswapMessage) -> None:  # type: ignore[override]
            identity = CID.parse("bafkqac3imvwgy3zao5xxe3de")
            elsewhere = CID.for_block(0x55, b"nobody asked")
            extra = BitswapMessage(blocks=[(identity, identity.identity_data())],
                                   presences=[(elsewhere, Presence.DONT_HAVE)])  # fmt: skip
            await super().send(peer, extra)  # type: ignore[arg-type]
            await super().send(peer, message)  # type: ignore[arg-type]
            blake3_prefix = bytes([1, 0x55, 0x1E, 0x20])
            odd = (
                b"\x1a\x02\x12\x00"  # a block with data and no prefix
                + b"\x1a" + bytes([len(blake3_prefix) + 5]) + b"\x0a" + bytes([len(blake3_prefix)]) + blake3_prefix
                + b"\x12\x01x"  # a block hashed with a function we do not check
                + b"\x22\x04\x0a\x00\x10\x07"  # a presence with an empty CID and an unknown type
                + b"\x32\x01\x00"  # field 6: unknown to Bitswap 1.2.0
            )  # fmt: skip
            stream = self._streams[peer]  # type: ignore[index]
            await stream.write(frame(odd))

    return Odd


def test_odd_but_honest_messages_never_get_a_peer_dropped(tmp_path: Path) -> None:
    """Tried: a provider that wraps each answer in identity blocks, unasked-about presences, blocks
    without a prefix or with a hash we cannot check, and an unknown field. None proves it broken:
    the fetch completes from it, it stays connected and is not banned."""
    from contextlib import AsyncExitStack

    from libp2p.peer.peerinfo import PeerInfo

    data = gen(3 * MiB, b"odd")
    nodes = _Nodes(tmp_path)

    async def main() -> tuple[BlockStore, CID, bool, bool]:
        async with AsyncExitStack() as stack:
            odd_host, odd = await nodes.start(stack, "odd", network_class=_odd_network())
            me_host, me = await nodes.start(stack, "me")
            cid = add(odd.store, tmp_path, data, "clip")  # type: ignore[attr-defined]
            odd_id = odd_host.get_id()  # type: ignore[attr-defined]
            with trio.fail_after(60):
                await me_host.connect(PeerInfo(odd_id, odd_host.get_addrs()))  # type: ignore[attr-defined]
                await me.fetch_dag(cid, [odd_id])  # type: ignore[attr-defined]
            connected = odd_id in me_host.get_connected_peers()  # type: ignore[attr-defined]
            return me.store, cid, me.is_banned(odd_id), connected  # type: ignore[attr-defined]

    store, cid, banned, connected = trio.run(main)
    assert not banned and connected
    assert b"".join(store.read_range(cid)) == data


def test_a_banned_bootstrap_peer_comes_back_when_its_ban_ends(tmp_path: Path, monkeypatch: object) -> None:
    """A bootstrap peer that sent corrupt blocks is dropped and refused; once the ban ends the
    node dials it again by itself (ban and redial intervals shortened from 600 s and 30 s)."""
    from contextlib import AsyncExitStack

    import pytest
    from libp2p.peer.peerinfo import PeerInfo

    import node.swarm.bitswap.ledger as ledger_module
    import node.swarm.node as node_module
    from node.swarm.bitswap import FetchError
    from node.swarm.node import open_swarm

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(ledger_module, "BAN_SECONDS", 2.0)
    monkeypatch.setattr(node_module, "RECONNECT_EVERY", 0.2)
    data = gen(MiB, b"comes-back")
    nodes = _Nodes(tmp_path)

    async def main() -> tuple[bool, bool, float]:
        async with AsyncExitStack() as stack:
            liar_host, liar = await nodes.start(stack, "liar", server_class=_corrupting_server())
            cid = add(liar.store, tmp_path, data, "clip")  # type: ignore[attr-defined]
            liar_id = liar_host.get_id()  # type: ignore[attr-defined]
            info = PeerInfo(liar_id, liar_host.get_addrs())  # type: ignore[attr-defined]
            swarm = await stack.enter_async_context(
                open_swarm(BlockStore(tmp_path / "me"), tmp_path / "me", ["/ip4/127.0.0.1/tcp/0"], [info])
            )
            with trio.fail_after(30):
                while liar_id not in swarm.peers():
                    await trio.sleep(0.05)
                with pytest.raises(FetchError):
                    await swarm.fetch_dag(cid)
                banned = swarm.exchange.is_banned(liar_id)
                gone = liar_id not in swarm.host.get_connected_peers()
                ban_ends = swarm.exchange.ledger.ban_ends(liar_id)
                assert ban_ends is not None
                while liar_id not in swarm.peers():
                    await trio.sleep(0.05)
                return banned, gone, trio.current_time() - ban_ends

    banned, gone, back_after_ban = trio.run(main)
    assert banned and gone
    assert back_after_ban >= 0  # not before its ban ended
