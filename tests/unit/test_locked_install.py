"""The installation is the locked one: every dependency pyproject.toml names is in
constraints.txt, and the packages pilotage[dev] needs (its requirements, and theirs) are
installed exactly at the versions constraints.txt names, no more and no fewer. 'make
venv' installs them so on a fresh machine; 'make lock' renews the file."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
#: Installed by 'make venv' from the lock, but no requirement of pilotage's.
TOOLS = {"pip", "setuptools", "wheel"}


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(t) for t in texts]


def _needed() -> dict[str, str]:
    """The installed versions of every package pilotage[dev] requires, transitively."""
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("pilotage", frozenset({"dev"}))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = metadata.distribution(name)
        key = canonicalize_name(name)
        if key != "pilotage":
            found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            )
            if wanted:
                todo.append((req.name, frozenset(req.extras)))
    return found


def test_every_declared_dependency_is_locked() -> None:
    locked = _locked()
    missing = [str(r) for r in _declared() if canonicalize_name(r.name) not in locked]
    assert not missing, f"{missing} not in constraints.txt: run 'make lock'"
    for req in _declared():
        version = locked[canonicalize_name(req.name)]
        assert req.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {req.name}=={version}, outside pyproject's {req}: "
            "run 'make lock'"
        )


def test_the_installed_packages_are_exactly_the_locked_ones() -> None:
    def key(req: Requirement) -> str:
        return f"{canonicalize_name(req.name)}{sorted(req.extras)}{req.specifier}"

    requires = metadata.distribution("pilotage").requires or []
    installed = {key(Requirement(text)) for text in requires}
    stale = sorted({key(r) for r in _declared()} - installed)
    assert not stale, f"the installed pilotage lacks {stale}: run 'make venv'"
    locked = {k: v for k, v in _locked().items() if k not in TOOLS}
    needed = _needed()
    unlocked = sorted(set(needed) - set(locked))
    assert not unlocked, f"{unlocked} are needed but not locked: run 'make lock'"
    unneeded = sorted(set(locked) - set(needed))
    assert not unneeded, f"{unneeded} are locked but nothing needs them: run 'make lock'"
    wrong = {k: (needed[k], locked[k]) for k in needed if needed[k] != locked[k]}
    assert not wrong, f"installed vs locked versions differ {wrong}: run 'make venv'"
