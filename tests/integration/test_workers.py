"""``serve --workers N``: worker processes answer the gateway's reads on its one socket, the owner the rest.

With two or more workers the owner does not accept on the gateway's socket; to be sure of what only it
can do, it is stopped with SIGSTOP: a worker holds the connection (``ss`` shows which process holds it),
reads are answered, and whatever the worker must hand to the owner waits until SIGCONT. Everything runs on
127.0.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import msgpack
import pytest
import trio
from botocore.config import Config
from trio_websocket import open_websocket_url

from conftest import Node, Served, gen

MiB = 1024 * 1024
DEADLINE = 60.0


def poll(what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """``check()``'s first truthy value, polled until ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def workers_of(served: Served) -> list[int]:
    """The owner's child processes (listed per thread that started them: trio starts them from its threads)."""
    found = []
    for children in Path(f"/proc/{served.proc.pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in children.read_text().split() if alive(int(p))]
        except OSError:
            continue
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def port_of(served: Served) -> int:
    return int(served.url.rsplit(":", 1)[1])


def holders(port: int) -> set[int]:
    """Pids holding an established connection accepted on 127.0.0.1:``port``."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def waiting_on_owner(worker: int) -> bool:
    """Whether a connection to the owner's channel (the socket ``worker`` was started with) waits in its backlog
    or holds bytes the owner has not read (``ss -x``: Recv-Q)."""
    argv = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
    channel = argv[argv.index(b"--owner-socket") + 1].decode()
    out = subprocess.run(["ss", "-xaH"], capture_output=True, text=True, check=True).stdout
    return any(len(f) >= 5 and f[4] == channel and int(f[2]) > 0 for f in map(str.split, out.splitlines()))


@contextmanager
def owner_stopped(served: Served) -> Iterator[None]:
    os.kill(served.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(served.proc.pid, signal.SIGCONT)


def workers_listening(served: Served, count: int, cid: str) -> list[int]:
    """Wait until ``count`` workers run and one answers a read of ``cid`` while the owner is stopped."""
    pids = poll(f"{count} workers", lambda: (w := workers_of(served)) and len(w) == count and w)
    for _ in range(200):
        with owner_stopped(served):
            try:
                if httpx.get(f"{served.url}/ipfs/{cid}", headers={"Range": "bytes=0-9"}, timeout=2).status_code == 206:
                    return list(pids)
            except httpx.TimeoutException:
                pass  # the owner's turn in the queue, or no worker listening yet
    raise AssertionError("no worker answered while the owner was stopped")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Served, str, bytes]]:
    data = gen(3 * MiB + 12345, b"workers")
    (tmp_path / "clip.bin").write_bytes(data)
    cid = Node(tmp_path / "node").ok("add", str(tmp_path / "clip.bin"), "--json").json["cid"]
    served = Served(tmp_path / "node", workers=2, args=("--no-dht",))
    try:
        yield served, cid, data
    finally:
        if served.proc.poll() is None:
            os.kill(served.proc.pid, signal.SIGCONT)
            assert served.stop() == 0


def test_workers_answer_reads_from_the_store_while_the_owner_is_stopped(workers: tuple[Served, bytes]) -> None:
    served, cid, data = workers
    pids = workers_listening(served, 2, cid)
    with owner_stopped(served), httpx.Client(timeout=10) as client:
        for start in (0, 262144 - 7, MiB, len(data) - 100):
            answer = client.get(f"{served.url}/ipfs/{cid}", headers={"Range": f"bytes={start}-{start + 99_999}"})
            assert answer.status_code == 206 and answer.content == data[start : start + 100_000]
        assert client.get(f"{served.url}/ipfs/{cid}").content == data
        assert holders(port_of(served)) <= set(pids)  # only workers hold connections: the owner is stopped


def test_what_workers_answered_is_counted_in_the_owners_metrics(workers: tuple[Served, bytes]) -> None:
    served, cid, _ = workers
    workers_listening(served, 2, cid)

    def partial() -> float:
        text = httpx.get(f"{served.url}/metrics", timeout=10).text
        found = re.search(r'medianode_http_requests_total\{method="GET",route="ipfs",status="206"\} ([0-9.e+]+)', text)
        return float(found.group(1)) if found else 0.0

    before = partial()
    with owner_stopped(served), httpx.Client(timeout=10) as client:
        for _ in range(7):
            assert client.get(f"{served.url}/ipfs/{cid}", headers={"Range": "bytes=5-9"}).status_code == 206
    poll("the workers' requests in /metrics", lambda: partial() >= before + 7)


def test_requests_for_the_owner_wait_for_it_and_get_its_answer(workers: tuple[Served, bytes]) -> None:
    """An upload API call and a pin list, accepted by a worker while the owner is stopped: they wait, then the
    owner answers (401 without a token, the list with one): never a 5xx from the worker."""
    served, cid, _ = workers
    pids = set(workers_listening(served, 2, cid))
    token = served.node.ok("token", "create", "--name", "w", "--json").json["token"]
    answers: list[httpx.Response] = []
    with owner_stopped(served):

        def call() -> None:
            with httpx.Client(timeout=30) as client:
                answers.append(client.post(f"{served.url}/api/v1/add", content=b"x" * 1000))
                answers.append(client.get(f"{served.url}/api/v1/pins", headers={"Authorization": f"Bearer {token}"}))

        caller = threading.Thread(target=call)
        caller.start()
        poll("a worker holding the connection", lambda: holders(port_of(served)) & pids)
    caller.join(timeout=DEADLINE)
    assert [a.status_code for a in answers] == [401, 200], [a.text for a in answers]
    assert any(pin["cid"] == cid for pin in answers[1].json()["pins"])


def test_workers_answer_s3_object_reads_and_pass_writes_to_the_owner(workers: tuple[Served, str, bytes]) -> None:
    """The S3 listener is the workers' too. Tried with boto3 and plain HTTP while the owner is stopped: a
    public object's anonymous GET, a Range of it and a signed HEAD are answered (by a worker: only workers
    hold the connections); a PutObject, a private object's anonymous GET and a listing wait for the owner and
    get its answers after SIGCONT (200, 403, the list); privatising, through a worker, is off the workers'
    public paths (S3 and /ipfs/) as soon as the call returns."""
    served, cid, pinned = workers
    data = b"not the pinned file: " + pinned  # pinned by the operator, a CID is public whatever S3 says
    pids = set(workers_listening(served, 2, cid))
    assert served.s3_url
    key = served.node.ok("s3", "key", "create", "--name", "masto.example", "--json").json
    s3 = boto3.client(
        "s3", endpoint_url=served.s3_url, region_name="us-east-1",
        aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      read_timeout=DEADLINE),
    )  # fmt: skip
    s3.create_bucket(Bucket="media")
    s3.put_object(Bucket="media", Key="v/clip.mp4", Body=data, ACL="public-read", ContentType="video/mp4")
    s3.put_object(Bucket="media", Key="v/private.mp4", Body=data[:1000])
    s3_port = int(served.s3_url.rsplit(":", 1)[1])
    public = f"{served.s3_url}/media/v/clip.mp4"
    with owner_stopped(served), httpx.Client(timeout=10) as web:
        whole = web.get(public)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"] == "video/mp4" and whole.headers["x-ipfs-roots"]
        part = web.get(public, headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == data[1000:2000]
        assert s3.head_object(Bucket="media", Key="v/clip.mp4")["ContentLength"] == len(data)
        assert holders(s3_port) <= pids

        answers: dict[str, Any] = {}

        def call() -> None:
            answers["put"] = s3.put_object(Bucket="media", Key="v/late.mp4", Body=b"late" * 1000)
            answers["private"] = httpx.get(f"{served.s3_url}/media/v/private.mp4", timeout=DEADLINE).status_code
            answers["listed"] = [o["Key"] for o in s3.list_objects_v2(Bucket="media")["Contents"]]

        caller = threading.Thread(target=call)
        caller.start()
        poll("a worker holding the S3 connection", lambda: holders(s3_port) & pids)
        assert "put" not in answers  # it waits for the owner
    caller.join(timeout=DEADLINE)
    assert answers["put"]["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answers["private"] == 403
    assert answers["listed"] == ["v/clip.mp4", "v/late.mp4", "v/private.mp4"]
    root = whole.headers["x-ipfs-roots"]
    s3.put_object_acl(Bucket="media", Key="v/clip.mp4", ACL="private")
    with httpx.Client(timeout=10) as web:
        for _ in range(20):  # every answer, from whichever worker takes the connection
            assert web.get(public, headers={"Connection": "close"}).status_code == 403
            assert web.get(f"{served.url}/ipfs/{root}", headers={"Connection": "close"}).status_code == 410


def test_an_owner_killed_with_a_request_gets_the_client_a_503_not_a_500(workers: tuple[Served, str, bytes]) -> None:
    """Tried: a pin list is passed to the owner while it is stopped, then the owner is SIGKILLed with the request
    on its socket. The worker answers 503 with Retry-After (the request may not have run), never a 500, and then
    ends as the owner did."""
    served, cid, _ = workers
    pids = set(workers_listening(served, 2, cid))
    answers: list[httpx.Response] = []

    def call() -> None:
        with httpx.Client(timeout=DEADLINE) as client:
            answers.append(client.get(f"{served.url}/api/v1/pins", headers={"Authorization": "Bearer x"}))

    caller = threading.Thread(target=call)
    os.kill(served.proc.pid, signal.SIGSTOP)
    caller.start()
    poll("a worker holding the connection", lambda: holders(port_of(served)) & pids)
    poll("the request waiting on the owner's socket", lambda: any(waiting_on_owner(pid) for pid in pids))
    os.kill(served.proc.pid, signal.SIGKILL)
    caller.join(timeout=DEADLINE)
    assert len(answers) == 1 and answers[0].status_code == 503, [a.text for a in answers]
    assert answers[0].headers["retry-after"] == "5"
    served.proc.wait(timeout=DEADLINE)
    poll("the workers to end with the owner", lambda: not any(alive(pid) for pid in pids))


def test_a_worker_has_the_owner_fetch_what_the_store_lacks(tmp_path: Path) -> None:
    """B's worker is asked for a range only A holds; B's owner fetches it over Bitswap, the worker serves it,
    and never loads the swarm's code itself."""
    data = gen(2 * MiB + 999, b"remote")
    (tmp_path / "remote.bin").write_bytes(data)
    cid = Node(tmp_path / "a").ok("add", str(tmp_path / "remote.bin"), "--json").json["cid"]
    (tmp_path / "local.bin").write_bytes(b"b's own")
    local = Node(tmp_path / "b").ok("add", str(tmp_path / "local.bin"), "--json").json["cid"]
    a = Served(tmp_path / "a", args=("--no-dht",))
    b = Served(tmp_path / "b", bootstrap=[a.swarm_addrs[0]], workers=2, args=("--no-dht",))
    try:
        pids = set(workers_listening(b, 2, local))
        answers: list[httpx.Response] = []
        with owner_stopped(b):

            def call() -> None:
                answers.append(httpx.get(f"{b.url}/ipfs/{cid}", headers={"Range": "bytes=1000000-1099999"}, timeout=60))

            caller = threading.Thread(target=call)
            caller.start()
            poll("a worker holding the connection", lambda: holders(port_of(b)) & pids)
        caller.join(timeout=DEADLINE)
        assert answers and answers[0].status_code == 206, answers and answers[0].text
        assert answers[0].content == data[1_000_000:1_100_000]
        # The worker handed the fetch over without importing libp2p (coincurve's library is one libp2p
        # loads): that import took 0.6-2.6 s on a worker's event loop and held all of its reads meanwhile.
        assert "coincurve" in Path(f"/proc/{b.proc.pid}/maps").read_text()
        for pid in workers_of(b):
            assert "coincurve" not in Path(f"/proc/{pid}/maps").read_text(), pid
    finally:
        assert b.stop() == 0 and a.stop() == 0


