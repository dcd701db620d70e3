"""The node's GPUs: the --gpus override, detection outputs, the slot's ads, and no device
held by two claims."""

from __future__ import annotations

import classad2
import pytest

from pilotage.errors import BadInput
from pilotage.pilot.gpus import Gpu, parse_flag, parse_list, parse_proc, parse_query, slot_attrs
from pilotage.pilot.resources import Resources, Slot, SlotFull
from pilotage.queue.gpus import check_registration

UUID_A = "GPU-1b9d3a0e-0000-4000-8000-00000000000a"
UUID_B = "GPU-1b9d3a0e-0000-4000-8000-00000000000b"


def test_the_flag_lists_ids_or_caps_a_count() -> None:
    assert parse_flag("0,1") == (Gpu("0"), Gpu("1"))
    assert parse_flag(f"{UUID_A}, {UUID_B}") == (Gpu(UUID_A), Gpu(UUID_B))
    assert parse_flag("2") == 2
    for bad, why in [("a b", "not a device id"), ("0,0", "twice"), (",", "names no device")]:
        with pytest.raises(ValueError, match=why):
            parse_flag(bad)


def test_detection_outputs() -> None:
    query = f"0, {UUID_A}, NVIDIA A100-SXM4-40GB, 40960, 8.0\n1, {UUID_B}, Tesla T4, 15360, 7.5\n"
    assert parse_query(query) == (
        Gpu(UUID_A, "NVIDIA A100-SXM4-40GB", 8.0, 40960),
        Gpu(UUID_B, "Tesla T4", 7.5, 15360),
    )
    listing = f"GPU 0: Tesla T4 (UUID: {UUID_B})\nGPU 1: Tesla T4 (UUID: {UUID_A})\n"
    assert [g.id for g in parse_list(listing)] == [UUID_B, UUID_A]
    info = f"Model: \t\t Tesla V100\nIRQ: 33\nGPU UUID: \t {UUID_A}\nDevice Minor: \t 0\n"
    assert parse_proc([info]) == (Gpu(UUID_A, "Tesla V100"),)
    assert parse_query("") == () and parse_list("No devices were found") == ()


def test_the_slot_ads_answer_require_gpus() -> None:
    gpus = (Gpu(UUID_A, "A100", 8.0, 40960), Gpu(UUID_B, "T4", 7.5, 15360))
    attrs = slot_attrs(gpus)
    check_registration(2, attrs)  # what the server checks at registration
    slot = classad2.ClassAd("[" + "; ".join(f"{k} = {v}" for k, v in attrs.items()) + "]")
    job = classad2.ClassAd("[RequireGPUs = Capability >= 8.0 && GlobalMemoryMb > 20000]")
    count = classad2.ExprTree("countMatches(MY.RequireGPUs, TARGET.AvailableGPUs)")
    assert count.eval(job, slot) == 1
    assert slot["DetectedGPUs"] == f"{UUID_A},{UUID_B}"
    with pytest.raises(BadInput, match="must list 3 distinct device ids"):
        check_registration(3, attrs)
    with pytest.raises(BadInput, match="gpus = 0 must not list"):
        check_registration(0, attrs)
    assert slot_attrs(()) == {}


def test_a_device_is_never_held_by_two_claims() -> None:
    slot = Slot(Resources(cpus=4, memory_mb=4096, gpus=2), ("0", "1"))
    one = Resources(cpus=1, memory_mb=1, gpus=1)
    slot.carve("c1", one, ("0",))
    with pytest.raises(SlotFull, match="held by claim c1"):
        slot.carve("c2", one, ("0",))
    with pytest.raises(SlotFull, match="not one of"):
        slot.carve("c2", one, ("7",))
    with pytest.raises(SlotFull, match="asks for 1 GPUs but was assigned"):
        slot.carve("c2", one, ())
    slot.carve("c2", one, ("1",))
    slot.release("c1")
    slot.carve("c3", one, ("0",))
    assert slot.devices.held_by("c3") == ("0",) and slot.free().gpus == 0
