"""Replication between trusted operators: N copies of a pin are kept, and replaced when a holder dies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from conftest import Node, Served, free_port, gen
from node.storage.cid import CID
from node.swarm.replication.protocol import ReplicationError, cid_field, decode_message, encode_request, frame_length

MiB = 1024 * 1024


def test_messages_roundtrip_and_bad_input() -> None:
    """Tried: an oversized length prefix, a non-map message, a missing type, a bad CID."""
    cid = CID.for_block(0x55, b"x")
    framed = encode_request({"type": "hold", "root": bytes(cid)})
    length, start = frame_length(framed)  # type: ignore[misc]
    message = decode_message(framed[start : start + length])
    assert cid_field(message) == cid
    with pytest.raises(ReplicationError, match="over the limit"):
        frame_length(b"\x80\x80\x80\x01")
    import msgpack

    for bad in (msgpack.packb([1, 2]), msgpack.packb({"root": b"x"}), b"\xc1"):
        with pytest.raises(ReplicationError):
            decode_message(bad)
    with pytest.raises(ReplicationError, match="bad CID"):
        cid_field({"root": b"\x01\x02"})


def wait_for(check: object, timeout: float = 45.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


def test_copies_are_kept_and_replaced_when_a_holder_dies(tmp_path: Path) -> None:
    names = ("a", "b", "c")
    ports = {n: free_port() for n in names}
    ids = {n: Node(tmp_path / n).ok("id", "--json").json["peer_id"] for n in names}
    addrs = {n: f"/ip4/127.0.0.1/tcp/{ports[n]}/p2p/{ids[n]}" for n in names}
    for n in names:
        config = tmp_path / n / "config.toml"
        others = ", ".join(f'"{addrs[o]}"' for o in names if o != n)
        text = config.read_text().replace("peers = []", f"peers = [{others}]").replace("interval = 60", "interval = 1")
        config.write_text(text)
    nodes = {n: Served(tmp_path / n, listen=f"/ip4/127.0.0.1/tcp/{ports[n]}") for n in names}
    try:
        data = gen(5 * MiB, b"replicated")
        (tmp_path / "clip.bin").write_bytes(data)
        a = nodes["a"]
        cid = a.node.ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
        a.node.ok("pin", "add", cid, "--replicas", "1")

        def holders() -> list[str]:
            (pin,) = a.node.ok("pin", "ls", "--json").json["pins"]
            return list(pin["replicas"])

        (first,) = wait_for(holders)  # type: ignore[misc]
        holder = next(n for n in names if ids[n] == first)
        assert nodes[holder].node.ok("stat", cid, "--json").json["pinned"]
        nodes[holder].stop(signal.SIGKILL)
        other = next(n for n in ("b", "c") if n != holder)
        wait_for(lambda: holders() == [ids[other]])
        stat = nodes[other].node.ok("stat", cid, "--json").json
        assert stat["pinned"] and stat["missing_blocks"] == 0
        # The owner unpins: the holder releases its copy.
        a.node.ok("pin", "rm", cid)
        wait_for(lambda: not nodes[other].node.ok("stat", cid, "--json").json["pinned"])
    finally:
        for served in nodes.values():
            served.stop()
