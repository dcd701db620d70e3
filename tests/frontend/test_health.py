"""The frontend's rule for entries whose switch keeps answering 202 (frontend/health.py):
N reports within the window pause the entry; older ones, other reasons, other entries
and reports before a newer successful validation do not count; 0 turns the rule off."""

from __future__ import annotations

from pilotage.frontend.health import TRANSIENT_REASON, HealthRule, Report, paused_entries

RULE = HealthRule(reports=3, window_s=600.0)
NOW = 10_000.0


def failing(entry: str, *ages_s: float) -> list[Report]:
    return [Report(entry, NOW - age, False, TRANSIENT_REASON) for age in ages_s]


def test_n_reports_within_the_window_pause_the_entry() -> None:
    reports = failing("alpha", 10, 20, 30) + failing("beta", 10, 20)
    assert paused_entries(reports, NOW, RULE) == {"alpha": 3}


def test_reports_older_than_the_window_do_not_count() -> None:
    assert paused_entries(failing("alpha", 10, 20, 601), NOW, RULE) == {}
    assert paused_entries(failing("alpha", 10, 20, 599), NOW, RULE) == {"alpha": 3}


def test_other_reasons_do_not_count() -> None:
    other = [Report("alpha", NOW - 5, False, "switch_type")]
    assert paused_entries(failing("alpha", 10, 20) + other, NOW, RULE) == {}


def test_a_newer_successful_validation_ends_the_pause() -> None:
    validated = [Report("alpha", NOW - 15, True, "ok")]
    assert paused_entries(failing("alpha", 10, 20, 30) + validated, NOW, RULE) == {}
    again = failing("alpha", 1, 2, 3) + validated + failing("alpha", 20)
    assert paused_entries(again, NOW, RULE) == {"alpha": 3}


def test_zero_reports_turns_the_rule_off() -> None:
    assert paused_entries(failing("alpha", 1, 2, 3, 4), NOW, HealthRule(0, 600.0)) == {}
