"""How Nomad workspaces reach the package index (``nomad.agent_url``, ``nomad.index``), the warning
when they cannot, and the exec path's errors when Nomad is down or the connection breaks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websockets.exceptions as ws_exc

from fetchml_agent.config import AgentConfig
from fetchml_agent.errors import BackendUnavailable, InvalidArgument, InvalidState, NotFound
from fetchml_agent.nomad.errors import exec_close_error, map_exec_errors
from fetchml_agent.nomad.schema import NomadSettings
from fetchml_agent.runtimes.base import WorkspaceSpec
from fetchml_agent.runtimes.nomad import NomadRuntime
from fetchml_agent.server.index_listener import index_listen_address
from fetchml_agent.service.packages.index import PackageIndex
from tests.nomad_double.fixtures import closed_port


def _config(host: str = "127.0.0.1", port: int = 8080, tls: bool = False, **raw: Any) -> AgentConfig:
    return AgentConfig(path=None, host=host, port=port, data_dir=Path("/nonexistent"), runtime="nomad",
                       tls_cert=Path("/c.pem") if tls else None, tls_key=None, users=[], raw=raw)


def _runtime(config: AgentConfig, **nomad: Any) -> NomadRuntime:
    return NomadRuntime({"address": "http://127.0.0.1:4646", **nomad}, agent_config=config)


def _base_url(runtime: NomadRuntime, config: AgentConfig) -> str:
    """What the packages service gives workspaces (PIP_INDEX_URL is this + /index/<key>/simple/)."""
    return PackageIndex.base_url(SimpleNamespace(agent=SimpleNamespace(runtime=runtime, config=config)))  # type: ignore[arg-type]


def test_settings_parse_agent_url_and_index() -> None:
    s = NomadSettings.from_config({"address": "http://n:4646", "agent_url": "https://agent.internal:8443/fetchml/",
                                   "index": "[fd00::5]:9101"})
    assert s.agent_url == "https://agent.internal:8443/fetchml" and s.index == ("fd00::5", 9101)
    assert NomadSettings.from_config({"address": "http://n:4646"}).agent_url is None
    for bad in ({"agent_url": "agent.internal:8080"}, {"agent_url": "http://a b"}, {"index": "agent:9101"},
                {"index": "10.0.0.5:70000"}, {"index": "10.0.0.5"}):
        with pytest.raises(InvalidArgument, match="nomad"):
            NomadSettings.from_config({"address": "http://n:4646", **bad})


def test_agent_url_first_then_the_index_listener_then_public_url_then_listen() -> None:
    cfg = _config(public_url="https://public.example:443")
    assert _base_url(_runtime(cfg, agent_url="http://10.0.0.5:8080", index="10.0.0.6:9101"), cfg) == \
        "http://10.0.0.5:8080"
    assert _base_url(_runtime(cfg, index="10.0.0.6:9101"), cfg) == "http://10.0.0.6:9101"
    assert _base_url(_runtime(_config(tls=True), index="[fd00::6]:9101"), _config(tls=True)) == "https://[fd00::6]:9101"
    assert _base_url(_runtime(cfg), cfg) == "https://public.example:443"
    assert _base_url(_runtime(_config(port=9000)), _config(port=9000)) == "http://127.0.0.1:9000"


def test_the_index_listener_applies_only_with_nomad_index() -> None:
    cfg = _config()
    agent = SimpleNamespace(runtime=_runtime(cfg, agent_url="http://proxy.internal"), config=cfg)
    assert index_listen_address(agent) is None  # type: ignore[arg-type]  # a URL may be a proxy: no bind
    agent.runtime = _runtime(cfg, index="10.0.0.6:9101")
    assert index_listen_address(agent) == ("10.0.0.6", 9101)  # type: ignore[arg-type]
    agent.config = _config(host="0.0.0.0", port=9101)
    assert index_listen_address(agent) is None  # type: ignore[arg-type]  # the main listener covers it


@pytest.mark.parametrize(("config", "nomad", "warns"), [
    (_config(), {}, "http://127.0.0.1:8080"),
    (_config(host="0.0.0.0"), {}, "http://127.0.0.1:8080"),
    (_config(host="::1"), {}, "[::1]"),
    (_config(public_url="http://localhost:8080"), {}, "http://localhost:8080"),
    (_config(host="0.0.0.0", public_url="http://agent.internal:8080"), {}, None),
    (_config(host="10.0.0.5"), {}, None),
    (_config(), {"agent_url": "http://127.0.0.1:8080"}, None),  # said explicitly: a one-node cluster
    (_config(), {"index": "10.0.0.5:9101"}, None),
])
def test_a_loopback_index_url_warns(config: AgentConfig, nomad: dict[str, Any], warns: str | None) -> None:
    text = _runtime(config, **nomad).index_warning()
    if warns is None:
        assert text is None
    else:
        assert text is not None and warns in text and "nomad.agent_url" in text and "docs/nomad.md" in text
    assert NomadRuntime({"address": "http://127.0.0.1:4646"}).index_warning() is None  # no agent config


def _spec() -> WorkspaceSpec:
    return WorkspaceSpec(id="w1", name="lab", owner="bob", path=Path("/unused"), token="t" * 32)


def test_exec_when_nomad_is_down_is_backend_unavailable() -> None:
    rt = NomadRuntime({"address": f"http://127.0.0.1:{closed_port()}", "http_timeout": 2})
    state = {"job_id": "fetchml-ws-lab", "alloc_id": str(uuid.uuid4())}
    with pytest.raises(BackendUnavailable, match="cannot reach Nomad") as info:
        asyncio.run(rt.exec(_spec(), state, ["true"], timeout=5))
    assert "nomad.address" in info.value.details


def test_exec_in_a_workspace_without_allocation_says_how_to_start_it() -> None:
    rt = NomadRuntime({"address": "http://127.0.0.1:4646"})
    for state in (None, {}, {"job_id": "fetchml-ws-lab", "alloc_id": None}):
        with pytest.raises(InvalidState, match="workspace lab is not running") as info:
            asyncio.run(rt.exec(_spec(), state, ["true"]))
        assert "ml jupyter restart lab" in info.value.details


def test_a_broken_exec_connection_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="lost the connection to Nomad"):
        with map_exec_errors("http://nomad:4646", "a1", "jupyter"):
            raise ws_exc.ConnectionClosedError(None, None)
    assert isinstance(exec_close_error(1008, 'Unknown allocation "a1"', "a1", "jupyter"), NotFound)
