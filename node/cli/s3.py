"""``s3 key``: access keys for the S3 API (``node/gateway/s3/``), one per fediverse server, each with the buckets it
owns, kept in the data directory's ``s3.sqlite``; a running ``serve`` sees a change at once."""

from __future__ import annotations

import argparse

from ..config import load, parse_size, url_host
from ..gateway.s3.catalog import Catalog
from ..gateway.s3.errors import S3Error
from ..gateway.s3.names import validate_bucket_name
from .commands import Commands
from .output import CommandError, Output


def add_commands(commands: Commands) -> None:
    p = commands.add("s3", cmd_s3, "manage keys for the S3 API (one per fediverse server)")
    s3_sub = p.add_subparsers(dest="s3_command", required=True, metavar="key")
    q = commands.nested(s3_sub, "key", "create, list or revoke access keys")
    key_sub = q.add_subparsers(dest="s3_command", required=True, metavar="create|ls|revoke")
    r = commands.nested(key_sub, "create", "create a key (its secret is printed once)")
    r.add_argument("--name", required=True, help="who the key is for, e.g. the instance's host name")
    r.add_argument("--limit", help="bytes of objects this key may keep, e.g. 500GiB (default: no limit)")
    r.add_argument(
        "--bucket", action="append", default=[], help="create this bucket for the key (repeatable; or CreateBucket)"
    )
    r = commands.nested(key_sub, "revoke", "revoke a key (its buckets and objects stay)")
    r.add_argument("name", help="the key's name or access key id")
    commands.nested(key_sub, "ls", "list keys, their usage and buckets")


def cmd_s3(args: argparse.Namespace, out: Output) -> None:
    config = load(args.data_dir)
    catalog = Catalog(config.data_dir / "s3.sqlite")
    try:
        if args.s3_command == "create":
            limit = parse_size(args.limit) if args.limit else 0
            for bucket in args.bucket:
                try:
                    validate_bucket_name(bucket)
                except S3Error as exc:  # an S3 refusal's message without its S3 error code
                    raise CommandError(f"{bucket!r}: {exc.message}") from None
            taken = [b for b in args.bucket if catalog.bucket(b) is not None]
            if taken:
                raise CommandError(f"bucket {taken[0]!r} exists already")
            key = catalog.create_key(args.name, limit)
            for bucket in args.bucket:
                catalog.create_bucket(bucket, key.access_key_id)
            out.result(
                {"name": key.name, "access_key_id": key.access_key_id, "secret_access_key": key.secret,
                 "limit": key.limit, "buckets": list(args.bucket),
                 "endpoint": f"http://{url_host(config.s3.listen[0])}:{config.s3.listen[1]}"},
                f"created S3 key {key.name!r}; the secret is shown only now:\n"
                f"access key id:     {key.access_key_id}\nsecret access key: {key.secret}",
            )  # fmt: skip
        elif args.s3_command == "revoke":
            key = catalog.revoke_key(args.name)
            out.result({"name": key.name, "access_key_id": key.access_key_id, "revoked": True},
                       f"revoked S3 key {key.name!r} ({key.access_key_id})")  # fmt: skip
        else:
            keys = catalog.access_keys()
            used = {k.access_key_id: catalog.used_bytes(k.access_key_id) for k in keys}
            buckets = {k.access_key_id: [b.name for b in catalog.buckets(k.access_key_id)] for k in keys}
            out.result(
                {"keys": [{"name": k.name, "access_key_id": k.access_key_id, "limit": k.limit, "created": k.created,
                           "used": used[k.access_key_id], "buckets": buckets[k.access_key_id]} for k in keys]},
                "\n".join(f"{k.name} {k.access_key_id} used {used[k.access_key_id]} of {k.limit or 'unlimited'}"
                          f" buckets: {', '.join(buckets[k.access_key_id]) or '-'}" for k in keys),
            )  # fmt: skip
    finally:
        catalog.close()
