"""Gateway benchmark: medianode's HTTP gateway beside nginx serving the same file, in one run.

    .venv/bin/python benchmarks/gateway.py [--size-mib 1024] [--dir DIR] [--duration 10]

Prints one table. The reference is nginx (``/usr/sbin/nginx``, one worker,
``sendfile on``) serving the original file from a temporary directory; medianode
serves the same bytes at ``/ipfs/{cid}`` after ``medianode add``. Both listen
on 127.0.0.1 of this machine, and the load clients are not Python:

- full-file GET: ``curl -o /dev/null -w %{speed_download}``, best of ``--repeat``
  runs per server (after one untimed warm-up GET each);
- random 1 MiB ranges: ``wrk -c32 -t2 -d10s --latency`` with
  ``benchmarks/random_range.lua``, which sends a seeded random
  ``Range: bytes=a-(a+1048575)`` inside the file per request. The timed run
  checks wrk's error and non-2xx counts and that the bytes read come to about
  1 MiB per response; a separate ``--check-seconds`` run per server, not
  timed, has the Lua script check that every response is a 206 with a 1 MiB
  body (doing that in the timed run makes wrk buffer every body into Lua, which
  halves what the client can take from nginx on this 2-core machine).

Before timing, one range from each server is checked against the file itself.
Any socket error, non-2xx, non-206 or wrong-size response, or an unclean exit of
the gateway, makes the run fail (exit 1) after the table is printed; missed
targets only show in the table. The input file is synced and read once before timing;
everything (file, node data, nginx prefix) lives in one temporary directory
that is removed at the end, and both servers are stopped even on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchlib import REPO, MiB, make_file, medianode, warm

NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"
LUA = REPO / "benchmarks" / "random_range.lua"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port} after {START_TIMEOUT:.0f} s")


def stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> int | None:
    """Signal ``proc`` and wait for it (kill it if it does not exit in time); return its exit code."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT)
        return None


def nginx_conf(prefix: Path, root: Path, port: int, workers: int) -> str:
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""  # workers must read root
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temps = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in kinds)
    return f"""{user}
worker_processes {workers};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temps}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def start_nginx(prefix: Path, root: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, root, port, workers))
    log = prefix / "stderr.log"
    cmd = [NGINX, "-e", str(prefix / "error.log"), "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    wait_listening(port, proc, log)
    return proc, f"http://127.0.0.1:{port}"


def start_gateway(data_dir: Path, logs: Path, workers: int, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``medianode serve --workers N`` on a free port; its base URL comes from the first JSON line on stdout,
    and it is used once its workers answer too (``wait_for_workers``)."""
    out, err = logs / f"gateway-{workers}.out", logs / f"gateway-{workers}.err"
    cmd = medianode(data_dir, "serve", "--gateway", "127.0.0.1:0", "--no-s3", "--no-mdns", "--workers", str(workers),
                    *extra, "--json")  # fmt: skip
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=REPO)
    try:
        base = str(serve_ready(proc, out, err)["gateway"]).rstrip("/")
    except SystemExit:
        stop(proc, signal.SIGKILL)
        raise
    wait_for_workers(proc.pid, workers if workers > 1 else 0)  # with 2 or more, N workers serve; else serve itself
    return proc, base


def wait_for_workers(owner: int, count: int) -> None:
    """Until ``count`` worker processes of ``owner`` have been up for a second (a worker listens about half a
    second after it starts: its imports)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        children = [c for t in Path(f"/proc/{owner}/task").glob("*/children") for c in t.read_text().split()]
        if len(children) >= count:
            time.sleep(1.0)
            return
        time.sleep(0.05)
    raise SystemExit(f"medianode serve started fewer than {count} workers in {START_TIMEOUT:.0f} s")


def fetch_range(url: str, start: int, length: int) -> bytes:
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-{start + length - 1}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        if resp.status != 206:
            raise SystemExit(f"{url}: range request answered {resp.status}, not 206")
        return bytes(resp.read())


def check_range(urls: dict[str, str], src: Path, size: int, seed: int) -> None:
    """One random 1 MiB range from each server must equal the file's bytes."""
    start = random.Random(seed).randrange(0, size - MiB + 1)
    with open(src, "rb") as f:
        f.seek(start)
        want = f.read(MiB)
    for name, url in urls.items():
        if fetch_range(url, start, MiB) != want:
            raise SystemExit(f"{name}: bytes {start}-{start + MiB - 1} differ from the file")


