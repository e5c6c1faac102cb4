"""Where a node keeps its data and how it is configured.

The data directory comes from ``--data-dir``, else ``MEDIANODE_DATA``, else
``$XDG_DATA_HOME/medianode`` (``~/.local/share/medianode``). It holds
``config.toml``, written with commented defaults the first time the node
opens the directory, so every command works on a fresh directory.

Every setting is one entry of :data:`SETTINGS` (section, key, kind, default,
comment): the template written into a new directory, the defaults of the typed
config and the reading of ``config.toml`` all come from it. A key the table
does not know, or a value of the wrong kind, is a :class:`ConfigError` naming
``[section] key`` and the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidRequest
from .storage.importer import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, check_chunk_size
from .storage.store import StoreConfig

CONFIG_NAME = "config.toml"
TEMPLATE_WIDTH = 100  # comment lines of the template are wrapped to this many columns

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


class ConfigError(InvalidRequest, ValueError):
    """A setting (in ``config.toml``, an option or the environment) that cannot be used; the message names it."""


def positive_from_environ(environ: Mapping[str, str], variable: str, default: float, unit: str = "") -> float:
    """The number above 0 that ``variable`` gives (``unit`` names it in the error, e.g. "seconds"), or
    ``default`` when it is unset or blank: the one reading of the environment's tuning knobs."""
    text = environ.get(variable, "").strip()
    if not text:
        return default
    what = f"a number of {unit}" if unit else "a number"
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{variable} must be {what}, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{variable} must be {what} above 0, got {text!r}")
    return value


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"size must not be negative: {text}")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"not a size: {text!r} (examples: 500MiB, 20GiB, 1TB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) into a host and a port."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def default_data_dir() -> Path:
    env = os.environ.get("MEDIANODE_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "medianode"


# -- kinds of value: what a key must hold in the file and what it becomes -------------------------


def toml_value(value: object) -> str:
    """``value`` as written in TOML: the template's defaults and the values quoted in errors."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "a table" if isinstance(value, dict) else repr(value)


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Kind:
    """What a key holds. ``accepts`` says which TOML values may stand there, ``convert`` turns one into the
    typed value (raising ``ValueError`` for one it cannot take), ``expects`` completes "must be ..." in errors."""

    expects: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = _same

    def read(self, value: Any) -> Any:
        if self.accepts(value):
            try:
                return self.convert(value)
            except ValueError:
                pass  # the expectation below says what would do
        raise ValueError(f"must be {self.expects}, got {toml_value(value)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML's true is no number


def _is_positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _strings(value: object, prefixes: tuple[str, ...] = ("",)) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.startswith(prefixes) for v in value)


def _chunk_size(value: int) -> int:
    check_chunk_size(value)
    return value


SIZE = Kind(
    'a size such as "500MiB", "20GiB", "1TB" or a number of bytes',
    lambda v: _is_int(v) or isinstance(v, str),
    parse_size,
)
# "false" in quotes is still false: it was true (bool("false")) until the table, for every flag but [s3] enabled.
FLAG = Kind("true or false", lambda v: isinstance(v, bool) or v in ("true", "false"), lambda v: v in (True, "true"))
COUNT = Kind("a whole number, 0 or more", lambda v: _is_int(v) and v >= 0)
SECONDS = Kind("a number of seconds above 0", _is_positive, float)
HOURS = Kind("a number of hours above 0", _is_positive, float)
CHUNK_SIZE = Kind(f"a whole number of bytes from 1 to {MAX_CHUNK_SIZE}", _is_int, _chunk_size)
TEXT = Kind("a string", lambda v: isinstance(v, str))
LISTEN = Kind('HOST:PORT, e.g. "127.0.0.1:8080" or "[::1]:8080"', lambda v: isinstance(v, str), parse_listen)
BASE_URL = Kind(
    'empty or a URL starting with http:// or https://, e.g. "https://media.example"',
    lambda v: isinstance(v, str) and (v == "" or v.startswith(("http://", "https://"))),
    lambda v: v.rstrip("/"),
)
DOMAIN = Kind("a domain name or empty", lambda v: isinstance(v, str), lambda v: v.strip().lower().rstrip("."))
ADDRESSES = Kind("a list of strings", _strings, tuple)
HTTP_URLS = Kind(
    "a list of URLs starting with http:// or https://",
    lambda v: _strings(v, ("http://", "https://")),
    lambda v: tuple(url.rstrip("/") for url in v),
)
STUN_URLS = Kind("a list of stun: or stuns: URLs", lambda v: _strings(v, ("stun:", "stuns:")), tuple)


# -- the one table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One key of ``config.toml``; ``comment`` is its explanation in the template."""

    section: str
    key: str
    kind: Kind
    default: Any  # as written in TOML: "10GiB", not 10737418240
    comment: str


SECTIONS = {  # the order of the template, and what each section is for when its keys do not say it
    "storage": "",
    "gateway": "",
    "s3": "An S3-compatible API for fediverse servers' media storage (Mastodon, PeerTube, Loops, Pixelfed): "
    "objects are ordinary files in the store, shared in the swarm. Keys: medianode s3 key create.",
    "swarm": "",
    "replication": "",
    "viewers": "",
}

SETTINGS = (
    Setting("storage", "quota", SIZE, "10GiB", "Disk space for blocks. Unpinned cached content is evicted, least "
            'recently used first, to stay under it; pins that would exceed it are refused. "0" = no limit.'),
    Setting("storage", "hash_on_read", FLAG, False,
            "Rehash every block read from disk (kubo's HashOnRead). Costs CPU on every read."),
    Setting("storage", "chunk_size", CHUNK_SIZE, DEFAULT_CHUNK_SIZE,
            "Chunk size for new files: 262144 (kubo's default) or 1048576."),
    Setting("gateway", "listen", LISTEN, "127.0.0.1:8080",
            "Where the HTTP gateway listens (medianode serve --gateway overrides it)."),
    Setting("gateway", "public_url", BASE_URL, "",
            "The base of the URLs handed to other servers (in attachments). Behind a reverse proxy set it to "
            'the public https address, e.g. "https://media.example". Empty: http://LISTEN.'),
    Setting("gateway", "max_upload", SIZE, "4GiB", "Largest single upload through the write API."),
    Setting("gateway", "cache_whole_max", SIZE, "32MiB",
            "After serving a range of a file that only peers have, keep fetching the whole file in the "
            "background when it is at most this large. Kept as evictable cache."),
    Setting("gateway", "read_ahead", SIZE, "8MiB",
            "For a larger such file, fetch this many bytes past the range instead (a seek into a 4 GiB film "
            "should not cost a peer 4 GiB of uplink)."),
    Setting("gateway", "workers", COUNT, 0,
            "Processes answering the gateway's HTTP on its one socket, /ipfs/ reads from the store themselves; "
            "with 2 or more, the main process (swarm, uploads, S3) answers only what they pass on. 1: the main "
            "process alone. 0: one per core (medianode serve --workers overrides it)."),
    Setting("s3", "enabled", FLAG, True, "Serve the S3 API (medianode serve --no-s3 turns it off)."),
    Setting("s3", "listen", LISTEN, "127.0.0.1:9000", "Where it listens (medianode serve --s3 overrides)."),
    Setting("s3", "region", TEXT, "", "The region clients must sign for; empty: any region is accepted."),
    Setting("s3", "domain", DOMAIN, "", "For virtual-host-style addressing (BUCKET.DOMAIN), the domain clients "
            'use, e.g. "s3.media.example".'),
    Setting("s3", "incomplete_upload_hours", HOURS, 168,
            "Parts of multipart uploads not completed within this many hours are deleted."),
    Setting("swarm", "listen", ADDRESSES, ["/ip4/127.0.0.1/tcp/4001"],
            "libp2p listen addresses (TCP; Noise and Yamux only). medianode serve --listen overrides. "
            "Loopback only until you choose: to be reachable by other nodes, listen on a public address or "
            'on every interface, e.g. ["/ip4/0.0.0.0/tcp/4001"].'),
    Setting("swarm", "bootstrap", ADDRESSES, [],
            "Peers to stay connected to, as /ip4/HOST/tcp/PORT/p2p/PEERID (--bootstrap adds to them)."),
    Setting("swarm", "dht", FLAG, True,
            "Announce roots and pins in the IPFS DHT and look up providers there (--no-dht turns it off)."),
    Setting("swarm", "mdns", FLAG, False,
            "Find and connect to other nodes on the local network over multicast DNS (serve --mdns turns it "
            "on). Off by default: it announces this node on every interface of the machine."),
    Setting("swarm", "announce_new_every", SECONDS, 30,
            "Seconds between looks for content added since the last announcement (by add, uploads, imports)."),
    Setting("replication", "peers", ADDRESSES, [],
            "Trusted peers that keep copies of our pins (medianode pin add CID --replicas N) and whose pins "
            "we keep copies of, as /ip4/HOST/tcp/PORT/p2p/PEERID."),
    Setting("replication", "interval", SECONDS, 60, "Seconds between checks of who holds which copy."),
    Setting("viewers", "seed_hubs", HTTP_URLS, [],
            'Gateways (base URLs, e.g. "https://media.example") whose viewer swarms this node joins as a '
            "WebRTC seeder of the files it has pinned, so that browsers watching there fetch from it."),
    Setting("viewers", "seed_max", COUNT, 20,
            "At most this many pinned files are seeded, the most recently pinned first."),
    Setting("viewers", "stun", STUN_URLS, [],
            'STUN servers for WebRTC, e.g. ["stun:stun.example.org:3478"]: the signaling hub hands them to '
            "browsers watching here, and medianode watch and the seeder use them. Empty: none, only the "
            "machine's own addresses are offered."),
    Setting("viewers", "loopback_only", FLAG, False,
            "Offer 127.0.0.1 as the only WebRTC address: for tests and benchmarks on one machine."),
)  # fmt: skip

# The typed default of every key, also the typed config's field defaults below.
DEFAULTS: dict[tuple[str, str], Any] = {(s.section, s.key): s.kind.read(s.default) for s in SETTINGS}


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, TEMPLATE_WIDTH - 2, initial_indent="# ", subsequent_indent="# ") if text else []


