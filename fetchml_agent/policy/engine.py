"""The decision engine: one spec and one effective policy in, one :class:`Decision` out.

Decision order (DESIGN.md "Package policy"), after the spec is parsed
(:func:`~fetchml_agent.policy.specs.parse_spec`; a spec that does not parse raises
:class:`~fetchml_agent.errors.InvalidArgument` and gets no decision):

1. a blocked name → ``deny`` (rule ``blocked_packages``); an admin's ``--force`` is the caller's
   business and is audited there;
2. a form that does not come through the workspace's index (``name @ url``, bare URLs, VCS,
   local paths, ``-e``, ``-r``/``-c`` files, index and install-location options) → ``deny``
   (rule = the form, e.g. ``vcs``): approvals are by name and version, so they cannot cover it;
3. conda: a channel that is not trusted → ``deny`` (rule ``trusted_channels``);
4. an approved request for this workspace that covers the name and version → ``allow``
   (rule ``approved_request``);
5. approval-required, or an allowlist that does not name it → ``approval_required``
   (rule ``approval_required`` or ``allowlist``);
6. else ``allow`` (rule ``allowlist`` when the allowlist names it, ``default_allow`` otherwise);
7. known vulnerabilities (``package_management.vulnerabilities``, :mod:`.vulns`), on anything not
   denied already: an exact pin (``==``) of a version with a blocking advisory → ``deny`` (rule
   ``vulnerabilities``, the advisory named); missing or stale data with ``when_unknown: deny`` →
   ``deny`` (rule ``vulnerability_data``). Unpinned installs go through the index, which offers
   affected versions only as yanked and refuses their files (:func:`decide_version`).

In ``dry_run`` mode every decision is ``allow``; ``would_have`` keeps what enforcement would
have decided, so the caller can log it. The filtering index calls the same functions
(:func:`decide_name`, :meth:`Approvals.version_allowed`), so it cannot disagree with the CLI.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from fetchml_agent.errors import ApprovalRequired, InvalidArgument, PolicyDenied
from fetchml_agent.policy.names import normalize_name
from fetchml_agent.policy.schema import PackagePolicy
from fetchml_agent.policy.specs import PackageSpec, SpecKind, parse_spec
from fetchml_agent.policy.vulns import data_for

__all__ = [
    "ALLOW",
    "APPROVAL_REQUIRED",
    "DENY",
    "Approvals",
    "ApprovedLike",
    "CheckedLine",
    "Decision",
    "channel_trusted",
    "check_requirements",
    "decide",
    "decide_name",
    "decide_version",
    "exact_pin",
    "summarize",
]

Verdict = Literal["allow", "deny", "approval_required"]
ALLOW: Verdict = "allow"
DENY: Verdict = "deny"
APPROVAL_REQUIRED: Verdict = "approval_required"

_SOURCE_REASONS: dict[SpecKind, str] = {
    SpecKind.DIRECT_URL: "installs from a URL bypass the workspace's package index; install it by name",
    SpecKind.URL: "installs from a URL bypass the workspace's package index; install it by name",
    SpecKind.VCS: "installs from version control bypass the workspace's package index; install a released version by name",
    SpecKind.LOCAL_PATH: "installs from local files or directories bypass the package index and run their build code; "
                         "install it by name",
    SpecKind.EDITABLE: "editable installs come from local directories or version control, not the package index",
    SpecKind.REQUIREMENTS_FILE: "the agent cannot read a file named in a spec; give the requirements themselves "
                                "(each line is checked)",
    SpecKind.CONSTRAINTS_FILE: "constraints files are not read here; pin versions in the specs themselves",
    SpecKind.INDEX_OPTION: "the workspace installs only through its own filtering package index; "
                           "index options would go around the policy",
    SpecKind.LOCATION_OPTION: "packages install into the workspace's environment only; "
                              "install-location options write outside it",
}


@dataclass(frozen=True)
class Decision:
    """The answer for one spec. ``to_dict()`` is exactly what ``check-package --json`` prints.

    ``package`` is the normalized name (``None`` for forms that name no package);
    ``would_have`` is set only in dry-run mode, to the decision enforcement would have made.
    """

    decision: Verdict
    package: str | None
    rule: str
    reason: str
    spec: str
    would_have: Verdict | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision": self.decision,
            "package": self.package,
            "rule": self.rule,
            "reason": self.reason,
            "spec": self.spec,
        }
        if self.would_have is not None:
            out["dry_run"] = {"would_have": self.would_have}
        return out

    def raise_unless_allowed(self) -> None:
        """Raises :class:`PolicyDenied` or :class:`ApprovalRequired` carrying this decision."""
        if self.decision == DENY:
            raise PolicyDenied(self.reason, package=self.package, rule=self.rule, spec=self.spec)
        if self.decision == APPROVAL_REQUIRED:
            raise ApprovalRequired(self.reason, package=self.package, rule=self.rule, spec=self.spec)


def _specifier_set(text: str) -> SpecifierSet | None:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        return None


class Approvals:
    """The approved requests of one workspace: ``(name, version range)`` pairs.

    A range of ``""`` approves every version. :meth:`covers` answers for a spec's specifier;
    :meth:`version_allowed` answers for one file version (the index lists only those).
    """

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        self._by_name: dict[str, list[SpecifierSet]] = {}
        self._raw: dict[str, set[str]] = {}
        for name, spec in entries:
            key = normalize_name(name)
            parsed = _specifier_set(spec or "")
            if parsed is None:
                raise InvalidArgument(f"approval for {key}: {spec!r} is not a version range such as >=2,<3")
            self._by_name.setdefault(key, []).append(parsed)
            self._raw.setdefault(key, set()).add(str(parsed))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._by_name

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def ranges(self, name: str) -> list[SpecifierSet]:
        return list(self._by_name.get(normalize_name(name), ()))

    def covers(self, name: str, specifier: str) -> bool:
        """True when an approval lets ``name`` with ``specifier`` (PEP 440 text) install.

        Any approval covers an unpinned request (the index then offers only approved versions);
        a ranged approval covers the same range or an exact pin inside it; anything else needs a
        new request.
        """
        ranges = self._by_name.get(name)
        if not ranges:
            return False
        if not specifier or any(not r for r in ranges):
            return True
        requested = _specifier_set(specifier)
        if requested is None:
            return False
        if str(requested) in self._raw[name]:
            return True
        pins = [s.version for s in requested if s.operator in ("==", "===") and "*" not in s.version]
        for pin in pins:
            try:
                version = Version(pin)
            except InvalidVersion:
                continue
            if any(r.contains(version, prereleases=True) for r in ranges):
                return True
        return False

    def covers_every_version(self, name: str) -> bool:
        return any(not r for r in self._by_name.get(name, ()))

    def version_allowed(self, name: str, version: str) -> bool:
        """True when some approval of ``name`` includes ``version`` (for the index's file lists)."""
        ranges = self._by_name.get(name)
        if not ranges:
            return False
        if any(not r for r in ranges):
            return True
        try:
            v = Version(version)
        except InvalidVersion:
            return False
        return any(r.contains(v, prereleases=True) for r in ranges)


#: What ``decide(approved=...)`` accepts: an :class:`Approvals`, ``(name, range)`` pairs, or a
#: callable ``(normalized name, specifier) -> bool``.
ApprovedLike = Approvals | Iterable[tuple[str, str]] | Callable[[str, str], bool] | None


def _approval_check(approved: ApprovedLike, conda: bool = False) -> Callable[[str, str], bool]:
    if approved is None:
        return lambda _name, _spec: False
    if callable(approved) and not isinstance(approved, Approvals):
        return approved
    approvals = approved if isinstance(approved, Approvals) else Approvals(approved)
    if conda:
        # conda's version syntax is not PEP 440 and conda does not go through the index, so a
        # versioned conda spec needs an approval for every version.
        return lambda name, spec: approvals.covers(name, "") if not spec else approvals.covers_every_version(name)
    return approvals.covers


def channel_trusted(channel: str, trusted: Iterable[str]) -> bool:
    """Whether a conda channel (name or URL) is one of ``trusted``.

    Names compare case-insensitively; URLs compare exactly (less a trailing ``/``), so a mirror
    is trusted only when its URL is listed. ``*`` (any channel) is never trusted.
    """
    c = channel.strip().rstrip("/")
    if not c or "*" in c:
        return False
    is_url = "://" in c
    for t in trusted:
        t = t.strip().rstrip("/")
        if is_url and "://" in t and c == t:
            return True
        if not is_url and "://" not in t and c.lower() == t.lower():
            return True
    return False


def _dry(decision: Decision, policy: PackagePolicy) -> Decision:
    if not policy.dry_run or decision.decision == ALLOW:
        return decision
    return dataclasses.replace(decision, decision=ALLOW, would_have=decision.decision,
                               reason=f"dry run, would have been {decision.decision}: {decision.reason}")


def _name_verdict(name: str, specifier: str, policy: PackagePolicy,
                  approved: Callable[[str, str], bool], spec_text: str,
                  after_blocked: Callable[[], Decision | None] | None = None, workspace: str | None = None,
                  conda: bool = False) -> Decision:
    request = f"ml jupyter request {workspace or 'WS'} {_quoted(spec_text)}{' --conda' if conda else ''}"
    if name in policy.blocked_packages:
        return Decision(DENY, name, "blocked_packages",
                        f"{name} is blocked by the package policy (blocked_packages); an admin can install it "
                        "with --force", spec_text)
    if after_blocked is not None:
        early = after_blocked()
        if early is not None:
            return early
    if approved(name, specifier):
        return Decision(ALLOW, name, "approved_request", f"{name} is allowed by an approved request", spec_text)
    if name in policy.approval_required:
        return Decision(APPROVAL_REQUIRED, name, "approval_required",
                        f"{name} needs an approved request: {request}", spec_text)
    if policy.allowlist is not None:
        if name not in policy.allowlist:
            return Decision(APPROVAL_REQUIRED, name, "allowlist",
                            f"{name} is not on the allowlist; it needs an approved request: "
                            f"{request}", spec_text)
        return Decision(ALLOW, name, "allowlist", f"{name} is on the allowlist", spec_text)
    return Decision(ALLOW, name, "default_allow", f"{name} is not blocked by the package policy", spec_text)


def exact_pin(specifier: str) -> str | None:
    """The version an ``==``/``===`` specifier pins (no wildcard), else ``None``."""
    parsed = _specifier_set(specifier or "")
    if parsed is None:
        return None
    pins = [s.version for s in parsed if s.operator in ("==", "===") and "*" not in s.version]
    return pins[0] if len(pins) == 1 else None


def _vulnerable(decision: Decision, policy: PackagePolicy, version: str | None) -> Decision:
    """Step 7: known vulnerabilities, on a decision that is not a denial already."""
    settings = policy.vulnerabilities
    if settings is None or decision.decision == DENY or decision.package is None:
        return decision
    data = data_for(settings)
    unknown = data.unknown(settings)
    if unknown is not None:
        if settings.when_unknown == "deny":
            return Decision(DENY, decision.package, "vulnerability_data",
                            f"{unknown}; installs are refused until it is refreshed (vulnerabilities.when_unknown: "
                            "deny)", decision.spec)
        return decision
    if version:
        blocking = [f for f in data.findings(settings, decision.package, version) if f.blocking]
        if blocking:
            return Decision(DENY, decision.package, "vulnerabilities", blocking[0].reason(), decision.spec)
    return decision


def decide_name(name: str, policy: PackagePolicy, *, approved: ApprovedLike = None, specifier: str = "",
                workspace: str | None = None) -> Decision:
    """The decision for a package name (and version range) alone, as the index sees it.

    ``workspace`` names the workspace in the reasons' ``ml jupyter request`` hint (``WS`` without it).
    """
    key = normalize_name(name)
    text = f"{key}{specifier}"
    decision = _name_verdict(key, specifier, policy, _approval_check(approved), text, workspace=workspace)
    return _dry(_vulnerable(decision, policy, exact_pin(specifier)), policy)


def decide_version(name: str, version: str, policy: PackagePolicy) -> Decision | None:
    """The refusal of one version of an allowed name for a known vulnerability, else ``None``.

    What the index asks for each file it lists or serves; ``would_have`` in dry-run mode.
    """
    if policy.vulnerabilities is None:
        return None
    key = normalize_name(name)
    d = _vulnerable(Decision(ALLOW, key, "default_allow", "", f"{key}=={version}"), policy, version)
    return None if d.decision == ALLOW else _dry(d, policy)


def _quoted(spec_text: str) -> str:
    """The spec as a shell word, so the hint can be pasted (``'six>=1'``)."""
    return spec_text if re.fullmatch(r"[A-Za-z0-9._+=:,@/-]+", spec_text) else "'" + spec_text.replace("'", "'\\''") + "'"


def _decide_enforced(spec: PackageSpec, policy: PackagePolicy, approved: Callable[[str, str], bool],
                     conda_channels: tuple[str, ...], workspace: str | None = None) -> Decision:
    raw = spec.raw.strip()
    if spec.kind is SpecKind.OPTION:
        return Decision(ALLOW, None, "installer_option", f"{spec.option} does not change where packages come from",
                        raw)
    if spec.kind is SpecKind.CHANNEL_OPTION:
        channel = spec.channel or "local"
        if channel_trusted(channel, policy.trusted_channels):
            return Decision(ALLOW, None, "trusted_channels", f"channel {channel} is trusted", raw)
        return Decision(DENY, None, "trusted_channels", _untrusted(channel, policy), raw)

    def source_and_channel() -> Decision | None:
        if spec.kind is not SpecKind.NAME:
            return Decision(DENY, spec.name, spec.kind.value, _SOURCE_REASONS[spec.kind], raw)
        if spec.conda:
            for channel in ([spec.channel] if spec.channel else []) + list(conda_channels):
                if not channel_trusted(channel, policy.trusted_channels):
                    return Decision(DENY, spec.name, "trusted_channels", _untrusted(channel, policy), raw)
        return None

    if spec.name is None:
        early = source_and_channel()
        assert early is not None  # every form without a name is a source form
        return early
    return _name_verdict(spec.name, spec.specifier, policy, approved, raw, source_and_channel, workspace, spec.conda)


def _untrusted(channel: str, policy: PackagePolicy) -> str:
    trusted = ", ".join(policy.trusted_channels) or "none"
    return f"conda channel {channel} is not trusted (trusted_channels: {trusted})"


def decide(spec: str | PackageSpec, policy: PackagePolicy, *, conda: bool = False,
           approved: ApprovedLike = None, channels: Iterable[str] = (), workspace: str | None = None) -> Decision:
    """Decides one spec against an effective policy.

    ``spec`` is the text as typed (parsed with :func:`parse_spec`, pip or ``conda`` syntax) or a
    parsed :class:`PackageSpec`. ``approved`` holds this workspace's approved requests.
    ``channels`` are conda ``-c`` channels given alongside the spec; ``workspace`` is named in the
    ``ml jupyter request`` hint of an approval reason. Raises
    :class:`InvalidArgument` when the spec does not parse; every other outcome is a
    :class:`Decision` (call :meth:`Decision.raise_unless_allowed` to turn it into an error).
    """
    parsed = spec if isinstance(spec, PackageSpec) else parse_spec(spec, conda=conda)
    check = _approval_check(approved, conda=parsed.conda)
    decision = _decide_enforced(parsed, policy, check, tuple(channels), workspace)
    if parsed.kind is SpecKind.NAME and not parsed.conda:
        decision = _vulnerable(decision, policy, exact_pin(parsed.specifier))
    return _dry(decision, policy)


@dataclass(frozen=True)
class CheckedLine:
    """One logical line of a requirements list: its decision, or the error that refused it."""

    source: str
    line: int
    text: str
    decision: Decision | None = None
    error: InvalidArgument | None = None

    @property
    def allowed(self) -> bool:
        return self.error is None and self.decision is not None and self.decision.allowed

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "line": self.line, "text": self.text}
        if self.decision is not None:
            out.update(self.decision.to_dict())
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out


