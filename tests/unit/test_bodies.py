"""Request bodies take JSON's own types and no NUL (pilotage.bodies), naming the field."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from pilotage.api.wire import Heartbeat, PilotRegistration, Result, Vacate, WorkRequest
from pilotage.frontend.wire import EntryAdvert

FREE = {"cpus": 4, "memory_mb": 4000, "disk_mb": 1000}
ASK = {"v": 1, "free": FREE, "time_left_s": 60}
PILOT = {"v": 1, "name": "p", "host": "h", "cpus": 1, "memory_mb": 1, "disk_mb": 0}


def refusal(model: type[pydantic.BaseModel], body: Any) -> str:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(body)
    first = caught.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]) + ": " + first["msg"]


def test_json_numbers_and_flags_are_taken_as_they_are() -> None:
    asked = WorkRequest.model_validate({**ASK, "free": {**FREE, "cpus": 4.0}})
    assert asked.free.cpus == 4  # 4.0 is a whole number: JSON Schema's integer
    done = Result.model_validate({"v": 1, "exit_code": 0, "wall_s": 3, "next": ASK})
    assert done.wall_s == 3.0 and done.next == asked


@pytest.mark.parametrize(
    ("model", "body", "said"),
    [
        (WorkRequest, {**ASK, "v": True}, "v: must be a number, not true"),
        (WorkRequest, {**ASK, "time_left_s": "60"}, "time_left_s: must be a number, not the"),
        (WorkRequest, {**ASK, "free": {**FREE, "gpus": False}}, "free: Value error, gpus: must"),
        (Result, {"v": 1, "next": {**ASK, "free": {**FREE, "cpus": "4"}}}, "next.free: Value"),
        (PilotRegistration, {**PILOT, "lifetime_s": 60, "site": 5}, "site: Input should be"),
        (Vacate, {"v": 1, "reason": "r", "node_fault": 1}, "node_fault: must be true or false"),
    ],
)
def test_other_types_are_refused_naming_the_field(
    model: type[pydantic.BaseModel], body: dict[str, Any], said: str
) -> None:
    assert said in refusal(model, body)


@pytest.mark.parametrize(
    "raw", ['{"v": 1, "wall_s": NaN}', '{"v": 1, "cpu_s": Infinity}', '{"v": 1, "cpu_s": 1e400}']
)
def test_not_a_number_and_infinity_are_refused(raw: str) -> None:
    assert "finite number" in refusal(Result, json.loads(raw))


@pytest.mark.parametrize(
    ("model", "body", "place"),
    [
        (Heartbeat, {"v": 1, "claims": ["c-1", "c\x002"]}, "claims.1"),
        (WorkRequest, {**ASK, "free": {**FREE, "x\x00": 1}}, "free.x\\0"),
        (EntryAdvert, {"v": 1, "ad": {"Site": "a\x00"}}, "ad.Site"),
        (EntryAdvert, {"v": 1, "ad": {}, "by_frontend": {"f\x00": {}}}, "by_frontend.f\\0"),
    ],
)
def test_text_holding_nul_is_refused_naming_where(
    model: type[pydantic.BaseModel], body: dict[str, Any], place: str
) -> None:
    said = refusal(model, body)
    assert f"{place}: text may not hold a NUL character" in said, said
    assert "\x00" not in said