def render_template(overrides: dict[tuple[str, str], Any] | None = None) -> str:
    """The commented ``config.toml`` of a new data directory: every key at its default, unless ``overrides``
    (TOML values by ``(section, key)``) says otherwise."""
    overrides = overrides or {}
    lines = [
        "# medianode configuration. Sizes take a unit: B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB).",
        "# A key left out takes the default written here; a key medianode does not know is refused.",
    ]
    for section, about in SECTIONS.items():
        lines += ["", f"[{section}]", *_comment(about)]
        for setting in SETTINGS:
            if setting.section == section:
                value = overrides.get((section, setting.key), setting.default)
                lines += [*_comment(setting.comment), f"{setting.key} = {toml_value(value)}"]
    return "\n".join(lines) + "\n"


def read_settings(raw: dict[str, Any], path: Path) -> dict[tuple[str, str], Any]:
    """The typed value of every key: what ``raw`` (a parsed ``config.toml`` at ``path``) says, else the default.
    Unknown sections and keys and values of the wrong kind are refused, naming ``[section] key`` and ``path``."""
    known = {section: [s.key for s in SETTINGS if s.section == section] for section in SECTIONS}
    for section, table in raw.items():
        if section not in known:
            what = f"section [{section}]" if isinstance(table, dict) else f"key {section} outside any section"
            raise ConfigError(f"{path}: unknown {what} (sections: {', '.join(known)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a section, [{section}]")
        for key in table:
            if key not in known[section]:
                raise ConfigError(f"{path}: unknown key [{section}] {key} (keys: {', '.join(known[section])})")
    values = dict(DEFAULTS)
    for setting in SETTINGS:
        table = raw.get(setting.section, {})
        if setting.key in table:
            try:
                values[setting.section, setting.key] = setting.kind.read(table[setting.key])
            except ValueError as exc:
                raise ConfigError(f"{path}: [{setting.section}] {setting.key} {exc}") from None
    return values


