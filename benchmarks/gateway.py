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


def nginx_conf(prefix: Path, root: Path, port: int) -> str:
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""  # workers must read root
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temps = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in kinds)
    return f"""{user}
worker_processes 1;
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


def start_nginx(prefix: Path, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, root, port))
    log = prefix / "stderr.log"
    cmd = [NGINX, "-e", str(prefix / "error.log"), "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    wait_listening(port, proc, log)
    return proc, f"http://127.0.0.1:{port}"


def start_gateway(data_dir: Path, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``medianode serve`` on a free port; its base URL comes from the first JSON line on stdout."""
    out, err = logs / "gateway.out", logs / "gateway.err"
    cmd = medianode(data_dir, "serve", "--gateway", "127.0.0.1:0", "--no-s3", "--no-mdns", "--json")
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=REPO)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        first = out.read_bytes().split(b"\n", 1)
        if len(first) == 2:
            return proc, str(json.loads(first[0])["gateway"]).rstrip("/")
        if proc.poll() is not None:
            raise SystemExit(f"medianode serve exited with {proc.returncode}: {err.read_text(errors='replace')}")
        time.sleep(0.05)
    stop(proc, signal.SIGKILL)
    raise SystemExit(f"medianode serve printed no address within {START_TIMEOUT:.0f} s")


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


def measure(work: Path, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Run both servers and every measurement; return (table lines, problems)."""
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
    warm(src)

    nginx: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    problems: list[str] = []
    try:
        nginx, nginx_base = start_nginx(work / "nginx", www)
        gateway, gateway_base = start_gateway(node, work)
        urls = {"nginx": f"{nginx_base}/{src.name}", "medianode": f"{gateway_base}/ipfs/{cid}"}
        check_range(urls, src, size, args.seed)

        speed = {name: best_speed(url, size, args.repeat) for name, url in urls.items()}
        ranges = {name: wrk_ranges(url, size, args, args.duration, check=False) for name, url in urls.items()}
        checked = {name: wrk_ranges(url, size, args, args.check_seconds, check=True) for name, url in urls.items()}
        if gateway.poll() is not None:
            problems.append(f"medianode serve exited with {gateway.returncode} during the run")
    finally:
        code = stop(gateway, signal.SIGTERM)
        stop(nginx, signal.SIGQUIT)
    if code != 0:
        problems.append(f"medianode serve exit code {code} after SIGTERM (expected 0)")
    for kind, results in (("timed", ranges), ("checked", checked)):
        for name, result in results.items():
            problems += [f"{name} ({kind} ranges): {p}" for p in result.problems(args.connections)]
    gateway_err = (work / "gateway.err").read_text(errors="replace").strip()
    if re.search(r"error|traceback|exception", gateway_err, re.I):
        problems.append(f"medianode serve stderr:\n{gateway_err[-4000:]}")

    ours, ref = ranges["medianode"], ranges["nginx"]
    c = args.connections
    lines = [
        "| measurement | medianode | nginx | ratio | target |",
        "|---|---|---|---|---|",
        row(f"full-file GET {args.size_mib} MiB, MB/s (curl, best of {args.repeat})", speed["medianode"],
            speed["nginx"], ">= 0.5"),
        row(f"random 1 MiB ranges, {c} clients: requests/s", ours.requests_per_s, ref.requests_per_s, "", ",.1f"),
        row("random 1 MiB ranges: p50 latency, ms", ours.p50_ms, ref.p50_ms, "", ",.2f"),
        row("random 1 MiB ranges: p99 latency, ms", ours.p99_ms, ref.p99_ms, "< 50 ms", ",.2f"),
        counts("timed ranges: responses / non-2xx / socket errors", ranges),
        counts(f"checked ranges ({args.check_seconds} s): responses / not 206 / not 1 MiB", checked),
    ]  # fmt: skip
    return lines, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="full-file GETs per server (best is kept)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per server")
    parser.add_argument("--check-seconds", type=int, default=3, help="seconds of checked wrk load per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
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
