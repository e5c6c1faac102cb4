"""The table of ``medianode`` commands that each command group adds its own to.

Every command and subcommand takes the options of ``common`` (``--json``, ``--data-dir``) after its name as well as
before it; a command's handler is stored as ``func`` in the parsed arguments and returns its exit code (``None`` for
0).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .output import Output

Handler = Callable[[argparse.Namespace, Output], int | None]
Subcommands = argparse._SubParsersAction  # argparse's type for what add_subparsers returns


class Commands:
    def __init__(self, subcommands: Subcommands[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
        self.subcommands = subcommands
        self.common = common

    def add(self, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = self.subcommands.add_parser(name, parents=[self.common], help=help_text, description=help_text)
        parser.set_defaults(func=handler)
        return parser

    def nested(self, under: Subcommands[argparse.ArgumentParser], name: str, help_text: str) -> argparse.ArgumentParser:
        """A subcommand (``pin add``, ``s3 key create``); its command's handler reads which one from its ``dest``."""
        return under.add_parser(name, parents=[self.common], help=help_text)
