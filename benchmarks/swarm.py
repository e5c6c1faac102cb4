"""Swarm benchmark: our block exchange beside a raw libp2p stream, and Helia beside both.

    python benchmarks/swarm.py [--size-mib 512] [--repeat 3] [--ttfb-nodes 5] [--link-mbit 400]
                               [--profile] [--dir DIR]

Prints one table. Each side runs in its own process, on 127.0.0.1 except in 6:

1. raw stream (the reference): one py-libp2p stream on our host (``make_host``:
   Noise, Yamux), ``--size-mib`` MiB sent in 256 KiB length-prefixed writes to a
   sink that answers with the byte count; timed from the first write to that
   answer, connecting excluded.
2. block exchange, one provider: node A is ``medianode serve`` with the file
   added; the fetcher is a child Python process with its own host and store
   that connects to A and times only ``BlockExchange.fetch_dag`` (the fetched
   blocks are stored on disk, as a node does). Target: >= 0.7 of (1).
3. the same with two providers (A1 and A2 both hold the file). Target: faster
   than one provider. On loopback that is out of reach on a 2-core machine: the
   fetching process alone is CPU-bound (one core; see benchmarks/README.md), so
   6 measures what a second provider is for, a provider's uplink as the limit.
   2 and 3 are also run with the fetcher alone on one core and the providers on
   the other (``taskset``), which separates the fetcher's own limit from its
   competing with the providers for the two cores.
4. time to first body byte of a 1 MiB range from the middle of the file,
   through the gateway of a fresh node C (``medianode serve --bootstrap A``)
   that does not hold it, once C is connected to A; ``--ttfb-nodes`` fresh Cs,
   median and max. Reference: the same range from A's own gateway. Target: < 300 ms.
5. Helia to Helia over Bitswap (tests/interop/helia_node.mjs ``serve``/``fetch``
   with the Helia install tests/integration/test_helia.py caches), ``--helia-size-mib`` MiB:
   the fetch process is timed whole, and minus a fetch process for a 1 KiB file
   (Node start, imports, dial).
6. providers behind rate-limited uplinks (needs root: ``ip netns``, ``tc``;
   skipped with the reason printed otherwise): each provider runs in a network
   namespace of its own, joined to the fetcher's by a veth pair whose
   provider-side end sends through ``tc tbf rate {--link-mbit}mbit burst 1mb
   latency 50ms``. Measured: a raw stream sent through one such link (the
   reference: what the link carries for py-libp2p), the block exchange from one
   provider behind its link, and from two providers each behind its own
   (target: faster than one; up to twice, while the fetcher has CPU to spare).

Each throughput is the best of ``--repeat`` runs (every run is listed under the
table, with the CPU seconds each process used, how busy the fetcher was, and
how much CPU the rest of the machine took meanwhile: other work makes runs slow).
Every transfer is checked against the file's SHA-256. ``--profile`` records
the fetching process of one single-provider fetch (only while it fetches) and
provider A meanwhile with py-spy, and prints their top functions.
Any failed check or unclean exit makes the run fail (exit 1) after the table
is printed; missed targets only show in the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import REPO, MiB, count_profile, make_file, medianode, warm

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
RAW_PROTOCOL = "/medianode-bench/raw/1.0.0"
FRAME = 256 * 1024
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
CONNECT_TIMEOUT = 30.0
TTFB_RANGE = MiB
PROFILE_RATE = 200  # py-spy samples per second
HELIA_CACHE = Path(os.environ.get("MEDIANODE_TEST_CACHE", Path.home() / ".cache" / "medianode-tests"))
HELIA_SCRIPT = REPO / "tests" / "interop" / "helia_node.mjs"
GENERIC_FRAMES = (
    "trio/",
    "threading.py",
    "outcome/",
    "queue.py",
    "runpy",
    "(swarm.py:",
    "node/cli/",
    "contextlib.py",
)
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


# -- child processes (run as ``swarm.py child MODE ...``) ------------------------------------------


def child(argv: list[str]) -> None:
    sys.path.insert(0, str(REPO))
    import trio

    modes = {"raw-sink": raw_sink, "raw-send": raw_send, "fetch": fetch}
    trio.run(modes[argv[0]], *argv[1:])


async def read_exactly(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise EOFError(f"end of stream after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def raw_sink(data_dir: str, listen_addr: str = LOOPBACK) -> None:
    """A host that counts the bytes of 4-byte length-prefixed frames until an empty one, then answers the count."""
    import multiaddr
    import trio
    from libp2p.custom_types import TProtocol

    from node.swarm.host import load_identity, make_host
    from node.swarm.node import dialable

    listen = [multiaddr.Multiaddr(listen_addr)]
    host = make_host(load_identity(Path(data_dir)), listen)

    async def sink(stream: Any) -> None:
        total = 0
        while n := int.from_bytes(await read_exactly(stream, 4), "big"):
            total += len(await read_exactly(stream, n))
        await stream.write(total.to_bytes(8, "big"))
        await stream.close()

    host.set_stream_handler(TProtocol(RAW_PROTOCOL), sink)
    async with host.run(listen_addrs=listen):
        peer = host.get_id().to_base58()
        print(json.dumps({"swarm": [f"{a}/p2p/{peer}" for a in dialable(host)]}), flush=True)
        await trio.sleep_forever()


async def raw_send(data_dir: str, addr: str, size: str) -> None:
    import multiaddr
    import trio
    from libp2p.custom_types import TProtocol

    from node.swarm.host import load_identity, make_host, parse_peer_addr

    listen = [multiaddr.Multiaddr(LOOPBACK)]
    host = make_host(load_identity(Path(data_dir)), listen)
    info = parse_peer_addr(addr)
    frame = FRAME.to_bytes(4, "big") + os.urandom(FRAME)
    frames = int(size) // FRAME
    async with host.run(listen_addrs=listen):
        with trio.fail_after(CONNECT_TIMEOUT):
            await host.connect(info)
            stream = await host.new_stream(info.peer_id, [TProtocol(RAW_PROTOCOL)])
        start = time.perf_counter()
        for _ in range(frames):
            await stream.write(frame)
        await stream.write(bytes(4))
        got = int.from_bytes(await read_exactly(stream, 8), "big")
        seconds = time.perf_counter() - start
        await host.close()
    print(json.dumps({"seconds": seconds, "bytes": got, "ok": got == frames * FRAME}), flush=True)


async def fetch(data_dir: str, root: str, sha256: str, timeout: str, *addrs: str) -> None:
    """Connect to every peer, then time ``fetch_dag`` of ``root`` from all of them; check the file's hash."""
    import multiaddr
    import trio

    from node.storage.cid import CID
    from node.storage.store import BlockStore
    from node.swarm.bitswap import BlockExchange
    from node.swarm.host import load_identity, make_host, parse_peer_addr

    listen = [multiaddr.Multiaddr(LOOPBACK)]
    store = BlockStore(Path(data_dir) / "store")
    host = make_host(load_identity(Path(data_dir)), listen)
    infos = [parse_peer_addr(a) for a in addrs]
    cid = CID.parse(root)
    profile = os.environ.get("SWARM_BENCH_PROFILE")
    async with host.run(listen_addrs=listen):
        exchange = BlockExchange(host, store)
        with trio.fail_after(CONNECT_TIMEOUT):
            for info in infos:
                await host.connect(info)
        spy = None
        if profile:
            spy = subprocess.Popen(
                [PY_SPY, "record", "--pid", str(os.getpid()), "--rate", str(PROFILE_RATE), "--gil",
                 "--format", "raw", "--output", profile],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            await trio.sleep(1.0)  # py-spy attaches
        start, cpu, machine = time.perf_counter(), time.process_time(), machine_cpu_seconds()
        with trio.fail_after(float(timeout)):
            blocks = await exchange.fetch_dag(cid, [info.peer_id for info in infos])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        machine = machine_cpu_seconds() - machine
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await trio.to_thread.run_sync(spy.wait)
        await host.close()
    digest = hashlib.sha256()
    for piece in store.read_range(cid):
        digest.update(piece)
    store.close()
    ok = digest.hexdigest() == sha256
    print(json.dumps({"seconds": seconds, "cpu": cpu, "machine": machine, "blocks": blocks, "ok": ok}), flush=True)


# -- the parent: processes, measurements, table --------------------------------------------------


def netns_exec(netns: str) -> list[str]:
    return ["ip", "netns", "exec", netns]


class LimitedLinks:
    """Network namespaces, each joined to ours by a veth pair whose far end sends at most ``mbit``
    (a provider's uplink). ``close`` removes them; ``why_not`` says why they cannot be made here."""

    def __init__(self, count: int, mbit: int) -> None:
        tag = f"swb{os.getpid() % 10_000_000}"  # interface names may have 15 characters
        subnet = 100 + os.getpid() % 100  # 10.231.<subnet + i>.0/24, apart from concurrent runs
        self.names = [f"{tag}n{i}" for i in range(count)]
        self._ours = [f"{tag}h{i}" for i in range(count)]
        self.near = [f"10.231.{subnet + i}.1" for i in range(count)]  # our side of link i
        self.far = [f"10.231.{subnet + i}.2" for i in range(count)]  # the namespace's side
        self.mbit = mbit
        self._made: list[int] = []

    @staticmethod
    def why_not() -> str | None:
        if os.geteuid() != 0:
            return "not root (ip netns and tc need it)"
        missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
        return f"{' and '.join(missing)} not installed" if missing else None

    def open(self) -> None:
        for i, (ns, ours) in enumerate(zip(self.names, self._ours, strict=True)):
            self._made.append(i)
            for cmd in (
                ["ip", "netns", "add", ns],
                ["ip", "link", "add", ours, "type", "veth", "peer", "name", "far", "netns", ns],
                ["ip", "addr", "add", f"{self.near[i]}/24", "dev", ours],
                ["ip", "link", "set", ours, "up"],
                ["ip", "-n", ns, "addr", "add", f"{self.far[i]}/24", "dev", "far"],
                ["ip", "-n", ns, "link", "set", "far", "up"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
                ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "far", "root",
                 "tbf", "rate", f"{self.mbit}mbit", "burst", "1mb", "latency", "50ms"],
            ):  # fmt: skip
                done = subprocess.run(cmd, capture_output=True)
                if done.returncode:
                    raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.decode(errors='replace').strip()}")

    def close(self) -> None:
        for i in self._made:
            subprocess.run(["ip", "link", "del", self._ours[i]], capture_output=True)  # takes the peer end along
            subprocess.run(["ip", "netns", "del", self.names[i]], capture_output=True)
        self._made = []


