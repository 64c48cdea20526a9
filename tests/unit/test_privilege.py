"""Privilege is read from the effective capability set (/proc/PID/status), not from the uid."""

from __future__ import annotations

from pathlib import Path

from fetchml_agent.privilege import FIREWALL, SWITCH_USERS, effective_capabilities, missing


def test_the_roles_capability_mask_is_enough_and_nothing_less_is(tmp_path: Path) -> None:
    status = tmp_path / "status"
    # what the fetchml_agent role's unit gives the agent (the molecule scenario's CapEff, plus NET_ADMIN)
    status.write_text("Name:\tfetchml-agent\nUid:\t999\t999\t999\t999\nCapInh:\t0\nCapEff:\t00000000000010eb\n")
    mask = effective_capabilities(status)
    assert mask == 0x10EB and missing(SWITCH_USERS + FIREWALL, mask) == []
    assert missing(SWITCH_USERS + FIREWALL, 0x10EB & ~(1 << 7)) == ["CAP_SETUID"]
    assert missing(SWITCH_USERS, 0xEB) == [] and missing(FIREWALL, 0xEB) == ["CAP_NET_ADMIN"]
    assert missing(SWITCH_USERS, 0) == list(SWITCH_USERS)  # uid 0 without capabilities: not privileged


def test_an_unreadable_status_means_no_capabilities(tmp_path: Path) -> None:
    assert effective_capabilities(tmp_path / "absent") == 0
