"""Shared test helpers: deterministic content and running the real ``medianode`` command.

``tests/fast/`` is pure code on a real disk (no IP socket, no process: enforced below);
``tests/integration/`` runs processes, servers, kubo, Helia and Chromium. ``.ci/run`` runs both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent  # tests/: vectors/, interop/, js/ beside fast/ and integration/
REPO = TESTS.parent
INTEROP = TESTS / "interop"
FAST = TESTS / "fast"


class NotFast(AssertionError):
    """A test under tests/fast/ reached for the network or a process: it belongs in tests/integration/."""


def _refuse(what: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise NotFast(f"a fast test {what}: move it to tests/integration/")

    return refused


@pytest.fixture(autouse=True)
def fast_tests_stay_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/fast/ holds the tests that need no socket beyond a socketpair and no process; this holds them to it
    (trio's own wakeup socketpair is AF_UNIX and unaffected)."""
    if not request.path.is_relative_to(FAST):
        return
    import socket

    real_bind, real_connect = socket.socket.bind, socket.socket.connect

    def inet(sock: socket.socket) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6)

    def bind(sock: socket.socket, address: Any) -> None:
        _refuse("bound an IP socket")() if inet(sock) else real_bind(sock, address)

    def connect(sock: socket.socket, address: Any) -> None:
        _refuse("connected an IP socket")() if inet(sock) else real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("started a process"))


def interop_modules() -> Path:
    """A directory with tests/interop/package.json installed (Helia, the AWS JavaScript SDK), cached by the
    manifest's hash. Fails, never skips, when Node.js or npm cannot install it: CI reaches the registry."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("Node.js and npm are not installed (.ci/run installs them)")
    manifest = (INTEROP / "package.json").read_bytes()
    cache_root = Path(os.environ.get("MEDIANODE_TEST_CACHE", Path.home() / ".cache" / "medianode-tests"))
    target = cache_root / f"helia-{hashlib.sha256(manifest).hexdigest()[:12]}"
    if not (target / "node_modules" / ".package-lock.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        (target / "package.json").write_bytes(manifest)
        install = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--legacy-peer-deps", "--loglevel=error"],
            cwd=target, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if install.returncode != 0:
            reason = (install.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.fail(f"npm install of tests/interop/package.json failed: {reason}")
    return target


SHARED_VECTORS = REPO.parent / "shared" / "vectors" / "unixfs-cids.json"
LOCAL_VECTORS = TESTS / "vectors" / "unixfs-trees.json"


def huge_frame_mp4(path: Path, side: int = 7000) -> Path:
    """An MP4 of one ``side`` x ``side`` MJPEG frame (49 Mpx at the default): past what a poster may decode."""
    import av

    with av.open(str(path), mode="w", format="mp4") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width = stream.height = side
        stream.pix_fmt = "yuvj420p"
        frame = av.VideoFrame(side, side, "yuvj420p")
        for plane in frame.planes:
            plane.update(b"\x80" * plane.buffer_size)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def gen(n: int, seed: bytes = b"jsanchors-v1") -> bytes:
    """The vectors' generator: SHA256(seed || uint64_be(i)) concatenated, cut to n bytes."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str

    @property
    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.stdout)

    @property
    def text(self) -> str:
        return self.stdout.decode()


class Node:
    """The ``medianode`` command against one data directory, run as a real subprocess."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def run(self, *args: str, stdin: bytes | None = None, prefix: tuple[str, ...] = (), timeout: float = 120) -> Result:
        env = {**os.environ, "MEDIANODE_DATA": str(self.data_dir)}
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "node.cli", *args],
            input=stdin,
            capture_output=True,
            env=env,
            cwd=REPO,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))

    def ok(self, *args: str, stdin: bytes | None = None) -> Result:
        result = self.run(*args, stdin=stdin)
        assert result.code == 0, f"medianode {' '.join(args)} failed: {result.stderr}"
        return result

    def fails(self, *args: str, match: str, prefix: tuple[str, ...] = ()) -> Result:
        result = self.run(*args, prefix=prefix)
        assert result.code != 0, f"medianode {' '.join(args)} should have failed"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected a one-line error, got: {result.stderr!r}"
        assert lines[0].startswith("medianode: error:"), lines[0]
        assert match.lower() in lines[0].lower(), f"{match!r} not in {lines[0]!r}"
        return result

    def snapshot(self) -> dict[str, object]:
        """What must not change when a command fails: pack files, index rows, pins."""
        import sqlite3

        store = self.data_dir / "store"
        packs = sorted(p.name for p in (store / "packs").iterdir()) if (store / "packs").exists() else []
        rows: dict[str, object] = {}
        if (store / "index.sqlite").exists():
            conn = sqlite3.connect(store / "index.sqlite")
            for table in ("blocks", "links", "pins", "roots", "packs"):
                rows[table] = sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
            conn.close()
        return {"packs": packs, **rows}


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path / "node")


class Served:
    """A real ``medianode serve`` process on 127.0.0.1 with a free port; mDNS off unless ``mdns``
    (it multicasts on the machine's interfaces); ``prefix`` runs it under another command,
    ``args`` are more options for ``serve``."""

    def __init__(
        self,
        data_dir: Path,
        bootstrap: tuple[str, ...] = (),
        listen: str = "/ip4/127.0.0.1/tcp/0",
        mdns: bool = False,
        prefix: tuple[str, ...] = (),
        args: tuple[str, ...] = (),
        # One process unless a test is about workers; MEDIANODE_TEST_WORKERS=2 runs every such test through two.
        workers: int = int(os.environ.get("MEDIANODE_TEST_WORKERS", "1")),
    ) -> None:
        self.data_dir = data_dir
        self.node = Node(data_dir)
        env = {**os.environ, "MEDIANODE_DATA": str(data_dir)}
        peers = [arg for addr in bootstrap for arg in ("--bootstrap", addr)]
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "node.cli", "serve", "--gateway", "127.0.0.1:0", "--s3", "127.0.0.1:0",
             "--listen", listen, *peers, "--mdns" if mdns else "--no-mdns", "--workers", str(workers), *args,
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"serve did not start: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
        ready = json.loads(line)
        self.ready: dict[str, Any] = ready
        self.url: str = ready["gateway"]
        self.s3_url: str | None = ready.get("s3")
        self.peer_id: str = ready["peer_id"]
        self.swarm_addrs: list[str] = ready["swarm"]

    def stop(self, sig: int = 15, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def mount_tmpfs(path: Path, size_mib: int) -> Path:
    """A real small file system at ``path`` (tmpfs, as root: CI runs as root), to fill up; fails, never skips."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a {size_mib} MiB tmpfs (CI runs as root): {mounted.stderr.decode().strip()}")
    return path


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=True)


def fill_filesystem(path: Path) -> Path:
    """Write ``path`` until its file system has not one byte left; return it."""
    import errno

    with open(path, "wb", buffering=0) as out:
        for size in (1024 * 1024, 4096, 1):
            block = b"\xff" * size
            while True:
                try:
                    written = out.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
                if written is not None and written < size:
                    break
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "served")
    yield server
    code = server.stop()
    assert code == 0, f"serve exited with {code} on SIGTERM"


# Debian's Chromium, headless, for the browser tests. On loopback WebRTC needs two more switches:
# Chromium hides local addresses behind mDNS names and skips loopback unless told.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
]  # fmt: skip


# Every page is checked, and photographed, at these two sizes; the screenshots are copied here to look at.
PAGE_SIZES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 2,
    },
}
SCREENSHOTS = Path("/tmp/screens")


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: .ci/run installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
