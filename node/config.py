"""Where a node keeps its data and how it is configured.

The data directory comes from ``--data-dir``, else ``MEDIANODE_DATA``, else
``$XDG_DATA_HOME/medianode`` (``~/.local/share/medianode``). It holds
``config.toml``, written with commented defaults the first time the node
opens the directory, so every command works on a fresh directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .storage.importer import DEFAULT_CHUNK_SIZE, check_chunk_size
from .storage.store import StoreConfig

CONFIG_NAME = "config.toml"
# Loopback until the operator says where to be reachable: a first run sends nothing beyond this machine.
DEFAULT_SWARM_LISTEN = "/ip4/127.0.0.1/tcp/4001"

DEFAULT_CONFIG = """\
# medianode configuration. Sizes take a unit: B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB).

[storage]
# Disk space for blocks. Unpinned cached content is evicted, least recently
# used first, to stay under it; pins that would exceed it are refused. "0" = no limit.
quota = "{quota}"
# Rehash every block read from disk (kubo's HashOnRead). Costs CPU on every read.
hash_on_read = false
# Chunk size for new files: 262144 (kubo's default) or 1048576.
chunk_size = {chunk_size}

[gateway]
# Where the HTTP gateway listens (medianode serve --gateway overrides it).
listen = "127.0.0.1:8080"
# The base of the URLs handed to other servers (in attachments). Behind a
# reverse proxy set it to the public https address, e.g. "https://media.example".
# Empty: http://LISTEN.
public_url = ""
# Largest single upload through the write API.
max_upload = "4GiB"
# After serving a range of a file that only peers have, keep fetching it in the background:
# the whole file when it is at most cache_whole_max, else read_ahead bytes past the range
# (a seek into a 4 GiB film should not cost a peer 4 GiB of uplink). Kept as evictable cache.
cache_whole_max = "32MiB"
read_ahead = "8MiB"

[s3]
# An S3-compatible API for fediverse servers' media storage (Mastodon, PeerTube, Loops, Pixelfed):
# objects are ordinary files in the store, shared in the swarm. Keys: medianode s3 key create.
enabled = true
# Where it listens (medianode serve --s3 overrides, --no-s3 turns it off).
listen = "127.0.0.1:9000"
# The region clients must sign for; empty: any region is accepted.
region = ""
# For virtual-host-style addressing (BUCKET.DOMAIN), the domain clients use, e.g. "s3.media.example".
domain = ""
# Parts of multipart uploads not completed within this many hours are deleted.
incomplete_upload_hours = 168

[swarm]
# libp2p listen addresses (TCP; Noise and Yamux only). medianode serve --listen overrides.
# Loopback only until you choose: to be reachable by other nodes, listen on a public address
# or on every interface, e.g. ["/ip4/0.0.0.0/tcp/4001"].
listen = ["/ip4/127.0.0.1/tcp/4001"]
# Peers to stay connected to, as /ip4/HOST/tcp/PORT/p2p/PEERID (--bootstrap adds to them).
bootstrap = []
# Announce roots and pins in the IPFS DHT and look up providers there (--no-dht turns it off).
dht = true
# Find and connect to other nodes on the local network over multicast DNS (serve --mdns turns it on).
# Off by default: it announces this node on every interface of the machine.
mdns = false
# Seconds between looks for content added since the last announcement (by add, uploads, imports).
announce_new_every = 30

[replication]
# Trusted peers that keep copies of our pins (medianode pin add CID --replicas N) and
# whose pins we keep copies of, as /ip4/HOST/tcp/PORT/p2p/PEERID.
peers = []
# Seconds between checks of who holds which copy.
interval = 60

[viewers]
# Gateways (base URLs, e.g. "https://media.example") whose viewer swarms this node joins as a
# WebRTC seeder of the files it has pinned, so that browsers watching there fetch from it.
seed_hubs = []
# At most this many pinned files are seeded, the most recently pinned first.
seed_max = 20
# STUN servers for WebRTC, e.g. ["stun:stun.example.org:3478"]: the signaling hub hands them to
# browsers watching here, and medianode watch and the seeder use them. Empty: none, only the
# machine's own addresses are offered.
stun = []
# Offer 127.0.0.1 as the only WebRTC address: for tests and benchmarks on one machine.
loopback_only = false
"""

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


class ConfigError(ValueError):
    pass


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"size must not be negative: {text}")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"not a size: {text!r} (examples: 500MiB, 20GiB, 1TB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def default_data_dir() -> Path:
    env = os.environ.get("MEDIANODE_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "medianode"


@dataclass(frozen=True)
class GatewayConfig:
    listen: tuple[str, int]
    public_url: str
    max_upload: int
    cache_whole_max: int = 32 * 1024 * 1024
    read_ahead: int = 8 * 1024 * 1024

    def base_url(self) -> str:
        """Where this node's gateway is reached: ``public_url``, else the listen address."""
        host, port = self.listen
        return self.public_url or f"http://{url_host(host)}:{port}"


