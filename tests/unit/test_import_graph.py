"""The package has no import circles: at module level, no module imports (directly or
through others) a module that imports it back. Imports inside functions and under
``TYPE_CHECKING`` are left out: they do not run when the module loads."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import pilotage

PACKAGE = Path(pilotage.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports when it loads."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in node.body if isinstance(node, ast.Try) else [node]:
            if isinstance(inner, ast.Import):
                names.update(alias.name for alias in inner.names)
            elif isinstance(inner, ast.ImportFrom):
                base = inner.module or ""
                if inner.level:
                    anchor = package.split(".")[: len(package.split(".")) - inner.level + 1]
                    base = ".".join([*anchor, *([inner.module] if inner.module else [])])
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in inner.names)
    return {name for name in names if name in known and name != module}


def test_no_module_imports_itself_through_others() -> None:
    known = _modules()
    assert "pilotage.queue.claims" in known  # the walk found the package
    graph = {module: _imported(module, path, known) for module, path in known.items()}
    assert graph["pilotage.queue.endings"] >= {"pilotage.queue.claims"}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(
            f"import circle: {' -> '.join(exc.args[1])}; move what both need into a third module"
        )
