"""Pieces of SQL the pages' aggregates share, written once for SQLite and PostgreSQL.

The pages aggregate in the database and read only what they show: a count per state, a
sum per site, one page of a table. Nothing here loads every job.
"""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa

from pilotage.api.auth import Principal
from pilotage.store.tables import jobs


def bucket(column: Any, start: float, width: float, *, sqlite: bool) -> sa.ColumnElement[int]:
    """Which slice of ``width`` seconds from ``start`` ``column`` falls in (0, 1, ...).

    For times at or after ``start`` only: SQLite's CAST truncates, which is the floor
    there; PostgreSQL's CAST of a float rounds, so it takes FLOOR first.
    """
    offset = (column - sa.literal(start, sa.Float)) / sa.literal(width, sa.Float)
    if sqlite:
        return sa.cast(offset, sa.Integer)
    return sa.cast(sa.func.floor(offset), sa.Integer)


def day(column: Any, *, sqlite: bool) -> sa.ColumnElement[int]:
    """The UTC day (days since 1970-01-01) of an epoch time."""
    return bucket(column, 0.0, 86400.0, sqlite=sqlite)


def spec_field(field: str, *, sqlite: bool) -> sa.ColumnElement[str]:
    """One text field of the job's spec (stored as JSON text)."""
    if sqlite:
        value = sa.func.json_extract(jobs.c.spec, f"$.{field}")
    else:
        value = sa.cast(jobs.c.spec, sa.JSON)[field].as_string()
    return cast(sa.ColumnElement[str], value)


def owned_by(who: Principal) -> sa.ColumnElement[bool]:
    """The jobs ``who`` may see: every job for an admin, their own for a user."""
    if who.admin:
        return sa.true()
    return jobs.c.owner == who.name
