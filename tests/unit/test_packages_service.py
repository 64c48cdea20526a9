"""The package service's pure helpers: spec arguments, pip's output filter, refusals, --force."""

from __future__ import annotations

import asyncio

import pytest

from fetchml_agent.errors import ApprovalRequired, InvalidArgument, PolicyDenied
from fetchml_agent.policy.engine import decide
from fetchml_agent.policy.schema import PackagePolicy
from fetchml_agent.service.packages.args import _flag, _package_and_version
from fetchml_agent.service.packages.decisions import refusal as _refusal
from fetchml_agent.service.packages.install import _PipOutput
from fetchml_agent.service.packages.policies import without as _without


@pytest.mark.parametrize(("package", "version", "spec"), [
    ("numpy", "1.24.0", "numpy==1.24.0"),
    ("numpy", 1.24, "numpy==1.24"),
    ("numpy", ">=1.24,<2", "numpy>=1.24,<2"),
    ("pandas[excel]", "2.0.0", "pandas[excel]==2.0.0"),
    ("numpy", None, "numpy"),
    (None, None, None),
])
def test_the_seeds_package_and_version_body(package: str | None, version: object, spec: str | None) -> None:
    args = {"package": package, "version": None if version is None else str(version)}
    assert _package_and_version(args) == spec


@pytest.mark.parametrize("args", [{"package": "numpy==1", "version": "2"}, {"package": None, "version": "1.0"}])
def test_contradicting_package_and_version(args: dict[str, str | None]) -> None:
    with pytest.raises(InvalidArgument):
        _package_and_version(args)


def test_pip_output_is_forwarded_by_line_without_the_report() -> None:
    sent: list[bytes] = []

    async def forward(data: bytes) -> None:
        sent.append(data)

    async def run() -> _PipOutput:
        out = _PipOutput(forward)
        for chunk in (b"Collecting si", b"xish\nInstalling\n\n@@fetchml-pip-", b'report@@ [{"name": "sixish", ',
                      b'"version": "1.16.0", "requested": true}]\n', b"tail without newline"):
            await out(chunk)
        await out.flush()
        return out

    out = asyncio.run(run())
    assert b"".join(sent) == b"Collecting sixish\nInstalling\n\ntail without newline"
    assert out.report == [{"name": "sixish", "version": "1.16.0", "requested": True}]


def test_a_denial_wins_over_a_needed_approval() -> None:
    policy = PackagePolicy(approval_required=frozenset({"tensorflow"}))
    needs, denied = decide("tensorflow", policy), decide("requests", policy)
    err = _refusal([needs, denied], "cannot install")
    assert isinstance(err, PolicyDenied) and err.fields["package"] == "requests" and "tensorflow" in err.details
    assert isinstance(_refusal([needs], "x"), ApprovalRequired)


def test_force_takes_names_off_every_list_for_one_install() -> None:
    policy = PackagePolicy(approval_required=frozenset({"tensorflow"}), allowlist=frozenset({"numpy"}))
    forced = _without(policy, frozenset({"requests", "tensorflow"}))
    assert decide("requests", forced).allowed and decide("tensorflow", forced).allowed
    assert not decide("urllib3", forced).allowed and not decide("pandas", forced).allowed
    assert forced.allowlist == frozenset({"numpy", "requests", "tensorflow"})


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("1", True), ("no", False), ("", False), (True, True)])
def test_query_string_flags(raw: object, value: bool) -> None:
    assert _flag(raw) is value
