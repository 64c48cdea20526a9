"""Known vulnerabilities from a local OSV dump of the PyPI ecosystem (docs/package-policy.md).

agent.yaml::

    package_management:
      vulnerabilities:
        osv: /var/lib/fetchml/osv/PyPI.zip   # the zip OSV publishes per ecosystem, or a directory of OSV JSON files
        block: high            # refuse installs of versions with an advisory this severe or worse:
                               # low | medium | high | critical | any (also unrated) | none (report only)
        ignore: [GHSA-xxxx-xxxx-xxxx]        # advisory ids or aliases (CVE-…, PYSEC-…) never to act on
        max_age: 7d            # older data is stale: reported by security-scan and ml status
        when_unknown: allow    # missing or stale data: allow installs, or deny them all

Matching follows the OSV schema: an ``affected`` entry of ecosystem ``PyPI`` names the package
(PEP 503-normalized here); its ``versions`` list and its ``ECOSYSTEM`` ranges (PEP 440 order via
``packaging``) and ``SEMVER`` ranges decide whether a version is affected (``GIT`` ranges need
the repository and are skipped; OSV dumps list those versions explicitly). Severity: a CVSS v3.x
or v2 vector is scored (base score → rating), else ``database_specific.severity`` (GitHub's
``MODERATE`` is medium), else ``unknown``. Withdrawn advisories are skipped.

The data is loaded off the event loop (:meth:`VulnerabilityData.reload_if_changed`) and read by
the policy engine (:func:`fetchml_agent.policy.engine.decide`) and the filtering index, which
therefore cannot disagree. Nothing here reads the network: a separate job (the Ansible task
``fetchml_agent_osv_refresh``) replaces the file on hosts that can reach the advisory source.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from fetchml_agent.policy.names import normalize_name
from fetchml_agent.units import format_age, format_duration, parse_duration

__all__ = [
    "SEVERITIES",
    "VULNERABILITIES_SCHEMA",
    "Advisory",
    "Finding",
    "VulnerabilityData",
    "VulnerabilitySettings",
    "cvss_score",
    "data_for",
    "parse_osv",
    "rating",
]

log = logging.getLogger("fetchml.vulns")

#: Ratings in rising order; ``unknown`` (no score, no rating) sorts below ``low``.
SEVERITIES = ("unknown", "low", "medium", "high", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_BLOCK_CHOICES = ("none", "any", "low", "medium", "high", "critical")


def _duration_ok(field_: str, value: Any, error: Any) -> None:
    try:
        parse_duration(value, field_)
    except ValueError as exc:
        error(field_, str(exc))


#: ``package_management.vulnerabilities`` (agent.yaml only; a workspace cannot loosen it).
VULNERABILITIES_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "nullable": True,
    "schema": {
        "osv": {"type": "string", "required": True, "empty": False},
        "block": {"type": "string", "allowed": list(_BLOCK_CHOICES), "default": "high"},
        "ignore": {"type": "list", "default": [], "schema": {"type": "string", "regex": r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"}},
        "max_age": {"type": ["string", "integer", "float"], "default": "7d", "check_with": _duration_ok},
        "when_unknown": {"type": "string", "allowed": ["allow", "deny"], "default": "allow"},
    },
}


@dataclass(frozen=True)
class VulnerabilitySettings:
    """The validated section; ``osv`` is absolute (relative paths are taken from the config file)."""

    osv: Path
    block: str = "high"
    ignore: frozenset[str] = frozenset()
    max_age_s: float = 7 * 86400
    when_unknown: str = "allow"

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], base: Path | None = None) -> VulnerabilitySettings:
        path = Path(str(doc["osv"])).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return cls(osv=path, block=str(doc.get("block") or "high"),
                   ignore=frozenset(str(i).upper() for i in doc.get("ignore") or ()),
                   max_age_s=parse_duration(doc.get("max_age") or "7d", "vulnerabilities.max_age"),
                   when_unknown=str(doc.get("when_unknown") or "allow"))

    def blocks(self, severity: str) -> bool:
        if self.block == "none":
            return False
        if self.block == "any":
            return True
        return severity != "unknown" and _RANK[severity] >= _RANK[self.block]

    def to_dict(self) -> dict[str, Any]:
        return {"osv": str(self.osv), "block": self.block, "ignore": sorted(self.ignore),
                "max_age": format_duration(self.max_age_s), "when_unknown": self.when_unknown}


# -- CVSS ------------------------------------------------------------------------------------------

_V3 = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}, "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62}, "C": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_V3_PR = {"U": {"N": 0.85, "L": 0.62, "H": 0.27}, "C": {"N": 0.85, "L": 0.68, "H": 0.5}}
_V2 = {"AV": {"L": 0.395, "A": 0.646, "N": 1.0}, "AC": {"H": 0.35, "M": 0.61, "L": 0.71},
       "Au": {"M": 0.45, "S": 0.56, "N": 0.704}, "C": {"N": 0.0, "P": 0.275, "C": 0.660}}


def _roundup(x: float) -> float:
    """CVSS v3.1's Roundup: the smallest one-decimal number >= x, free of float noise."""
    n = round(x * 100000)
    return n / 100000.0 if n % 10000 == 0 else (math.floor(n / 10000) + 1) / 10.0


