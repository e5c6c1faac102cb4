"""How a block is kept at rest: zstd where it pays, as it is where it does not.

Encoded video never shrinks, so a block is compressed only when a sample of
it does; that keeps ``add`` near hashing speed. The index's ``FLAG_ZSTD``
records which blocks were compressed, and ``decode`` undoes it on read.
"""

from __future__ import annotations

import threading

import zstandard

from .index import FLAG_ZSTD

# Blocks whose first 16 KiB do not shrink below 85% are stored as they are;
# a block is kept compressed only if the whole of it shrinks below 90%.
COMPRESSION_SAMPLE = 16384
SAMPLE_RATIO = 0.85
KEEP_RATIO = 0.9
SMALLEST_COMPRESSED = 512  # below this zstd's frame costs more than it could save


class BlockCodec:
    """Decides per block whether zstd pays, and undoes it on read; one (de)compressor per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=3)
        return cctx

    def encode(self, data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
        """The bytes to store and their index flags."""
        if len(data) < SMALLEST_COMPRESSED:
            return data, 0
        cctx = self._compressor()
        sample = data[:COMPRESSION_SAMPLE]
        if len(cctx.compress(sample)) > SAMPLE_RATIO * len(sample):
            return data, 0
        packed = cctx.compress(data)
        if len(packed) > KEEP_RATIO * len(data):
            return data, 0
        return packed, FLAG_ZSTD

    def decode(self, stored: bytes, size: int, flags: int) -> bytes:
        """The block's bytes from what was stored; ``ValueError`` or ``ZstdError`` if they are damaged."""
        if flags & FLAG_ZSTD:
            dctx = getattr(self._local, "dctx", None)
            if dctx is None:
                dctx = self._local.dctx = zstandard.ZstdDecompressor()
            data: bytes = dctx.decompress(stored, max_output_size=size)
            if len(data) != size:
                raise ValueError("decompressed size differs from the index")
            return data
        return stored
