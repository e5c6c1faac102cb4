"""What the benchmark scripts share: test files, a warm page cache, the medianode command, py-spy profiles."""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class ProfileCounts:
    """Samples of a py-spy ``--format raw`` file (collapsed stacks, ``frame;frame;... count``), counted by
    thread (its first frame, as ``thread_of`` names it), by the function on top, and by every frame below."""

    samples: int = 0
    threads: collections.Counter[str] = field(default_factory=collections.Counter)
    own: collections.Counter[str] = field(default_factory=collections.Counter)
    total: collections.Counter[str] = field(default_factory=collections.Counter)


def count_profile(path: Path, thread_of: Callable[[str], str] = str) -> ProfileCounts:
    counts = ProfileCounts()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        counts.samples += n
        counts.threads[thread_of(frames[0])] += n
        counts.own[frames[-1]] += n
        for frame in set(frames[1:]):
            counts.total[frame] += n
    return counts
