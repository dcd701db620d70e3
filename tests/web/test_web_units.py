"""The pages' pure parts: the walk back through events, filters, redirects, escaping."""

from __future__ import annotations

import csv
import io

import pytest

from pilotage.cli.web import _target
from pilotage.errors import BadInput
from pilotage.web import filters, history
from pilotage.web.render import as_json, duration
from pilotage.web.respond import local_target
from pilotage.web.series import Window, rewind


def test_rewind_undoes_each_slice_s_changes() -> None:
    # Now: 2 idle, 3 running. Slice 2: one job started (IDLE->RUNNING); slice 0: two
    # were submitted and one completed (RUNNING->COMPLETED).
    changes = [
        (2, "IDLE", "RUNNING", 1.0),
        (0, None, "IDLE", 2.0),
        (0, "RUNNING", "COMPLETED", 1.0),
    ]
    series = rewind({"IDLE": 2, "RUNNING": 3, "COMPLETED": 5}, changes, points=3)
    assert series["IDLE"] == [1.0, 3.0, 3.0, 2.0]
    assert series["RUNNING"] == [3.0, 2.0, 2.0, 3.0]
    assert series["COMPLETED"] == [4.0, 5.0, 5.0, 5.0]


def test_window_keeps_late_events_in_its_last_slice() -> None:
    window = Window(now=1000.0, span_s=600.0, step_s=60.0)
    assert window.points == 10 and window.times()[0] == 400.0 and window.times()[-1] == 1000.0
    assert window.slot(12) == 9 and window.slot(-1) == 0 and window.slot(None) == 0


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/web/", "//evil.example/web/", "/api/v1/jobs", "/web\\\\evil", "", None],
)
def test_after_sign_in_only_pages_of_this_site(target: str | None) -> None:
    assert local_target(target) == "/web/"


def test_after_sign_in_a_page_with_its_filters() -> None:
    assert local_target("/web/history?user=alice&page=2") == "/web/history?user=alice&page=2"


def test_chart_data_cannot_close_its_script_block() -> None:
    text = str(as_json({"label": "</script><script>alert(1)</script>", "x": [1.5]}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert '"x":[1.5]' in text


def test_csv_cells_are_never_formulas() -> None:
    record = dict.fromkeys(history.COLUMNS, "")
    record.update(id="1.0", owner='=HYPERLINK("x")', command="-cmd", qdate=None, completed_at=None)
    rows = list(csv.reader(io.StringIO("".join(history.as_csv(iter([record]))))))
    assert rows[0] == list(history.COLUMNS)
    assert rows[1][1] == '\'=HYPERLINK("x")' and rows[1][-1] == "'-cmd"


def test_dates_bound_the_history_by_whole_days() -> None:
    since, until = filters.time_range({"since": "2026-12-01", "until": "2026-12-01"})
    assert since is not None and until == since + 86400
    assert filters.moment({"t": "2026-12-01T13:30"}, "t") == since + 13.5 * 3600
    assert filters.moment({"t": "2026-12-01T13:30+01:00"}, "t") == since + 12.5 * 3600


def test_page_names_and_job_ids_of_pilotage_web() -> None:
    assert _target("overview") == "/web/" and _target("history") == "/web/history"
    assert _target("12.3") == "/web/jobs/12.3"
    for wrong in ("12", "../admin", "12.3.4", "https://x"):
        with pytest.raises(BadInput, match="--page"):
            _target(wrong)


def test_durations_read_as_people_write_them() -> None:
    assert [duration(x) for x in (4.25, 185, 3725, None)] == ["4.2s", "3m05s", "1h02m", ""]


def test_the_pager_says_more_than_past_the_counting_bound() -> None:
    from pilotage.web.render import ENV

    pager = ENV.get_template("macros.html").module.pager  # type: ignore[attr-defined]
    capped = str(pager(3, 50, 10_001, "site=a&", 10_000, True))
    assert "Rows 101\N{EN DASH}150 of more than 10,000." in capped
    assert 'href="?site=a&amp;page=4"' in capped and 'href="?site=a&amp;page=2"' in capped
    assert "Next page" not in str(pager(201, 50, 10_001, "", 10_000, False))
    exact = str(pager(1, 50, 120, "", 10_000, True))
    assert "Rows 1\N{EN DASH}50 of 120." in exact and "page=2" in exact
