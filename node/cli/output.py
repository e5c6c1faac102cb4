"""What a command shows its user: the result (text, or one JSON object with ``--json``), a progress bar, and
``CommandError``, a failure a command finds itself.

A result goes to stdout; progress bars and errors go to stderr, so a script that reads the JSON (or pipes
``cat``) sees nothing else. A bar is drawn only on a terminal and never with ``--json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import MedianodeError

EXIT_FAILED = 1


class CommandError(MedianodeError):
    """A failure the command found itself (bad usage of an argument, the node not running, a peer not
    delivering), printed as one line. Nothing serves it over HTTP, so its ``status`` is the root's."""


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def result(self, data: dict[str, Any] | list[Any], text: str) -> None:
        if self.as_json:
            print(json.dumps(data, ensure_ascii=False))
        elif text:
            print(text)

    @contextmanager
    def progress(self, total: int | None, label: str) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr when it is a terminal and no JSON was asked for."""
        if self.as_json or not sys.stderr.isatty():
            yield lambda n: None
            return
        from tqdm import tqdm  # loaded only when a bar is drawn: it costs every command's start otherwise

        with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
            yield bar.update
