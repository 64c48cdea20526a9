"""The decision engine beyond the table: allowlists, dry run, approvals, requirements lists."""

from __future__ import annotations

import dataclasses

import pytest

from fetchml_agent.errors import InvalidArgument
from fetchml_agent.policy.engine import (
    Approvals,
    channel_trusted,
    check_requirements,
    decide,
    decide_name,
    summarize,
)
from fetchml_agent.policy.schema import PackagePolicy

ALLOWLIST = PackagePolicy(allowlist=frozenset({"numpy", "pandas", "scikit-learn", "matplotlib", "requests"}),
                          approval_required=frozenset({"matplotlib"}))


@pytest.mark.parametrize(("spec", "decision", "rule"), [
    ("numpy", "allow", "allowlist"),
    ("Pandas==2.0", "allow", "allowlist"),
    ("seaborn>=0.14", "approval_required", "allowlist"),
    ("matplotlib", "approval_required", "approval_required"),  # approval_required wins over the allowlist
    ("requests", "deny", "blocked_packages"),  # blocked wins over the allowlist
    ("seaborn==0.13.2", "allow", "approved_request"),
])
def test_allowlist(spec: str, decision: str, rule: str) -> None:
    d = decide(spec, ALLOWLIST, approved=[("seaborn", "==0.13.2")])
    assert (d.decision, d.rule) == (decision, rule)


def test_an_approval_never_unblocks() -> None:
    assert decide("requests", PackagePolicy(), approved=[("requests", "")]).decision == "deny"


@pytest.mark.parametrize(("spec", "conda", "would_have"), [
    ("requests", False, "deny"),
    ("git+https://host.invalid/x.git", False, "deny"),
    ("evil::numpy", True, "deny"),
    ("tensorflow", False, "approval_required"),
])
def test_dry_run_allows_and_records_what_would_have_blocked(spec: str, conda: bool, would_have: str) -> None:
    p = PackagePolicy(mode="dry_run", approval_required=frozenset({"tensorflow"}))
    d = decide(spec, p, conda=conda)
    assert d.decision == "allow" and d.would_have == would_have
    assert d.to_dict()["dry_run"] == {"would_have": would_have} and d.reason.startswith("dry run")
    assert "dry_run" not in decide("numpy", p).to_dict()
    with pytest.raises(InvalidArgument):  # dry run blocks nothing, but a broken spec is still no spec
        decide("a\nb", p)


def test_approvals_by_version_range() -> None:
    a = Approvals([("Custom_Package", ">=1.0,<2"), ("other", ""), ("pinned", "==1.2.3")])
    assert "custom-package" in a and "nope" not in a and bool(a)
    assert a.covers("custom-package", "") and a.covers("custom-package", "==1.5")
    assert a.covers("custom-package", "<2,>=1.0")  # same range, any order
    assert not a.covers("custom-package", "==2.0") and not a.covers("custom-package", ">=1.5")
    assert not a.covers("custom-package", "==1.*")  # a wildcard is a range, not a pin
    assert a.covers("other", ">=99") and a.covers_every_version("other")
    assert a.version_allowed("custom-package", "1.9") and not a.version_allowed("custom-package", "2.0")
    assert a.version_allowed("custom-package", "1.0rc1") is False  # 1.0rc1 < 1.0
    assert a.version_allowed("pinned", "1.2.3") and not a.version_allowed("pinned", "not-a-version")
    assert not a.version_allowed("nope", "1.0") and not a.covers("nope", "")
    assert [str(r) for r in a.ranges("pinned")] == ["==1.2.3"]
    with pytest.raises(InvalidArgument, match="not a version range"):
        Approvals([("x", "sometimes")])


def test_approved_may_be_a_callable() -> None:
    p = PackagePolicy(approval_required=frozenset({"tensorflow"}))
    seen: list[tuple[str, str]] = []

    def approved(name: str, spec: str) -> bool:
        seen.append((name, spec))
        return spec == "==2.15"

    assert decide("TensorFlow==2.15", p, approved=approved).rule == "approved_request"
    assert decide("tensorflow", p, approved=approved).decision == "approval_required"
    assert seen == [("tensorflow", "==2.15"), ("tensorflow", "")]


