"""One sentence and a documented exit code for the ``ca`` and ``proxy`` commands.

The switch's ``CredentialError`` tree is not part of ``pilotage.errors`` (the switch
imports nothing of the package), so it is mapped here: a malformed credential is bad
input (exit 2), every other refusal is a refused credential (exit 4). Other pilotage
errors keep their own exit codes. With the root ``--debug`` the traceback is shown too.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from typing import NoReturn

import click
import typer

from pilotage.errors import PilotageError
from pilotage.x509.errors import CredentialError, MalformedCredential

EXIT_BAD_INPUT = 2
EXIT_REFUSED = 4


@contextlib.contextmanager
def one_sentence_errors() -> Iterator[None]:
    """Turn credential and pilotage errors raised inside into a message and an exit code."""
    try:
        yield
    except MalformedCredential as exc:
        _fail(exc.message, EXIT_BAD_INPUT)
    except CredentialError as exc:
        _fail(exc.message, EXIT_REFUSED)
    except PilotageError as exc:
        _fail(exc.message, exc.exit_code)


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is not None and getattr(ctx.find_root().obj, "debug", False):
        return True
    # Typer may run the command outside click's context stack; the root flag is in argv.
    return "--debug" in sys.argv[1:]


def _fail(message: str, code: int) -> NoReturn:
    if _debug():
        traceback.print_exc()
    print(f"pilotage: {message}", file=sys.stderr)
    raise typer.Exit(code)
