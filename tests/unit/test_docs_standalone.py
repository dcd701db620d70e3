"""The documents stand alone: nothing in them refers outside the repository (a design
file kept elsewhere, source documents by internal names, a path on some machine), and
every document they name exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(
    r"DESIGN\.md|\.\./shared|/work/|\bseeds?/|\bseed \d{3}|\b00[0-3]_[0-9a-f]{16}",
    re.IGNORECASE,
)


def _documents() -> list[Path]:
    found = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found += sorted(p for p in (REPO / "examples").rglob("*") if p.is_file())
    return found


def test_no_document_refers_outside_the_repository() -> None:
    hits = []
    for path in _documents():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_every_named_document_exists() -> None:
    missing = []
    for path in _documents():
        for name in re.findall(r"\bdocs/[a-z0-9-]+\.md\b", path.read_text(errors="replace")):
            if not (REPO / name).is_file():
                missing.append(f"{path.relative_to(REPO)} names {name}")
    assert not missing, "\n".join(missing)
