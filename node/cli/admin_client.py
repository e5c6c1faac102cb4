"""The client of the running node's admin API (``node/gateway/admin.py``), for the commands that act on ``serve``.

``serve`` publishes the API's URL and this run's bearer token in ``api.json`` in the data directory; a command
that finds no such file (or no answer at its URL) says that ``serve`` is not running. The API's own refusals
arrive as ``{"error": ...}`` and are reported as they are.
"""

from __future__ import annotations

import json
from typing import Any

from ..api_file import read_api_file
from ..config import NodeConfig
from .output import CommandError

TIMEOUT = 60  # seconds one call may take: provide and swarm connect wait on remote peers


def call_admin_api(config: NodeConfig, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``method path`` with ``body`` as JSON; the JSON object answered."""
    # Loaded here: only the commands that talk to serve need an HTTP client, and it costs every command's start.
    import urllib.error
    import urllib.request

    api = read_api_file(config.data_dir)
    if api is None:
        raise CommandError(f"medianode serve is not running for {config.data_dir}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api["url"] + path, data=data, method=method, headers={
        "Authorization": f"Bearer {api['token']}", "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            reason = str(exc)
        raise CommandError(reason) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CommandError(f"medianode serve is not answering at {api['url']}: {exc}") from None
