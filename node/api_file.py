"""``api.json``: where a running ``serve`` tells the ``medianode`` command how to reach its admin API.

``serve`` writes it (mode 0600) into the data directory with the gateway URL,
an admin token made for this run and its pid, and removes it on the way out;
commands that act on the running node read it and call the admin API
(node/gateway/admin.py) with ``Authorization: Bearer TOKEN``. Anyone who can
read the data directory can administer the node, and nobody else. This module
loads next to nothing (the standard library and node/storage/files.py), since every such command starts here.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from .storage.files import replace_file

API_FILE = "api.json"


def write_api_file(data_dir: Path, url: str) -> str:
    """Create this run's admin token and publish it with the URL; return the token."""
    token = secrets.token_urlsafe(32)
    replace_file(data_dir / API_FILE, json.dumps({"url": url, "token": token, "pid": os.getpid()}).encode())
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