def curl_speed(url: str, size: int) -> float:
    """MB/s of one full GET with curl, checking the status and byte count."""
    out = "%{http_code} %{size_download} %{speed_download}"
    cmd = ["curl", "-sS", "--max-time", "600", "-o", "/dev/null", "-w", out]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=660)
    if proc.returncode:
        raise SystemExit(f"curl {url} failed ({proc.returncode}): {proc.stderr.strip()}")
    code, got, speed = proc.stdout.split()
    if code != "200" or int(got) != size:
        raise SystemExit(f"curl {url}: status {code}, {got} bytes, expected 200 and {size}")
    return float(speed) / 1e6


def best_speed(url: str, size: int, repeat: int) -> float:
    curl_speed(url, size)  # warm-up: page cache, open packs, connection paths
    return max(curl_speed(url, size) for _ in range(repeat))


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    bytes_read: int
    socket_errors: str
    non_2xx: int
    not_206: int | None  # counted only in a checked run
    wrong_length: int | None

    def problems(self, connections: int) -> list[str]:
        out = []
        if any(int(n) for n in re.findall(r"\d+", self.socket_errors)):
            out.append(f"socket errors: {self.socket_errors}")
        if self.non_2xx:
            out.append(f"{self.non_2xx} non-2xx/3xx responses")
        if self.not_206:
            out.append(f"{self.not_206} responses were not 206")
        if self.wrong_length:
            out.append(f"{self.wrong_length} 206 responses had a body other than 1 MiB")
        if not self.requests:
            out.append("no requests completed")
        # Unchecked runs: every finished response carries 1 MiB, and at most one per connection is cut off at the end.
        low, high = self.requests * MiB, (self.requests + connections) * (MiB + HEADER_SLACK)
        if not low <= self.bytes_read <= high:
            out.append(f"read {self.bytes_read} bytes for {self.requests} responses, not about 1 MiB each")
        return out


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
HEADER_SLACK = 4096


