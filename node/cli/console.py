"""``console``: the link that logs a browser in to the running node's console (``node/gateway/console.py``).

The link carries this run's admin token (``api.json``, which ``serve`` writes) in its fragment,
``http://127.0.0.1:8080/#login=TOKEN``: a browser sends a fragment neither to the server nor in
``Referer``, and the page keeps the token for its tab only. The token changes each time ``serve`` starts.
"""

from __future__ import annotations

import argparse

from ..api_file import read_api_file
from ..config import load
from .commands import Commands
from .output import CommandError, Output


def add_commands(commands: Commands) -> None:
    p = commands.add("console", cmd_console, "print the link that logs a browser in to the node's console")
    p.add_argument("--url", action="store_true", help="print the link alone (for scripts and xdg-open)")


def login_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/#login={token}"


def cmd_console(args: argparse.Namespace, out: Output) -> None:
    config = load(args.data_dir)
    api = read_api_file(config.data_dir)
    if api is None:
        raise CommandError(f"medianode serve is not running for {config.data_dir}")
    base, token = api["url"], api["token"]
    link = login_url(base, token)
    data = {"console": f"{base.rstrip('/')}/", "login_url": link}
    if config.gateway.public_url:
        data["public_login_url"] = login_url(config.gateway.public_url, token)
    if args.url:
        out.result(data, link)
        return
    lines = [f"console: {link}", "open it in a browser on this machine; it logs that tab in until serve restarts"]
    if "public_login_url" in data:
        lines.append(f"through the public URL: {data['public_login_url']}")
    out.result(data, "\n".join(lines))
