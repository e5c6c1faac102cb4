"""config.toml: the template a new data directory gets, what it reads back as, and what it refuses."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import TESTS
from node.config import (
    CONFIG_NAME,
    SETTINGS,
    ConfigError,
    GatewayConfig,
    NodeConfig,
    S3Config,
    SwarmConfig,
    ViewersConfig,
    load,
    render_template,
)
from node.errors import InvalidRequest
from node.storage.store import StoreConfig

GiB = 1024**3
MiB = 1024**2
# config.toml exactly as `medianode init` wrote it before the settings table: operators' files look like it.
TEMPLATE_BEFORE_TABLE = TESTS / "vectors" / "config-before-settings-table.toml"


def defaults_for(data_dir: Path) -> NodeConfig:
    """The defaults, spelled out, so a change to any of them shows here."""
    return NodeConfig(
        data_dir,
        StoreConfig(quota=10 * GiB, hash_on_read=False),
        262144,
        GatewayConfig(("127.0.0.1", 8080), "", 4 * GiB, 32 * MiB, 8 * MiB),
        SwarmConfig(("/ip4/127.0.0.1/tcp/4001",), (), (), 60.0, True, 30.0, False),
        ViewersConfig((), 20, (), False),
        S3Config(True, ("127.0.0.1", 9000), "", "", 168.0),
    )


def load_with(tmp_path: Path, text: str) -> NodeConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / CONFIG_NAME).write_text(text)
    return load(tmp_path)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_with(tmp_path, text)
    return str(caught.value)


def test_a_new_directory_gets_the_template_and_reads_as_the_defaults(tmp_path: Path) -> None:
    config = load(tmp_path / "node")
    assert config == defaults_for(tmp_path / "node")
    written = (tmp_path / "node" / CONFIG_NAME).read_text()
    assert written == render_template()
    table: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        table.setdefault(setting.section, {})[setting.key] = setting.default
    assert tomllib.loads(written) == table


def test_every_key_in_the_template_has_a_comment_above_it() -> None:
    lines = render_template().splitlines()
    keys = [i for i, line in enumerate(lines) if line and not line.startswith(("#", "["))]
    assert len(keys) == len(SETTINGS)
    assert all(lines[i - 1].startswith("# ") for i in keys)


def test_a_config_written_by_the_old_template_loads_unchanged(tmp_path: Path) -> None:
    before = TEMPLATE_BEFORE_TABLE.read_text()
    assert load_with(tmp_path, before) == defaults_for(tmp_path)
    assert (tmp_path / CONFIG_NAME).read_text() == before


def test_an_existing_config_is_read_not_rewritten(tmp_path: Path) -> None:
    text = '[gateway]\nmax_upload = "1MiB"\n'
    assert load_with(tmp_path, text).gateway.max_upload == MiB
    assert (tmp_path / CONFIG_NAME).read_text() == text


def test_init_quota_goes_into_the_new_template(tmp_path: Path) -> None:
    config = load(tmp_path, quota="2GiB")
    assert config.store.quota == 2 * GiB
    assert 'quota = "2GiB"' in (tmp_path / CONFIG_NAME).read_text()
    assert load(tmp_path).store.quota == 2 * GiB


def test_values_are_read_as_their_kind(tmp_path: Path) -> None:
    config = load_with(
        tmp_path,
        '[storage]\nquota = 0\nchunk_size = 1048576\n[gateway]\nlisten = "[::1]:0"\npublic_url = "https://m.example/"\n'
        '[s3]\ndomain = " S3.Example. "\nincomplete_upload_hours = 0.5\n[replication]\ninterval = 1\n'
        '[viewers]\nseed_hubs = ["https://hub.example/"]\nstun = ["stun:stun.example.org:3478"]\n',
    )
    assert config.store.quota == 0
    assert config.chunk_size == 1048576
    assert config.gateway.listen == ("::1", 0)
    assert config.gateway.public_url == "https://m.example"
    assert config.gateway.base_url() == "https://m.example"
    assert config.s3.domain == "s3.example"
    assert config.s3.incomplete_upload_hours == 0.5
    assert config.swarm.replication_interval == 1.0
    assert config.viewers.seed_hubs == ("https://hub.example",)
    assert config.viewers.stun == ("stun:stun.example.org:3478",)


FLAGS: dict[tuple[str, str], Callable[[NodeConfig], bool]] = {
    ("storage", "hash_on_read"): lambda c: c.store.hash_on_read,
    ("s3", "enabled"): lambda c: c.s3.enabled,
    ("swarm", "dht"): lambda c: c.swarm.dht,
    ("swarm", "mdns"): lambda c: c.swarm.mdns,
    ("viewers", "loopback_only"): lambda c: c.viewers.loopback_only,
}


def test_flags_are_all_covered() -> None:
    assert set(FLAGS) == {(s.section, s.key) for s in SETTINGS if isinstance(s.default, bool)}


@pytest.mark.parametrize(("section", "key"), list(FLAGS))
@pytest.mark.parametrize(("written", "meant"), [("false", False), ('"false"', False), ("true", True), ('"true"', True)])
def test_a_flag_means_what_it_says(tmp_path: Path, section: str, key: str, written: str, meant: bool) -> None:
    config = load_with(tmp_path, f"[{section}]\n{key} = {written}\n")
    assert FLAGS[section, key](config) is meant


@pytest.mark.parametrize(
    ("section", "key", "written"),
    [
        ("storage", "hash_on_read", '"yes"'),
        ("swarm", "mdns", "1"),
        ("s3", "enabled", '"off"'),
        ("storage", "quota", '"lots"'),
        ("storage", "quota", "-1"),
        ("gateway", "max_upload", '"-5MiB"'),
        ("gateway", "read_ahead", "1.5"),
        ("storage", "chunk_size", "0"),
        ("storage", "chunk_size", "2097152"),
        ("storage", "chunk_size", '"262144"'),
        ("viewers", "seed_max", '"20"'),
        ("viewers", "seed_max", "-1"),
        ("viewers", "seed_max", "true"),
        ("replication", "interval", '"60"'),
        ("swarm", "announce_new_every", "-1"),
        ("s3", "incomplete_upload_hours", "0"),
        ("s3", "incomplete_upload_hours", "nan"),
        ("gateway", "listen", '"nowhere"'),
        ("s3", "listen", "9000"),
        ("gateway", "public_url", '"media.example"'),
        ("s3", "region", "5"),
        ("swarm", "listen", '"/ip4/127.0.0.1/tcp/4001"'),
        ("swarm", "bootstrap", "[1]"),
        ("viewers", "seed_hubs", '["hub.example"]'),
        ("viewers", "stun", '["turn:turn.example.org"]'),
        ("gateway", "listen", "{ host = 1 }"),
    ],
)
def test_a_wrong_value_is_refused_naming_key_and_file(tmp_path: Path, section: str, key: str, written: str) -> None:
    message = refusal(tmp_path, f"[{section}]\n{key} = {written}\n")
    assert message.startswith(f"{tmp_path / CONFIG_NAME}: [{section}] {key} must be ")
    assert "\n" not in message


def test_unknown_keys_and_sections_are_refused_naming_them_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    message = refusal(tmp_path, '[gateway]\nlisten = "127.0.0.1:8080"\nlistn = "127.0.0.1:8081"\n')
    assert message.startswith(f"{path}: unknown key [gateway] listn")
    assert "listen" in message  # the keys that section does have
    assert refusal(tmp_path, "[gateway.tls]\ncert = 'x'\n").startswith(f"{path}: unknown key [gateway] tls")
    assert refusal(tmp_path, "[storge]\nquota = '1GiB'\n").startswith(f"{path}: unknown section [storge]")
    assert refusal(tmp_path, 'quota = "1GiB"\n').startswith(f"{path}: unknown key quota outside any section")
    assert refusal(tmp_path, "storage = 1\n").startswith(f"{path}: storage must be a section")


def test_a_file_that_is_not_toml_is_refused_naming_it(tmp_path: Path) -> None:
    assert refusal(tmp_path, "[storage\n").startswith(f"{tmp_path / CONFIG_NAME}: ")


def test_a_config_error_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_with(tmp_path, "[nowhere]\n")
    error: Any = caught.value
    assert isinstance(error, InvalidRequest) and isinstance(error, ValueError)
    assert error.status == 400
