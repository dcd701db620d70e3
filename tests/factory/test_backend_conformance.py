"""One behaviour for every backend: each test runs on local, ssh, slurm and condor, for real.

condor runs only where HTCondor is installed (skipped elsewhere, even under CI=true).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pilotage.errors import BadInput, NotFound
from pilotage.factory.backends.base import BatchSystem, Launch
from pilotage.factory.pilots import Observed, PilotState


class Tracked:
    """Submits through a backend and removes whatever is left at the end of the test."""

    def __init__(self, batch: BatchSystem) -> None:
        self.batch = batch
        self.ids: list[str] = []

    def submit(self, count: int, script: str, **kwargs: object) -> list[str]:
        ids = self.batch.submit(count, Launch(script=script, **kwargs))  # type: ignore[arg-type]
        self.ids += ids
        return ids

    def wait(
        self, ids: list[str], states: set[PilotState], timeout_s: float = 60
    ) -> dict[str, Observed]:
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.batch.status(ids)
            if all(o.state in states for o in seen.values()):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"not all in {states}: {seen}")
            time.sleep(0.1)


@pytest.fixture
def tracked(batch: BatchSystem) -> Iterator[Tracked]:
    t = Tracked(batch)
    yield t
    if t.ids:
        t.batch.remove(t.ids)


ENDED = {PilotState.FINISHED, PilotState.FAILED}


def test_submit_returns_distinct_ids_and_pilots_run(tracked: Tracked) -> None:
    ids = tracked.submit(2, "echo started; sleep 30")
    assert len(ids) == len(set(ids)) == 2
    seen = tracked.wait(ids, {PilotState.RUNNING})
    assert set(seen) == set(ids)


def test_submit_zero_submits_nothing(tracked: Tracked) -> None:
    assert tracked.submit(0, "true") == []


def test_negative_count_is_refused(batch: BatchSystem) -> None:
    with pytest.raises(BadInput):
        batch.submit(-1, Launch(script="true"))


def test_a_pilot_that_exits_zero_is_finished_with_its_log(tracked: Tracked) -> None:
    (pilot,) = tracked.submit(1, 'echo "hello from $PILOT_GREETING"', env={"PILOT_GREETING": "a b"})
    seen = tracked.wait([pilot], ENDED)
    assert seen[pilot] == Observed(PilotState.FINISHED, "exit code 0")
    assert "hello from a b" in tracked.batch.logs(pilot)


def test_a_pilot_that_exits_non_zero_is_failed_with_the_code(tracked: Tracked) -> None:
    (pilot,) = tracked.submit(1, "echo oops >&2; exit 3")
    seen = tracked.wait([pilot], ENDED)
    assert seen[pilot].state is PilotState.FAILED
    assert "exit code 3" in seen[pilot].reason
    assert "oops" in tracked.batch.logs(pilot)


def test_remove_stops_a_running_pilot(tracked: Tracked) -> None:
    (pilot,) = tracked.submit(1, "echo up; sleep 120; echo never")
    tracked.wait([pilot], {PilotState.RUNNING})
    tracked.batch.remove([pilot])
    seen = tracked.wait([pilot], ENDED, timeout_s=30)
    assert seen[pilot] == Observed(PilotState.FINISHED, "removed")
    assert "never" not in tracked.batch.logs(pilot)


def test_remove_of_ended_pilots_is_harmless(tracked: Tracked) -> None:
    (pilot,) = tracked.submit(1, "true")
    tracked.wait([pilot], ENDED)
    tracked.batch.remove([pilot])


def test_status_answers_for_unknown_ids(batch: BatchSystem) -> None:
    seen = batch.status(["999999", "nosuch-pilot"])
    assert {o.state for o in seen.values()} == {PilotState.FAILED}
    assert set(seen) == {"999999", "nosuch-pilot"}


def test_logs_of_an_unknown_pilot(batch: BatchSystem) -> None:
    with pytest.raises((NotFound, BadInput)):
        batch.logs("999999")


def test_status_of_many_in_one_call(tracked: Tracked) -> None:
    ids = tracked.submit(3, "exit 0")
    seen = tracked.wait(ids, ENDED)
    assert all(o.state is PilotState.FINISHED for o in seen.values())
