"""Python viewer swarm throughput on loopback: aiortc data channels through ``node.swarm.viewers.rtc_bridge``,
and ``medianode watch`` taking a whole clip from another ``watch``.

    python benchmarks/rtc_python.py [--mib 64] [--runs 3]

1. data channel, two processes: one sends ``--mib`` MiB in 16 KiB messages
   (the protocol's chunk size) with ``send_paced``, the other counts them.
2. the same with both peers in one process (one asyncio thread carries both).
3. ``medianode watch``: a node serves a ``--mib`` MiB file; a first viewer
   fetches it (over HTTP: nobody else has it) and seeds; a second viewer,
   timed from process start to the file saved, takes it from the first. The
   first viewer's HTTP fetch is the reference.

All WebRTC candidates are 127.0.0.1 (``loopback_only``); best of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import trio

from benchlib import REPO, MiB, make_file, medianode

sys.path.insert(0, str(REPO))
from node.swarm.viewers.protocol import PIECE_CHUNK
from node.swarm.viewers.rtc_bridge import ChannelMessage, ChannelOpen, RtcPeer, open_rtc_bridge

BATCH = 64  # messages per send_paced call


async def send_all(peer: RtcPeer, total: int) -> None:
    message = b"x" * PIECE_CHUNK
    count = total // PIECE_CHUNK
    for first in range(0, count, BATCH):
        await peer.send_paced([message] * min(BATCH, count - first))


async def receive_all(peer: RtcPeer, total: int) -> float:
    """Seconds from the first message to the last."""
    expected = total // PIECE_CHUNK * PIECE_CHUNK
    got, started = 0, 0.0
    async for event in peer.events:
        if isinstance(event, ChannelMessage):
            started = started or time.monotonic()
            got += len(event.data)
            if got >= expected:
                break
    return time.monotonic() - started


async def wait_open(peer: RtcPeer) -> None:
    while not isinstance(await peer.events.receive(), ChannelOpen):
        pass


def sender_process(pipe: Connection, total: int) -> None:
    async def main() -> None:
        async with open_rtc_bridge(loopback_only=True) as bridge:
            peer = await bridge.open_peer([])
            pipe.send(await peer.offer("pieces"))
            await peer.accept_answer(await trio.to_thread.run_sync(pipe.recv))
            await wait_open(peer)
            await send_all(peer, total)
            await trio.to_thread.run_sync(pipe.recv)  # the receiver has everything
            await peer.close()

    trio.run(main)


def receiver_process(pipe: Connection, total: int, result: Connection) -> None:
    async def main() -> None:
        async with open_rtc_bridge(loopback_only=True) as bridge:
            peer = await bridge.open_peer([])
            pipe.send(await peer.answer(await trio.to_thread.run_sync(pipe.recv)))
            result.send(await receive_all(peer, total))
            pipe.send("done")
            await peer.close()

    trio.run(main)


def two_processes(total: int) -> float:
    sender_end, receiver_end = multiprocessing.Pipe()  # the signaling between the two
    result_in, result_out = multiprocessing.Pipe(duplex=False)
    processes = [
        multiprocessing.Process(target=sender_process, args=(sender_end, total)),
        multiprocessing.Process(target=receiver_process, args=(receiver_end, total, result_out)),
    ]
    for process in processes:
        process.start()
    seconds: float = result_in.recv()
    for process in processes:
        process.join()
    return total / seconds / 1e6


def one_process(total: int) -> float:
    async def main() -> float:
        async with open_rtc_bridge(loopback_only=True) as bridge:
            sender, receiver = await bridge.open_peer([]), await bridge.open_peer([])
            await sender.accept_answer(await receiver.answer(await sender.offer("pieces")))
            await wait_open(sender)
            await wait_open(receiver)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all, sender, total)
                seconds = await receive_all(receiver, total)
            return total / seconds / 1e6

    return trio.run(main)


def watch_pair(work: Path, total: int, runs: int) -> tuple[float, float]:
    """(second viewer from the first, first viewer over HTTP), MB/s, best of ``runs``."""
    clip = work / "clip.bin"
    make_file(clip, total)
    hub_dir = work / "hub"
    cid = json.loads(subprocess.run(medianode(hub_dir, "add", str(clip), "--json"), check=True,
                                    capture_output=True, cwd=REPO).stdout)["cid"]  # fmt: skip
    hub = subprocess.Popen(medianode(hub_dir, "serve", "--gateway", "127.0.0.1:0", "--no-s3", "--listen",
                                     "/ip4/127.0.0.1/tcp/0", "--no-dht", "--workers", "1", "--no-mdns", "--json"),
                           stdout=subprocess.PIPE, cwd=REPO)  # fmt: skip
    assert hub.stdout is not None
    gateway = json.loads(hub.stdout.readline())["gateway"]
    watchers: list[subprocess.Popen[bytes]] = []

    def watch(name: str, *more: str) -> float:
        data_dir = work / name
        data_dir.mkdir()
        (data_dir / "config.toml").write_text("[viewers]\nloopback_only = true\n")
        started = time.monotonic()
        proc = subprocess.Popen(medianode(data_dir, "watch", cid, "--gateway", gateway, "-o",
                                          str(data_dir / "clip"), "--json", *more),
                                stdout=subprocess.PIPE, cwd=REPO)  # fmt: skip
        watchers.append(proc)
        assert proc.stdout is not None
        result = json.loads(proc.stdout.readline())
        seconds = time.monotonic() - started
        if name != "first" and result["bytes_from_peers"] < total:
            raise SystemExit(f"the second viewer got {result['bytes_from_http']} bytes over HTTP")
        return total / seconds / 1e6

    try:
        http_rate = watch("first")  # it goes on seeding
        peer_rates = [watch(f"second{run}", "--exit-when-done") for run in range(runs)]
        return max(peer_rates), http_rate
    finally:
        for proc in watchers:
            proc.terminate()
            proc.wait()
        hub.terminate()
        hub.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    total = args.mib * MiB
    os.environ["MEDIANODE_DATA"] = tempfile.mkdtemp(prefix="rtc-bench-")  # no user config leaks in
    print(f"data channel, two processes: {max(two_processes(total) for _ in range(args.runs)):.1f} MB/s")
    print(f"data channel, one process:   {max(one_process(total) for _ in range(args.runs)):.1f} MB/s")
    with tempfile.TemporaryDirectory(prefix="rtc-bench-") as work:
        from_peer, over_http = watch_pair(Path(work), total, args.runs)
    print(f"medianode watch from a peer: {from_peer:.1f} MB/s (process start included)")
    print(f"medianode watch over HTTP:   {over_http:.1f} MB/s (the first viewer, for reference)")


if __name__ == "__main__":
    main()
