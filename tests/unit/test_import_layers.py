"""What importing a module loads: the ``ml`` command stays a thin client of the protocol, and the
agent's layers hold (the full check is import-linter's, in ``make lint``)."""

from __future__ import annotations

import subprocess
import sys

CLIENT_SIDE = ("fetchml_agent.cli", "fetchml_agent.errors", "fetchml_agent.protocol", "fetchml_agent.client")


def _loaded(module: str) -> list[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(m for m in sys.modules if m.startswith('fetchml_agent'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_importing_the_cli_loads_only_the_cli_errors_and_protocol() -> None:
    loaded = _loaded("fetchml_agent.cli.main")
    assert "fetchml_agent.cli.main" in loaded
    assert [m for m in loaded if m != "fetchml_agent" and not m.startswith(CLIENT_SIDE)] == []


def test_the_runtime_contract_loads_no_runtime_and_no_service() -> None:
    loaded = _loaded("fetchml_agent.runtimes.base")
    assert not [m for m in loaded if m.startswith(("fetchml_agent.service", "fetchml_agent.runtimes.docker",
                                                   "fetchml_agent.runtimes.nomad", "fetchml_agent.runtimes.local",
                                                   "fetchml_agent.agent", "fetchml_agent.experiments"))]
