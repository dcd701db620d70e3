"""The factory's record of its pilots between cycles and restarts, and what it reports.

:class:`Ledger` holds every live pilot (:class:`~pilotage.factory.pilots.Pilot`) and
saves them to one JSON file after each cycle (written aside and renamed, so a crash
leaves the previous cycle's file), so a restarted factory goes on tracking the pilots it
submitted. Pilots leave the ledger once final and their logs read.

:func:`counts` turns the pilots of an entry into the counts the entry's ad carries, and
:func:`validation_lines` finds the ``pilotage-validation`` lines a pilot's bootstrap and
validation step wrote, which the factory forwards to the collector.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pilotage.errors import OperatorError
from pilotage.factory.pilots import Pilot, PilotState
from pilotage.frontend.wire import PilotCounts

#: The prefix of the JSON report lines in a pilot's log.
VALIDATION_PREFIX = "pilotage-validation: "
_FORMAT = 1


class Ledger:
    """The factory's live pilots, by id, saved to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pilots: dict[str, Pilot] = {}

    @classmethod
    def load(cls, path: Path) -> Ledger:
        """The ledger saved at ``path``, or an empty one when there is none yet."""
        ledger = cls(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ledger
        except (OSError, ValueError) as exc:
            raise OperatorError(f"cannot read the factory's pilot ledger {path}: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise OperatorError(f"{path} is not a pilot ledger of format {_FORMAT}")
        for item in document.get("pilots", []):
            pilot = Pilot(**{**item, "state": PilotState(item["state"])})
            ledger._pilots[pilot.id] = pilot
        return ledger

    def save(self) -> None:
        """Write the ledger atomically."""
        pilots = [{**asdict(p), "state": p.state.value} for p in self._pilots.values()]
        data = json.dumps({"format": _FORMAT, "pilots": pilots}, indent=1).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        aside = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        aside.write_bytes(data)
        os.replace(aside, self.path)

    def put(self, pilot: Pilot) -> None:
        """Add or update a pilot."""
        self._pilots[pilot.id] = pilot

    def drop(self, pilot_id: str) -> None:
        """Forget a pilot (final, its log read)."""
        self._pilots.pop(pilot_id, None)

    def get(self, pilot_id: str) -> Pilot:
        """The pilot ``pilot_id`` (KeyError if unknown)."""
        return self._pilots[pilot_id]

    def at(self, entry: str) -> list[Pilot]:
        """The pilots of one entry, oldest first."""
        return sorted(
            (p for p in self._pilots.values() if p.entry == entry), key=lambda p: p.submitted_at
        )

    def __iter__(self) -> Iterator[Pilot]:
        return iter(list(self._pilots.values()))

    def __len__(self) -> int:
        return len(self._pilots)


def counts(pilots: Iterable[Pilot]) -> tuple[PilotCounts, dict[str, PilotCounts]]:
    """Live pilots by state: in all, and per frontend."""
    total = PilotCounts()
    by_frontend: dict[str, PilotCounts] = {}
    for p in pilots:
        if p.state.final:
            continue
        for c in (total, by_frontend.setdefault(p.frontend, PilotCounts())):
            if p.state is PilotState.IDLE:
                c.idle += 1
            elif p.state is PilotState.RUNNING:
                c.running += 1
            else:
                c.held += 1
    return total, by_frontend


def validation_lines(log: str) -> list[dict[str, Any]]:
    """The JSON reports (``pilotage-validation: {...}``) in a pilot's log, in order."""
    found = []
    for line in log.splitlines():
        if not line.startswith(VALIDATION_PREFIX + "{"):
            continue
        try:
            report = json.loads(line[len(VALIDATION_PREFIX) :])
        except ValueError:
            continue
        if isinstance(report, dict) and isinstance(report.get("ok"), bool):
            found.append(report)
    return found


def report_body(entry: str, pilot_id: str, report: dict[str, Any]) -> dict[str, Any]:
    """A ``POST /api/v1/validation-reports`` body from one report line.

    The line's scalar fields besides ``ok``, ``reason``, ``message`` and ``file`` go into
    ``details`` (nested values, such as the node's measures, are left out).
    """
    known = {"ok", "reason", "message", "file"}
    details = {
        k: v
        for k, v in sorted(report.items())
        if k not in known and (v is None or isinstance(v, str | int | float | bool))
    }
    body: dict[str, Any] = {
        "entry": entry,
        "pilot": pilot_id,
        "ok": report["ok"],
        "reason": str(report.get("reason") or ("ok" if report["ok"] else "unknown")),
        "message": str(report.get("message", ""))[:4000],
        "details": dict(list(details.items())[:32]),
    }
    if isinstance(report.get("file"), str):
        body["file"] = report["file"][:128]
    return body
