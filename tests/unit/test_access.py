"""The access concern's pure parts: the role table (and its copy in docs/access.md), token codecs,
sealing, X-Forwarded-For, allowlists, TOTP, settings."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pyotp
import pytest

from fetchml_agent.access import mfa
from fetchml_agent.access.config import AccessSettings
from fetchml_agent.access.keys import AccessKeys, load_or_create_key
from fetchml_agent.access.networks import allowed, client_address, parse_networks
from fetchml_agent.access.roles import DESCRIPTIONS, JUPYTER_TABLE, ROLE_ORDER, permissions_for, role_needed
from fetchml_agent.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_roles_are_cumulative_and_name_the_lowest_role() -> None:
    for low, high in itertools.pairwise(ROLE_ORDER):
        assert JUPYTER_TABLE[low] < JUPYTER_TABLE[high]
    assert role_needed("execute", "kernels") == "collaborator"
    assert role_needed("write", "contents") == "editor"
    assert role_needed("write", "server") == "owner"
    assert role_needed("write", "nowhere") is None and permissions_for("nobody") == frozenset()


def test_docs_show_the_same_table() -> None:
    doc = (ROOT / "docs" / "access.md").read_text()
    for pair, text in DESCRIPTIONS.items():
        row = f"| `{pair[0]} {pair[1]}` | {text} | " + " | ".join(
            "✓" if pair in JUPYTER_TABLE[r] else "" for r in ROLE_ORDER) + " |"
        assert row in doc, f"docs/access.md lacks or differs on: {row}"


def test_personal_tokens_and_generations() -> None:
    keys = AccessKeys(b"k" * 32)
    token = keys.personal_token("carol.smith@x", "ws-1", 0)
    parsed = keys.parse_personal(token)
    assert parsed is not None and (parsed.user, parsed.workspace_id) == ("carol.smith@x", "ws-1")
    assert keys.personal_ok(parsed, 0) and not keys.personal_ok(parsed, 1)  # a revoke bumps the generation
    assert not AccessKeys(b"x" * 32).personal_ok(parsed, 0)  # another agent's key
    forged = keys.parse_personal(token.replace("ws-1", "ws-2"))
    assert forged is not None and not keys.personal_ok(forged, 0)
    assert keys.parse_personal("garbage") is None and keys.parse_personal("fmlp.!!.a.b") is None


def test_session_tokens_and_sealing() -> None:
    keys = AccessKeys(b"k" * 32)
    sid, token = keys.new_session_token()
    tampered = token[:-1] + ("B" if token[-1] == "A" else "A")
    assert keys.session_id(token) == sid and keys.session_id(tampered) is None
    assert keys.session_id("fmls.x.y") is None
    sealed = keys.seal("totp:alice", b"JBSWY3DPEHPK3PXP")
    assert keys.unseal("totp:alice", sealed) == b"JBSWY3DPEHPK3PXP"
    assert keys.unseal("totp:bob", sealed) is None  # bound to its purpose
    assert b"JBSWY3DP" not in sealed.encode()


def test_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "access.key"
    key = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(key) == 32
    assert load_or_create_key(path) == key


@pytest.mark.parametrize(
    "peer, xff, client",
    [
        ("127.0.0.1", "10.1.2.3", "10.1.2.3"),  # a trusted proxy says who
        ("192.168.1.9", "10.1.2.3", "192.168.1.9"),  # anyone else's header is ignored
        ("127.0.0.1", "6.6.6.6, 10.1.2.3, 127.0.0.2", "10.1.2.3"),  # rightmost untrusted hop
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),
        ("::ffff:10.0.0.5", None, "10.0.0.5"),
    ],
)
def test_forwarded_for_only_from_trusted_proxies(peer: str, xff: str | None, client: str) -> None:
    assert client_address(peer, xff, parse_networks(["127.0.0.0/8"])) == client


def test_allowlists() -> None:
    agent_wide, carol = parse_networks(["10.0.0.0/8", "127.0.0.1"]), parse_networks(["10.20.0.0/16"])
    assert allowed("10.20.1.1", agent_wide, carol)
    assert not allowed("10.30.1.1", agent_wide, carol)
    assert allowed("127.0.0.1", agent_wide, None) and allowed("8.8.8.8", None, None)
    assert not allowed("", agent_wide)


def test_totp_window_and_replay() -> None:
    secret = mfa.new_secret()
    totp = pyotp.TOTP(secret)
    now = time.time()
    step = mfa.verify_totp(secret, totp.at(now), 0, now)
    assert step is not None
    assert mfa.verify_totp(secret, totp.at(now), step, now) is None  # a used code never works again
    assert mfa.verify_totp(secret, totp.at(now + 30), step, now) == step + 1
    assert mfa.verify_totp(secret, totp.at(now - 120), 0, now) is None
    assert mfa.verify_totp(secret, "12ab56", 0, now) is None
    codes = mfa.new_recovery_codes()
    assert len(set(codes)) == mfa.RECOVERY_CODES and mfa.hash_recovery(codes[0].upper()) == mfa.hash_recovery(codes[0])


def test_access_settings_from_agent_yaml(tmp_path: Path) -> None:
    cfg = parse_config({
        "users": [{"name": "carol", "api_key_verifier": "a" * 64, "allowed_networks": ["10.0.0.0/8"],
                   "display_name": "Carol S"}],
        "access": {"session_idle": "10m", "session_max": "1d", "mfa": {"admin": "required"},
                   "allowed_networks": ["192.168.0.0/16"], "trusted_proxies": ["127.0.0.1"]},
    }, path=tmp_path / "a.yaml")
    s = AccessSettings.from_config(cfg)
    assert (s.session_idle, s.session_max) == (600, 86400)
    assert s.mfa_needed("admin") and not s.mfa_needed("user", "owner")
    assert s.display_names == {"carol": "Carol S"} and "carol" in s.user_networks


@pytest.mark.parametrize(
    "access, key",
    [
        ({"session_idle": "soon"}, "access.session_idle"),
        ({"mfa": "sometimes"}, "access.mfa"),
        ({"mfa": {"root": "required"}}, "access.mfa"),
        ({"allowed_networks": ["10.0.0.300/8"]}, "access.allowed_networks"),
    ],
)
def test_bad_access_config_names_the_key(tmp_path: Path, access: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"access": access}, path=tmp_path / "agent.yaml")
    assert key in str(info.value) and "agent.yaml" in str(info.value)


def test_bad_user_network_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"users": [{"name": "c", "api_key_verifier": "a" * 64, "allowed_networks": ["nope"]}]},
                     path=tmp_path / "agent.yaml")
    assert "users[0].allowed_networks" in str(info.value)


def test_docker_peer_alias_only_for_a_loopback_published_port() -> None:
    from fetchml_agent.runtimes.docker import common as docker_runtime
    from fetchml_jupyter import state

    assert docker_runtime.PEER_ALIASES_ENV == state.PEER_ALIASES_ENV  # one name, read on both sides
    assert docker_runtime.peer_alias("10.213.0.1", "127.0.0.1") == "10.213.0.1=127.0.0.1"
    assert docker_runtime.peer_alias("10.213.0.1", "::1") == "10.213.0.1=::1"
    # Published elsewhere, Docker's proxy relays anyone from the gateway: no alias.
    assert docker_runtime.peer_alias("10.213.0.1", "0.0.0.0") is None
    assert docker_runtime.peer_alias("10.213.0.1", "192.168.1.5") is None
    assert docker_runtime.peer_alias(None, "127.0.0.1") is None


def test_the_extension_reports_the_aliased_peer() -> None:
    from fetchml_jupyter import state

    env = {"FETCHML_ACCESS_URL": "http://agent/access", "FETCHML_ACCESS_PEER_ALIASES": "10.213.0.1=127.0.0.1, bad,=x"}
    saved = (state._url, state._ca, state._credential, state._label, state._aliases)
    try:
        assert state.configure(env)
        assert "FETCHML_ACCESS_PEER_ALIASES" not in env  # kernels do not inherit it
        assert state.peer_address("10.213.0.1") == "127.0.0.1"
        assert state.peer_address("10.213.0.7") == "10.213.0.7"  # only the gateway
    finally:
        state._url, state._ca, state._credential, state._label, state._aliases = saved