def cvss_score(vector: str) -> tuple[float, str] | None:
    """``(base score, version)`` of a CVSS v3.x or v2 vector; ``None`` for other versions or bad input."""
    parts = dict(p.split(":", 1) for p in vector.strip().split("/") if ":" in p)
    try:
        if vector.startswith("CVSS:3."):
            scope = parts["S"]
            iss = 1 - (1 - _V3["C"][parts["C"]]) * (1 - _V3["C"][parts["I"]]) * (1 - _V3["C"][parts["A"]])
            impact = 6.42 * iss if scope == "U" else 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15
            exploit = 8.22 * _V3["AV"][parts["AV"]] * _V3["AC"][parts["AC"]] * _V3_PR[scope][parts["PR"]] \
                * _V3["UI"][parts["UI"]]
            if impact <= 0:
                return 0.0, "3"
            total = impact + exploit if scope == "U" else 1.08 * (impact + exploit)
            return _roundup(min(total, 10.0)), "3"
        if vector.startswith("CVSS:"):
            return None
        impact = 10.41 * (1 - (1 - _V2["C"][parts["C"]]) * (1 - _V2["C"][parts["I"]]) * (1 - _V2["C"][parts["A"]]))
        exploit = 20 * _V2["AV"][parts["AV"]] * _V2["AC"][parts["AC"]] * _V2["Au"][parts["Au"]]
        base = ((0.6 * impact) + (0.4 * exploit) - 1.5) * (0 if impact == 0 else 1.176)
        return round(base + 1e-9, 1), "2"
    except (KeyError, ValueError):
        return None


def rating(score: float, version: str = "3") -> str:
    if version == "2":
        return "low" if score < 4 else "medium" if score < 7 else "high"
    if score == 0:
        return "unknown"
    return "low" if score < 4 else "medium" if score < 7 else "high" if score < 9 else "critical"


_DB_SEVERITY = {"LOW": "low", "MODERATE": "medium", "MEDIUM": "medium", "HIGH": "high", "CRITICAL": "critical"}


def _severity(doc: Mapping[str, Any], affected: Mapping[str, Any]) -> tuple[str, float | None]:
    best: tuple[str, float | None] | None = None
    for entry in [*(affected.get("severity") or []), *(doc.get("severity") or [])]:
        if not isinstance(entry, Mapping) or not str(entry.get("type", "")).startswith("CVSS_V"):
            continue
        scored = cvss_score(str(entry.get("score", "")))
        if scored is not None and (best is None or (best[1] or 0) < scored[0]):
            best = (rating(*scored), scored[0])
    if best is not None:
        return best
    for where in (affected.get("database_specific"), affected.get("ecosystem_specific"), doc.get("database_specific")):
        if isinstance(where, Mapping) and str(where.get("severity", "")).upper() in _DB_SEVERITY:
            return _DB_SEVERITY[str(where["severity"]).upper()], None
    return "unknown", None


# -- versions --------------------------------------------------------------------------------------

