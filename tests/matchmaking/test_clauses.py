"""Splitting Requirements into top-level && clauses."""

from __future__ import annotations

import pytest

from pilotage.matchmaking.clauses import (
    RESOURCE_REQUIREMENTS,
    join_clauses,
    resource_of,
    split_clauses,
)


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("a && b", ["a", "b"]),
        ("(a && b) && c", ["a", "b", "c"]),
        ("a && b || c", ["a && b || c"]),
        ("a ? b && c : d", ["a ? b && c : d"]),
        ("(a || b) && (c)", ["a || b", "c"]),
        (
            'f(a && b, "x && y") && [q = 1; r = a && b].q',
            ['f(a && b, "x && y")', "[q = 1; r = a && b].q"],
        ),
        ("((a))", ["a"]),
        ('"a\\"&&b" && c', ['"a\\"&&b"', "c"]),
        ("'odd&&name' && c", ["'odd&&name'", "c"]),
        ("(a) + (b) && c", ["(a) + (b)", "c"]),
        ("a =?= b && c =!= d", ["a =?= b", "c =!= d"]),
        ("", []),
    ],
)
def test_split(text: str, clauses: list[str]) -> None:
    assert split_clauses(text) == clauses


def test_join_round_trip() -> None:
    assert join_clauses([]) == "true"
    assert join_clauses(["a"]) == "a"
    assert split_clauses(join_clauses(["a || b", "c"])) == ["a || b", "c"]


def test_resource_clauses_recognised() -> None:
    assert [resource_of(c) for c in split_clauses(RESOURCE_REQUIREMENTS)] == [
        "cpus",
        "memory",
        "disk",
        "gpus",
    ]
    assert resource_of("Memory >= RequestMemory") == "memory"
    assert resource_of("target.memory >= my.requestmemory") == "memory"
    assert resource_of("TARGET.Memory >= 2 * MY.RequestMemory") is None
    assert resource_of('OpSys == "LINUX"') is None