def test_decide_name_is_what_the_index_asks() -> None:
    p = PackagePolicy(approval_required=frozenset({"tensorflow"}))
    assert decide_name("Requests", p).decision == "deny"
    assert decide_name("tensorflow", p, approved=[("tensorflow", ">=2")]).rule == "approved_request"
    assert decide_name("six", p).to_dict() == decide("six", p).to_dict()


def test_conda_channels_given_alongside() -> None:
    p = PackagePolicy()
    assert decide("numpy", p, conda=True, channels=["conda-forge"]).decision == "allow"
    assert decide("numpy", p, conda=True, channels=["evil"]).rule == "trusted_channels"
    assert channel_trusted("Conda-Forge", p.trusted_channels)
    url = "https://mirror.invalid/conda-forge"
    assert not channel_trusted(url, p.trusted_channels)
    assert channel_trusted(url + "/", [url]) and not channel_trusted("conda-forge", [url])
    assert not channel_trusted("*", ["*"])


REQUIREMENTS = """\
# a comment
numpy==1.26.4 \\
    --hash=sha256:aaaa --hash=sha256:bbbb
pandas>=2  # trailing comment

requests
--index-url http://host.invalid/simple
-r nested.txt
git+https://host.invalid/x.git#egg=x
bad spec here
\tsix
"""


def test_requirements_list_line_by_line() -> None:
    lines = check_requirements(REQUIREMENTS, PackagePolicy(), source="reqs.txt")
    got = [(ln.line, ln.text, ln.decision.decision if ln.decision else "invalid") for ln in lines]
    assert got == [
        (2, "numpy==1.26.4", "allow"),
        (4, "pandas>=2", "allow"),
        (6, "requests", "deny"),
        (7, "--index-url http://host.invalid/simple", "deny"),
        (8, "-r nested.txt", "deny"),
        (9, "git+https://host.invalid/x.git#egg=x", "deny"),
        (10, "bad spec here", "invalid"),
        (11, "six", "allow"),
    ]
    assert summarize(lines) == {"allow": 3, "deny": 4, "approval_required": 0, "invalid": 1}
    assert lines[0].allowed and not lines[6].allowed
    assert lines[6].to_dict()["error"]["error"] == "invalid_argument"
    assert lines[2].to_dict()["source"] == "reqs.txt"


def test_nested_requirement_files_are_followed_through_read_file() -> None:
    files = {"a.txt": "numpy\n-r b.txt\n", "b.txt": "requests\n-r a.txt\n", "c.txt": "-r missing.txt\n"}

    def read(path: str) -> str:
        return files[path] if path in files else open(path).read()

    lines = check_requirements("-r a.txt\nsix\n", PackagePolicy(), read_file=read)
    assert [(ln.source, ln.text, ln.decision.decision if ln.decision else "invalid") for ln in lines] == [
        ("a.txt", "numpy", "allow"),
        ("b.txt", "requests", "deny"),
        ("b.txt", "-r a.txt", "invalid"),  # a cycle
        ("<requirements>", "six", "allow"),
    ]
    missing = check_requirements("-r c.txt", PackagePolicy(), read_file=read)
    assert missing[0].error is not None and "cannot read missing.txt" in missing[0].error.message


def test_conda_requirements_carry_channel_options() -> None:
    lines = check_requirements("-c evil\nnumpy\n", PackagePolicy(), conda=True)
    assert [ln.decision.rule for ln in lines if ln.decision] == ["trusted_channels", "trusted_channels"]
    assert [ln.decision.decision for ln in lines if ln.decision] == ["deny", "deny"]


def test_decision_is_a_value() -> None:
    d = decide("numpy", PackagePolicy())
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.decision = "deny"  # type: ignore[misc]


def test_approval_hints_name_the_workspace_and_quote_the_spec() -> None:
    policy = PackagePolicy(approval_required=frozenset({"tensorflow"}), allowlist=frozenset({"numpy"}))
    assert decide("tensorflow>=2", policy, workspace="ds").reason.endswith("ml jupyter request ds 'tensorflow>=2'")
    assert decide("pandas", policy, workspace="ds").reason.endswith("ml jupyter request ds pandas")
    assert decide("pandas", policy).reason.endswith("ml jupyter request WS pandas")
    lines = check_requirements("tensorflow\n", policy, workspace="ds")
    assert lines[0].decision is not None and "ml jupyter request ds tensorflow" in lines[0].decision.reason
