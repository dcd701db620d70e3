"""The base of every JSON body the server reads: JSON's own types, nothing converted.

pydantic's lax mode turns ``true`` into ``1`` for a number, ``"5"`` into ``5`` and ``1``
into ``true`` for a flag. The API's schema (docs/api.md) says a number is a JSON number
and a flag ``true`` or ``false``, so :class:`Body` refuses the others with a message
naming the field, before pydantic converts them. A whole number written ``514.0``
stays a number (JSON Schema's ``integer`` includes it).

No text of a body may hold a NUL character: nothing downstream wants one (paths,
ClassAds, names), and PostgreSQL cannot store one. ``Infinity`` and ``NaN``, which
Python's JSON reader takes though JSON has neither, are refused too.

Each model runs one check over its own fields (a nested body checks its own): a few
microseconds a body, next to pydantic's own validation.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

#: Where a body's text holds a NUL character, said to the caller.
NUL_MESSAGE = "text may not hold a NUL character (\\u0000); remove it"


def _kinds(annotation: Any) -> set[type]:
    """The scalar types a field's annotation admits (through ``X | None`` unions)."""
    if isinstance(annotation, type):
        return {annotation}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {k for arg in typing.get_args(annotation) for k in _kinds(arg)}
    return set()


def _has_nul(value: Any) -> bool:
    """Whether a parsed JSON value holds NUL in a text (a key or a string)."""
    kind = type(value)
    if kind is str:
        return "\x00" in value
    if kind is list:
        for item in value:
            if _has_nul(item):
                return True
    elif kind is dict:
        for key, item in value.items():
            if "\x00" in key or _has_nul(item):
                return True
    return False


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


def _holds_body(annotation: Any) -> bool:
    """Whether a field's annotation holds a :class:`Body` (checked by its own validator)."""
    if isinstance(annotation, type):
        return issubclass(annotation, Body)
    return any(_holds_body(arg) for arg in typing.get_args(annotation))


@dataclass(frozen=True)
class _Fields:
    """What :class:`Body` checks of one model's fields, by their names in the body."""

    numbers: frozenset[str]  # take a number but no flag
    flags: frozenset[str]  # take a flag but no number
    nested: frozenset[str]  # hold bodies, which check their own text


_FIELDS: dict[type, _Fields] = {}


def _fields(model: type[BaseModel]) -> _Fields:
    found = _FIELDS.get(model)
    if found is None:
        numbers, flags, nested = set(), set(), set()
        for name, field in model.model_fields.items():
            key = field.alias or name
            if _holds_body(field.annotation):
                nested.add(key)
            kinds = _kinds(field.annotation)
            if str in kinds:
                continue
            if kinds & {int, float} and bool not in kinds:
                numbers.add(key)
            elif bool in kinds and not kinds & {int, float}:
                flags.add(key)
        found = _FIELDS[model] = _Fields(frozenset(numbers), frozenset(flags), frozenset(nested))
    return found


class Body(BaseModel):
    """A request body: unknown fields refused, JSON types taken as they are."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _json_types(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = _fields(cls)
        for key, value in data.items():
            if key in fields.nested:  # its bodies check themselves; a map's keys are ours
                value = dict.fromkeys(value) if type(value) is dict else None
            if (type(key) is str and "\x00" in key) or _has_nul(value):
                place = str(find_nul({key: value})).replace("\x00", "\\0")
                raise ValueError(f"{place}: {NUL_MESSAGE}")
        for name in fields.numbers.intersection(data):
            value = data[name]
            if isinstance(value, bool):
                raise ValueError(f"{name}: must be a number, not {json.dumps(value)}")
            if isinstance(value, str):
                raise ValueError(f"{name}: must be a number, not the string {_shown(value)}")
        for name in fields.flags.intersection(data):
            value = data[name]
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name}: must be true or false, not {_shown(value)}")
        return data


def _shown(value: Any) -> str:
    return json.dumps(value)[:40] if isinstance(value, str | int | float) else type(value).__name__
