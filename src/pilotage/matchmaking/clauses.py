"""Splitting a ClassAd expression into its top-level ``&&`` clauses.

The matchmaker splits a job's ``Requirements`` to take the standard resource clauses out
(it checks those in Python, faster and exactly), and ``q -analyze`` splits it to say
which clause no slot satisfies. Splitting works on the expression as ``classad2`` prints
it, with a small scanner that knows string literals (``"..."`` with backslash escapes),
quoted attribute names (``'...'``) and nesting (``()``, ``[]``, ``{}``).

The precedence rule that makes this safe: ``&&`` binds tighter than ``||`` and the
conditional ``?:``. So if either appears at the top level, the whole expression is a
single clause (``a && b || c`` is ``(a && b) || c``); otherwise it is the conjunction of
the pieces between top-level ``&&``, and a piece wrapped in one pair of parentheses is
split again (``(a && b) && c`` gives ``a``, ``b``, ``c``).
"""

from __future__ import annotations

import re
from typing import Final

#: What the scanner stops at: whole string literals and quoted names (skipped), brackets,
#: and the operators that matter. Everything else is stepped over by the regex engine.
_TOKENS: Final = re.compile(r"""
    "(?:[^"\\]|\\.)*"      # a string literal, backslash escapes
  | '(?:[^'\\]|\\.)*'      # a quoted attribute name
  | =\?=|=!=                 # meta-equality, not a conditional
  | &&|\|\||[?()\[\]{}]
""", re.VERBOSE)  # fmt: skip
_OPENERS: Final = frozenset("([{")
_CLOSERS: Final = frozenset(")]}")


def _top_level_operators(text: str) -> list[tuple[int, str]]:
    """The positions of ``&&``, ``||`` and ``?`` that are outside any nesting or quote."""
    found: list[tuple[int, str]] = []
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in _OPENERS:
            depth += 1
        elif token in _CLOSERS:
            depth -= 1
        elif depth == 0 and token in ("&&", "||", "?"):
            found.append((match.start(), token))
    return found


def _wrapped(text: str) -> bool:
    """Whether ``text`` is one parenthesised group: ``( ... )`` with nothing outside it."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in _OPENERS:
            depth += 1
        elif token in _CLOSERS:
            depth -= 1
            if depth == 0:
                return match.end() == len(text)
    return False


def split_clauses(text: str) -> list[str]:
    """The top-level ``&&`` clauses of an expression, in order, each stripped.

    An expression without a top-level ``&&`` is one clause. Outer parentheses around a
    clause are removed (``(a || b)`` gives ``a || b``).
    """
    text = text.strip()
    if not text:
        return []
    ops = _top_level_operators(text)
    if any(op != "&&" for _, op in ops):
        return [text]
    if not ops:
        return split_clauses(text[1:-1]) if _wrapped(text) else [text]
    clauses: list[str] = []
    start = 0
    for pos, _ in ops:
        clauses.extend(split_clauses(text[start:pos]))
        start = pos + 2
    clauses.extend(split_clauses(text[start:]))
    return clauses


def join_clauses(clauses: list[str]) -> str:
    """The conjunction of ``clauses``, each parenthesised; ``"true"`` for none."""
    if not clauses:
        return "true"
    if len(clauses) == 1:
        return clauses[0]
    return " && ".join(f"({c})" for c in clauses)


#: The four resource clauses the server puts in every job's Requirements, by resource.
#: Each pattern accepts the clause with or without the ``TARGET.``/``MY.`` scopes, in any
#: letter case (ClassAd names are case-insensitive), as ``classad2`` prints it.
RESOURCE_CLAUSES: Final[dict[str, re.Pattern[str]]] = {
    name: re.compile(rf"^(?:target\.)?{slot_attr}\s*>=\s*(?:my\.)?{job_attr}$", re.IGNORECASE)
    for name, slot_attr, job_attr in (
        ("cpus", "cpus", "requestcpus"),
        ("memory", "memory", "requestmemory"),
        ("disk", "disk", "requestdisk"),
        ("gpus", "gpus", "requestgpus"),
    )
}

#: The resource clauses as the server writes them, in order.
RESOURCE_REQUIREMENTS: Final = (
    "TARGET.Cpus >= MY.RequestCpus && TARGET.Memory >= MY.RequestMemory"
    " && TARGET.Disk >= MY.RequestDisk && TARGET.GPUs >= MY.RequestGpus"
)


def resource_of(clause: str) -> str | None:
    """Which resource (``"cpus"``, ``"memory"``, ``"disk"``, ``"gpus"``) a clause checks, if any."""
    for name, pattern in RESOURCE_CLAUSES.items():
        if pattern.match(clause.strip()):
            return name
    return None


#: The job attribute listing the sites that denied the job's owner (switch 203).
EXCLUDED_SITES: Final = "ExcludedSites"
#: The clause a denial adds to a job's Requirements (queue/denials.py): no slot of an
#: excluded site matches it. ``Site`` is the slot attribute the server sets from the
#: pilot's registration (matchmaking/ads.py), never from the pilot's word at match time.
EXCLUDED_SITES_CLAUSE: Final = f"!member(TARGET.Site, {EXCLUDED_SITES})"
