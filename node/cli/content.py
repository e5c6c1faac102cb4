"""Content as a command names it: ``CID``, ``CID/path`` or ``/ipfs/CID/path`` arguments, the node's store they are
read from, and the gateway URL a command prints beside a CID."""

from __future__ import annotations

import argparse

from ..config import NodeConfig, load
from ..storage.cid import CID, CIDError
from ..storage.store import BlockStore
from .output import CommandError


def parse_cid_path(text: str) -> tuple[CID, str]:
    """Accept ``CID``, ``CID/a/b`` and ``/ipfs/CID/a/b``."""
    text = text.strip()
    if text.startswith("/ipfs/"):
        text = text[len("/ipfs/") :]
    head, _, rest = text.partition("/")
    try:
        return CID.parse(head), rest
    except CIDError as exc:
        raise CommandError(f"invalid CID {head!r}: {exc}") from None


def resolve_target(store: BlockStore, target: str) -> CID:
    """The CID that a ``CID/path`` argument names in ``store``."""
    cid, path = parse_cid_path(target)
    return store.resolve(cid, path) if path else cid


def open_store(args: argparse.Namespace) -> tuple[NodeConfig, BlockStore]:
    config = load(args.data_dir)
    return config, BlockStore(config.data_dir / "store", config.store)


def gateway_url(config: NodeConfig, cid: CID) -> str:
    return f"{config.gateway.base_url()}/ipfs/{cid}"