def test_viewer_signaling_passes_through_a_worker(workers: tuple[Served, bytes]) -> None:
    served, cid, _ = workers
    pids = set(workers_listening(served, 2, cid))
    url = served.url.replace("http://", "ws://") + f"/api/v1/swarm/{cid}"

    async def main() -> dict[str, Any]:
        with trio.fail_after(DEADLINE):
            os.kill(served.proc.pid, signal.SIGSTOP)
            try:
                async with trio.open_nursery() as nursery:

                    async def resume_once_a_worker_holds_it() -> None:
                        while not holders(port_of(served)) & pids:
                            await trio.sleep(0.05)
                        os.kill(served.proc.pid, signal.SIGCONT)

                    nursery.start_soon(resume_once_a_worker_holds_it)
                    async with open_websocket_url(url) as ws:
                        await ws.send_message(msgpack.packb({"t": "join", "have": b"\0\0"}))
                        return dict(msgpack.unpackb(await ws.get_message()))
            finally:
                os.kill(served.proc.pid, signal.SIGCONT)

    welcome = trio.run(main)
    assert welcome["t"] == "welcome" and welcome["peers"] == []


def test_a_killed_worker_is_replaced_and_sigterm_stops_every_process(workers: tuple[Served, bytes]) -> None:
    served, cid, data = workers
    first = workers_listening(served, 2, cid)
    os.kill(first[0], signal.SIGKILL)
    replaced = poll("a new worker", lambda: (w := workers_of(served)) and len(w) == 2 and first[0] not in w and w)
    assert first[1] in replaced
    assert httpx.get(f"{served.url}/ipfs/{cid}", timeout=10).content == data
    survivors = workers_of(served)
    assert served.stop() == 0
    poll("every worker gone", lambda: not any(alive(pid) for pid in survivors), timeout=15)


