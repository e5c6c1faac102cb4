"""S3 benchmark: the S3 listener of ``medianode serve`` beside references measured in the same run.

    .venv/bin/python benchmarks/s3.py [--size-mib 1024] [--rss-size-mib 2048] [--runs 3]
                                      [--duration 10] [--workers 1] [--profile] [--dir DIR]

Prints three tables and, under them, every upload with the CPU seconds the serve process, the
client (this process) and the rest of the machine (other work, the kernel's writeback) used
meanwhile, and the 1/5/15-minute load average at the start and the end.
Servers and clients all run on 127.0.0.1 of this machine. The S3 client is
boto3 in this process (``Config(signature_version="s3v4",
s3={"addressing_style": "path"})``), in two variants: botocore's default
request checksums (``when_supported``: a CRC32 with every PutObject and
UploadPart) and ``request_checksum_calculation="when_required"``. The headers
each variant sent are printed under the tables.

1. single PutObject (``ACL="public-read"``) of a ``--size-mib`` MiB random file,
   timed from the call to its return, into a fresh ``medianode serve`` with a
   fresh data directory (started and given a bucket before the clock starts);
   reference: ``medianode add`` of the same file into a fresh data directory, the
   whole command timed (as benchmarks/storage.py does). Target: PUT >= 0.7 of add.
   Also a presigned PUT URL (private object) uploaded by ``curl -T`` with no
   ``Expect``: the server's own speed, with a client that hashes nothing (over
   plain HTTP boto3 hashes the whole body before sending a byte).
2. multipart upload of the same file with ``upload_file`` and
   ``TransferConfig(multipart_chunksize=8 MiB, max_concurrency=4)``, each into a
   fresh serve as well; reference: the single PUT. Target: >= 1.0.
   Every object's ``x-ipfs-roots`` must be the CID ``add`` gave the file.
3. anonymous full GET of the public object (``curl {s3}/{bucket}/{key}``, no
   credentials), best of ``--runs`` after one untimed GET; reference: nginx
   (one worker, ``sendfile on``) serving the original file, measured the same
   way; the gateway's ``/ipfs/{cid}`` alongside for scale. Target: >= 0.5.
4. random 1 MiB ranges from 32 connections (``wrk -t2 -c32 --latency`` with
   ``benchmarks/random_range.lua``, as benchmarks/gateway.py) on the public
   object, the gateway's ``/ipfs/{cid}`` (the CID from the object's
   ``x-ipfs-roots``) and nginx: requests/s, p50 and p99; a short checked run per
   server verifies that every response is a 206 with 1 MiB.
5. peak RSS (``VmHWM`` in /proc/PID/status) of a fresh serve process after a
   ``--rss-size-mib`` MiB PutObject in each variant and after a multipart upload
   of it; reference: ``medianode add`` of that file under GNU time. Target: < 150 MiB.

Throughput figures are the best of ``--runs``; each run does add, then every
upload, so the disk's swings from run to run (see benchmarks/README.md) reach
reference and measurement alike. ``os.sync()`` precedes every timed write.
``--profile`` adds one untimed single PUT and one multipart upload per variant
under py-spy (the serve process, and this process as the client) and prints
their top functions. Any failed check (status, bytes, CID, a serve exit code
other than 0 after SIGTERM, errors in its log) makes the run fail (exit 1)
after the tables are printed; missed targets only show in the tables.
Everything lives in one temporary directory, removed at the end; every server
is stopped with SIGTERM on the way out (errors, Ctrl-C and ``--time-limit``
included).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from gateway import (
    NGINX,
    START_TIMEOUT,
    WRK,
    WrkResult,
    best_speed,
    check_range,
    start_nginx,
    stop,
    wrk_ranges,
)
from swarm import cpu_seconds, machine_cpu_seconds

from benchlib import REPO, MiB, count_profile, make_file, medianode, warm

GNU_TIME = "/usr/bin/time"
CURL = shutil.which("curl") or "curl"
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
PROFILE_RATE = 100
BUCKET = "bench"
KEY = "media/clip.bin"
PART = 8 * MiB
CONCURRENCY = 4
UPLOAD_TIMEOUT = 600  # seconds botocore waits on one response
VARIANTS = {"default checksums": None, "when_required": "when_required"}  # request_checksum_calculation
SHOWN_HEADERS = re.compile(r"^(x-amz-(content-sha256|checksum-.*|sdk-checksum-algorithm|trailer|decoded-.*)|"
                           r"content-(length|encoding|md5)|transfer-encoding|expect)$", re.I)  # fmt: skip
GENERIC_FRAMES = ("threading.py", "trio/", "outcome/", "queue.py", "runpy", "concurrent/futures", "node/cli/")


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    s3: str
    gateway: str
    data_dir: Path
    err: Path


@dataclass
class Upload:
    seconds: float
    server_cpu: float
    client_cpu: float
    machine_cpu: float
    cid: str

    def line(self, size: int) -> str:
        others = self.machine_cpu - self.server_cpu - self.client_cpu
        return (
            f"{self.seconds:.2f} s, {size / 1e6 / self.seconds:,.0f} MB/s; CPU s: serve {self.server_cpu:.2f}, "
            f"client {self.client_cpu:.2f}, rest of the machine {max(others, 0.0):.2f}"
        )


@dataclass
class Bench:
    work: Path
    args: argparse.Namespace
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    serial: int = 0

    # -- processes --------------------------------------------------------------------------------

    def fresh(self, name: str) -> Path:
        self.serial += 1
        path = self.work / f"{name}-{self.serial}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def start_serve(self, data_dir: Path) -> tuple[Serve, tuple[str, str]]:
        """A key in a new data directory, then ``medianode serve`` on free ports with the S3 listener."""
        made = subprocess.run(
            medianode(data_dir, "s3", "key", "create", "--name", "bench", "--json"),
            capture_output=True,
            cwd=REPO,
            timeout=60,
        )
        if made.returncode:
            raise SystemExit(f"medianode s3 key create failed: {made.stderr.decode(errors='replace')}")
        key = json.loads(made.stdout)
        out, err = data_dir.parent / f"{data_dir.name}.out", data_dir.parent / f"{data_dir.name}.err"
        cmd = medianode(data_dir, "serve", "--workers", str(self.args.workers), "--gateway", "127.0.0.1:0",
                        "--s3", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-dht", "--no-mdns",
                        "--json")  # fmt: skip
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=REPO)
        self.procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            first = out.read_bytes().split(b"\n", 1)
            if len(first) == 2:
                ready = json.loads(first[0])
                serve = Serve(proc, str(ready["s3"]).rstrip("/"), str(ready["gateway"]).rstrip("/"), data_dir, err)
                return serve, (str(key["access_key_id"]), str(key["secret_access_key"]))
            if proc.poll() is not None:
                raise SystemExit(f"medianode serve exited with {proc.returncode}: {err.read_text(errors='replace')}")
            time.sleep(0.05)
        raise SystemExit(f"medianode serve printed no address within {START_TIMEOUT:.0f} s")

    def stop_serve(self, serve: Serve) -> None:
        code = stop(serve.proc, signal.SIGTERM)
        if code != 0:
            self.problems.append(f"medianode serve ({serve.data_dir.name}) exit code {code} after SIGTERM")
        log = serve.err.read_text(errors="replace").strip()
        if re.search(r"error|traceback|exception", log, re.I):
            self.problems.append(f"medianode serve ({serve.data_dir.name}) stderr:\n{log[-4000:]}")
        shutil.rmtree(serve.data_dir, ignore_errors=True)

    @contextmanager
    def serving(self, name: str) -> Iterator[tuple[Serve, Any]]:
        """A fresh serve with a bucket, and a boto3 client factory for it; stopped and removed after."""
        serve, key = self.start_serve(self.fresh(name))
        try:
            s3_client(serve.s3, key, "when_required").create_bucket(Bucket=BUCKET)
            yield serve, lambda checksums: self.client(serve.s3, key, checksums)
        finally:
            self.stop_serve(serve)

    def client(self, url: str, key: tuple[str, str], checksums: str | None) -> Any:
        client = s3_client(url, key, checksums)
        label = "default checksums" if checksums is None else checksums

        def record(request: Any, event_name: str, **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            shown = {k: v for k, v in request.headers.items() if SHOWN_HEADERS.match(k)}
            self.headers[f"{label}, {operation}"] = {k: str(v, "latin-1") if isinstance(v, bytes) else str(v)
                                                     for k, v in shown.items()}  # fmt: skip

        for operation in ("PutObject", "UploadPart", "CompleteMultipartUpload"):
            client.meta.events.register(f"before-send.s3.{operation}", record)
        return client

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc, signal.SIGTERM)

    # -- measurements -----------------------------------------------------------------------------

    def add(self, src: Path, rss: bool = False) -> tuple[float, str, int]:
        """Seconds of ``medianode add`` into a fresh data directory, the CID, and peak RSS (GNU time) or -1."""
        data_dir = self.fresh("add")
        rss_file = self.work / "add-rss.txt"
        wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_file)] if rss and os.path.exists(GNU_TIME) else []
        os.sync()
        start = time.perf_counter()
        proc = subprocess.run([*wrapped, *medianode(data_dir, "add", str(src), "--json")], capture_output=True,
                              cwd=REPO, timeout=UPLOAD_TIMEOUT)  # fmt: skip
        seconds = time.perf_counter() - start
        shutil.rmtree(data_dir, ignore_errors=True)
        if proc.returncode:
            raise SystemExit(f"medianode add failed: {proc.stderr.decode(errors='replace')}")
        peak = int(rss_file.read_text().split()[-1]) * 1024 if wrapped else -1
        return seconds, str(json.loads(proc.stdout)["cid"]), peak

    def upload(
        self,
        serve: Serve,
        client: Any,
        src: Path,
        multipart: bool,
        spy_name: str | None = None,
        presigned: bool = False,
    ) -> Upload:
        """One PutObject (or multipart upload) of ``src`` as the public object, timed; checked by its CID.
        ``presigned``: ``curl -T`` to a presigned PUT URL instead (private), the client hashing nothing."""
        spies = self.spies(serve, spy_name) if spy_name else []
        os.sync()
        before = (cpu_seconds(serve.proc.pid), time.process_time(), machine_cpu_seconds())
        start = time.perf_counter()
        if presigned:
            url = client.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": KEY}, ExpiresIn=900)
            put = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect:", "-T", str(src),
                                  url], capture_output=True, text=True, timeout=UPLOAD_TIMEOUT)  # fmt: skip
            if put.stdout != "200":
                raise SystemExit(f"presigned PUT: curl {put.returncode} HTTP {put.stdout}: {put.stderr}")
        elif multipart:
            from boto3.s3.transfer import TransferConfig

            config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=CONCURRENCY)
            client.upload_file(str(src), BUCKET, KEY, ExtraArgs={"ACL": "public-read"}, Config=config)
        else:
            with open(src, "rb") as body:
                client.put_object(Bucket=BUCKET, Key=KEY, Body=body, ACL="public-read")
        seconds = time.perf_counter() - start
        server, own, machine = cpu_seconds(serve.proc.pid), time.process_time(), machine_cpu_seconds()
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        if serve.proc.poll() is not None:
            raise SystemExit(f"medianode serve exited with {serve.proc.returncode} during an upload")
        cid = client.head_object(Bucket=BUCKET, Key=KEY)["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"]
        return Upload(seconds, server - before[0], own - before[1], machine - before[2], cid)

    def spies(self, serve: Serve, name: str) -> list[subprocess.Popen[bytes]]:
        spies = []
        for side, pid in (("serve", serve.proc.pid), ("client", os.getpid())):
            out = self.work / f"profile-{name}-{side}.txt"
            cmd = [PY_SPY, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE), "--threads", "--format", "raw",
                   "--output", str(out), "--nonblocking"]  # fmt: skip
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(spy)
            spies.append(spy)
        time.sleep(1.0)  # py-spy attaches
        return spies

    def throughput(self, src: Path, size: int) -> dict[str, list[float]]:
        """Seconds of every run of add, the single PUTs and the multipart uploads."""
        seconds: dict[str, list[float]] = collections.defaultdict(list)
        for run in range(1, self.args.runs + 1):
            add_s, cid, _ = self.add(src)
            seconds["add"].append(add_s)
            self.runs.append(f"run {run}, medianode add: {add_s:.2f} s, {size / 1e6 / add_s:,.0f} MB/s")
            for multipart in (False, True):
                for label, checksums in VARIANTS.items():
                    what = f"{'multipart' if multipart else 'PutObject'}, {label}"
                    with self.serving("put") as (serve, client):
                        result = self.upload(serve, client(checksums), src, multipart)
                    if result.cid != cid:
                        raise SystemExit(f"{what}: x-ipfs-roots {result.cid}, but add gave {cid}")
                    seconds[what].append(result.seconds)
                    self.runs.append(f"run {run}, {what}: {result.line(size)}")
            what = "PutObject, presigned, curl -T"
            with self.serving("put") as (serve, client):
                result = self.upload(serve, client("when_required"), src, False, presigned=True)
            if result.cid != cid:
                raise SystemExit(f"{what}: x-ipfs-roots {result.cid}, but add gave {cid}")
            seconds[what].append(result.seconds)
            self.runs.append(f"run {run}, {what}: {result.line(size)}")
        if self.args.profile:
            for multipart in (False, True):
                for label, checksums in VARIANTS.items():
                    name = f"{'multipart' if multipart else 'put'}-{label.replace(' ', '-')}"
                    with self.serving("profile") as (serve, client):
                        result = self.upload(serve, client(checksums), src, multipart, spy_name=name)
                    self.runs.append(f"under py-spy, {name}: {result.line(size)}")
                    for side in ("serve", "client"):
                        self.profiles += [f"\npy-spy, {name}, {side}:",
                                          *summarise_profile(self.work / f"profile-{name}-{side}.txt")]  # fmt: skip
        return seconds

    def reads(self, src: Path, size: int) -> tuple[dict[str, float], dict[str, WrkResult], dict[str, WrkResult]]:
        """Full GETs and random ranges on the public object, the gateway and nginx."""
        nginx: subprocess.Popen[bytes] | None = None
        with self.serving("get") as (serve, client):
            self.upload(serve, client("when_required"), src, multipart=False)
            s3_url = f"{serve.s3}/{BUCKET}/{KEY}"
            with urllib.request.urlopen(urllib.request.Request(s3_url, method="HEAD"), timeout=60) as resp:
                cid = resp.headers["x-ipfs-roots"]
            try:
                nginx, nginx_base = start_nginx(self.work / "nginx", src.parent, self.args.workers)
                self.procs.append(nginx)
                urls = {"S3 (anonymous)": s3_url, "gateway /ipfs/": f"{serve.gateway}/ipfs/{cid}",
                        "nginx": f"{nginx_base}/{src.name}"}  # fmt: skip
                check_range(urls, src, size, self.args.seed)
                speed = {name: best_speed(url, size, self.args.runs) for name, url in urls.items()}
                timed = {name: wrk_ranges(url, size, self.args, self.args.duration, check=False)
                         for name, url in urls.items()}  # fmt: skip
                checked = {name: wrk_ranges(url, size, self.args, self.args.check_seconds, check=True)
                           for name, url in urls.items()}  # fmt: skip
            finally:
                stop(nginx, signal.SIGTERM)
            if serve.proc.poll() is not None:
                self.problems.append(f"medianode serve exited with {serve.proc.returncode} during the reads")
        for kind, results in (("timed", timed), ("checked", checked)):
            for name, result in results.items():
                self.problems += [f"{name} ({kind} ranges): {p}" for p in result.problems(self.args.connections)]
        return speed, timed, checked

    def peak_rss(self, big: Path) -> list[str]:
        """Rows of the RSS table: VmHWM of a fresh serve after each big upload, and add's under GNU time."""
        _, cid, add_rss = self.add(big, rss=True)
        mib = self.args.rss_size_mib
        rows = []
        for multipart, (label, checksums) in ((m, v) for m in (False, True) for v in VARIANTS.items()):
            what = f"multipart ({PART // MiB} MiB x {CONCURRENCY}), {label}" if multipart else f"PutObject, {label}"
            with self.serving("rss") as (serve, client):
                idle = vm_hwm(serve.proc.pid)
                result = self.upload(serve, client(checksums), big, multipart)
                peak = vm_hwm(serve.proc.pid)
            if result.cid != cid:
                raise SystemExit(f"{what} {mib} MiB: x-ipfs-roots {result.cid}, but add gave {cid}")
            self.runs.append(f"{what}, {mib} MiB (RSS): {result.line(big.stat().st_size)}")
            rows.append(f"| serve, {what}, {mib} MiB (VmHWM; {idle / MiB:.0f} after start) | {peak / MiB:.0f} "
                        "| < 150 |")  # fmt: skip
        rows.append(f"| (reference) medianode add {mib} MiB (GNU time) | {add_rss / MiB:.0f} | |")
        return rows

    def measure(self) -> list[str]:
        args = self.args
        size = args.size_mib * MiB
        www = self.work / "www"
        www.mkdir()
        src = www / "clip.bin"
        make_file(src, size)
        warm(src)
        seconds = self.throughput(src, size)
        speed, timed, checked = self.reads(src, size)
        src.unlink()
        big = self.work / "big.bin"
        make_file(big, args.rss_size_mib * MiB)
        warm(big)
        rss_rows = self.peak_rss(big)
        big.unlink()

        def mbs(what: str) -> float:
            return size / 1e6 / min(seconds[what])

        def spread(what: str) -> str:
            return " / ".join(f"{size / 1e6 / s:,.0f}" for s in seconds[what])

        def row(name: str, what: str, ref_name: str, ref: str, target: str) -> str:
            ours, theirs = mbs(what), mbs(ref)
            return (f"| {name} | {ours:,.0f} | {ref_name} | {theirs:,.0f} | {ours / theirs:.2f} | {target} "
                    f"| {spread(what)} |")  # fmt: skip

        n, mib, c = args.runs, args.size_mib, args.connections
        multipart = f"multipart ({PART // MiB} MiB parts, {CONCURRENCY} at a time)"
        lines = [
            f"| measurement ({mib} MiB, best of {n}) | medianode | reference | reference | ratio | target "
            "| every run |",
            "|---|---|---|---|---|---|---|",
            row("PutObject, default checksums, MB/s", "PutObject, default checksums",
                "medianode add, fresh data dir", "add", ">= 0.7"),
            row("PutObject, when_required, MB/s", "PutObject, when_required",
                "medianode add, fresh data dir", "add", ">= 0.7"),
            row("PutObject, presigned URL, curl -T (no client hashing), MB/s", "PutObject, presigned, curl -T",
                "medianode add, fresh data dir", "add", ">= 0.7"),
            f"| (for scale) medianode add, MB/s | | | {mbs('add'):,.0f} | | | {spread('add')} |",
            row(f"{multipart}, default checksums, MB/s", "multipart, default checksums",
                "PutObject, default checksums", "PutObject, default checksums", ">= 1.0"),
            row(f"{multipart}, when_required, MB/s", "multipart, when_required",
                "PutObject, when_required", "PutObject, when_required", ">= 1.0"),
        ]  # fmt: skip
        names = ("S3 (anonymous)", "gateway /ipfs/", "nginx")

        def reads_row(name: str, values: dict[str, float], target: str, fmt: str = ",.0f") -> str:
            s3, gw, ref = (values[k] for k in names)
            return f"| {name} | {s3:{fmt}} | {gw:{fmt}} | {ref:{fmt}} | {s3 / ref:.2f} | {target} |"

        def counts(name: str, results: dict[str, WrkResult], cell: Callable[[WrkResult], str]) -> str:
            return f"| {name} | " + " | ".join(cell(results[k]) for k in names) + " | | 0 errors |"

        lines += [
            "",
            "| measurement | S3, anonymous | gateway /ipfs/{cid} | nginx | S3 / nginx | target |",
            "|---|---|---|---|---|---|",
            reads_row(f"full GET {mib} MiB, MB/s (curl, best of {n})", speed, ">= 0.5"),
            reads_row(f"random 1 MiB ranges, {c} clients, requests/s", {k: r.requests_per_s for k, r in timed.items()},
                      "", ",.1f"),
            reads_row("random 1 MiB ranges, p50 ms", {k: r.p50_ms for k, r in timed.items()}, "", ",.1f"),
            reads_row("random 1 MiB ranges, p99 ms", {k: r.p99_ms for k, r in timed.items()}, "", ",.1f"),
            counts(f"timed ranges ({args.duration} s): responses / non-2xx / socket errors", timed,
                   lambda r: f"{r.requests} / {r.non_2xx} / {r.socket_errors}"),
            counts(f"checked ranges ({args.check_seconds} s): responses / not 206 / not 1 MiB", checked,
                   lambda r: f"{r.requests} / {r.not_206} / {r.wrong_length}"),
        ]  # fmt: skip
        lines += ["", "| peak RSS | MiB | target |", "|---|---|---|", *rss_rows]
        return lines


