"""The hub's per-address bounds from the environment (a reverse proxy or a loopback benchmark shows every
viewer at one address)."""

from __future__ import annotations

import pytest

from node.storage.cid import CID, RAW
from node.swarm.viewers.hub import HubLimits, Refused, ViewerHub
from node.swarm.viewers.protocol import Join

CLIP = CID.for_block(RAW, b"clip")


def test_defaults_without_the_variables() -> None:
    assert HubLimits.from_environ({}) == HubLimits()


def test_the_variables_raise_the_per_address_bounds() -> None:
    limits = HubLimits.from_environ(
        {
            "MEDIANODE_HUB_SOCKETS_PER_IP": "512",
            "MEDIANODE_HUB_JOIN_BURST": "1000",
            "MEDIANODE_HUB_JOINS_PER_MINUTE": "600",
        }
    )
    assert (limits.sockets_per_ip, limits.join_burst, limits.joins_per_minute) == (512, 1000.0, 600.0)
    assert limits.viewers_per_swarm == HubLimits().viewers_per_swarm  # the rest keep their defaults


@pytest.mark.parametrize("text", ["0", "-3", "many", "nan", "inf", "2.5"])
def test_a_bad_value_is_refused_with_its_name(text: str) -> None:
    with pytest.raises(ValueError, match="MEDIANODE_HUB_SOCKETS_PER_IP"):
        HubLimits.from_environ({"MEDIANODE_HUB_SOCKETS_PER_IP": text})


def test_a_hub_admits_as_many_viewers_from_one_address_as_its_limits_say() -> None:
    hub = ViewerHub([], HubLimits.from_environ({"MEDIANODE_HUB_SOCKETS_PER_IP": "3"}))
    for _ in range(3):
        hub.join(CLIP, "127.0.0.1", Join(b"\0"), 1, 1000, 0.0)
    with pytest.raises(Refused, match="at most 3 viewers per address"):
        hub.join(CLIP, "127.0.0.1", Join(b"\0"), 1, 1000, 0.0)