_PER_REQUIREMENT_OPTIONS = ("--hash", "-C", "--config-settings")


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """pip's requirements-file reading: join ``\\`` continuations, drop comments and blanks."""
    buf: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not buf:
            start = number
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        joined = "".join(buf).replace("\t", " ")
        buf = []
        if joined.lstrip().startswith("#"):
            continue
        cut = joined.find(" #")
        joined = (joined[:cut] if cut >= 0 else joined).strip()
        if joined:
            yield start, joined
    if buf:
        joined = "".join(buf).strip()
        if joined and not joined.startswith("#"):
            yield start, joined


_OPTION_START = re.compile(r"\s+(?=--?[A-Za-z])")


def _split_line(line: str) -> list[str]:
    """A requirements line as specs: a requirement and its per-requirement options, or options."""
    if not line.startswith("-"):
        return [p.strip() for p in _OPTION_START.split(line)]
    tokens = line.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("-") and "=" not in tok and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            out.append(f"{tok} {tokens[i + 1]}")
            i += 2
        else:
            out.append(tok)
            i += 1
    return out


def check_requirements(text: str, policy: PackagePolicy, *, conda: bool = False, approved: ApprovedLike = None,
                       source: str = "<requirements>", read_file: Callable[[str], str] | None = None,
                       workspace: str | None = None, _depth: int = 0,
                       _seen: frozenset[str] = frozenset()) -> list[CheckedLine]:
    """Checks every line of a requirements list (pip's file format, or conda's with ``conda``).

    Comments, blank lines and ``\\`` continuations are handled as pip does; per-requirement
    ``--hash``/``--config-settings`` are allowed. ``-r``/``-c`` lines are followed through
    ``read_file(path) -> text`` when given (cycles and depth > 10 refused), else denied.
    Returns one :class:`CheckedLine` per spec; nothing is raised for a bad line.
    """
    check: ApprovedLike = approved if isinstance(approved, Approvals) or callable(approved) or approved is None \
        else Approvals(approved)
    channels: list[str] = []
    out: list[CheckedLine] = []
    for number, line in _logical_lines(text):
        for item in _split_line(line):
            try:
                spec = parse_spec(item, conda=conda)
                if (spec.kind is SpecKind.REQUIREMENTS_FILE and spec.option in ("-r", "--requirement", "--file")
                        and read_file is not None and spec.value):
                    out.extend(_nested(spec.value, policy, conda, check, source, read_file, _depth, _seen, number,
                                       workspace))
                    continue
                if spec.kind is SpecKind.OPTION and spec.option in _PER_REQUIREMENT_OPTIONS and out \
                        and out[-1].line == number:
                    continue
                if spec.kind is SpecKind.CHANNEL_OPTION and spec.channel:
                    channels.append(spec.channel)
                decision = decide(spec, policy, approved=check, channels=channels if spec.kind is SpecKind.NAME else (),
                                  workspace=workspace)
                out.append(CheckedLine(source, number, item, decision=decision))
            except InvalidArgument as exc:
                out.append(CheckedLine(source, number, item, error=exc))
    return out


