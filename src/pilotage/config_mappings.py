"""Settings whose value is a table: accounting groups and their quotas.

``pilotage.toml`` gives them as TOML tables (``accounting_groups = { group_physics =
["alice", "bob"] }``); an environment variable gives the same as a JSON object
(``PILOTAGE_SERVER_ACCOUNTING_GROUPS='{"group_physics": ["alice"]}'``). Each key has
its own parser, which returns a mapping or raises ``ValueError`` naming what
is wrong; :mod:`pilotage.config` turns that into an operator error naming the key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

#: An accounting group name as the submit language accepts it (``group_physics.higgs``).
GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}")
#: A user name, or ``*`` for every user.
USER_NAME = re.compile(r"\*|[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}")


def _table(value: Any) -> dict[Any, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError('not a JSON object such as {"group_physics": ["alice"]}') from None
    if not isinstance(value, dict):
        raise ValueError("not a table of group names")
    for name in value:
        if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a group name (letters, digits, _ . - @)")
    return value


def accounting_groups(value: Any) -> Mapping[str, tuple[str, ...]]:
    """Group -> the users who may use it (``"*"``: everyone)."""
    out: dict[str, tuple[str, ...]] = {}
    for group, users in _table(value).items():
        if isinstance(users, str):
            users = [u.strip() for u in users.split(",") if u.strip()]
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise ValueError(f"the users of group {group!r} must be a list of names")
        for user in users:
            if not USER_NAME.fullmatch(user):
                raise ValueError(f"{user!r} (group {group!r}) is not a user name nor '*'")
        out[group] = tuple(users)
    return out


def group_quotas(value: Any) -> Mapping[str, float]:
    """Group -> its static quota in cpus (a number >= 0)."""
    out: dict[str, float] = {}
    for group, quota in _table(value).items():
        if isinstance(quota, bool) or not isinstance(quota, int | float):
            raise ValueError(f"the quota of group {group!r} must be a number of cpus")
        if not math.isfinite(quota) or quota < 0:
            raise ValueError(f"the quota of group {group!r} must be a number of cpus >= 0")
        out[group] = float(quota)
    return out


#: The parser of every table setting, by ``(section, key)``.
PARSERS: dict[tuple[str, str], Callable[[Any], Mapping[str, Any]]] = {
    ("server", "accounting_groups"): accounting_groups,
    ("server", "group_quotas"): group_quotas,
}
