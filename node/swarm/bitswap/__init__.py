"""Bitswap 1.2.0, split as boxo splits it: ``wire`` (messages and framing), ``wants`` (which block to
ask whom for), ``ledger`` (per-peer bounds, strikes and bans), ``network`` (streams), ``server``
(answering wants), ``client`` (fetching), and ``exchange``, which composes them for one host.
``wire``, ``wants`` and ``ledger`` are pure logic; the others are the I/O around them."""

from ...errors import FetchError
from .exchange import BlockExchange

__all__ = ["BlockExchange", "FetchError"]
