"""Retention settings, durations, personal-field splitting, and the webhook names of the chain."""

from __future__ import annotations

import datetime

import pytest

from fetchml_agent.config import ConfigError, parse_config
from fetchml_agent.governance.retention import RetentionSettings
from fetchml_agent.store.chain import names_pattern, split_details
from fetchml_agent.units import format_age, format_duration, parse_duration
from fetchml_agent.webhooks import event_name


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800),
                                           ("2w", 1209600), ("1y", 31536000), (90, 90), ("1.5h", 5400)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "7 days", "-1d", "0", True, "d"])
def test_bad_durations_name_the_setting(bad: object) -> None:
    with pytest.raises(ValueError, match=r"retention\.audit"):
        parse_duration(bad, "retention.audit")  # type: ignore[arg-type]


def test_formatting() -> None:
    assert (format_duration(604800), format_duration(5400), format_duration(61)) == ("1w", "90m", "61s")
    assert (format_age(2592002), format_age(90), format_age(5)) == ("30d", "1m", "5s")


def test_retention_section_is_validated_and_read() -> None:
    cfg = parse_config({"retention": {"audit": "400d", "metrics": "90d", "at": "04:15"}})
    s = RetentionSettings.from_section(cfg.raw["retention"])
    assert s.keep == {"audit": 400 * 86400, "runs": None, "logs": None, "metrics": 90 * 86400} and s.at == (4, 15)
    now = datetime.datetime(2026, 12, 2, 5, 0).timestamp()
    assert datetime.datetime.fromtimestamp(s.next_run(now)) == datetime.datetime(2026, 12, 3, 4, 15)
    assert s.cutoff("audit", now) == now - 400 * 86400 and s.cutoff("runs", now) is None
    with pytest.raises(ConfigError, match=r"retention\.audit"):
        parse_config({"retention": {"audit": "forever"}})
    with pytest.raises(ConfigError, match=r"retention\.at"):
        parse_config({"retention": {"at": "25:00"}})


def test_people_go_to_the_personal_document() -> None:
    names = names_pattern(["bob", "al"])
    chained, personal = split_details({"principal": "user:carol", "package": "alpha", "note": "asked by bob",
                                       "path": "/srv/al/x", "count": 3, "nan": float("nan")}, names)
    assert chained == {"package": "alpha", "count": 3, "nan": "nan"}  # 'al' inside 'alpha' is not a name
    assert personal == {"principal": "user:carol", "note": "asked by bob", "path": "/srv/al/x"}


def test_webhook_names_of_the_chain() -> None:
    assert event_name("audit.verify", "broken") == "audit_chain_broken"
    assert event_name("audit.verify_export", "broken") == "audit_export_mismatch"
    assert event_name("audit.verify", "ok") == "audit_verify"
