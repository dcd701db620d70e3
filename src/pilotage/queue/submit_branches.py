"""``if``/``elif``/``else``/``endif`` in a submit description: which lines are in effect.

A condition, as HTCondor's manual gives it, is ``[!] defined NAME``, ``version OP
X.Y[.Z]``, ``true``/``yes``/``false``/``no``, a number, a macro that expands to nothing
(false), or a ClassAd expression of constants. Anything else is an error naming the line:
a condition that cannot be decided must not silently pick a branch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

import classad2

#: The HTCondor version whose submit language the parser follows (``if version >= ...``).
HTCONDOR_VERSION = (24, 0, 0)
_IF = re.compile(r"(if|elif)\s+(.*)", re.IGNORECASE | re.DOTALL)
Fail = Callable[[int, str], NoReturn]


def decide(
    text: str,
    line: int,
    *,
    expand: Callable[[str], str],
    is_defined: Callable[[str], bool],
    fail: Fail,
) -> bool:
    """The truth of the condition ``text`` of an ``if`` or ``elif`` on ``line``."""
    negate = text.startswith("!")
    body = text[1:].strip() if negate else text
    defined = re.fullmatch(r"defined\s+(\S+)", body, re.IGNORECASE)
    if defined:
        name = defined.group(1)
        return (name.startswith("$") or is_defined(name)) != negate
    expanded = expand(text).strip()
    version = re.fullmatch(r"version\s*(==|!=|>=|<=|>|<)\s*([0-9.]+)", expanded, re.I)
    if version:
        wanted = tuple(int(p) for p in version.group(2).strip(".").split("."))
        ours = HTCONDOR_VERSION[: len(wanted)]
        ops = {"==": ours == wanted, "!=": ours != wanted, ">=": ours >= wanted}
        ops.update({"<=": ours <= wanted, ">": ours > wanted, "<": ours < wanted})
        return ops[version.group(1)]
    lower = expanded.lower()
    if not lower:  # A macro that expands to nothing is false, as in HTCondor.
        return False
    if lower in ("true", "yes", "false", "no"):
        return lower in ("true", "yes")
    try:
        result = classad2.ExprTree(expanded).eval()
    except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
        result = None
    if type(result) in (bool, int, float):  # Not classad2's Value enum (undefined).
        return bool(result)
    fail(
        line,
        f"cannot decide 'if {text}': use defined NAME, version >= X.Y, true/false, a number "
        "or a ClassAd expression of constants",
    )


def defined_names(line: str) -> set[str]:
    """The name an ``if defined NAME`` reads (so that setting it is not an unknown command)."""
    match = re.match(r"(?:el)?if\s+!?\s*defined\s+(\w+)", line, re.IGNORECASE)
    return {match.group(1).lower()} if match else set()


class Branches:
    """The ``if``/``elif``/``else``/``endif`` nesting, deciding which lines are in effect.

    Invariant: each frame is [parent active, this branch active, a branch was taken,
    else seen, line of its if]; ``active`` is the innermost branch's.
    """

    def __init__(self, condition: Callable[[str, int], bool], fail: Fail) -> None:
        self.condition = condition
        self.fail = fail
        self.frames: list[list[Any]] = []

    @property
    def active(self) -> bool:
        return not self.frames or bool(self.frames[-1][1])

    def take(self, line: int, text: str) -> bool:
        """Handle ``text`` if it is a branch statement; return whether it was one."""
        keyword = _IF.fullmatch(text)
        word = (keyword.group(1) if keyword else text).lower()
        if word == "if" and keyword:
            on = self.active and self.condition(keyword.group(2).strip(), line)
            self.frames.append([self.active, on, on, False, line])
        elif word in ("elif", "else", "endif") and not self.frames:
            self.fail(line, f"'{word}' without an 'if' before it")
        elif word == "elif" and keyword:
            frame = self.frames[-1]
            if frame[3]:
                self.fail(line, "'elif' after 'else'")
            on = frame[0] and not frame[2] and self.condition(keyword.group(2), line)
            frame[1], frame[2] = on, frame[2] or on
        elif word == "else":
            frame = self.frames[-1]
            if frame[3]:
                self.fail(line, "a second 'else' for one 'if'")
            frame[1], frame[3] = frame[0] and not frame[2], True
        elif word == "endif":
            self.frames.pop()
        else:
            return False
        return True

    def close(self) -> None:
        if self.frames:
            self.fail(self.frames[-1][4], "this 'if' has no 'endif'")
