"""Splitting Requirements into top-level && clauses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotage.matchmaking.classads import new_ad, parse_expr
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


def _expressions() -> st.SearchStrategy[str]:
    atoms = st.sampled_from(
        [
            "true",
            "false",
            "undefined",
            "A > 1",
            'B == "x"',
            "C =?= undefined",
            "(A)",
            "[q = 1].q == A",
            'strcat("&&", B) == "&&x"',
        ]
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.tuples(inner, st.sampled_from([" && ", " || "]), inner).map("".join)
        return st.one_of(
            binary,
            inner.map(lambda e: f"({e})"),
            inner.map(lambda e: f"!{e}"),
            st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
        )

    return st.recursive(atoms, extend, max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(_expressions(), st.integers(0, 3), st.sampled_from(["x", "y"]))
def test_splitting_never_changes_the_meaning(text: str, a: int, b: str) -> None:
    ad = new_ad({"A": a, "B": b})
    printed = str(parse_expr(text))  # the matchmaker splits what classad2 prints
    whole = parse_expr(printed).eval(ad)
    rejoined = parse_expr(join_clauses(split_clauses(printed))).eval(ad)
    assert repr(rejoined) == repr(whole)
