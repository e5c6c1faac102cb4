"""Serving workers, the owner's side: starting and restarting them, and its end of their local channel.

``serve --workers N`` (``[gateway] workers``, N of 2 or more) makes ``serve``
the owner of N worker processes that alone accept on the gateway's socket, and
on the S3 listener's when it is on (node/gateway/worker.py says what they do
and the channel's requests). Here:

- ``WorkerPool`` keeps them running: each is started with the listening
  sockets inherited; one that exits is started again (after 1 s,
  doubling up to 30 s while it keeps dying young), and cancelling the pool
  sends each SIGTERM and waits, up to the graceful bound plus a second, before
  SIGKILL.
- ``owner_channel`` is the app on the owner's Unix socket: the
  ``/internal/v1/`` requests, and everything a worker passes through, handed
  to the node's app with the client's address taken from the worker's
  ``X-Medianode-Client`` header (believed only here, where only workers
  connect: the socket's directory is the owner's, mode 0700).
- ``from_workers`` is that address handling alone, for the owner's S3 app on
  a Unix socket of its own (what the workers pass on from the S3 listener).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import FetchError
from ..storage.cid import CID
from .connections import App
from .http import HTTPProblem, parse_cid, problem_response
from .metrics import ASGIApp, Metrics
from .path_gateway import FETCH_DEADLINE
from .worker import CLIENT_HEADER, INTERNAL_PREFIX

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # the stubs libp2p installs hide trio's own TaskStatus from mypy

log = logging.getLogger("medianode.workers")

RESTART_FIRST = 1.0  # seconds before a worker that exited is started again
RESTART_MOST = 30.0  # ... doubling up to this while it keeps exiting soon after it started
LIVED_LONG = 60.0  # seconds after which a worker's exit is not held against the next start
FETCH_OPS = ("block", "dag", "range", "directory", "background")


def default_workers() -> int:
    """One serving process per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def owner_socket_for(gateway_socket: str, listener: str) -> str:
    """The owner's Unix socket for what workers pass on from ``listener`` ("gateway" or "s3"), beside the
    gateway's channel."""
    return gateway_socket if listener == "gateway" else str(Path(gateway_socket).with_name(f"owner-{listener}.sock"))


