from __future__ import annotations

from pathlib import Path

import pytest

from fetchml_agent.config import ConfigError, load_config, parse_config

HASH = "a" * 64


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = parse_config({"users": [{"name": "alice", "role": "admin", "api_key_verifier": HASH}]}, path=tmp_path / "a.yaml")
    assert (cfg.host, cfg.port, cfg.runtime) == ("127.0.0.1", 9101, "local")
    assert cfg.data_dir == (tmp_path / ".fetchml").resolve()
    assert cfg.users[0].is_admin and cfg.users[0].key_verifier == bytes.fromhex(HASH)
    assert cfg.ws_url == "ws://127.0.0.1:9101/ws"


def test_tls_switches_to_wss(tmp_path: Path) -> None:
    cfg = parse_config({"tls": {"cert": "c.pem", "key": "k.pem"}}, path=tmp_path / "a.yaml")
    assert cfg.ws_url.startswith("wss://") and cfg.tls_cert == tmp_path / "c.pem"


@pytest.mark.parametrize(
    "doc, key",
    [
        ({"listen": "nonsense"}, "listen"),
        ({"runtime": "kubernetes"}, "runtime"),
        ({"users": [{"name": "a", "api_key_verifier": "XYZ"}]}, "users[0].api_key_verifier"),
        ({"users": [{"name": "a", "role": "root", "api_key_verifier": HASH}]}, "users[0].role"),
        ({"users": [{"api_key_verifier": HASH}]}, "users[0].name"),
        ({"lisen": "127.0.0.1:1"}, "lisen"),
        ({"local": {"port_base": 80}}, "local.port_base"),
        ({"tls": {"cert": "c"}}, "tls.key"),
    ],
)
def test_invalid_config_names_file_and_key(tmp_path: Path, doc: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, path=tmp_path / "agent.yaml")
    assert "agent.yaml" in info.value.message
    assert key in info.value.message


def test_duplicate_users_rejected() -> None:
    user = {"name": "a", "api_key_verifier": HASH}
    with pytest.raises(ConfigError, match="duplicate"):
        parse_config({"users": [user, user]})


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line"):
        load_config(bad)


def test_team_membership_from_both_sides() -> None:
    cfg = parse_config(
        {
            "users": [{"name": "a", "api_key_verifier": HASH, "teams": ["x"]}],
            "teams": [{"name": "y", "members": ["a"]}],
        }
    )
    assert cfg.users[0].teams == {"x", "y"}


def test_env_overrides_are_captured_only_for_seed_variables() -> None:
    cfg = parse_config({}, environ={"FETCHML_JUPYTER_BLOCKED_PACKAGES": "a,b", "HOME": "/root"})
    assert cfg.environ == {"FETCHML_JUPYTER_BLOCKED_PACKAGES": "a,b"}