def latency_ms(text: str, percent: str) -> float:
    m = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    if m is None:
        raise SystemExit(f"no {percent}% latency in wrk output:\n{text}")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def wrk_ranges(url: str, size: int, args: argparse.Namespace, seconds: int, check: bool) -> WrkResult:
    """Random 1 MiB ranges with wrk; ``check`` makes the Lua script verify every response (slower client)."""
    cmd = [WRK, f"-c{args.connections}", "-t2", f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(LUA)]
    env = {**os.environ, "SIZE": str(size), "SEED": str(args.seed), "CHECK": "1" if check else "0"}
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, env=env, timeout=seconds + 60)
    text = proc.stdout
    if proc.returncode:
        raise SystemExit(f"wrk {url} failed ({proc.returncode}): {proc.stderr}{text}")

    def number(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, text, re.M)
        if m is None:
            if default is None:
                raise SystemExit(f"no match for {pattern!r} in wrk output:\n{text}")
            return default
        return m.group(1)

    return WrkResult(
        requests_per_s=float(number(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=latency_ms(text, "50"),
        p99_ms=latency_ms(text, "99"),
        requests=int(number(r"^requests:\s*(\d+)")),
        bytes_read=int(number(r"^bytes:\s*(\d+)")),
        socket_errors=number(r"^\s*Socket errors:\s*(.+)$", "none"),
        non_2xx=int(number(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", "0")),
        not_206=int(number(r"^not_206:\s*(\d+)")) if check else None,
        wrong_length=int(number(r"^wrong_length:\s*(\d+)")) if check else None,
    )


def row(name: str, ours: float, ref: float, target: str, fmt: str = ",.0f") -> str:
    return f"| {name} | {ours:{fmt}} | {ref:{fmt}} | {ours / ref:.2f} | {target} |"


def counts(name: str, results: dict[str, WrkResult]) -> str:
    def cell(r: WrkResult) -> str:
        if r.not_206 is None:
            return f"{r.requests} / {r.non_2xx} / {r.socket_errors}"
        return f"{r.requests} / {r.not_206} / {r.wrong_length}"

    return f"| {name} | {cell(results['medianode'])} | {cell(results['nginx'])} | | 0 errors |"


def serve_ready(proc: subprocess.Popen[bytes], out: Path, err: Path | None = None) -> dict[str, object]:
    """The first JSON line ``medianode serve --json`` writes to ``out`` (its addresses)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        first = out.read_bytes().split(b"\n", 1)
        if len(first) == 2:
            return dict(json.loads(first[0]))
        if proc.poll() is not None:
            said = err.read_text(errors="replace") if err is not None else ""
            raise SystemExit(f"medianode serve exited with {proc.returncode}: {said}")
        time.sleep(0.05)
    raise SystemExit(f"medianode serve printed no address within {START_TIMEOUT:.0f} s")


def mixed_load(work: Path, url: str, size: int, args: argparse.Namespace, remote_url: str, remote_size: int,
               node: Path) -> tuple[WrkResult, float, float]:  # fmt: skip
    """Ranges with wrk while another process adds a ``--mixed-add-mib`` file to the same store and the gateway
    fetches a file only a second node holds (over Bitswap, into its store); wrk's result, the add's and the
    fetch's seconds."""
    big = work / "mixed-add.bin"
    make_file(big, args.mixed_add_mib * MiB)
    warm(big)
    add = subprocess.Popen(medianode(node, "add", str(big), "--no-pin", "--json"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, cwd=REPO)  # fmt: skip
    began = time.monotonic()
    curl = ["curl", "-sS", "--max-time", "600", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    fetch = subprocess.Popen([*curl, remote_url], stdout=subprocess.PIPE, text=True)
    result = wrk_ranges(url, size, args, args.duration, check=False)
    fetched, _ = fetch.communicate(timeout=600)
    fetch_s = time.monotonic() - began
    _, add_err = add.communicate(timeout=600)
    add_s = time.monotonic() - began
    if add.returncode:
        raise SystemExit(f"medianode add during the mixed load failed: {add_err.decode(errors='replace')}")
    if fetched.split() != ["200", str(remote_size)]:
        raise SystemExit(f"the swarm fetch through the gateway answered {fetched!r}, not 200 and {remote_size} bytes")
    return result, add_s, fetch_s


def measure(work: Path, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Run every server and measurement; return (table lines, problems)."""
    size = args.size_mib * MiB
    www = work / "www"
    www.mkdir()
    src = www / "clip.bin"
    make_file(src, size)
    node = work / "node"
    add = subprocess.run(medianode(node, "add", str(src), "--json"), capture_output=True, cwd=REPO)
    if add.returncode:
        raise SystemExit(f"medianode add failed: {add.stderr.decode(errors='replace')}")
    cid = json.loads(add.stdout)["cid"]
    remote = work / "remote.bin"
    remote_size = args.mixed_fetch_mib * MiB
    make_file(remote, remote_size)
    remote_node = work / "remote-node"
    fetched = subprocess.run(medianode(remote_node, "add", str(remote), "--json"), capture_output=True, cwd=REPO)
    remote_cid = json.loads(fetched.stdout)["cid"]
    warm(src)

    problems: list[str] = []
    speed: dict[str, float] = {}
    ranges: dict[str, WrkResult] = {}
    checked: dict[str, WrkResult] = {}
    for n in args.nginx_workers:
        name = f"nginx {n}"
        proc, base = start_nginx(work / f"nginx-{n}", www, n)
        try:
            url = f"{base}/{src.name}"
            check_range({name: url}, src, size, args.seed)
            speed[name] = best_speed(url, size, args.repeat)
            ranges[name] = wrk_ranges(url, size, args, args.duration, check=False)
            checked[name] = wrk_ranges(url, size, args, args.check_seconds, check=True)
        finally:
            stop(proc, signal.SIGQUIT)
    out = work / "remote.out"
    with open(out, "wb") as fo:
        holder = subprocess.Popen(medianode(remote_node, "serve", "--gateway", "127.0.0.1:0", "--no-s3", "--no-mdns",
                                            "--no-dht", "--listen", "/ip4/127.0.0.1/tcp/0", "--workers", "1", "--json"),
                                  stdout=fo, stderr=subprocess.DEVNULL, cwd=REPO)  # fmt: skip
    mixed: tuple[WrkResult, float, float] | None = None
    try:
        holder_addr = str(serve_ready(holder, out)["swarm"][0])  # type: ignore[index]
        for w in args.workers:
            name = f"medianode {w}"
            gateway, base = start_gateway(node, work, w, "--no-dht", "--listen", "/ip4/127.0.0.1/tcp/0",
                                          "--bootstrap", holder_addr)  # fmt: skip
            try:
                url = f"{base}/ipfs/{cid}"
                check_range({name: url}, src, size, args.seed)
                speed[name] = best_speed(url, size, args.repeat)
                ranges[name] = wrk_ranges(url, size, args, args.duration, check=False)
                checked[name] = wrk_ranges(url, size, args, args.check_seconds, check=True)
                if w == max(args.workers) and args.mixed_add_mib:
                    mixed = mixed_load(work, url, size, args, f"{base}/ipfs/{remote_cid}", remote_size, node)
                if gateway.poll() is not None:
                    problems.append(f"{name}: serve exited with {gateway.returncode} during the run")
            finally:
                code = stop(gateway, signal.SIGTERM)
            if code != 0:
                problems.append(f"{name}: serve exit code {code} after SIGTERM (expected 0)")
            err = (work / f"gateway-{w}.err").read_text(errors="replace").strip()
            if re.search(r"error|traceback|exception", err, re.I):
                problems.append(f"{name} stderr:\n{err[-4000:]}")
    finally:
        stop(holder, signal.SIGTERM)
    for kind, results in (("timed", ranges), ("checked", checked)):
        for name, result in results.items():
            problems += [f"{name} ({kind} ranges): {p}" for p in result.problems(args.connections)]

    names = [f"medianode {w}" for w in args.workers] + [f"nginx {n}" for n in args.nginx_workers]
    ref = f"nginx {max(args.nginx_workers)}"
    ours = f"medianode {max(args.workers)}"
    c = args.connections

    def line(what: str, values: dict[str, float], fmt: str, target: str) -> str:
        cells = " | ".join(f"{values[n]:{fmt}}" for n in names)
        return f"| {what} | {cells} | {values[ours] / values[ref]:.2f} | {target} |"

    lines = [
        f"| measurement | {' | '.join(names)} | {ours} / {ref} | target |",
        "|---|" + "---|" * (len(names) + 2),
        line(f"full-file GET {args.size_mib} MiB, MB/s (curl, best of {args.repeat})", speed, ",.0f", ">= 0.8"),
        line(f"random 1 MiB ranges, {c} clients: requests/s", {n: r.requests_per_s for n, r in ranges.items()},
             ",.1f", ">= 0.6"),
        line("random 1 MiB ranges: p50 latency, ms", {n: r.p50_ms for n, r in ranges.items()}, ",.2f", ""),
        line("random 1 MiB ranges: p99 latency, ms", {n: r.p99_ms for n, r in ranges.items()}, ",.2f", "< 30 ms"),
        "| timed ranges: responses / non-2xx / socket errors | "
        + " | ".join(f"{ranges[n].requests} / {ranges[n].non_2xx} / {ranges[n].socket_errors}" for n in names)
        + " | | 0 errors |",
        f"| checked ranges ({args.check_seconds} s): responses / not 206 / not 1 MiB | "
        + " | ".join(f"{checked[n].requests} / {checked[n].not_206} / {checked[n].wrong_length}" for n in names)
        + " | | 0 errors |",
    ]  # fmt: skip
    if len(args.workers) > 1:
        low, high = f"medianode {min(args.workers)}", ours
        scale = ranges[high].requests_per_s / ranges[low].requests_per_s
        lines.append(f"| requests/s, {high} over {low} | {scale:.2f} |" + " |" * (len(names) + 1))
    if mixed is not None:
        result, add_s, fetch_s = mixed
        lines.append(
            f"| mixed ({ours}): ranges while a {args.mixed_add_mib} MiB add ({add_s:.1f} s) and a "
            f"{args.mixed_fetch_mib} MiB swarm fetch ({fetch_s:.1f} s) run: requests/s {result.requests_per_s:,.1f}, "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms |" + " |" * len(names) + " < 100 ms (p99) |"
        )
        problems += [f"mixed ranges: {p}" for p in result.problems(args.connections)]
    return lines, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="full-file GETs per server (best is kept)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per server")
    parser.add_argument("--check-seconds", type=int, default=3, help="seconds of checked wrk load per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2],
        help="medianode serve --workers counts to measure, e.g. 1,2",
    )
    parser.add_argument(
        "--nginx-workers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2],
        help="nginx worker_processes counts to measure",
    )
    parser.add_argument("--mixed-add-mib", type=int, default=1024, help="the add during the mixed load; 0: none")
    parser.add_argument("--mixed-fetch-mib", type=int, default=256, help="the swarm fetch during the mixed load")
    parser.add_argument("--dir", type=Path, help="parent of the work directory (default: the system temp dir)")
    args = parser.parse_args()
    if args.size_mib < 2:
        parser.error("--size-mib must be at least 2")
    for tool in (NGINX, WRK, shutil.which("curl") or "curl"):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} is needed")
    work = Path(tempfile.mkdtemp(prefix="medianode-gw-bench-", dir=args.dir))
    try:
        lines, problems = measure(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    if problems:
        print("\nPROBLEMS:\n" + "\n".join(f"- {p}" for p in problems), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
