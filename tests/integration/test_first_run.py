"""The README's first command, run exactly as written in a fresh copy of the repository.

A first try on a laptop must not announce the node to the LAN or open a port on
every interface: the command installs, starts the node with its embedded
defaults and prints the demo clip's URL, and while it runs every socket of its
processes is bound to loopback, none talks to anything but loopback, and no
multicast group was joined on any interface (mDNS would join 224.0.0.251).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from conftest import REPO

SOCKET_TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6")


def readme_first_command() -> str:
    """The first shell block under "Set up" in README.md."""
    text = (REPO / "README.md").read_text()
    setup = text[text.index("## Set up") :]
    match = re.search(r"```sh\n(.+?)\n```", setup, re.S)
    assert match, "README's Set up section has no sh block"
    return match.group(1).strip()


def copy_checkout(dest: Path) -> None:
    """The tracked and new (not ignored) files of this checkout, as a clone with the work tree would have."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def decode_address(hex_addr: str) -> str:
    """/proc/net's ``0100007F:1F90`` or 32 hex digits of IPv6 (host byte order per 32-bit word) into an address."""
    host = hex_addr.split(":")[0]
    words = [bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8)]
    raw = b"".join(words)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    import ipaddress

    return str(ipaddress.IPv6Address(raw))


def is_loopback(addr: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_remote_ok(addr: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(addr).is_unspecified or is_loopback(addr)


def sockets_of(pid: int) -> list[tuple[str, str, str]]:
    """(table, local address, remote address) for every inet socket the process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in (*SOCKET_TABLES, "packet"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if table == "packet":
                if fields[8] in inodes:
                    found.append(("packet", "link layer", ""))
                continue
            if fields[9] in inodes:
                found.append((table, decode_address(fields[1]), decode_address(fields[2])))
    return found


def multicast_groups() -> set[str]:
    """Every (interface, group) the machine has joined, from /proc/net/igmp and igmp6."""
    groups = set()
    device = ""
    for line in Path("/proc/net/igmp").read_text().splitlines()[1:]:
        if not line.startswith("\t"):
            device = line.split()[1]
        else:
            groups.add(f"{device} {decode_address(line.split()[0])}")
    for line in Path("/proc/net/igmp6").read_text().splitlines():
        fields = line.split()
        groups.add(f"{fields[1]} {fields[2]}")
    return groups


def test_readme_first_command_stays_on_loopback(tmp_path: Path) -> None:
    command = readme_first_command()
    assert "serve --demo" in command
    checkout = tmp_path / "medianode"
    copy_checkout(checkout)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIANODE_", "VIRTUAL_ENV", "XDG_"))}
    # A new user's empty home; pip may reuse the wheels this machine already downloaded.
    env |= {"HOME": str(home), "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip")}
    groups_before = multicast_groups()
    proc = subprocess.Popen(
        ["bash", "-c", command], cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(
                    f"command ended before serving: {lines} {proc.stderr.read() if proc.stderr else ''}"
                )
            lines.append(line.rstrip("\n"))
            if line.startswith("stop with"):
                break
        demo = next(line.split(": ", 1)[1] for line in lines if line.startswith("demo clip: "))
        assert demo.startswith("http://127.0.0.1:8080/ipfs/"), lines
        assert any(line.startswith("watch it") for line in lines), lines
        assert (home / ".local" / "share" / "medianode" / "config.toml").exists()

        reply = httpx.get(demo, timeout=30)
        assert reply.status_code == 200 and reply.headers["content-type"] == "video/mp4"

        pids = descendants(proc.pid)
        sockets = [s for pid in pids for s in sockets_of(pid)]
        assert any(table.startswith("tcp") for table, _, _ in sockets), "found none of serve's own sockets"
        # A local address must be loopback (never 0.0.0.0 or ::); a remote one loopback or none (listening).
        beyond = [s for s in sockets if s[0] == "packet" or not is_loopback(s[1]) or not is_remote_ok(s[2])]
        assert beyond == [], f"sockets beyond loopback: {beyond}"
        joined = multicast_groups() - groups_before
        assert joined == set(), f"joined multicast groups: {joined}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    assert code == 0, f"SIGTERM: exit {code}"
