"""The ``medianode`` command: its parser, assembled from the command groups, and the one place where an error
becomes a line for its user.

Each group is a module with its commands' arguments beside their handlers: ``serve`` (init, demo, serve),
``files`` (add, cat, get, ls, stat, export, import), ``watch``, ``pins`` (pin, gc, verify, repo), ``swarm`` (id,
peers, provide, findprovs, swarm connect), ``tokens``, ``s3`` and ``console``. Every command that prints a result
also prints it as one JSON object with ``--json``. A failure is one line on stderr, ``medianode: error: ...``, and
exit 1 (2 for bad usage, 130 for Ctrl-C); no traceback reaches a user. Storage commands import nothing from the
network stack, so they start fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..config import default_data_dir
from ..errors import MedianodeError
from ..logs import setup_logging
from . import console, files, pins, s3, serve, swarm, tokens, watch
from .commands import Commands
from .output import EXIT_FAILED, CommandError, Output

__all__ = ["CommandError", "build_parser", "main"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON")
    common.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="node directory (default: $MEDIANODE_DATA or ~/.local/share/medianode)",
    )
    parser = argparse.ArgumentParser(
        prog="medianode", description="Peer-to-peer storage node for fediverse media.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"medianode {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (repeat for debug)")
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), common)
    serve.add_commands(commands)
    files.add_commands(commands)
    watch.add_commands(commands)
    pins.add_commands(commands)
    swarm.add_commands(commands)
    tokens.add_commands(commands)
    s3.add_commands(commands)
    console.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SUPPRESS above lets --json and --data-dir stand before or after the command; their defaults are set here.
    args.json = getattr(args, "json", False)
    args.data_dir = Path(getattr(args, "data_dir", None) or default_data_dir()).expanduser()
    setup_logging(args.verbose)
    try:
        code = args.func(args, Output(args.json))
    except KeyboardInterrupt:
        print("medianode: interrupted; nothing partial was stored", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise  # a bug, not a failure the user can act on: its traceback is what a report of it needs
        print(f"medianode: error: {line}", file=sys.stderr)
        return EXIT_FAILED
    return int(code or 0)


def error_line(exc: BaseException) -> str | None:
    """The one line that reports ``exc`` to its user, or ``None`` when it is no error of the kinds a command
    reports."""
    if isinstance(exc, BaseExceptionGroup):
        # What trio's nurseries raise out of serve: reported when every error in it is of those kinds.
        lines = [error_line(inner) for inner in exc.exceptions]
        return None if None in lines else lines[0]
    if isinstance(exc, MedianodeError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None
