"""``pilotage-exec --accounting`` on an audit log as a site keeps it: torn lines, old records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilotage.switch import accounting
from pilotage.switch.refusals import ClientError, Denied

RECORDS = [
    {"time": "2026-01-01T00:00:00Z", "event": "end", "account": "alice", "user": "/CN=A",
     "issuer": "/CN=CA", "wall_s": 3600, "cpu_user_s": 1800, "cpu_sys_s": 0},
    {"time": "2026-02-01T00:00:00Z", "event": "exit", "account": "alice", "user": "/CN=A",
     "issuer": "/CN=CA", "wall_s": 7200, "cpu_s": 3600, "max_rss_kb": 5},
    {"time": "2026-02-01T00:00:01Z", "event": "end", "account": "alice", "family": "c-1"},
    {"time": "2026-02-01T00:00:02Z", "event": "refused", "account": "bob", "exit": 203},
]  # fmt: skip


def test_sums_by_account_and_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    lines = [json.dumps(record) for record in RECORDS]
    log.write_text("\n".join([*lines[:2], "not json", "[1]", *lines[2:], '{"time": "20']))
    assert accounting.main(["--json"], str(log), from_sudo=False) == 0
    sums = json.loads(capsys.readouterr().out)
    expected = {"jobs": 2, "cpu_h": 1.5, "wall_h": 3.0, "max_rss_kb": 5}
    assert sums["by_account"] == {"alice": expected}
    assert sums["by_user"] == {"/CN=CA /CN=A": expected}
    assert accounting.main(["--json", "--since", "2026-01-15"], str(log), from_sudo=False) == 0
    assert json.loads(capsys.readouterr().out)["by_account"]["alice"]["jobs"] == 1


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(Denied, match="not for the switch's callers"):
        accounting.main([], str(tmp_path / "audit.jsonl"), from_sudo=True)
    with pytest.raises(ClientError, match=r"The audit log .* cannot be read \(No such file"):
        accounting.main([], str(tmp_path / "audit.jsonl"), from_sudo=False)
    with pytest.raises(ClientError, match="Unknown or incomplete option '--since'"):
        accounting.main(["--since"], str(tmp_path / "audit.jsonl"), from_sudo=False)
