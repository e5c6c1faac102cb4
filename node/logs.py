"""Structured logging: one ``key=value`` line per event on stderr, warnings only by default.

``-v`` shows info, ``-vv`` debug; ``MEDIANODE_LOG=debug|info|warning`` does the same
for processes started without the CLI flags (a service manager, tests).
"""

from __future__ import annotations

import logging
import os
import time


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = [
            f"ts={stamp}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={record.getMessage()!r}",
        ]
        for key, value in getattr(record, "fields", {}).items():
            fields.append(f"{key}={value!r}")
        if record.exc_info:
            fields.append(f"exc={self.formatException(record.exc_info)!r}")
        return " ".join(fields)


def setup_logging(verbosity: int = 0) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    env = os.environ.get("MEDIANODE_LOG", "").upper()
    if env in ("DEBUG", "INFO", "WARNING", "ERROR"):
        level = min(level, getattr(logging, env))
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("medianode")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def adopt_libp2p_logging() -> None:
    """Route py-libp2p's loggers through ours. Importing libp2p removes their handlers and
    stops propagation, which sends its warnings and tracebacks to stderr through Python's
    last-resort handler; call this after the import. They show with ``-vv``/``MEDIANODE_LOG=debug``."""
    ours = logging.getLogger("medianode")
    theirs = logging.getLogger("libp2p")
    theirs.propagate = False
    if ours.level <= logging.DEBUG and ours.handlers:
        theirs.handlers[:] = list(ours.handlers)
        theirs.setLevel(logging.INFO)
    else:
        theirs.handlers[:] = [logging.NullHandler()]
