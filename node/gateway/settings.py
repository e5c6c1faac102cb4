"""The gateway's settings, fixed when ``serve`` starts (made by node/daemon.py from the config; the defaults
are in node/config.py's SETTINGS, not here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class GatewaySettings:
    public_url: str  # what URLs handed to other servers start with, e.g. https://media.example
    max_upload: int  # bytes per upload
    data_dir: Path
    chunk_size: int
    cache_whole_max: int  # after a partial read from peers: fetch files this small whole
    read_ahead: int  # larger ones: this many bytes past the range
