"""The index and decide() agree on every row of the spec table (tests/unit/policy/spec_table.py).

pip rows that name a package: the index lists a version that satisfies the spec exactly when
decide() allows it (the upstream holds 1.0, 1.5, 2.0 and every pinned version of every name). pip rows in forms that bypass an index
(URLs, VCS, paths, options): the index decides the named project as decide_name() does, and has
no route that fetches anything else. Refused rows: the index serves no page for them either.
Conda rows are not served by this index (conda uses channels) and are left to the unit suite.
"""

from __future__ import annotations

import urllib.parse

import httpx
import pytest
from packaging.specifiers import SpecifierSet

from fetchml_agent.policy.engine import Approvals, decide, decide_name
from fetchml_agent.policy.simple import JSON_V1, version_of
from fetchml_agent.policy.specs import SpecKind, parse_spec
from tests.integration.index.indexworld import TABLE, World

PIP_ROWS = [r for r in TABLE.ROWS if not r[1]]


def _page(world: World, name: str) -> httpx.Response:
    return httpx.get(f"{world.index_url('ws')}{urllib.parse.quote(name, safe='')}/",
                     headers={"accept": JSON_V1}, follow_redirects=True, timeout=30)


@pytest.mark.parametrize("row", PIP_ROWS, ids=[ascii(r[0])[1:-1][:60] for r in PIP_ROWS])
def test_index_agrees_with_decide(world: World, row: tuple) -> None:
    raw, _conda, expected, _package, _rule = row
    if expected == "refused":
        assert _page(world, raw).status_code != 200
        return
    spec = parse_spec(raw)
    decision = decide(spec, TABLE.POLICY, approved=Approvals(TABLE.APPROVED))
    if spec.name is None:
        assert spec.kind is not SpecKind.NAME and decision.decision in ("allow", "deny")
        return
    page = _page(world, spec.name)
    name_allowed = decide_name(spec.name, TABLE.POLICY, approved=TABLE.APPROVED).decision == "allow"
    assert (page.status_code == 200) == name_allowed, page.text
    if spec.kind is not SpecKind.NAME:
        assert decision.decision == "deny"  # the form itself is denied; the index never fetches URLs
        return
    # what pip could pick for this spec from what the index lists
    listed = [version_of(f["filename"]) for f in page.json()["files"]] if page.status_code == 200 else []
    wanted = SpecifierSet(spec.specifier)
    installable = [v for v in listed if v and wanted.contains(v, prereleases=True)]
    assert bool(installable) == (decision.decision == "allow"), (listed, decision)