def _nested(path: str, policy: PackagePolicy, conda: bool, approved: ApprovedLike, source: str,
            read_file: Callable[[str], str], depth: int, seen: frozenset[str], number: int,
            workspace: str | None) -> list[CheckedLine]:
    if depth >= 10 or path in seen:
        why = "nested more than 10 deep" if depth >= 10 else "includes itself"
        return [CheckedLine(source, number, f"-r {path}", error=InvalidArgument(f"{source}:{number}: -r {path} {why}"))]
    try:
        nested_text = read_file(path)
    except (OSError, InvalidArgument) as exc:
        err = exc if isinstance(exc, InvalidArgument) else InvalidArgument(
            f"{source}:{number}: cannot read {path}", details=getattr(exc, "strerror", "") or "")
        return [CheckedLine(source, number, f"-r {path}", error=err)]
    return check_requirements(nested_text, policy, conda=conda, approved=approved, source=path,
                              read_file=read_file, workspace=workspace, _depth=depth + 1, _seen=seen | {path})


def summarize(lines: Iterable[CheckedLine]) -> Mapping[str, int]:
    """Counts per outcome (``allow``, ``deny``, ``approval_required``, ``invalid``)."""
    counts = {ALLOW: 0, DENY: 0, APPROVAL_REQUIRED: 0, "invalid": 0}
    for line in lines:
        counts["invalid" if line.decision is None else line.decision.decision] += 1
    return counts
