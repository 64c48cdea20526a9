"""Every row of the spec table gets exactly the decision, package and rule it lists."""

from __future__ import annotations

import json

import pytest

from fetchml_agent.errors import ApprovalRequired, InvalidArgument, PolicyDenied
from fetchml_agent.policy.engine import Approvals, decide
from fetchml_agent.policy.specs import parse_spec
from tests.unit.policy.spec_table import APPROVED, POLICY, ROWS


def _id(row: tuple) -> str:
    return ("conda:" if row[1] else "pip:") + ascii(row[0])[1:-1][:60]


def test_the_table_covers_every_outcome() -> None:
    assert len(ROWS) >= 80
    assert {r[2] for r in ROWS} == {"allow", "deny", "approval_required", "refused"}
    assert len({(r[0], r[1]) for r in ROWS}) == len(ROWS), "duplicate rows"


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_row(row: tuple) -> None:
    spec, conda, expected, package, rule = row
    if expected == "refused":
        with pytest.raises(InvalidArgument) as info:
            decide(spec, POLICY, conda=conda, approved=APPROVED)
        assert info.value.message.startswith(("not a valid package spec", "a package spec"))
        return
    decision = decide(spec, POLICY, conda=conda, approved=Approvals(APPROVED))
    assert (decision.decision, decision.package, decision.rule) == (expected, package, rule), decision.reason
    assert decision.reason
    assert decision.spec == spec.strip()
    # to_dict is what check-package --json prints: JSON-able, with the four keys.
    body = json.loads(json.dumps(decision.to_dict()))
    assert {"decision", "package", "rule", "reason"} <= set(body)


@pytest.mark.parametrize("row", [r for r in ROWS if r[2] != "refused"], ids=lambda r: _id(r))
def test_same_decision_from_parsed_spec_and_from_text(row: tuple) -> None:
    spec, conda = row[0], row[1]
    parsed = parse_spec(spec, conda=conda)
    assert decide(parsed, POLICY, approved=APPROVED) == decide(spec, POLICY, conda=conda, approved=APPROVED)


def test_denied_and_approval_decisions_raise_their_project_errors() -> None:
    with pytest.raises(PolicyDenied) as denied:
        decide("requests", POLICY).raise_unless_allowed()
    assert denied.value.fields["rule"] == "blocked_packages"
    assert denied.value.exit_code != ApprovalRequired.exit_code
    with pytest.raises(ApprovalRequired):
        decide("tensorflow", POLICY).raise_unless_allowed()
    decide("numpy", POLICY).raise_unless_allowed()


def test_refusal_names_the_look_alike_character() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_spec("r\u0435quests")
    assert "U+0435" in str(info.value) and "CYRILLIC" in str(info.value)
    assert info.value.fields["spec"] == "r\u0435quests"
