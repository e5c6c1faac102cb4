"""``token``: upload tokens for the write API (``node/gateway/tokens.py``), created, revoked and listed in the
data directory's ``gateway.sqlite``; a running ``serve`` sees a change at once."""

from __future__ import annotations

import argparse

from ..config import load, parse_size
from ..gateway.tokens import TokenStore
from .commands import Commands
from .output import Output


def add_commands(commands: Commands) -> None:
    p = commands.add("token", cmd_token, "manage upload tokens for the write API")
    token_sub = p.add_subparsers(dest="token_command", required=True, metavar="create|revoke|ls")
    q = commands.nested(token_sub, "create", "create a token (printed once, on the last line)")
    q.add_argument("--name", required=True, help="who the token is for, e.g. the instance's host name")
    q.add_argument("--limit", help="total bytes this token may upload, e.g. 50GiB (default: no limit)")
    q = commands.nested(token_sub, "revoke", "revoke a token")
    q.add_argument("name")
    commands.nested(token_sub, "ls", "list tokens")


def cmd_token(args: argparse.Namespace, out: Output) -> None:
    config = load(args.data_dir)
    tokens = TokenStore(config.data_dir / "gateway.sqlite")
    try:
        if args.token_command == "create":
            limit = parse_size(args.limit) if args.limit else 0
            token = tokens.create(args.name, limit)
            out.result(
                {"name": args.name, "limit": limit, "token": token},
                f"created token {args.name!r}; it is shown only now:\n{token}",
            )
        elif args.token_command == "revoke":
            tokens.revoke(args.name)
            out.result({"name": args.name, "revoked": True}, f"revoked token {args.name!r}")
        else:
            listed = tokens.list()
            out.result(
                {"tokens": [{"name": t.name, "created": t.created, "limit": t.limit, "used": t.used} for t in listed]},
                "\n".join(f"{t.name} used {t.used} of {t.limit or 'unlimited'}" for t in listed),
            )
    finally:
        tokens.close()
