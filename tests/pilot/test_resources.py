"""The slot's pure state: carving claims out of the pilot's resources and giving them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.pilot.resources import (
    Resources,
    Slot,
    SlotFull,
    detect_cpus,
    detect_disk_mb,
    detect_memory_mb,
)

TOTAL = Resources(cpus=4, memory_mb=8000, disk_mb=20000, gpus=1)


def test_carving_and_releasing() -> None:
    slot = Slot(TOTAL)
    assert slot.free() == TOTAL and not slot.busy
    slot.carve("c-1", Resources(cpus=1, memory_mb=1000, disk_mb=100))
    slot.carve("c-2", Resources(cpus=2, memory_mb=2000, disk_mb=100, gpus=1))
    assert slot.free() == Resources(cpus=1, memory_mb=5000, disk_mb=19800, gpus=0)
    assert slot.busy and slot.can_ask()
    slot.release("c-1")
    slot.release("c-1")  # twice is harmless
    assert slot.free() == Resources(cpus=2, memory_mb=6000, disk_mb=19900, gpus=0)
    slot.release("c-2")
    assert slot.free() == TOTAL and not slot.busy


def test_a_claim_that_does_not_fit_is_refused() -> None:
    slot = Slot(TOTAL)
    slot.carve("c-1", Resources(cpus=3, memory_mb=100))
    with pytest.raises(SlotFull, match="claim c-2 asks for"):
        slot.carve("c-2", Resources(cpus=2, memory_mb=100))
    with pytest.raises(SlotFull, match="claim c-3 asks for"):
        slot.carve("c-3", Resources(cpus=1, memory_mb=100, gpus=2))
    with pytest.raises(SlotFull, match="already holds"):
        slot.carve("c-1", Resources(cpus=1))
    assert slot.free() == Resources(cpus=1, memory_mb=7900, disk_mb=20000, gpus=1)


def test_no_asking_without_a_free_cpu_or_memory() -> None:
    slot = Slot(TOTAL)
    slot.carve("all-cpus", Resources(cpus=4, memory_mb=1))
    assert not slot.can_ask()
    slot = Slot(TOTAL)
    slot.carve("all-memory", Resources(cpus=1, memory_mb=8000))
    assert not slot.can_ask()


def test_wire_form() -> None:
    assert TOTAL.to_wire() == {"cpus": 4, "memory_mb": 8000, "disk_mb": 20000, "gpus": 1}


def test_node_defaults(tmp_path: Path) -> None:
    assert detect_cpus() >= 1
    assert detect_memory_mb() >= 64
    assert detect_disk_mb(tmp_path) >= 0