# -- the typed config, as the layers read it --------------------------------------------------------


@dataclass(frozen=True)
class GatewayConfig:
    listen: tuple[str, int] = DEFAULTS["gateway", "listen"]
    public_url: str = DEFAULTS["gateway", "public_url"]
    max_upload: int = DEFAULTS["gateway", "max_upload"]
    cache_whole_max: int = DEFAULTS["gateway", "cache_whole_max"]
    read_ahead: int = DEFAULTS["gateway", "read_ahead"]
    workers: int = DEFAULTS["gateway", "workers"]  # 0: one per core

    def base_url(self) -> str:
        """Where this node's gateway is reached: ``public_url``, else the listen address."""
        host, port = self.listen
        return self.public_url or f"http://{url_host(host)}:{port}"


@dataclass(frozen=True)
class S3Config:
    enabled: bool = DEFAULTS["s3", "enabled"]
    listen: tuple[str, int] = DEFAULTS["s3", "listen"]
    region: str = DEFAULTS["s3", "region"]
    domain: str = DEFAULTS["s3", "domain"]
    incomplete_upload_hours: float = DEFAULTS["s3", "incomplete_upload_hours"]


@dataclass(frozen=True)
class SwarmConfig:
    listen: tuple[str, ...] = DEFAULTS["swarm", "listen"]
    bootstrap: tuple[str, ...] = DEFAULTS["swarm", "bootstrap"]
    replication_peers: tuple[str, ...] = DEFAULTS["replication", "peers"]
    replication_interval: float = DEFAULTS["replication", "interval"]
    dht: bool = DEFAULTS["swarm", "dht"]
    announce_new_every: float = DEFAULTS["swarm", "announce_new_every"]
    mdns: bool = DEFAULTS["swarm", "mdns"]


