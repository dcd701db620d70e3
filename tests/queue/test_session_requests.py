"""A session's request (exec-in-job, ssh-to-job) as the server checks it: each kind of bad
input refused with a sentence naming it (queue/sessions.py)."""

from __future__ import annotations

import pytest

from pilotage.errors import BadInput
from pilotage.queue.sessions import MAX_ARG_BYTES, SessionRequest


def parse(command: list[str], tty: str = "0", rows: str = "24", cols: str = "80",
          term: str = "dumb") -> SessionRequest:  # fmt: skip
    return SessionRequest.parse(command, tty, rows, cols, term)


def test_a_command_and_a_shell() -> None:
    command = parse(["ls", "-l"])
    assert (command.command, command.kind, command.tty) == (("ls", "-l"), "exec", False)
    shell = parse([], tty="1", rows="50", cols="132", term="xterm-256color")
    assert (shell.kind, shell.tty, shell.rows, shell.cols, shell.term) == (
        "shell",
        True,
        50,
        132,
        "xterm-256color",
    )


@pytest.mark.parametrize(
    ("command", "fields", "message"),
    [
        (["x"] * 257, {}, "the command has 257 arguments; at most 256"),
        (["echo", "a\0b"], {}, "a command argument has a NUL byte"),
        (["echo", "a" * (MAX_ARG_BYTES + 1)], {}, f"longer than {MAX_ARG_BYTES} bytes"),
        (["echo", *["a" * 4000] * 5], {}, "the command is longer than 16384 bytes"),
        (["", "x"], {}, "the command's program name is empty"),
        (["id"], {"tty": "yes"}, "tty='yes': use 0 or 1"),
        (["id"], {"rows": "0"}, "rows='0': use a whole number from 1 to 1000"),
        (["id"], {"cols": "wide"}, "cols='wide': use a whole number from 1 to 1000"),
        (["id"], {"term": "xterm;rm -rf"}, "is not a terminal name"),
    ],
)
def test_bad_requests_are_refused_naming_what_is_wrong(
    command: list[str], fields: dict[str, str], message: str
) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(command, **fields)
