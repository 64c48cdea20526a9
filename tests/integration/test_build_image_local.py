"""``ml jupyter build`` on the local runtime: refused with 0x15 (not supported) and a clear message."""

from __future__ import annotations

from tests.conftest import AgentProcess


def test_build_is_not_supported_on_the_local_runtime(agent: AgentProcess) -> None:
    out = agent.ml("jupyter", "build", "custom-image", "--base=fetchml/workspace", "--packages=numpy", check=False)
    assert out.returncode == 2, out.stderr  # not supported here: exit 2, like any input this agent cannot serve
    assert "the local runtime cannot build images" in out.stderr
    assert "runtime: docker" in out.stderr
