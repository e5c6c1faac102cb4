"""``api.json``: where a running ``serve`` tells the ``medianode`` command how to reach its admin API.

``serve`` writes it (mode 0600) into the data directory with the gateway URL,
an admin token made for this run and its pid, and removes it on the way out;
commands that act on the running node read it and call the admin API
(node/gateway/admin.py) with ``Authorization: Bearer TOKEN``. Anyone who can
read the data directory can administer the node, and nobody else. This module
loads nothing but the standard library, since every such command starts here.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

API_FILE = "api.json"


def write_api_file(data_dir: Path, url: str) -> str:
    """Create this run's admin token and publish it with the URL; return the token."""
    token = secrets.token_urlsafe(32)
    path = data_dir / API_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, out)
    os.replace(tmp, path)
    return token


def read_api_file(data_dir: Path) -> dict[str, Any] | None:
    """The running node's ``{"url", "token", "pid"}``, or None when no ``serve`` has published one."""
    try:
        api = json.loads((data_dir / API_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(api, dict) or not isinstance(api.get("url"), str) or not isinstance(api.get("token"), str):
        return None
    return api


def remove_api_file(data_dir: Path) -> None:
    """Remove the file if this process wrote it (a newer ``serve`` may have replaced it)."""
    path = data_dir / API_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
