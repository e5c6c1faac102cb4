"""The gateway's settings, fixed when ``serve`` starts (see node/daemon.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class GatewaySettings:
    public_url: str  # what URLs handed to other servers start with, e.g. https://media.example
    max_upload: int  # bytes per upload
    data_dir: Path
    chunk_size: int = 262144
    cache_whole_max: int = 32 * 1024 * 1024  # after a partial read from peers: fetch files this small whole
    read_ahead: int = 8 * 1024 * 1024  # larger ones: this many bytes past the range
