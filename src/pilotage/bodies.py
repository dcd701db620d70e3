"""The base of every JSON body the server reads: JSON's own types, nothing converted.

pydantic's lax mode turns ``true`` into ``1`` for a number, ``"5"`` into ``5`` and ``1``
into ``true`` for a flag. The API's schema (docs/api.md) says a number is a JSON number
and a flag ``true`` or ``false``, so :class:`Body` refuses the others with a message
naming the field, before pydantic converts them. A whole number written ``514.0``
stays a number (JSON Schema's ``integer`` includes it).

No text of a body may hold a NUL character: nothing downstream wants one (paths,
ClassAds, names), and PostgreSQL cannot store one. ``Infinity`` and ``NaN``, which
Python's JSON reader takes though JSON has neither, are refused too.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

#: Where a body's text holds a NUL character, said to the caller.
NUL_MESSAGE = "text may not hold a NUL character (\\u0000); remove it"


def _kinds(annotation: Any) -> set[type]:
    """The scalar types a field's annotation admits (through ``X | None`` unions)."""
    if isinstance(annotation, type):
        return {annotation}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {k for arg in typing.get_args(annotation) for k in _kinds(arg)}
    return set()


def find_nul(value: Any, where: str = "") -> str | None:
    """The place (``a.b.0``) of the first text holding NUL in a parsed JSON value."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            place = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and "\x00" in key:
                return place
            found = find_nul(item, place)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, f"{where}.{index}" if where else str(index))
            if found is not None:
                return found
    return None


class Body(BaseModel):
    """A request body: unknown fields refused, JSON types taken as they are."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        place = find_nul(data)
        if place is not None:
            raise ValueError(f"{place}: {NUL_MESSAGE}" if place else NUL_MESSAGE)
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _json_type(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is None or not isinstance(value, bool | str | int | float):
            return value
        kinds = _kinds(cls.model_fields[info.field_name].annotation)
        if not kinds or str in kinds:
            return value
        number = bool(kinds & {int, float})
        if isinstance(value, bool) and bool not in kinds and number:
            raise ValueError(f"must be a number, not {json.dumps(value)}")
        if isinstance(value, str) and number:
            raise ValueError(f"must be a number, not the string {json.dumps(value[:40])}")
        if not isinstance(value, bool) and bool in kinds and not number:
            raise ValueError(f"must be true or false, not {json.dumps(value)[:40]}")
        return value
