"""The ``queue`` statement of the submit language: a count and the rows of items it iterates.

Forms understood, with HTCondor's meaning (``N`` defaults to 1, the variable list to
``Item``, ``[slice]`` is Python's ``[start:stop:step]`` over the items)::

    queue [N]
    queue [N] [VAR] in [slice] A, B, C         queue [N] [VAR] in [slice] (A B C)
    queue [N] [VAR] in [slice] (               (one or more items per line)
        A B
    )
    queue [N] [VAR[,VAR...]] from [slice] FILE
    queue [N] [VAR[,VAR...]] from [slice] ( x1, y1 )
    queue [N] [VAR[,VAR...]] from [slice] (
        x1, y1
    )
    queue [N] [VAR] matching [files|dirs] [slice] PATTERN...   (also in parentheses)

With ``in`` every word (separated by commas or blanks) is one item. With ``from`` every
non-blank line is one row, split on commas or blanks into as many fields as there are
variables, *the last variable taking the rest of the line*: ``queue infile,args from (
file1, -a -b 26 )`` gives ``args`` the value ``-a -b 26``. With ``matching``, the items
are the names the glob patterns match in the submit directory, sorted. A variable may
be a submit command (``queue input,arguments from ...``): it then sets that command.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

from pilotage.queue import submit_values as values

_KEYWORD = re.compile(r"\b(from|in|matching)\b", re.IGNORECASE)
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORDS = re.compile(r"[\s,]+")
_COLUMNS = re.compile(r"\s*,\s*|\s+")
_SLICE = re.compile(r"\[\s*(-?\d*)\s*(?::\s*(-?\d*)\s*(?::\s*(-?\d*)\s*)?)?\]")
_MAX_COUNT = 100_000
#: One item line: the submit file's line, the text, and where it came from if not there.
_Row = tuple[int, str, str]


class QueueContext(Protocol):
    """What the statement parser needs from the submit parser around it."""

    @property
    def iwd(self) -> str:
        """The absolute submit directory: items files and patterns are relative to it."""

    def fail(self, line: int | None, problem: str) -> NoReturn:
        """Raise the submit error for ``line``."""

    def queue_text(self, text: str, line: int) -> str:
        """Expand the macros of a count or a file name."""

    def reserved(self, name: str) -> bool:
        """Whether ``name`` is taken by a built-in macro."""


@dataclass(frozen=True)
class Queue:
    """One parsed ``queue`` statement.

    Invariant: every row has one value per name, and ``indexes`` holds each row's place
    in the item list before any slice (``$(ItemIndex)``); a plain ``queue N`` has no
    names and a single empty row, so it queues ``count`` jobs.
    """

    line: int
    count: int
    names: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    indexes: tuple[int, ...] = (0,)


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
    head = rest[: keyword.start()].split(maxsplit=1)
    count = 1
    if head and re.fullmatch(r"[0-9]+|\$\(.*\)", head[0]):
        count = _count(head.pop(0), line, context)
    names = tuple(n for n in _WORDS.split(" ".join(head)) if n) or ("Item",)
    for name in names:
        if not _VARIABLE.fullmatch(name) or context.reserved(name):
            context.fail(line, f"{name!r} cannot be a queue variable name")
    if kind != "from" and len(names) > 1:
        context.fail(line, f"'queue ... {kind}' takes one variable; use 'from' for several")
    tail = rest[keyword.end() :].strip()
    only = ""
    if kind == "matching":
        word = re.match(r"(files|dirs)\b\s*", tail, re.IGNORECASE)
        if word:
            only, tail = word.group(1).lower(), tail[word.end() :]
    selection = slice(None)
    picked = _SLICE.match(tail)
    if picked:
        selection = _slice(picked, line, context)
        tail = tail[picked.end() :].strip()
    if tail == "(":
        block, index = _block(line, lines, index, context)
    elif tail.startswith("(") and tail.endswith(")"):
        block = [(line, tail[1:-1], "")]
    elif tail.startswith("("):
        context.fail(line, "the item list opened with '(' is not closed on this line")
    elif not tail:
        context.fail(line, f"'queue ... {kind}' needs its items, a file name or '('")
    elif kind == "from":
        block = _read_file(tail, line, context)
    else:
        block = [(line, tail, "")]
    rows: list[tuple[str, ...]]
    if kind == "in":
        rows = [(word,) for _, text, _ in block for word in _WORDS.split(text) if word]
    elif kind == "matching":
        rows = [(name,) for name in _matching(block, only, line, context)]
    else:
        rows = [_columns(row, names, context) for row in block]
    indexes = list(range(len(rows)))[selection]
    chosen = tuple(rows[i] for i in indexes)
    return Queue(line, count, names, chosen, tuple(indexes)), index


def _count(text: str, line: int, context: QueueContext) -> int:
    expanded = context.queue_text(text, line).strip()
    try:
        return values.parse_int(expanded, low=0, high=_MAX_COUNT)
    except ValueError as error:
        context.fail(line, f"queue count: {error}")


def _slice(match: re.Match[str], line: int, context: QueueContext) -> slice:
    start, stop, step = (int(g) if g else None for g in match.groups())
    if step == 0:
        context.fail(line, "the slice step of a queue statement cannot be 0")
    return slice(start, stop, step)


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


def _matching(block: list[_Row], only: str, line: int, context: QueueContext) -> list[str]:
    """The names the patterns match in the submit directory, sorted, without repeats."""
    found: set[str] = set()
    for _, text, _ in block:
        for pattern in (p for p in _WORDS.split(text) if p):
            pattern = context.queue_text(pattern, line)
            if pattern.startswith("/") or ".." in pattern.split("/"):
                context.fail(line, f"pattern {pattern!r} must stay inside the submit directory")
            for name in glob.glob(pattern, root_dir=context.iwd):
                is_dir = os.path.isdir(os.path.join(context.iwd, name))
                if (only == "files" and is_dir) or (only == "dirs" and not is_dir):
                    continue
                found.add(name)
    return sorted(found)


def _columns(item: _Row, names: tuple[str, ...], context: QueueContext) -> tuple[str, ...]:
    line, text, origin = item
    row = text.strip()
    if len(names) == 1:
        return (row,)
    # The last variable takes the rest of the row, separators and all (HTCondor's rule).
    fields = tuple(_COLUMNS.split(row, maxsplit=len(names) - 1))
    if len(fields) != len(names):
        context.fail(
            line,
            f"item row {row!r}{origin} has {len(fields)} values for the {len(names)} "
            f"variables {', '.join(names)}",
        )
    return fields