@contextlib.asynccontextmanager
async def owner_socket_path() -> AsyncIterator[str]:
    """A fresh directory of the owner's (0700) for its Unix socket, removed afterwards. Not in the data
    directory: a socket path must fit in 108 bytes."""
    directory = tempfile.mkdtemp(prefix="medianode-")
    try:
        yield str(Path(directory) / "owner.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class WorkerPool:
    def __init__(self, count: int, listen_fd: int, s3_listen_fd: int | None, owner_socket: str, data_dir: Path,
                 url: str, stop_bound: float) -> None:  # fmt: skip
        self.count = count
        self.listen_fd = listen_fd
        self.s3_listen_fd = s3_listen_fd
        self.owner_socket = owner_socket
        self.data_dir = data_dir
        self.url = url
        self.stop_bound = stop_bound

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "node.gateway.worker", "--data-dir", str(self.data_dir),
                "--listen-fd", str(self.listen_fd), "--owner-socket", self.owner_socket, "--url", self.url]  # fmt: skip
        if self.s3_listen_fd is not None:
            argv += ["--s3-listen-fd", str(self.s3_listen_fd),
                     "--owner-s3-socket", owner_socket_for(self.owner_socket, "s3")]  # fmt: skip
        return argv

    def inherited(self) -> tuple[int, ...]:
        return (self.listen_fd,) if self.s3_listen_fd is None else (self.listen_fd, self.s3_listen_fd)

    async def run(self, stop: trio.Event, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``count`` workers running until ``stop`` (or cancelled); then stop them all at once."""
        async with trio.open_nursery() as nursery:
            for index in range(self.count):
                nursery.start_soon(self._keep_running, index)
            task_status.started()
            await stop.wait()
            nursery.cancel_scope.cancel()

    async def _keep_running(self, index: int) -> None:
        pause = RESTART_FIRST
        while True:
            began = trio.current_time()
            # Its stdin is a pipe only we hold: it ends when we do, however we end (worker.end_with_owner).
            process = await trio.lowlevel.open_process(self.argv(), pass_fds=self.inherited(),
                                                       stdin=subprocess.PIPE)  # fmt: skip
            log.info("worker started", extra={"fields": {"worker": index, "pid": process.pid}})
            try:
                code = await process.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        await self._stop(process)
                    if process.stdin is not None:
                        await process.stdin.aclose()  # our end of its stdin
            log.warning("worker exited; starting another", extra={"fields": {"worker": index, "code": code}})
            pause = RESTART_FIRST if trio.current_time() - began > LIVED_LONG else min(pause * 2, RESTART_MOST)
            await trio.sleep(pause)

    async def _stop(self, process: trio.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.stop_bound):
            await process.wait()
            return
        log.warning("worker did not stop in time; killed", extra={"fields": {"pid": process.pid}})
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def client_from(text: bytes) -> tuple[str, int] | None:
    """``HOST:PORT`` or ``[HOST]:PORT`` as a worker writes it, or None if it is not that."""
    host, _, port = text.decode("latin-1").rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or int(port) > 65535:
        return None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return host, int(port)
    return None


def owner_channel(app: ASGIApp, swarm: Any, metrics: Metrics) -> ASGIApp:
    """The app on the owner's Unix socket (see the module docstring)."""

    async def fetch(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            op, cid = body["op"], parse_cid(str(body["cid"]))
            offset, length = int(body.get("offset") or 0), body.get("length")
            if (
                op not in FETCH_OPS
                or offset < 0
                or (length is not None and (not isinstance(length, int) or length < 0))
            ):
                raise ValueError(op)
        except HTTPProblem as problem:
            return problem_response(problem)
        except (ValueError, KeyError, TypeError):
            return problem_response(HTTPProblem(400, f"a fetch is {{op: {'|'.join(FETCH_OPS)}, cid, offset, length}}"))
        try:
            with trio.fail_after(FETCH_DEADLINE):
                await _fetch(swarm, op, cid, offset, length)
        except (FetchError, trio.TooSlowError) as exc:
            return JSONResponse({"error": str(exc) or f"no provider answered within {FETCH_DEADLINE:.0f} s"}, 504)
        return Response(status_code=204)

    async def report(request: Request) -> Response:
        try:
            metrics.add_http_counts(json.loads(await request.body()))
        except (ValueError, AttributeError) as exc:
            return problem_response(HTTPProblem(400, str(exc)))
        return Response(status_code=204)

    internal = {"fetch": fetch, "metrics": report}
    clients = from_workers(app)

    async def channel(scope: dict[str, Any], receive: Any, send: Any) -> None:
        passed_on = any(k == CLIENT_HEADER for k, _ in scope.get("headers", ()))
        if scope["type"] == "http" and scope["path"].startswith(INTERNAL_PREFIX) and not passed_on:
            # Only a worker's own requests: one it passes on from a client carries the client's address.
            handler = internal.get(scope["path"][len(INTERNAL_PREFIX) :])
            if handler is None or scope["method"] != "POST":
                response = problem_response(HTTPProblem(404, "no such internal request"))
            else:
                response = await handler(Request(scope, receive))
            await response(scope, receive, send)
            return
        await clients(scope, receive, send)

    return channel


def from_workers(app: App) -> ASGIApp:
    """``app`` for requests a worker passes on: the client's address is the one the worker's
    ``X-Medianode-Client`` header gives (believed only on the owner's sockets), and the header is removed."""

    async def restored(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope["headers"]
            given = next((v for k, v in headers if k == CLIENT_HEADER), None)
            client = client_from(given) if given is not None else None
            scope = {**scope, "headers": [(k, v) for k, v in headers if k != CLIENT_HEADER],
                     "client": client or scope.get("client")}  # fmt: skip
        await app(scope, receive, send)

    return restored


async def _fetch(swarm: Any, op: str, cid: CID, offset: int, length: int | None) -> None:
    if op == "block":
        await swarm.fetch_block(cid)
    elif op == "dag":
        await swarm.fetch_dag(cid)
    elif op == "range":
        await swarm.fetch_range(cid, offset, length or 0)
    elif op == "directory":
        await swarm.fetch_directory(cid)
    else:
        swarm.fetch_in_background(cid, offset, length)