_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def _semver_key(text: str) -> tuple[Any, ...] | None:
    m = _SEMVER.match(text.strip())
    if not m:
        return None
    pre = m.group(4)
    ids: tuple[Any, ...] = (1,) if pre is None else (0, *((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), ids)


def _pep440(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class _Range:
    kind: str  # ECOSYSTEM | SEMVER
    events: tuple[tuple[str, str], ...]  # ("introduced"|"fixed"|"last_affected"|"limit", version)

    def _key(self, text: str) -> Any:
        if text == "0":
            return None  # below everything
        return _semver_key(text) if self.kind == "SEMVER" else _pep440(text)

    def affects(self, version: str) -> bool:
        v = self._key(version)
        if v is None:
            return False
        ordered: list[tuple[Any, str]] = []
        for kind, text in self.events:
            if text == "0" and kind == "introduced":
                ordered.append((None, kind))
                continue
            key = self._key(text)
            if key is not None:
                ordered.append((key, kind))
        ordered.sort(key=lambda e: (e[0] is not None, e[0] if e[0] is not None else 0))
        affected = False
        for key, kind in ordered:
            if kind == "introduced" and (key is None or v >= key):
                affected = True
            elif kind == "fixed" and v >= key:
                affected = False
            elif kind == "last_affected" and v > key:
                affected = False
            elif kind == "limit" and v >= key:
                affected = False
        return affected

    def fixed_versions(self) -> list[str]:
        return [text for kind, text in self.events if kind == "fixed"]


@dataclass(frozen=True)
class Advisory:
    """One OSV advisory as it applies to one PyPI package."""

    id: str
    package: str  # normalized
    summary: str
    severity: str
    score: float | None
    aliases: tuple[str, ...] = ()
    versions: frozenset[str] = frozenset()
    ranges: tuple[_Range, ...] = ()
    modified: str = ""

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n.upper() for n in (self.id, *self.aliases))

    def affects(self, version: str) -> bool:
        if version in self.versions:
            return True
        parsed = _pep440(version)
        if parsed is not None and any(_pep440(v) == parsed for v in self.versions):
            return True
        return any(r.affects(version) for r in self.ranges)

    def fixed_in(self, version: str) -> str | None:
        """The lowest fixed version above ``version`` (PEP 440 order), if the advisory names one."""
        current = _pep440(version)
        candidates = []
        for r in self.ranges:
            for text in r.fixed_versions():
                parsed = _pep440(text)
                if parsed is not None and (current is None or parsed > current):
                    candidates.append((parsed, text))
        return min(candidates)[1] if candidates else None


def parse_osv(doc: Mapping[str, Any]) -> list[Advisory]:
    """The advisories of one OSV document for PyPI packages (none when withdrawn)."""
    if not isinstance(doc, Mapping) or doc.get("withdrawn") or not doc.get("id"):
        return []
    out = []
    for affected in doc.get("affected") or []:
        package = (affected or {}).get("package") or {}
        if str(package.get("ecosystem", "")).split(":")[0] != "PyPI" or not package.get("name"):
            continue
        ranges = tuple(
            _Range(str(r.get("type")), tuple((k, str(v)) for e in r.get("events") or [] for k, v in e.items()))
            for r in affected.get("ranges") or [] if r.get("type") in ("ECOSYSTEM", "SEMVER"))
        severity, score = _severity(doc, affected)
        out.append(Advisory(
            id=str(doc["id"]), package=normalize_name(str(package["name"])),
            summary=str(doc.get("summary") or doc.get("details") or "")[:300].strip(), severity=severity, score=score,
            aliases=tuple(str(a) for a in doc.get("aliases") or ()),
            versions=frozenset(str(v) for v in affected.get("versions") or ()), ranges=ranges,
            modified=str(doc.get("modified") or "")))
    return out


@dataclass(frozen=True)
class Finding:
    """An advisory that affects an installed (or requested) version."""

    advisory: Advisory
    version: str
    blocking: bool
    ignored: bool

    def to_dict(self) -> dict[str, Any]:
        a = self.advisory
        return {"id": a.id, "aliases": list(a.aliases), "package": a.package, "version": self.version,
                "severity": a.severity, "score": a.score, "fixed_in": a.fixed_in(self.version), "summary": a.summary,
                "blocking": self.blocking, "ignored": self.ignored}

    def reason(self) -> str:
        a = self.advisory
        fixed = a.fixed_in(self.version)
        return (f"{a.package} {self.version} has a known vulnerability: {a.id} ({a.severity}"
                + (f" {a.score}" if a.score is not None else "") + f"){': ' + a.summary if a.summary else ''}"
                + (f"; fixed in {fixed}" if fixed else "; no fixed version yet"))


# -- the data ----------------------------------------------------------------------------------------


def _documents(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for p in sorted(path.rglob("*.json")):
            yield str(p), p.read_bytes()
        return
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".json") and not info.is_dir():
                yield info.filename, archive.read(info)


def _stamp(path: Path) -> tuple[float, int] | None:
    """When the data last changed (newest mtime) and how many files it has; ``None`` when absent."""
    try:
        if path.is_dir():
            newest, count = path.stat().st_mtime, 0
            for entry in path.rglob("*.json"):
                newest = max(newest, entry.stat().st_mtime)
                count += 1
            return newest, count
        st = path.stat()
        return st.st_mtime, st.st_size
    except OSError:
        return None


@dataclass
class VulnerabilityData:
    """The advisories of one dump, by package; thread-safe to read while a reload swaps them in."""

    path: Path
    by_package: dict[str, list[Advisory]] = field(default_factory=dict)
    stamp: tuple[float, int] | None = None
    loaded_at: float | None = None
    advisories: int = 0
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reload_if_changed(self) -> bool:
        """Reads the dump again when it changed (blocking: call it off the event loop)."""
        stamp = _stamp(self.path)
        if stamp == self.stamp and self.loaded_at is not None:
            return False
        by_package: dict[str, list[Advisory]] = {}
        errors: list[str] = []
        count = 0
        if stamp is not None:
            try:
                for name, raw in _documents(self.path):
                    try:
                        found = parse_osv(json.loads(raw))
                    except (ValueError, TypeError, AttributeError) as exc:
                        errors.append(f"{name}: {exc}"[:200])
                        continue
                    for adv in found:
                        by_package.setdefault(adv.package, []).append(adv)
                        count += 1
            except (OSError, zipfile.BadZipFile) as exc:
                errors.append(f"{self.path}: {exc}"[:300])
                stamp = None
        with self._lock:
            self.by_package, self.stamp, self.errors, self.advisories = by_package, stamp, errors[:20], count
            self.loaded_at = time.time()
        if errors:
            log.warning("vulnerability data %s: %d documents could not be read (first: %s)", self.path, len(errors),
                        errors[0])
        return True

    def state(self, settings: VulnerabilitySettings, now: float | None = None) -> dict[str, Any]:
        """``ok``, ``missing`` (no data, or not loaded yet) or ``stale`` (older than ``max_age``), with details."""
        now = time.time() if now is None else now
        if self.loaded_at is None or self.stamp is None:
            why = "not loaded yet" if self.loaded_at is None else (self.errors[0] if self.errors else "no such file")
            return {"state": "missing", "path": str(self.path), "reason": why, "when_unknown": settings.when_unknown}
        age = max(0.0, now - self.stamp[0])
        state = "stale" if age > settings.max_age_s else "ok"
        out = {"state": state, "path": str(self.path), "age": format_age(age), "age_s": round(age),
               "advisories": self.advisories, "max_age": format_duration(settings.max_age_s),
               "when_unknown": settings.when_unknown}
        if state == "stale":
            out["reason"] = f"the data is {format_age(age)} old (max_age {format_duration(settings.max_age_s)})"
        if self.errors:
            out["unreadable_documents"] = len(self.errors)
        return out

    def findings(self, settings: VulnerabilitySettings, name: str, version: str) -> list[Finding]:
        """Every advisory affecting ``name`` at ``version``, most severe first."""
        if not version:
            return []
        with self._lock:
            candidates = list(self.by_package.get(normalize_name(name), ()))
        out = []
        for adv in candidates:
            if adv.affects(version):
                ignored = bool(adv.names & settings.ignore)
                out.append(Finding(adv, version, blocking=not ignored and settings.blocks(adv.severity), ignored=ignored))
        out.sort(key=lambda f: (-_RANK[f.advisory.severity], f.advisory.id))
        return out

    def unknown(self, settings: VulnerabilitySettings, now: float | None = None) -> str | None:
        """Why the data cannot be trusted now (missing or stale), or ``None``."""
        state = self.state(settings, now)
        return None if state["state"] == "ok" else f"vulnerability data {state['path']}: {state.get('reason', state['state'])}"


_DATA: dict[Path, VulnerabilityData] = {}
_DATA_LOCK = threading.Lock()


def data_for(settings: VulnerabilitySettings) -> VulnerabilityData:
    """The process's data for this dump (one per path; loading is the caller's, off the loop)."""
    with _DATA_LOCK:
        found = _DATA.get(settings.osv)
        if found is None:
            found = _DATA[settings.osv] = VulnerabilityData(settings.osv)
        return found


def iter_installed(packages: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, str]]:
    for p in packages:
        if p.get("name") and p.get("version"):
            yield str(p["name"]), str(p["version"])



def scan(settings: VulnerabilitySettings | None, packages: Iterable[Mapping[str, Any]],
         now: float | None = None) -> dict[str, Any]:
    """The ``vulnerabilities`` section of a security scan: data state, and findings per package."""
    if settings is None:
        return {"configured": False, "findings": [], "blocking": 0}
    data = data_for(settings)
    state = data.state(settings, now)
    findings: list[dict[str, Any]] = []
    if data.loaded_at is not None:
        for p in packages:
            name, version = p.get("name"), p.get("version")
            if not name or not version:
                continue
            for f in data.findings(settings, str(name), str(version)):
                findings.append({**f.to_dict(), "location": p.get("location")})
    blocking = [f for f in findings if f["blocking"] and f.get("location") != "base"]
    return {"configured": True, "data": state, "settings": settings.to_dict(), "findings": findings,
            "blocking": len(blocking)}
