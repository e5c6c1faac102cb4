"""What the benchmark scripts share: test files, a warm page cache, the medianode command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def make_file(path: Path, size: int) -> None:
    """``size`` random (incompressible, like encoded video) bytes."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(os.urandom(n))
            left -= n


def warm(path: Path) -> None:
    os.sync()  # no writeback of the generated file competes with what is measured
    with open(path, "rb") as f:
        while f.read(16 * MiB):
            pass


def medianode(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", "--data-dir", str(data_dir), *args]
