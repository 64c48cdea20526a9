"""Known vulnerabilities: OSV parsing, version matching, severity, the data's state, engine decisions."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from fetchml_agent.policy.engine import decide, decide_name, decide_version
from fetchml_agent.policy.schema import policy_from_document
from fetchml_agent.policy.vulns import (
    VulnerabilitySettings,
    cvss_score,
    data_for,
    parse_osv,
    rating,
    scan,
)


def osv(id_: str, name: str, events: list[dict[str, str]] | None = None, *, versions: list[str] | None = None,
        severity: str | None = None, db_severity: str | None = None, kind: str = "ECOSYSTEM", **extra: object) -> dict:
    doc: dict = {"id": id_, "modified": "2026-11-01T00:00:00Z", "summary": f"{name} is bad",
                 "affected": [{"package": {"ecosystem": "PyPI", "name": name},
                               "ranges": [{"type": kind, "events": events}] if events else [],
                               "versions": versions or []}], **extra}
    if severity:
        doc["severity"] = [{"type": "CVSS_V3", "score": severity}]
    if db_severity:
        doc["database_specific"] = {"severity": db_severity}
    return doc


CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
MEDIUM = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"  # 5.4


@pytest.mark.parametrize("vector, score", [
    (CRITICAL, 9.8), (MEDIUM, 5.4), ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
    ("CVSS:3.0/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.8), ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    ("AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5), ("AV:N/AC:M/Au:N/C:N/I:P/A:N", 4.3),
])
def test_cvss_base_scores(vector: str, score: float) -> None:
    scored = cvss_score(vector)
    assert scored is not None and scored[0] == score


def test_ratings_and_unscorable_vectors() -> None:
    assert [rating(s) for s in (0.1, 4.0, 7.0, 9.0)] == ["low", "medium", "high", "critical"]
    assert rating(7.5, "2") == "high"
    assert cvss_score("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N") is None
    assert cvss_score("nonsense") is None


def test_ranges_versions_and_fixed() -> None:
    (adv,) = parse_osv(osv("GHSA-1", "Vuln_Pkg", [{"introduced": "0"}, {"fixed": "1.1"}, {"introduced": "2.0"},
                                                  {"fixed": "2.3.1"}], severity=CRITICAL))
    assert adv.package == "vuln-pkg" and adv.severity == "critical" and adv.score == 9.8
    assert [adv.affects(v) for v in ("0.9", "1.0", "1.1", "1.5", "2.0", "2.3.0", "2.3.1", "3")] == \
        [True, True, False, False, True, True, False, False]
    assert adv.fixed_in("1.0") == "1.1" and adv.fixed_in("2.1") == "2.3.1"
    (last,) = parse_osv(osv("GHSA-2", "x", [{"introduced": "1.0"}, {"last_affected": "1.4"}]))
    assert [last.affects(v) for v in ("0.9", "1.0", "1.4", "1.4.1")] == [False, True, True, False]
    (listed,) = parse_osv(osv("PYSEC-3", "x", versions=["1.0", "1.0.post1"], db_severity="MODERATE"))
    assert listed.affects("1.0") and listed.affects("1.0.0") and not listed.affects("1.1")
    assert listed.severity == "medium" and listed.fixed_in("1.0") is None
    (semver,) = parse_osv(osv("GHSA-4", "x", [{"introduced": "1.2.0-rc.1"}, {"fixed": "1.2.3"}], kind="SEMVER"))
    assert [semver.affects(v) for v in ("1.2.0-beta", "1.2.0-rc.2", "1.2.2", "1.2.3")] == [False, True, True, False]
    assert parse_osv(osv("GHSA-5", "x", versions=["1"], withdrawn="2026-01-01T00:00:00Z")) == []
    npm = osv("GHSA-6", "x", versions=["1"])
    npm["affected"][0]["package"]["ecosystem"] = "npm"
    assert parse_osv(npm) == []


def _dump(tmp: Path, docs: list[dict], as_zip: bool) -> Path:
    if as_zip:
        path = tmp / "PyPI.zip"
        with zipfile.ZipFile(path, "w") as z:
            for d in docs:
                z.writestr(f"{d['id']}.json", json.dumps(d))
        return path
    path = tmp / "osv"
    path.mkdir()
    for d in docs:
        (path / f"{d['id']}.json").write_text(json.dumps(d))
    (path / "broken.json").write_text("{not json")
    return path


@pytest.mark.parametrize("as_zip", [True, False])
def test_data_state_findings_and_decisions(tmp_path: Path, as_zip: bool) -> None:
    path = _dump(tmp_path, [osv("GHSA-crit", "vulnpkg", [{"introduced": "0"}, {"fixed": "1.1"}], severity=CRITICAL,
                                aliases=["CVE-2026-0001"]),
                            osv("GHSA-med", "vulnpkg", [{"introduced": "0"}, {"fixed": "1.1"}], severity=MEDIUM),
                            osv("GHSA-ign", "oldlib", versions=["1.0"], severity=CRITICAL)], as_zip)
    policy = policy_from_document({"vulnerabilities": {"osv": str(path), "block": "high", "ignore": ["ghsa-ign"]}},
                                  source="agent.yaml")
    settings = policy.vulnerabilities
    assert settings is not None
    data = data_for(settings)
    assert data.reload_if_changed() and not data.reload_if_changed()
    assert data.state(settings)["state"] == "ok" and data.advisories == 3
    assert len(data.errors) == (0 if as_zip else 1)
    found = data.findings(settings, "VulnPkg", "1.0")
    assert [(f.advisory.id, f.blocking) for f in found] == [("GHSA-crit", True), ("GHSA-med", False)]

    refused = decide("vulnpkg==1.0", policy)
    assert refused.decision == "deny" and refused.rule == "vulnerabilities"
    assert "GHSA-crit (critical 9.8)" in refused.reason and "fixed in 1.1" in refused.reason
    assert decide("vulnpkg==1.1", policy).decision == "allow"
    assert decide("vulnpkg>=1.0", policy).decision == "allow"  # the index offers only fixed versions
    assert decide_name("vulnpkg", policy, specifier="==1.0").rule == "vulnerabilities"
    assert decide_version("vulnpkg", "1.0", policy) is not None and decide_version("vulnpkg", "1.1", policy) is None
    assert decide("oldlib==1.0", policy).decision == "allow"  # its advisory is ignored
    report = scan(settings, [{"name": "vulnpkg", "version": "1.0", "location": "workspace"},
                             {"name": "oldlib", "version": "1.0", "location": "workspace"}])
    assert report["blocking"] == 1
    assert {(f["id"], f["ignored"], f["fixed_in"]) for f in report["findings"]} == {
        ("GHSA-crit", False, "1.1"), ("GHSA-med", False, "1.1"), ("GHSA-ign", True, None)}
    dry = policy_from_document({"mode": "dry_run", "vulnerabilities": {"osv": str(path)}}, source="agent.yaml")
    assert decide("vulnpkg==1.0", dry).would_have == "deny"


def test_missing_and_stale_data_follow_when_unknown(tmp_path: Path) -> None:
    path = _dump(tmp_path, [osv("GHSA-x", "vulnpkg", versions=["1.0"], severity=CRITICAL)], True)
    old = time.time() - 30 * 86400
    os.utime(path, (old, old))
    deny = policy_from_document({"vulnerabilities": {"osv": str(path), "max_age": "7d", "when_unknown": "deny"}},
                                source="agent.yaml")
    assert deny.vulnerabilities is not None
    data = data_for(deny.vulnerabilities)
    data.reload_if_changed()
    state = data.state(deny.vulnerabilities)
    assert state["state"] == "stale" and "30d old" in state["reason"]
    d = decide("numpy", deny)
    assert d.decision == "deny" and d.rule == "vulnerability_data" and "when_unknown: deny" in d.reason
    assert decide("requests", deny).rule == "blocked_packages"  # a denial stays the list's
    allow = policy_from_document({"vulnerabilities": {"osv": str(tmp_path / "absent.zip")}}, source="agent.yaml")
    assert allow.vulnerabilities is not None
    missing = data_for(allow.vulnerabilities)
    assert missing.state(allow.vulnerabilities)["state"] == "missing"  # not loaded yet
    missing.reload_if_changed()
    assert missing.state(allow.vulnerabilities)["reason"] == "no such file"
    assert decide("numpy", allow).decision == "allow"


def test_settings_are_validated() -> None:
    with pytest.raises(Exception, match="block"):
        policy_from_document({"vulnerabilities": {"osv": "x", "block": "severe"}}, source="agent.yaml")
    with pytest.raises(Exception, match="max_age"):
        policy_from_document({"vulnerabilities": {"osv": "x", "max_age": "soon"}}, source="agent.yaml")
    s = VulnerabilitySettings(Path("/x"), block="any")
    assert s.blocks("unknown") and not VulnerabilitySettings(Path("/x"), block="none").blocks("critical")