@dataclass
class Proc:
    """A started process whose first stdout line is JSON (its address); stdout and stderr go to files."""

    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, name: str, cmd: list[str], logs: Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> Proc:
        out, err = logs / f"{name}.out", logs / f"{name}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=cwd, env=env)
        started = cls(name, proc, out, err)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            first = out.read_bytes().split(b"\n", 1)
            if len(first) == 2:
                started.info = json.loads(first[0])
                return started
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}: {started.stderr()}")
            time.sleep(0.02)
        started.stop(signal.SIGKILL)
        raise SystemExit(f"{name} printed no address within {START_TIMEOUT:.0f} s")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace").strip()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Signal the process and wait (kill it if it does not exit in time); its exit code, None if killed."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
            return None


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.logs = work / "logs"
        self.logs.mkdir()
        self.procs: list[Proc] = []
        self.problems: list[str] = []
        self.runs: list[str] = []
        self.counter = 0

    def fresh(self, name: str) -> Path:
        self.counter += 1
        return self.work / f"{name}-{self.counter}"

    def start(self, name: str, cmd: list[str], **kw: Any) -> Proc:
        proc = Proc.start(name, cmd, self.logs, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, expect_zero: bool = True) -> None:
        code = proc.stop()
        self.procs.remove(proc)
        if expect_zero and code != 0:
            self.problems.append(f"{proc.name} exit code {code} after SIGTERM (expected 0): {proc.stderr()[-2000:]}")

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, expect_zero=False)

    def run_child(
        self, name: str, argv: list[str], timeout: float, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> dict[str, Any]:
        cmd = [*prefix, *self.child_cmd(*argv)]
        proc = subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=timeout, env=env)
        if proc.returncode:
            raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-4000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
        if not result["ok"]:
            self.problems.append(f"{name}: the bytes that arrived differ from the file")
        return result

    def serve(
        self,
        name: str,
        data_dir: Path,
        bootstrap: tuple[str, ...] = (),
        listen: str = LOOPBACK,
        prefix: Sequence[str] = (),
    ) -> Proc:
        peers = [arg for addr in bootstrap for arg in ("--bootstrap", addr)]
        cmd = medianode(
            data_dir,
            "serve",
            "--gateway",
            "127.0.0.1:0",
            "--no-s3",
            "--listen",
            listen,
            *peers,
            "--no-mdns",
            "--workers",
            "1",
            "--json",
        )
        return self.start(name, [*prefix, *cmd])

    # -- 1 ----------------------------------------------------------------------------------------

    def raw(self, label: str, size: int, sink_listen: str = LOOPBACK, sender_prefix: Sequence[str] = ()) -> float:
        sink_dir = self.fresh("raw-sink")
        sink = self.start(sink_dir.name, self.child_cmd("raw-sink", str(sink_dir), sink_listen))
        best = 0.0
        for i in range(self.args.repeat):
            argv = ["raw-send", str(self.fresh("raw-send")), sink.info["swarm"][0], str(size)]
            result = self.run_child(f"{label} {i + 1}", argv, self.args.timeout, prefix=sender_prefix)
            if result["bytes"] != size:
                self.problems.append(f"{label} {i + 1}: sink counted {result['bytes']} bytes, not {size}")
            mbs = size / 1e6 / result["seconds"]
            self.runs.append(f"{label} run {i + 1}: {result['seconds']:.2f} s, {mbs:.1f} MB/s")
            best = max(best, mbs)
        self.stop(sink, expect_zero=False)  # sleeps forever; SIGTERM is how it ends
        return best

    def child_cmd(self, *argv: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "child", *argv]

    # -- 2, 3 -------------------------------------------------------------------------------------

    def exchange(
        self,
        label: str,
        cid: str,
        sha: str,
        size: int,
        providers: list[Proc],
        profile: bool = False,
        fetcher_prefix: Sequence[str] = (),
    ) -> float:
        best = 0.0
        addrs = [p.info["swarm"][0] for p in providers]
        for i in range(self.args.repeat):
            env = None
            spy: subprocess.Popen[bytes] | None = None
            if profile and i == 0:
                env = {**os.environ, "SWARM_BENCH_PROFILE": str(self.work / "profile-fetcher.txt")}
                spy = subprocess.Popen(
                    [PY_SPY, "record", "--pid", str(providers[0].proc.pid), "--rate", str(PROFILE_RATE),
                     "--gil", "--format", "raw", "--output", str(self.work / "profile-provider.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            fetcher_dir = self.fresh("fetcher")
            try:
                argv = ["fetch", str(fetcher_dir), cid, sha, str(self.args.timeout), *addrs]
                before = [cpu_seconds(p.proc.pid) for p in providers]
                result = self.run_child(f"{label} fetch {i + 1}", argv, self.args.timeout + 60, env, fetcher_prefix)
                served = [cpu_seconds(p.proc.pid) - b for p, b in zip(providers, before, strict=True)]
            finally:
                # The child checked it; keeping every run's copy made later runs slower (page cache).
                shutil.rmtree(fetcher_dir, ignore_errors=True)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(STOP_TIMEOUT)
            mbs = size / 1e6 / result["seconds"]
            tag = " (under py-spy)" if spy is not None else ""
            provider_cpu = " + ".join(f"{c:.2f}" for c in served)
            others = result["machine"] - result["cpu"] - sum(served)
            self.runs.append(
                f"{label} run {i + 1}{tag}: {result['seconds']:.2f} s, {mbs:.1f} MB/s, {result['blocks']} blocks; "
                f"CPU s: fetcher {result['cpu']:.2f} during the fetch ({result['cpu'] / result['seconds']:.0%} of it),"
                f" provider {provider_cpu} during the fetch process, everything else on the machine about"
                f" {max(others, 0.0):.2f} during the fetch"
            )
            if spy is None:
                best = max(best, mbs)
        return best

    def on_separate_cores(self, cid: str, sha: str, size: int, providers: list[Proc]) -> tuple[float, float] | str:
        """(2) and (3) again with the fetcher alone on one core and the providers on another
        (taskset), so that they do not compete for a core: what is left is the fetcher's own limit."""
        if shutil.which("taskset") is None:
            return "taskset not installed"
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return "fewer than 2 cores"

        def pin(cpu_list: str) -> None:
            for provider in providers:  # -a: every thread, and the threads they start inherit it
                subprocess.run(["taskset", "-a", "-p", "-c", cpu_list, str(provider.proc.pid)], check=True,
                               capture_output=True)  # fmt: skip

        pin(str(cores[1]))
        try:
            fetcher = ["taskset", "-c", str(cores[0])]
            one = self.exchange("1 provider, on separate cores", cid, sha, size, providers[:1], fetcher_prefix=fetcher)
            two = self.exchange("2 providers, on separate cores", cid, sha, size, providers, fetcher_prefix=fetcher)
        finally:
            pin(",".join(map(str, cores)))
        return one, two

    # -- 4 ----------------------------------------------------------------------------------------

    def ttfb(self, url: str, start: int, want: bytes) -> float:
        """Milliseconds from sending a Range request to its first body byte; the body must be ``want``."""
        import httpx

        headers = {"Range": f"bytes={start}-{start + len(want) - 1}"}
        with httpx.Client(timeout=60) as client:
            began = time.perf_counter()
            with client.stream("GET", url, headers=headers) as response:
                body = bytearray()
                first = None
                for chunk in response.iter_raw():
                    if first is None and chunk:
                        first = time.perf_counter()
                    body += chunk
        if response.status_code != 206 or bytes(body) != want or first is None:
            self.problems.append(f"{url}: range answered {response.status_code} with {len(body)} bytes, not the file's")
            return float("nan")
        return (first - began) * 1000

    def wait_connected(self, node: Proc) -> None:
        """Until C's /metrics shows a connected peer (it dials its bootstrap peer in the background)."""
        import httpx

        deadline = time.monotonic() + CONNECT_TIMEOUT
        while time.monotonic() < deadline:
            text = httpx.get(f"{node.info['gateway']}/metrics", timeout=10).text
            for line in text.splitlines():
                if line.startswith("medianode_swarm_peers ") and float(line.split()[1]) >= 1:
                    return
            time.sleep(0.02)
        raise SystemExit(f"{node.name} did not connect to its bootstrap peer within {CONNECT_TIMEOUT:.0f} s")

    def first_bytes(self, cid: str, src: Path, size: int, holder: Proc) -> tuple[list[float], list[float]]:
        start = (size // 2) - TTFB_RANGE // 2
        with open(src, "rb") as f:
            f.seek(start)
            want = f.read(TTFB_RANGE)
        through_peer, local = [], []
        for i in range(self.args.ttfb_nodes):
            node = self.serve(f"c{i + 1}", self.fresh("c"), bootstrap=(holder.info["swarm"][0],))
            try:
                self.wait_connected(node)
                through_peer.append(self.ttfb(f"{node.info['gateway']}/ipfs/{cid}", start, want))
            finally:
                self.stop(node)
            local.append(self.ttfb(f"{holder.info['gateway']}/ipfs/{cid}", start, want))
        self.runs.append("TTFB through a fresh node, ms: " + ", ".join(f"{t:.0f}" for t in through_peer))
        self.runs.append("TTFB from the holder's gateway, ms: " + ", ".join(f"{t:.1f}" for t in local))
        return through_peer, local

    # -- 5 ----------------------------------------------------------------------------------------

    def helia(self, size: int) -> tuple[float, float] | str:
        """(MB/s of the whole fetch process, MB/s net of a 1 KiB fetch process), or why not measured."""
        if shutil.which("node") is None:
            return "node is not installed"
        manifest = (REPO / "tests" / "interop" / "package.json").read_bytes()
        helia_dir = HELIA_CACHE / f"helia-{hashlib.sha256(manifest).hexdigest()[:12]}"
        if not (helia_dir / "node_modules" / "helia").exists():
            return f"no Helia install in {helia_dir} (run tests/integration/test_helia.py once)"
        shutil.copy(HELIA_SCRIPT, helia_dir / "helia_node.mjs")
        src = self.work / "helia.bin"
        make_file(src, size)
        sha = file_sha256(src)
        tiny = self.work / "tiny.bin"
        tiny.write_bytes(os.urandom(1024))
        env = {**os.environ, "NODE_NO_WARNINGS": "1"}

        def serve(name: str, path: Path) -> Proc:
            return self.start(name, ["node", "helia_node.mjs", "serve", str(path)], cwd=helia_dir, env=env)

        def fetch_seconds(server: Proc, out: Path) -> float:
            cmd = ["node", "helia_node.mjs", "fetch", server.info["multiaddrs"][0], server.info["cid"], str(out)]
            began = time.perf_counter()
            proc = subprocess.run(cmd, cwd=helia_dir, capture_output=True, env=env, timeout=self.args.timeout)
            seconds = time.perf_counter() - began
            if proc.returncode:
                raise SystemExit(
                    f"Helia fetch failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-4000:]}"
                )
            return seconds

        big = serve("helia-serve", src)
        small = serve("helia-serve-tiny", tiny)
        try:
            whole, base = [], []
            for i in range(self.args.repeat):
                out = self.work / "helia-got.bin"
                whole.append(fetch_seconds(big, out))
                if file_sha256(out) != sha:
                    self.problems.append(f"Helia fetch {i + 1}: the bytes that arrived differ from the file")
                out.unlink()
                base.append(fetch_seconds(small, self.work / "tiny-got.bin"))
                if (self.work / "tiny-got.bin").read_bytes() != tiny.read_bytes():
                    self.problems.append(f"Helia tiny fetch {i + 1}: the bytes that arrived differ from the file")
        finally:
            self.stop(big)
            self.stop(small)
            src.unlink()
        for i, (w, b) in enumerate(zip(whole, base, strict=True)):
            self.runs.append(f"Helia run {i + 1}: fetch process {w:.2f} s, 1 KiB fetch process {b:.2f} s")
        mb = size / 1e6
        return mb / min(whole), mb / (min(whole) - min(base))

    # -- 6 ----------------------------------------------------------------------------------------

    def behind_limited_links(self, cid: str, sha: str, size: int) -> tuple[float, float, float] | str:
        """(raw MB/s through one link, exchange MB/s from one provider behind its link, from two
        each behind its own), or why not measured. The providers serve A1's and A2's stores."""
        why_not = LimitedLinks.why_not()
        if why_not is not None:
            return why_not
        links = LimitedLinks(2, self.args.link_mbit)
        try:
            try:
                links.open()
            except RuntimeError as exc:
                return f"could not make the links: {exc}"
            label = f"raw stream through a {self.args.link_mbit} mbit link"
            raw = self.raw(label, size, f"/ip4/{links.near[0]}/tcp/0", sender_prefix=netns_exec(links.names[0]))
            providers = [
                self.serve(f"{name}-limited", self.work / name, listen=f"/ip4/{far}/tcp/0", prefix=netns_exec(ns))
                for name, far, ns in zip(("a1", "a2"), links.far, links.names, strict=True)
            ]
            try:
                one = self.exchange("1 provider behind its uplink", cid, sha, size, providers[:1])
                two = self.exchange("2 providers behind their uplinks", cid, sha, size, providers)
            finally:
                for provider in providers:
                    self.stop(provider)
        finally:
            links.close()
        return raw, one, two

    # -- all --------------------------------------------------------------------------------------

    def measure(self) -> list[str]:
        args = self.args
        size = args.size_mib * MiB
        src = self.work / "clip.bin"
        make_file(src, size)
        sha = file_sha256(src)
        warm(src)

        raw = self.raw("raw stream", size)

        cids = []
        for name in ("a1", "a2"):
            add = subprocess.run(medianode(self.work / name, "add", str(src), "--json"), capture_output=True, cwd=REPO)
            if add.returncode:
                raise SystemExit(f"medianode add failed: {add.stderr.decode(errors='replace')}")
            cids.append(json.loads(add.stdout)["cid"])
        if cids[0] != cids[1]:
            raise SystemExit(f"the same file added twice gave two CIDs: {cids}")
        cid = cids[0]
        a1 = self.serve("a1", self.work / "a1")
        a2 = self.serve("a2", self.work / "a2")
        one = self.exchange("1 provider", cid, sha, size, [a1], args.profile)
        two = self.exchange("2 providers", cid, sha, size, [a1, a2])
        pinned = self.on_separate_cores(cid, sha, size, [a1, a2])
        through_peer, local = self.first_bytes(cid, src, size, a1)
        self.stop(a1)
        self.stop(a2)
        src.unlink()
        limited = self.behind_limited_links(cid, sha, size)

        mib, hmib, n = args.size_mib, args.helia_size_mib, args.ttfb_nodes
        lines = [
            "| measurement | MB/s or ms | reference | ratio | target |",
            "|---|---|---|---|---|",
            row(f"raw py-libp2p stream (Noise, Yamux), {mib} MiB in 256 KiB writes, MB/s", raw, "(the reference)", ""),
            row(f"block exchange, 1 provider, {mib} MiB, MB/s", one, "raw stream", ">= 0.7", raw),
            row(f"block exchange, 2 providers, {mib} MiB, MB/s", two, "1 provider", "> 1", one),
        ]  # fmt: skip
        if isinstance(pinned, str):
            lines.append(f"| the same on separate cores | not measured: {pinned} | | | |")
        else:
            pinned_one, pinned_two = pinned
            lines += [
                row(f"block exchange, 1 provider, fetcher and provider on a core each, {mib} MiB, MB/s", pinned_one,
                    "1 provider sharing both cores", "", one),
                row(f"block exchange, 2 providers, fetcher on one core, both providers on the other, {mib} MiB, MB/s",
                    pinned_two, "1 provider on a core of its own", "> 1", pinned_one),
            ]  # fmt: skip
        mbit = args.link_mbit
        if isinstance(limited, str):
            lines.append(f"| providers behind {mbit} mbit uplinks | not measured: {limited} | | | |")
        else:
            link_raw, link_one, link_two = limited
            lines += [
                row(f"raw py-libp2p stream through one {mbit} mbit link, {mib} MiB, MB/s", link_raw,
                    "the link", "", mbit / 8),
                row(f"block exchange, 1 provider behind a {mbit} mbit uplink, MB/s", link_one,
                    "raw stream through the link", ">= 0.7", link_raw),
                row(f"block exchange, 2 providers each behind its own {mbit} mbit uplink, MB/s", link_two,
                    "1 provider behind its uplink", "> 1", link_one),
            ]  # fmt: skip
        lines += [
            row(f"first byte of a 1 MiB range via a fresh node, median of {n}, ms", statistics.median(through_peer),
                "holder's own gateway", "< 300 ms", statistics.median(local)),
            row(f"first byte of a 1 MiB range via a fresh node, max of {n}, ms", max(through_peer),
                "holder's own gateway", "< 300 ms", max(local)),
        ]  # fmt: skip
        helia = self.helia(hmib * MiB)
        if isinstance(helia, str):
            lines.append(f"| Helia → Helia Bitswap | not measured: {helia} | | | |")
        else:
            whole, net = helia
            lines.append(row(f"Helia → Helia Bitswap, {hmib} MiB, fetch process, MB/s", whole, "our exchange", "", one))
            lines.append(row(f"Helia → Helia Bitswap, {hmib} MiB, minus a 1 KiB fetch process, MB/s", net,
                             "our exchange", "", one))  # fmt: skip
        return lines


def row(name: str, value: float, ref_name: str, target: str, ref: float | None = None) -> str:
    if ref is None:
        return f"| {name} | {value:,.1f} | {ref_name} | | {target} |"
    return f"| {name} | {value:,.1f} | {ref_name}: {ref:,.1f} | {value / ref:.2f} | {target} |"


def machine_cpu_seconds() -> float:
    """CPU time all cores have spent running something so far (user, nice, system, irq, softirq), from /proc."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def summarise_profile(path: Path, seconds_hint: str) -> list[str]:
    """Top functions of a py-spy ``--format raw`` file (collapsed stacks: ``frame;frame;... count``)."""
    if not path.exists():
        return [f"(no profile at {path})"]
    counts = count_profile(path)
    own, total, threads, samples = counts.own, counts.total, counts.threads, counts.samples
    out = [f"{samples} samples with the GIL held, about {samples / PROFILE_RATE:.1f} s ({seconds_hint})"]
    out += [f"  thread {name}: {n / samples:.0%}" for name, n in threads.most_common(4)]
    out.append("  self time:")
    out += [f"    {n / samples:5.1%}  {frame}" for frame, n in own.most_common(20)]
    out.append("  including callees (trio, threading and entry points left out):")
    specific = [(frame, n) for frame, n in total.most_common() if not any(g in frame for g in GENERIC_FRAMES)]
    out += [f"    {n / samples:5.1%}  {frame}" for frame, n in specific[:30]]
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument(
        "--helia-size-mib", type=int, help="size for Helia (in memory on both sides); default --size-mib"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput (the best is kept)")
    parser.add_argument("--ttfb-nodes", type=int, default=5, help="fresh nodes for the time to first byte")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per transfer")
    parser.add_argument("--link-mbit", type=int, default=400, help="each provider's uplink in 6 (tc tbf rate)")
    parser.add_argument("--profile", action="store_true", help="py-spy the first single-provider fetch (both sides)")
    parser.add_argument("--dir", type=Path, help="parent of the work directory (default: the system temp dir)")
    args = parser.parse_args()
    if args.size_mib < 4:
        parser.error("--size-mib must be at least 4")
    args.helia_size_mib = args.helia_size_mib or args.size_mib
    if args.profile and not os.access(PY_SPY, os.X_OK):
        parser.error("--profile needs py-spy")
    work = Path(tempfile.mkdtemp(prefix="medianode-swarm-bench-", dir=args.dir))
    bench = Bench(work, args)
    load = os.getloadavg()[0]
    try:
        lines = bench.measure()
        bench.runs.append(f"1-minute load average: {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
        profiles = []
        if args.profile:
            for side in ("fetcher", "provider"):
                profiles += [
                    f"\npy-spy, {side}:",
                    *summarise_profile(
                        work / f"profile-{side}.txt",
                        "only the fetch" if side == "fetcher" else "while the fetch process ran",
                    ),
                ]
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    print("\n" + "\n".join(f"- {run}" for run in bench.runs))
    if profiles:
        print("\n".join(profiles))
    if bench.problems:
        print("\nPROBLEMS:\n" + "\n".join(f"- {p}" for p in bench.problems), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
