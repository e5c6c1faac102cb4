"""medianode: a peer-to-peer storage node for fediverse media."""

__version__ = "0.1.0"