@dataclass(frozen=True)
class ViewersConfig:
    seed_hubs: tuple[str, ...] = DEFAULTS["viewers", "seed_hubs"]
    seed_max: int = DEFAULTS["viewers", "seed_max"]
    stun: tuple[str, ...] = DEFAULTS["viewers", "stun"]
    loopback_only: bool = DEFAULTS["viewers", "loopback_only"]


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    store: StoreConfig
    chunk_size: int
    gateway: GatewayConfig
    swarm: SwarmConfig = SwarmConfig()
    viewers: ViewersConfig = ViewersConfig()
    s3: S3Config = S3Config()


def _section(values: dict[tuple[str, str], Any], name: str) -> dict[str, Any]:
    """The values of one section by key: the keys are the typed config's field names."""
    return {key: value for (section, key), value in values.items() if section == name}


def load(data_dir: Path, quota: str | None = None) -> NodeConfig:
    """Read ``config.toml``, creating the directory and a default config if they do not exist. ``quota``
    (``init --quota``) is written into a new config and wins over the file's."""
    if quota is not None:
        parse_size(quota)  # refused before anything is written
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CONFIG_NAME
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(render_template({("storage", "quota"): quota} if quota is not None else None))
        os.replace(tmp, path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values = read_settings(raw, path)
    if quota is not None:
        values["storage", "quota"] = parse_size(quota)
    return NodeConfig(
        data_dir,
        StoreConfig(quota=values["storage", "quota"], hash_on_read=values["storage", "hash_on_read"]),
        values["storage", "chunk_size"],
        GatewayConfig(**_section(values, "gateway")),
        SwarmConfig(
            **_section(values, "swarm"),
            replication_peers=values["replication", "peers"],
            replication_interval=values["replication", "interval"],
        ),
        ViewersConfig(**_section(values, "viewers")),
        S3Config(**_section(values, "s3")),
    )