def s3_client(url: str, key: tuple[str, str], checksums: str | None) -> Any:
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {
        "signature_version": "s3v4",
        "s3": {"addressing_style": "path"},
        "retries": {"total_max_attempts": 1},  # a failed request fails the run, not a slower retry
        "connect_timeout": 10,
        "read_timeout": UPLOAD_TIMEOUT,
        "max_pool_connections": CONCURRENCY * 2,
    }
    if checksums is not None:
        options["request_checksum_calculation"] = checksums
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        region_name="us-east-1", config=Config(**options))  # fmt: skip


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a process so far, in bytes."""
    m = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if m is None:
        raise SystemExit(f"no VmHWM for process {pid}")
    return int(m.group(1)) * 1024


def summarise_profile(path: Path) -> list[str]:
    """Top threads and functions of a py-spy ``--format raw --threads`` file (``thread;frame;... count``)."""
    if not path.exists() or not path.stat().st_size:
        return [f"(no profile at {path.name})"]
    counts = count_profile(path, thread_kind)
    own, total, threads, samples = counts.own, counts.total, counts.threads, counts.samples
    out = [f"{samples} samples of active threads, about {samples / PROFILE_RATE:.1f} thread-seconds"]
    out += [f"  {name}: {n / samples:.0%}" for name, n in threads.most_common()]
    out.append("  self time:")
    out += [f"    {n / samples:5.1%}  {frame}" for frame, n in own.most_common(15)]
    out.append("  including callees (threading, trio and entry points left out):")
    specific = [(frame, n) for frame, n in total.most_common() if not any(g in frame for g in GENERIC_FRAMES)]
    out += [f"    {n / samples:5.1%}  {frame}" for frame, n in specific[:20]]
    return out


def thread_kind(frame: str) -> str:
    """``thread (TID): NAME`` as a kind of thread: the event loop, pack writers, boto3's transfer pool, or
    trio's worker threads (which trio renames after the function they run)."""
    name = frame.partition(": ")[2]
    if name in ("MainThread", "medianode-pack-writer"):
        return "thread " + name
    if name.startswith("ThreadPoolExecutor"):
        return "s3transfer's thread pool"
    return "worker threads (trio's thread cache)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-size-mib", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3, help="runs per throughput (the best is kept)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per server")
    parser.add_argument("--check-seconds", type=int, default=3, help="seconds of checked wrk load per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="serve --workers: 2 or more puts S3 reads in workers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="py-spy one more upload of each kind (untimed)")
    parser.add_argument("--time-limit", type=int, default=1800, help="seconds before the run is abandoned")
    parser.add_argument("--dir", type=Path, help="parent of the work directory (default: the system temp dir)")
    args = parser.parse_args()
    if args.size_mib < 2 * PART // MiB:
        parser.error(f"--size-mib must be at least {2 * PART // MiB} (two parts)")
    for tool in (NGINX, WRK, shutil.which("curl") or "curl", *([PY_SPY] if args.profile else [])):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} is needed")
    for name in ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION", "AWS_PROFILE"):
        os.environ.pop(name, None)  # botocore's defaults, not this machine's
    work = Path(tempfile.mkdtemp(prefix="medianode-s3-bench-", dir=args.dir))
    os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(work / "no-aws-config")

    def abandon(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(f"stopped by {signal.Signals(signum).name}")

    for sig in (signal.SIGALRM, signal.SIGTERM):
        signal.signal(sig, abandon)
    signal.alarm(args.time_limit)
    bench = Bench(work, args)
    load = os.getloadavg()
    try:
        lines = bench.measure()
    finally:
        signal.alarm(0)
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    end = os.getloadavg()
    print("\n".join(lines))
    print("\n" + "\n".join(f"- {run}" for run in bench.runs))
    print(f"- load average (1, 5, 15 min): {fmt_load(load)} at the start, {fmt_load(end)} at the end")
    print("\nrequest headers sent (last request of each kind):")
    for what, headers in sorted(bench.headers.items()):
        print(f"- {what}: " + ", ".join(f"{k}: {v}" for k, v in sorted(headers.items())))
    if bench.profiles:
        print("\n".join(bench.profiles))
    if bench.problems:
        print("\nPROBLEMS:\n" + "\n".join(f"- {p}" for p in bench.problems), file=sys.stderr)
        raise SystemExit(1)


def fmt_load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