def test_reads_through_a_worker_hold_while_another_process_adds_pins_collects_and_compacts(
    workers: tuple[Served, bytes], tmp_path: Path
) -> None:
    """With the owner stopped, a worker keeps serving the pinned file exactly while CLI processes add a large
    file, pin and unpin it, and gc (which compacts the pack that held it and the clip's neighbours)."""
    served, cid, data = workers
    workers_listening(served, 2, cid)
    errors: list[str] = []
    stop = threading.Event()
    reads = [0]

    def read_loop() -> None:
        with httpx.Client(timeout=20) as client:
            offset = 0
            while not stop.is_set():
                start = (offset * 262139) % (len(data) - 65536)
                got = client.get(f"{served.url}/ipfs/{cid}", headers={"Range": f"bytes={start}-{start + 65535}"})
                if got.status_code != 206 or got.content != data[start : start + 65536]:
                    errors.append(f"{got.status_code} at {start}: {got.text[:200] if got.status_code != 206 else ''}")
                reads[0] += 1
                offset += 1

    node = served.node
    with owner_stopped(served):
        reader = threading.Thread(target=read_loop)
        reader.start()
        try:
            for round_ in range(3):
                (tmp_path / f"big{round_}.bin").write_bytes(gen(6 * MiB, b"big%d" % round_))
                big = node.ok("add", str(tmp_path / f"big{round_}.bin"), "--json").json["cid"]
                node.ok("pin", "rm", big)
                node.ok("pin", "add", big)
                node.ok("pin", "rm", big)
                node.ok("gc")
            poll("reads during the writes", lambda: reads[0] >= 20)
        finally:
            stop.set()
            reader.join(timeout=DEADLINE)
    assert errors == []


def test_clients_cannot_reach_the_workers_channel(workers: tuple[Served, str, bytes]) -> None:
    """A client posting a metrics report or a fetch to /internal/v1/ on the gateway (which a worker would
    otherwise pass on to the owner) is refused, and the owner's counts do not move."""
    served, cid, _ = workers
    workers_listening(served, 2, cid)

    def reported() -> str:
        text = httpx.get(f"{served.url}/metrics", timeout=10).text
        return "\n".join(line for line in text.splitlines() if 'route="other"' in line and 'status="299"' in line)

    lie = {"requests": [["other", "GET", "299", 1000000]], "bytes_served": 10**12}
    for path in ("/internal/v1/metrics", "/internal/v1/fetch"):
        answer = httpx.post(f"{served.url}{path}", json=lie if path.endswith("metrics") else {"op": "dag", "cid": cid},
                            timeout=10)  # fmt: skip
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
    assert reported() == ""
