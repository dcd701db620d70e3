"""The ``queue`` statement of the submit language: a count and the rows of items it iterates.

Forms understood (``N`` defaults to 1, the variable list to ``Item``)::

    queue [N]
    queue [N] [VAR] in (a b, c)          queue [N] [VAR] in (
                                             a b
                                         )
    queue [N] [VAR[,VAR...]] from FILE   queue [N] [VAR[,VAR...]] from (
                                             x1, y1
                                         )

With ``in`` every word is one item for one variable. With ``from`` every non-blank
line is one row: the whole line for a single variable, or as many comma- or
space-separated columns as there are variables. ``N`` jobs are queued per row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

from pilotage.queue import submit_values as values

_KEYWORD = re.compile(r"\b(from|in|matching)\b", re.IGNORECASE)
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORDS = re.compile(r"[\s,]+")
_COLUMNS = re.compile(r"\s*,\s*|\s+")
_MAX_COUNT = 100_000
#: One item line: the submit file's line, the text, and where it came from if not there.
_Row = tuple[int, str, str]


class QueueContext(Protocol):
    """What the statement parser needs from the submit parser around it."""

    @property
    def iwd(self) -> str:
        """The absolute submit directory: items files are relative to it."""

    def fail(self, line: int | None, problem: str) -> NoReturn:
        """Raise the submit error for ``line``."""

    def queue_text(self, text: str, line: int) -> str:
        """Expand the macros of a count or a file name."""

    def reserved(self, name: str) -> bool:
        """Whether ``name`` is taken by a command or a built-in macro."""


@dataclass(frozen=True)
class Queue:
    """One parsed ``queue`` statement.

    Invariant: every row has one value per name; a plain ``queue N`` has no names
    and a single empty row, so it queues ``count`` jobs.
    """

    line: int
    count: int
    names: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def parse_queue(
    rest: str, line: int, lines: list[tuple[int, str]], index: int, context: QueueContext
) -> tuple[Queue, int]:
    """Parse ``queue <rest>`` written on ``line``; ``lines[index:]`` follow it.

    Returns the statement and the index of the first line after it (past an
    inline item block, if there is one).
    """
    keyword = _KEYWORD.search(rest)
    if keyword is None:
        return Queue(line, _count(rest or "1", line, context), (), ((),)), index
    kind = keyword.group(1).lower()
    if kind == "matching":
        context.fail(line, "'queue ... matching' is not supported: list the files with 'in'")
    head = rest[: keyword.start()].split(maxsplit=1)
    count = 1
    if head and re.fullmatch(r"[0-9]+|\$\(.*\)", head[0]):
        count = _count(head.pop(0), line, context)
    names = tuple(n for n in _WORDS.split(" ".join(head)) if n) or ("Item",)
    for name in names:
        if not _VARIABLE.fullmatch(name) or context.reserved(name):
            context.fail(line, f"{name!r} cannot be a queue variable name")
    if kind == "in" and len(names) > 1:
        context.fail(line, "'queue ... in' takes one variable; use 'from' for several")
    tail = rest[keyword.end() :].strip()
    if tail == "(":
        block, index = _block(line, lines, index, context)
    elif kind == "in":
        if not (tail.startswith("(") and tail.endswith(")")):
            context.fail(line, f"'queue ... in' needs its items in parentheses, not {tail!r}")
        block = [(line, tail[1:-1], "")]
    elif tail.startswith("("):
        context.fail(line, "put the items of 'from (' on the lines after it, then ')'")
    elif not tail:
        context.fail(line, "'queue ... from' needs a file name or '(' then the items")
    else:
        block = _read_file(tail, line, context)
    rows: tuple[tuple[str, ...], ...]
    if kind == "in":
        rows = tuple((word,) for _, text, _ in block for word in _WORDS.split(text) if word)
    else:
        rows = tuple(_columns(row, names, context) for row in block)
    return Queue(line, count, names, rows), index


def _count(text: str, line: int, context: QueueContext) -> int:
    expanded = context.queue_text(text, line).strip()
    try:
        return values.parse_int(expanded, low=0, high=_MAX_COUNT)
    except ValueError as error:
        context.fail(line, f"queue count: {error}")


def _block(
    line: int, lines: list[tuple[int, str]], index: int, context: QueueContext
) -> tuple[list[_Row], int]:
    """The item lines of an inline ``( ... )`` block and the index after its ``)``."""
    block: list[_Row] = []
    while index < len(lines):
        number, text = lines[index]
        index += 1
        if text == ")":
            return block, index
        block.append((number, text, ""))
    context.fail(line, "the item list opened with '(' has no closing ')' line")


def _read_file(name: str, line: int, context: QueueContext) -> list[_Row]:
    """The non-blank lines of an items file, each marked with its place in the file."""
    path = Path(context.iwd, context.queue_text(name, line))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        context.fail(line, f"items file {path} does not exist")
    except UnicodeDecodeError:
        context.fail(line, f"items file {path} is not UTF-8 text")
    except OSError as error:
        context.fail(line, f"items file {path} cannot be read: {error.strerror}")
    rows = enumerate(text.splitlines(), start=1)
    return [(line, row, f" ({path}, line {n})") for n, row in rows if row.strip()]


def _columns(item: _Row, names: tuple[str, ...], context: QueueContext) -> tuple[str, ...]:
    line, text, origin = item
    row = text.strip()
    if len(names) == 1:
        return (row,)
    fields = tuple(_COLUMNS.split(row))
    if len(fields) != len(names):
        context.fail(
            line,
            f"item row {row!r}{origin} has {len(fields)} values for the {len(names)} "
            f"variables {', '.join(names)}",
        )
    return fields
