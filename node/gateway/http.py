"""What every HTTP face of the node shares: the error answer, CIDs from URLs, names and ETags in headers.

``HTTPProblem`` is an answer that ends a request early: a status, a one-line
reason and headers. ``problem_for`` turns the node's errors (``node.errors``)
into one, by their ``status`` hint, so every route maps them the same way; the
gateway (plain text) and the JSON API differ only in how the body is written.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..errors import MedianodeError
from ..storage.cid import CID, CIDError


async def answer_lifespan(receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
    """ASGI's lifespan for an app with nothing to start or stop: say so, as Hypercorn waits for it."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


class HTTPProblem(Exception):
    """An error answer: status, one-line reason, extra headers."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def problem_response(exc: HTTPProblem, as_json: bool = False) -> Response:
    if as_json:
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)
    return PlainTextResponse(exc.reason + "\n", status_code=exc.status, headers=exc.headers)


def problem_for(error: MedianodeError, headers: dict[str, str] | None = None) -> HTTPProblem:
    """The answer to one of the node's errors: its status hint and its one-line message."""
    return HTTPProblem(error.status, str(error), headers)


Endpoint = Callable[[Request], Awaitable[Response]]


def json_problems(handler: Endpoint) -> Endpoint:
    """``handler`` with its refusals (``HTTPProblem``) and the node's errors answered as JSON problems."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPProblem as exc:
            return problem_response(exc, as_json=True)
        except MedianodeError as exc:
            return problem_response(problem_for(exc), as_json=True)

    return endpoint


def parse_cid(text: str) -> CID:
    """A CID from a URL, or a 400 naming what was wrong (the text is cut to 80 characters)."""
    try:
        return CID.parse(text)
    except CIDError as exc:
        raise HTTPProblem(400, f"invalid CID {text[:80]!r}: {exc}") from None


def filename_param(request: Request) -> str | None:
    """``?filename=`` decoded strictly as UTF-8 (a non-UTF-8 name is a 400, not mojibake)."""
    raw_query: str = request.scope.get("query_string", b"").decode("latin-1")
    for key, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True, encoding="latin-1"):
        if key == "filename":
            try:
                name: str = value.encode("latin-1").decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPProblem(400, "filename is not valid UTF-8") from None
            if any(c in name for c in '\r\n\0/"\\') or len(name) > 255:
                raise HTTPProblem(400, "filename must not contain quotes, slashes or control characters")
            return name
    return None


def content_disposition(kind: str, name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name)}"


def etag_matches(request: Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak or strong) or ``*``."""
    value = request.headers.get("if-none-match")
    if not value:
        return False
    candidates = [v.strip().removeprefix("W/") for v in value.split(",")]
    return "*" in candidates or etag in candidates
