"""Known vulnerabilities end to end, and package removals: a real agent, real workspaces, real pip.

The test writes an OSV dump (zip, as OSV publishes it) and a local upstream serves a vulnerable
and a fixed version of ``vulnpkg`` (and ``oldlib``, whose advisory the agent ignores). Checked:
scan findings with severity and fixed version, a refused install, a refused ``!pip install`` of
the vulnerable pin through the index while an unpinned one gets the fixed version, an ignored
advisory, stale data under ``when_unknown: deny``; then ``ml jupyter uninstall`` and the
removals in ``ml jupyter packages``.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AgentProcess
from tests.integration.index.localindex import ServerThread, build_wheel, make_upstream_app
from tests.integration.jupyter import execute
from tests.integration.packages.world import agent_for, site_packages

CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
ADVISORIES = [
    {"id": "GHSA-vu1n-pkg0-0001", "aliases": ["CVE-2026-40001"], "modified": "2026-11-20T00:00:00Z",
     "summary": "vulnpkg runs code from crafted input",
     "severity": [{"type": "CVSS_V3", "score": CRITICAL}],
     "affected": [{"package": {"ecosystem": "PyPI", "name": "vulnpkg"},
                   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1"}]}]}]},
    {"id": "PYSEC-2026-77", "modified": "2026-11-20T00:00:00Z", "summary": "oldlib leaks a file",
     "database_specific": {"severity": "HIGH"},
     "affected": [{"package": {"ecosystem": "PyPI", "name": "oldlib"}, "versions": ["1.0"]}]},
]


def write_dump(path: Path, age_days: float = 0) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for adv in ADVISORIES:
            z.writestr(f"{adv['id']}.json", json.dumps(adv))
    if age_days:
        then = time.time() - age_days * 86400
        os.utime(path, (then, then))
    return path


@pytest.fixture(scope="module")
def vuln_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    house = tmp_path_factory.mktemp("vuln-wheels")
    for name, version in (("vulnpkg", "1.0"), ("vulnpkg", "1.1"), ("oldlib", "1.0")):
        build_wheel(house, name, version)
    with ServerThread(make_upstream_app(house)) as server:
        yield server


@pytest.fixture(scope="module")
def vuln_agent(vuln_upstream: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("vuln-agent")
    dump = write_dump(root / "PyPI.zip")
    agent = agent_for(root, f"{vuln_upstream.url}/simple/", {
        "blocked_packages": ["requests"],
        "vulnerabilities": {"osv": str(dump), "block": "high", "ignore": ["PYSEC-2026-77"], "max_age": "7d"}})
    agent.start()
    yield agent
    agent.cleanup_workspaces()
    agent.stop()


def test_vulnerabilities_scan_install_index_and_removal(vuln_agent: AgentProcess) -> None:
    ws = "vulns"
    vuln_agent.ml("jupyter", "create", ws, user="bob")
    try:
        refused = vuln_agent.ml("jupyter", "install", ws, "vulnpkg==1.0", user="bob", check=False)
        assert refused.returncode == 5, refused.stderr
        assert "GHSA-vu1n-pkg0-0001 (critical 9.8)" in refused.stderr and "fixed in 1.1" in refused.stderr
        cp = vuln_agent.ml("jupyter", "check-package", "vulnpkg==1.0", "--json", user="bob", check=False)
        assert cp.returncode == 5 and json.loads(cp.stdout)["rule"] == "vulnerabilities"

        url = vuln_agent.ml_json("jupyter", "info", ws)["url"]
        out = execute(url, "!pip install vulnpkg==1.0", timeout=240)
        assert "GHSA-vu1n-pkg0-0001" in out and "Successfully installed" not in out, out
        out = execute(url, "!pip install vulnpkg", timeout=240)  # unpinned: the fixed version
        assert "Successfully installed vulnpkg-1.1" in out, out
        assert "installed oldlib 1.0" in vuln_agent.ml("jupyter", "install", ws, "oldlib==1.0", user="bob").stdout

        scan = json.loads(vuln_agent.ml("jupyter", "security-scan", ws, "--json", user="bob").stdout)
        v = scan["vulnerabilities"]
        assert v["data"]["state"] == "ok" and v["blocking"] == 0 and scan["ok"]
        assert [(f["package"], f["id"], f["ignored"], f["severity"]) for f in v["findings"]] == [
            ("oldlib", "PYSEC-2026-77", True, "high")]
        # a vulnerable version that got in anyway (installed before the advisory, or by hand) fails the scan
        python = site_packages(vuln_agent, ws).parent.parent.parent / "bin" / "python"
        build = Path(vuln_agent.root) / "vulnpkg-1.0-py3-none-any.whl"
        if not build.exists():
            build_wheel(Path(vuln_agent.root), "vulnpkg", "1.0")
        os.system(f"{python} -m pip install -q --no-index --no-deps --force-reinstall {build} >/dev/null 2>&1")
        bad = vuln_agent.ml("jupyter", "security-scan", ws, user="bob", check=False)
        assert bad.returncode == 5 and "GHSA-vu1n-pkg0-0001" in bad.stdout and "BLOCKED" in bad.stdout
        assert "1.1" in bad.stdout  # the fixed version

        removed = vuln_agent.ml("jupyter", "uninstall", ws, "vulnpkg", "oldlib", "never-there", user="bob")
        assert "removed vulnpkg 1.0, oldlib 1.0" in removed.stdout and "not installed: never-there" in removed.stdout
        listing = vuln_agent.ml_json("jupyter", "packages", ws, user="bob")
        assert [(r["name"], r["version"], r["removed_by"]) for r in listing["removed"]][:2] == [
            ("oldlib", "1.0", "bob"), ("vulnpkg", "1.0", "bob")]
        assert not {"vulnpkg", "oldlib"} & {p["name"] for p in listing["packages"]}
        table = vuln_agent.ml("jupyter", "packages", ws, user="bob").stdout
        assert "removed:" in table and "oldlib" in table
        base = vuln_agent.ml("jupyter", "uninstall", ws, "ipykernel", user="bob")
        assert "part of the kernel base" in base.stdout
        assert vuln_agent.ml("jupyter", "uninstall", ws, "x", user="carol", check=False).returncode == 4  # not hers to see
        events = vuln_agent.ml_json("jupyter", "audit", ws, "--action", "package.uninstall")["events"]
        assert events[-1]["user"] == "bob" and events[-1]["details"]["removed"] == ["vulnpkg==1.0", "oldlib==1.0"]
        status = vuln_agent.ml_json("status")
        assert status["vulnerability_data"]["state"] == "ok"
    finally:
        vuln_agent.ml("jupyter", "delete", ws, "--yes", check=False)


def test_stale_data_is_reported_and_when_unknown_deny_refuses(vuln_upstream: ServerThread, tmp_path: Path) -> None:
    dump = write_dump(tmp_path / "PyPI.zip", age_days=30)
    agent = agent_for(tmp_path / "agent", f"{vuln_upstream.url}/simple/", {
        "vulnerabilities": {"osv": str(dump), "max_age": "7d", "when_unknown": "deny"}})
    agent.start()
    try:
        status = agent.ml_json("status")
        assert status["vulnerability_data"]["state"] == "stale" and "30d old" in status["vulnerability_data"]["reason"]
        assert "vulnerability data: stale" in agent.ml("status").stdout
        check = agent.ml("jupyter", "check-package", "oldlib==1.0", check=False)
        assert check.returncode == 5 and "when_unknown: deny" in check.stdout
    finally:
        agent.stop()
