"""The OpenAPI document against a real agent: it validates, and schemathesis (property-based
requests driven by the document) finds no 5xx answer and no answer that does not match its
schema — once over every operation with generated data, once over the read operations of a real
running workspace (so that success answers are checked too)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from tests.conftest import BIN, KEYS, AgentProcess, free_port

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _schemathesis(url: str, report: Path, *extra: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = BIN / "schemathesis"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "schemathesis.cli"]
    if config is not None:
        argv += ["--config-file", str(config)]
    argv += ["run", url, "-H", f"Authorization: Bearer {KEYS['admin']}", "--checks", CHECKS,
             "--generation-database", "none", "--seed", "17", "--no-color", "--request-timeout", "90",
             "--workers", "1", "--report", "junit", "--report-dir", str(report), *extra]
    # In its own folder: schemathesis keeps a cache (.schemathesis/) in the working directory.
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=report.parent)


@pytest.mark.slow
def test_the_document_validates_and_schemathesis_finds_nothing(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", free_port(),
                         {"limits": {"max_workspaces": 3, "max_concurrent_starts": 1}, "usage": {"interval": "2s"}})
    with agent.running():
        url = agent.http_url + "/api/v1/openapi.json"
        doc = json.loads(urllib.request.urlopen(url, timeout=10).read())
        validate(doc)
        agent.ml("jupyter", "create", "demo")

        # Every operation, generated data (names that exist or not, bodies valid or not).
        run = _schemathesis(url, tmp_path / "all", "--max-examples", "6", "--phases", "coverage,fuzzing")
        assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]

        # The read operations of a workspace that exists and runs: their success answers.
        config = tmp_path / "schemathesis.toml"
        config.write_text('[parameters]\n"path.name" = "demo"\n')
        run = _schemathesis(url, tmp_path / "reads", "--include-path-regex", r"/workspaces/\{name\}",
                            "--exclude-method", "POST", "--exclude-method", "DELETE", "--exclude-method", "PUT",
                            "--max-examples", "4", "--phases", "examples,fuzzing", config=config)
        assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
        tested = re.search(r"Tested: (\d+)", run.stdout)
        assert tested and int(tested.group(1)) >= 10, run.stdout[-3000:]
