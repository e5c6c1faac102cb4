"""Replication between operators who pool storage: ``protocol`` (messages), ``book`` (what is wanted
and held, in SQLite) and ``service`` (the libp2p side: ``Replicator``). Importing the package does
not import libp2p: the CLI's ``pin`` commands use the book alone."""

from .book import Replica, ReplicaBook

__all__ = ["Replica", "ReplicaBook"]
