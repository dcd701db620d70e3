"""The factory's ledger (saved and loaded), its counts, and validation lines from logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.errors import OperatorError
from pilotage.factory.ledger import Ledger, counts, report_body, validation_lines
from pilotage.factory.pilots import PilotEvent, PilotState, new_pilot, transition

LOG = (
    "pilotage-bootstrap: files from http://x/abc\n"
    'pilotage-validation: {"ok": false, "reason": "file_mismatch", '
    '"message": "file agent.pyz does not match the manifest", "file": "agent.pyz"}\n'
    "pilotage-validation: refused: something\n"
    "pilotage-validation: {not json\n"
    "pilotage-exit: 20\n"
)


def test_ledger_survives_a_restart(tmp_path: Path) -> None:
    ledger = Ledger.load(tmp_path / "pilots.json")
    assert len(ledger) == 0
    a = new_pilot("beta/p-1", "beta", "p-1", 10.0, "vo")
    ledger.put(transition(a, PilotEvent.START, 11.0))
    ledger.put(new_pilot("beta/p-2", "beta", "p-2", 12.0, "other"))
    ledger.put(new_pilot("alpha/p-3", "alpha", "p-3", 13.0, "vo"))
    ledger.save()
    again = Ledger.load(tmp_path / "pilots.json")
    assert [p.id for p in again.at("beta")] == ["beta/p-1", "beta/p-2"]
    assert again.get("beta/p-1").state is PilotState.RUNNING
    total, by_frontend = counts(again.at("beta"))
    assert (total.idle, total.running, total.held) == (1, 1, 0)
    assert by_frontend["vo"].running == 1 and by_frontend["other"].idle == 1
    (tmp_path / "pilots.json").write_text("[1]")
    with pytest.raises(OperatorError, match="not a pilot ledger"):
        Ledger.load(tmp_path / "pilots.json")


def test_validation_lines_become_reports() -> None:
    [report] = validation_lines(LOG)
    body = report_body("beta", "beta/p-1", report)
    assert body == {
        "entry": "beta",
        "pilot": "beta/p-1",
        "ok": False,
        "reason": "file_mismatch",
        "message": "file agent.pyz does not match the manifest",
        "details": {},
        "file": "agent.pyz",
    }
    nested = report_body("b", "p", {"ok": False, "reason": "memory_mb", "have": 3, "node": {}})
    assert nested["details"] == {"have": 3}
