"""``pilotage example NAME DIR``: a scratch copy of an example to try things in.

The examples live in the source checkout's ``examples/`` directory and are never
written to: the README's tour, the demo and the tests work in copies.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

import pilotage
from pilotage.errors import BadInput, NotFound, OperatorError

#: The examples ``pilotage example`` knows, and what each is for.
EXAMPLES = {
    "hello": "20 short jobs (hello.submit) and a long one (long.submit)",
    "provisioning": "a factory's entries, a frontend's settings, a VO with two groups",
}


def examples_root() -> Path:
    """``examples/`` of the source checkout this pilotage runs from."""
    for parent in Path(pilotage.__file__).resolve().parents:
        candidate = parent / "examples"
        if (candidate / "hello" / "hello.submit").is_file():
            return candidate
    raise OperatorError(
        "the examples come with pilotage's source checkout (examples/); this installation "
        "has none: run pilotage from a checkout (make venv)"
    )


def copy_example(name: str, dest: Path) -> Path:
    """Copy example ``name`` to ``dest`` (which must not exist, or be an empty directory)."""
    if name not in EXAMPLES:
        known = ", ".join(sorted(EXAMPLES))
        raise NotFound(f"no example {name!r}; the examples are: {known}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BadInput(f"{dest} exists and is not an empty directory; choose a new directory")
    source = examples_root() / name
    # What earlier runs in the example itself may have left there stays behind.
    leftovers = shutil.ignore_patterns("out", "__pycache__", "*.log", "result-*", "*.token")
    shutil.copytree(source, dest, dirs_exist_ok=True, ignore=leftovers)
    if name == "hello":
        (dest / "out").mkdir(exist_ok=True)  # where the jobs' output and error files go
    return dest


def register(app: typer.Typer) -> None:
    """Add ``example`` to the root command."""

    @app.command("example")
    def example_cmd(
        name: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(EXAMPLES))}.")],
        dest: Annotated[Path, typer.Argument(help="A new directory to copy it to.")],
    ) -> None:
        """Copy an example to a new directory, to try it there (the original stays as is)."""
        copy_example(name, dest)
        typer.echo(f"copied example {name} ({EXAMPLES[name]}) to {dest}")
