"""ml's config file is read without PyYAML when it is flat `key: value` lines (what `make dev-up`
writes), exactly as YAML would read it; anything else goes to the YAML parser. And what importing
the CLI loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchml_agent.cli.main import flat_yaml

DEV_UP = "server: ws://127.0.0.1:9101/ws\napi_key: fml_dev_Zk3-9_aQ\n"


def test_the_file_make_dev_up_writes() -> None:
    assert flat_yaml(DEV_UP) == yaml.safe_load(DEV_UP) == {"server": "ws://127.0.0.1:9101/ws", "api_key": "fml_dev_Zk3-9_aQ"}
    text = "# mine\nserver: 'wss://agent.example:9101/ws'\n\nca: \"/etc/ssl/ca.pem\"\napi_key: k # comment? no: plain\n"
    assert flat_yaml(text) is None  # ' #' starts a comment in YAML: left to the parser


@pytest.mark.parametrize("text", ["server: [a, b]", "server:\n  nested: x", "api_key: 12345", "api_key: null",
                                  "api_key: yes", "ca: ~", "server: 'it''s'", 'server: "a\\tb"', "- a", "---\nca: x",
                                  "ca: x\nca: y", "ca: .inf", "ca: a: b", "ca:\tx"])
def test_what_yaml_would_read_differently_goes_to_the_parser(text: str) -> None:
    assert flat_yaml(text) is None


_TOKENS = st.sampled_from([*"abcXYZ019_-.:/# '\"\\=~?[]{}!&*|>%@`,+", "://", "null", "true", "no", ".inf", "0x1", "é",
                           "\t", " #c"])
_LINES = st.one_of(
    st.tuples(st.sampled_from(["server", "api_key", "ca", "x1"]), st.lists(_TOKENS, max_size=8).map("".join))
    .map(lambda kv: f"{kv[0]}: {kv[1]}"),
    st.sampled_from(["", "# c", "  ", "---", " server: x", "server:x", "ca:"]),
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_LINES, max_size=4).map("\n".join))
def test_when_it_reads_a_file_it_reads_what_yaml_reads(text: str) -> None:
    fast = flat_yaml(text)
    if fast is not None:
        assert fast == (yaml.safe_load(text) or {})


def _loaded(code: str, env: dict[str, str] | None = None) -> list[str]:
    cp = subprocess.run([sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
                        capture_output=True, text=True, check=True, env=env, timeout=60)
    return list(json.loads(cp.stdout.splitlines()[-1]))


def test_reading_the_dev_up_file_does_not_import_yaml(tmp_path: Path) -> None:
    config = tmp_path / "ml.yaml"
    config.write_text(DEV_UP)
    env = {**os.environ, "FETCHML_CONFIG": str(config)}
    env.pop("FETCHML_SERVER", None)
    loaded = _loaded("from fetchml_agent.cli.main import Ctx, build_parser\n"
                     "ctx = Ctx(build_parser().parse_args(['jupyter', 'list']))\n"
                     "assert ctx.server == 'ws://127.0.0.1:9101/ws', ctx.server", env)
    assert "yaml" not in loaded


def test_importing_the_cli_loads_only_cli_errors_and_protocol() -> None:
    loaded = _loaded("from fetchml_agent.cli.main import build_parser\nbuild_parser().parse_args(['jupyter', 'list'])")
    ours = {m for m in loaded if m.startswith("fetchml_agent.")}
    assert ours and all(m.startswith(("fetchml_agent.cli", "fetchml_agent.protocol")) or m == "fetchml_agent.errors"
                        for m in ours), sorted(ours)
    assert not {"yaml", "websockets", "ssl", "asyncio", "socket", "pathlib", "shutil"} & set(loaded)
