"""Every command's --help renders (help texts are shown through rich markup)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer

from pilotage.cli import main as cli_main


def _command_paths() -> list[list[str]]:
    cli_main._register()
    root = typer.main.get_command(cli_main.app)
    paths: list[list[str]] = []

    def walk(command: Any, prefix: list[str]) -> None:
        paths.append(prefix)
        # typer may build its commands with a click of its own: look for groups by shape.
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "pilotage")
def test_help_renders(path: list[str]) -> None:
    if path == ["pilot"]:
        pytest.skip("the pilot command hands its arguments to the agent, tested in tests/pilot")
    result = subprocess.run(
        [sys.executable, "-m", "pilotage.cli", *path, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "internal error" not in result.stderr
