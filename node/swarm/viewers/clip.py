"""A clip as the viewer swarm sees it: its pieces, which file DAGs it accepts, and whether it gets a swarm.

The one place both questions are answered on the node side (the hub, the
seeder and ``medianode watch`` all ask here); ``static/player/clip.js`` gives
the browser the same answers, and ``tests/vectors/viewer_clips.json`` holds
both to the same DAGs.

Pieces
    The file's leaves as ``node.storage.layout.walk_file`` lists them, in
    file order: raw leaves, and dag-pb nodes that carry bytes of their own
    (their own bytes come before their children's). Children that hold no
    bytes are skipped. A piece's size is its *block*'s (for a dag-pb leaf,
    the whole node, UnixFS framing included): that is what crosses a data
    channel and what is hashed.
The swarm
    A clip gets one when it has 1 to ``MAX_PIECES`` pieces and every piece
    is 1 to ``MAX_PIECE`` bytes (an empty piece has no chunk to send); the
    rest is served by the gateway alone. The hub also needs every block
    here, so a viewer can always fall back to the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...errors import UpstreamError
from ...storage.cid import CID
from ...storage.dagpb import DagPBError
from ...storage.layout import FileLayout, NotAFileError, walk_file
from ...storage.store import BlockStore
from ...storage.unixfs import UnixFSError, decode_unixfs
from .protocol import MAX_PIECE, MAX_PIECES


class ViewerError(UpstreamError):
    """The clip cannot be fetched (bad CID, gateway unreachable or without it, a DAG that is not a file)."""


@dataclass(frozen=True, slots=True)
class Piece:
    cid: CID
    size: int  # bytes of the piece (the leaf block)
    offset: int  # where its file bytes start
    embedded: bool  # a dag-pb leaf: its file bytes are the UnixFS Data inside the block


@dataclass(frozen=True)
class Clip:
    root: CID
    size: int
    pieces: list[Piece]

    @property
    def swarm_refusal(self) -> str | None:
        """Why this clip gets no swarm, or None when it does (see the module docstring)."""
        if not self.pieces:
            return "an empty file has no pieces to share"
        if len(self.pieces) > MAX_PIECES:
            return f"more than {MAX_PIECES} pieces"
        if any(not 0 < piece.size <= MAX_PIECE for piece in self.pieces):
            return f"pieces must be 1 to {MAX_PIECE} bytes: use the gateway"
        return None

    @property
    def swarmable(self) -> bool:
        return self.swarm_refusal is None

    def file_bytes(self, index: int, data: bytes) -> bytes:
        """The file's bytes inside piece ``index``."""
        if not self.pieces[index].embedded:
            return data
        return decode_unixfs(data)[1].data or b""


def clip_from_layout(root: CID, layout: FileLayout, block_size: Callable[[CID], int]) -> Clip:
    """A piece per leaf; a dag-pb leaf's piece is its whole block, so its size is asked of ``block_size``."""
    pieces = [
        Piece(leaf.cid, block_size(leaf.cid) if leaf.embedded else leaf.size, leaf.offset, leaf.embedded)
        for leaf in layout.leaves
    ]
    return Clip(root, layout.size, pieces)


def clip_from_blocks(root: CID, blocks: dict[CID, bytes]) -> Clip:
    """The clip of the file at ``root`` whose dag-pb nodes (at least) are in ``blocks``, verified by the caller."""
    try:
        layout = walk_file(root, blocks.__getitem__)
    except KeyError as exc:
        raise ViewerError(f"{root}: block {exc.args[0]} is missing from its DAG") from None
    except NotAFileError as exc:
        raise ViewerError(str(exc)) from None
    except (UnixFSError, DagPBError) as exc:
        raise ViewerError(f"{root} is not a well-formed file: {exc}") from None
    return clip_from_layout(root, layout, lambda cid: len(blocks[cid]))


def stored_clip(store: BlockStore, root: CID) -> Clip | None:
    """The clip of a file the store holds whole; None when some of its leaves are missing.

    Raises the store's errors, ``NotAFileError`` or ``UnixFSError`` for what is not a file here. A dag-pb
    leaf's block size comes from the index where it is known, else from reading the block.
    """
    layout, locations = store.layout(root)
    known: dict[CID, int] = {}
    for leaf, location in zip(layout.leaves, locations, strict=True):
        if location is None:
            return None
        if location.size >= 0:
            known[leaf.cid] = location.size
    return clip_from_layout(root, layout, lambda cid: known[cid] if cid in known else len(store.get_block(cid)))