@dataclass(frozen=True)
class S3Config:
    enabled: bool = True
    listen: tuple[str, int] = ("127.0.0.1", 9000)
    region: str = ""
    domain: str = ""
    incomplete_upload_hours: float = 168.0


@dataclass(frozen=True)
class SwarmConfig:
    listen: tuple[str, ...]
    bootstrap: tuple[str, ...]
    replication_peers: tuple[str, ...] = ()
    replication_interval: float = 60.0
    dht: bool = True
    announce_new_every: float = 30.0
    mdns: bool = False


@dataclass(frozen=True)
class ViewersConfig:
    seed_hubs: tuple[str, ...] = ()
    seed_max: int = 20
    stun: tuple[str, ...] = ()
    loopback_only: bool = False


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    store: StoreConfig
    chunk_size: int
    gateway: GatewayConfig
    swarm: SwarmConfig = SwarmConfig((DEFAULT_SWARM_LISTEN,), ())
    viewers: ViewersConfig = ViewersConfig()
    s3: S3Config = S3Config()


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) into a host and a port."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def load(data_dir: Path, quota: str | None = None) -> NodeConfig:
    """Read ``config.toml``, creating the directory and a default config if they do not exist."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CONFIG_NAME
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(DEFAULT_CONFIG.format(quota=quota or "10GiB", chunk_size=DEFAULT_CHUNK_SIZE))
        os.replace(tmp, path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    storage = raw.get("storage", {})
    try:
        chunk_size = int(storage.get("chunk_size", DEFAULT_CHUNK_SIZE))
        check_chunk_size(chunk_size)
        store = StoreConfig(
            quota=parse_size(quota if quota is not None else storage.get("quota", "10GiB")),
            hash_on_read=bool(storage.get("hash_on_read", False)),
        )
        section = raw.get("gateway", {})
        listen = parse_listen(str(section.get("listen", "127.0.0.1:8080")))
        public_url = str(section.get("public_url", "")).rstrip("/")
        if public_url and not public_url.startswith(("http://", "https://")):
            raise ConfigError(f"gateway.public_url must start with http:// or https://, got {public_url!r}")
        gateway = GatewayConfig(
            listen,
            public_url,
            parse_size(section.get("max_upload", "4GiB")),
            parse_size(section.get("cache_whole_max", "32MiB")),
            parse_size(section.get("read_ahead", "8MiB")),
        )
        swarm_section = raw.get("swarm", {})
        replication = raw.get("replication", {})
        swarm = SwarmConfig(
            tuple(str(a) for a in swarm_section.get("listen", [DEFAULT_SWARM_LISTEN])),
            tuple(str(a) for a in swarm_section.get("bootstrap", [])),
            tuple(str(a) for a in replication.get("peers", [])),
            float(replication.get("interval", 60)),
            bool(swarm_section.get("dht", True)),
            float(swarm_section.get("announce_new_every", 30)),
            bool(swarm_section.get("mdns", False)),
        )
        viewers = _viewers_config(raw.get("viewers", {}))
        s3 = _s3_config(raw.get("s3", {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return NodeConfig(data_dir, store, chunk_size, gateway, swarm, viewers, s3)


def _s3_config(section: dict[str, object]) -> S3Config:
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"s3.enabled must be true or false, got {enabled!r}")
    hours = section.get("incomplete_upload_hours", 168)
    if not isinstance(hours, int | float) or isinstance(hours, bool) or hours <= 0:
        raise ConfigError(f"s3.incomplete_upload_hours must be a positive number, got {hours!r}")
    domain = str(section.get("domain", "")).strip().lower().rstrip(".")
    return S3Config(
        enabled, parse_listen(str(section.get("listen", "127.0.0.1:9000"))), str(section.get("region", "")), domain,
        float(hours),
    )  # fmt: skip


def _viewers_config(section: dict[str, object]) -> ViewersConfig:
    hubs = tuple(str(h).rstrip("/") for h in _string_list(section, "seed_hubs"))
    for hub in hubs:
        if not hub.startswith(("http://", "https://")):
            raise ConfigError(f"viewers.seed_hubs: {hub!r} must start with http:// or https://")
    stun = _string_list(section, "stun")
    for url in stun:
        if not url.startswith(("stun:", "stuns:")):
            raise ConfigError(f"viewers.stun: {url!r} is not a stun: URL")
    seed_max = section.get("seed_max", 20)
    if not isinstance(seed_max, int) or seed_max < 0:
        raise ConfigError(f"viewers.seed_max must be a number of files, got {seed_max!r}")
    return ViewersConfig(hubs, seed_max, stun, bool(section.get("loopback_only", False)))


def _string_list(section: dict[str, object], key: str) -> tuple[str, ...]:
    value = section.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"viewers.{key} must be a list of strings")
    return tuple(value)
