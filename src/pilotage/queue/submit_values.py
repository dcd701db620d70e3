"""Values of the submit language's commands: arguments, environment, sizes, paths, choices.

Each parser takes one command's value after macro expansion and returns a typed value,
or raises :class:`ValueError` whose message is one clause naming what is wrong. The
caller (:mod:`pilotage.queue.submit`) turns that into a ``SubmitError`` with the file
name and line, so nothing here knows where the value came from.

Quoting follows the HTCondor documentation for ``arguments`` and ``environment``:

- *new style*: the whole value is in double quotes. Inside, whitespace separates
  tokens; a single-quoted section keeps its whitespace; ``''`` inside a single-quoted
  section is one literal ``'``; ``""`` anywhere is one literal ``"``.
- *old style* (no leading double quote): arguments split on whitespace with ``\\"``
  for a literal ``"``; environment is ``NAME=value`` pairs separated by ``;``.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable
from fractions import Fraction
from functools import partial

from pilotage.queue.jobad import whole_expression
from pilotage.queue.spec import ENV_NAME

_INTEGER = re.compile(r"[+-]?[0-9]+")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGT]B?)?", re.IGNORECASE)
#: Size of one unit in MB; K is 1/1024 MB (units are binary, as in HTCondor).
_UNIT_MB = {"K": Fraction(1, 1024), "M": Fraction(1), "G": Fraction(1024), "T": Fraction(1024**2)}
_TRUE = frozenset({"true", "yes"})
_FALSE = frozenset({"false", "no"})


def parse_arguments(value: str) -> list[str]:
    """Split an ``arguments`` value into the program's argument vector."""
    if value.startswith('"'):
        return _split_quoted(_unquote(value))
    if '"' in value.replace('\\"', ""):
        raise ValueError(
            'a double quote in old-style arguments must be written \\"; '
            "or quote the whole value to use the new style"
        )
    return [token.replace('\\"', '"') for token in value.split()]


def parse_environment(value: str) -> dict[str, str]:
    """Turn an ``environment`` value into a mapping of variable name to value."""
    if value.startswith('"'):
        pairs = _split_quoted(_unquote(value))
    else:
        pairs = [piece.strip() for piece in value.split(";") if piece.strip()]
    environment: dict[str, str] = {}
    for pair in pairs:
        name, equals, content = pair.partition("=")
        if not equals:
            raise ValueError(f"{pair!r} is not NAME=value")
        if not ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        environment[name] = content
    return environment


def parse_memory_mb(value: str) -> int:
    """``request_memory`` in MB, rounded up; a plain number is already MB."""
    return _size_mb(value, plain=Fraction(1), low=1, high=16 * 1024**2)


def parse_disk_mb(value: str) -> int:
    """``request_disk`` in MB, rounded up; a plain number is KB, as in HTCondor."""
    return _size_mb(value, plain=_UNIT_MB["K"], low=0, high=1024**3)


def parse_cpus(value: str) -> int:
    """``request_cpus``: at least one."""
    return parse_int(value, low=1, high=1024)


def parse_gpus(value: str) -> int:
    """``request_gpus``."""
    return parse_int(value, low=0, high=64)


def parse_priority(value: str) -> int:
    """``priority``: higher runs first among one user's jobs."""
    return parse_int(value, low=-1_000_000, high=1_000_000)


def parse_int(value: str, *, low: int, high: int) -> int:
    """A whole number within ``low`` and ``high`` inclusive."""
    if not _INTEGER.fullmatch(value):
        raise ValueError(f"{value!r} is not a whole number")
    number = int(value)
    if not low <= number <= high:
        raise ValueError(f"{number} is out of range: it must be between {low} and {high}")
    return number


def parse_bool(value: str) -> bool:
    """``true``/``yes`` or ``false``/``no``, in any case."""
    word = value.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{value!r} is not true or false")


def parse_choice(value: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``, compared without case; returns the canonical spelling."""
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ValueError(f"{value!r} is not one of {', '.join(choices)}")


def parse_expression(value: str) -> str:
    """Check that ``value`` is one ClassAd expression and return it unchanged."""
    try:
        whole_expression(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid ClassAd expression") from None
    return value


def split_list(value: str) -> list[str]:
    """Split a comma-separated list of file names, dropping empty entries."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def parse_text(value: str) -> str:
    """A value taken as written (a path or a name)."""
    return value


def parse_universe(value: str) -> str:
    """``universe``: vanilla, or container (with ``container_image``)."""
    if value.lower() not in ("vanilla", "container"):
        raise ValueError(
            f"universe {value!r} is not supported: pilotage runs vanilla and container jobs"
        )
    return value.lower()


def parse_getenv(value: str) -> bool:
    """``getenv``: must be false, because the job does not run where it was submitted."""
    if value.lower() not in _FALSE:
        raise ValueError(
            "must be false: the job runs under a pilot on a worker node, whose environment "
            "is not the one you submit from; pass what the job needs with 'environment'"
        )
    return False


def parse_output_path(value: str) -> str:
    """``output``/``error``: a name inside the job's directory."""
    if value.startswith("/") or ".." in posixpath.normpath(value).split("/"):
        raise ValueError(
            f"{value!r} must be a name inside the job's directory: outputs come back to "
            "initialdir under their base name, so set initialdir to choose where they land"
        )
    return value


def parse_output_list(value: str) -> list[str]:
    """``transfer_output_files``: names inside the job's directory."""
    return [parse_output_path(entry) for entry in split_list(value)]


def parse_input_name(value: str) -> str:
    """``input``: a file on the submit host, so it must end in a file name."""
    if posixpath.basename(value) in ("", ".", ".."):
        raise ValueError(f"{value!r} does not name a file")
    return value


def parse_duration(value: str) -> int:
    """``allowed_job_duration``: the job's walltime, a whole number of seconds."""
    if not _INTEGER.fullmatch(value) or not 1 <= int(value) <= 366 * 86400:
        raise ValueError(f"{value!r} is not a number of seconds between 1 and 31622400")
    return int(value)


def parse_false_log_xml(value: str) -> bool:
    """``log_xml``: the XML event log is not written; only false is accepted."""
    if parse_bool(value):
        raise ValueError(
            "the XML event log is not supported: drop log_xml, the log is written in "
            "HTCondor's text form (or JSON with PILOTAGE_USERLOG_FORMAT=json)"
        )
    return False


def parse_exit_code(value: str) -> int:
    """``success_exit_code``: an exit code, 0 to 255."""
    return parse_int(value, low=0, high=255)


def parse_retries(value: str) -> int:
    """``max_retries``: how many times a job that did not succeed runs again."""
    return parse_int(value, low=0, high=10_000)


def parse_retry_until(value: str) -> str:
    """``retry_until``: an expression, or an exit code meaning ``ExitCode == N``."""
    if _INTEGER.fullmatch(value):
        return f"ExitCode == {parse_exit_code(value)}"
    return parse_expression(value)


def parse_name(value: str) -> str:
    """An accounting group or user: letters, digits, ``_ . - @``; quotes are dropped."""
    name = value.strip('"')
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}", name):
        raise ValueError(f"{value!r} is not a name of letters, digits, '_', '.', '-' or '@'")
    return name


def parse_label(value: str) -> str:
    """``batch_name``: free text on one line; surrounding double quotes are dropped."""
    label = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if not label or len(label) > 256 or '"' in label:
        raise ValueError(f"{value!r} must be 1 to 256 characters without a double quote inside")
    return label


def parse_emails(value: str) -> str:
    """``notify_user``: one or more mail addresses, separated by commas."""
    for address in split_list(value):
        if not re.fullmatch(r"[^@\s,;<>]+@[^@\s,;<>]+", address):
            raise ValueError(f"{address!r} is not a mail address such as alice@example.org")
    return value


def parse_remaps(value: str) -> dict[str, str]:
    """``transfer_output_remaps``: ``"name = destination; ..."`` (the quotes are optional).

    ``name`` is an output in the job's directory; ``destination`` is where it lands on the
    submit host (relative to ``initialdir``, or absolute).
    """
    text = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    remaps: dict[str, str] = {}
    for piece in (p.strip() for p in text.split(";")):
        if not piece:
            continue
        name, equals, destination = (part.strip() for part in piece.partition("="))
        if not equals or not name or not destination:
            raise ValueError(f"{piece!r} is not 'name = destination'")
        parse_output_path(name)
        if destination.endswith("/"):
            raise ValueError(f"destination {destination!r} must name a file, not a directory")
        remaps[name] = destination
    if not remaps:
        raise ValueError('give at least one "name = destination"')
    return remaps


#: Every command the language knows, with the parser that checks its value.
COMMANDS: dict[str, Callable[[str], object]] = {
    "executable": parse_text,
    "transfer_executable": parse_bool,
    "arguments": parse_arguments,
    "environment": parse_environment,
    "input": parse_input_name,
    "output": parse_output_path,
    "error": parse_output_path,
    "log": parse_text,
    "transfer_input_files": split_list,
    "transfer_output_files": parse_output_list,
    "request_cpus": parse_cpus,
    "request_memory": parse_memory_mb,
    "request_disk": parse_disk_mb,
    "request_gpus": parse_gpus,
    "requirements": parse_expression,
    "rank": parse_expression,
    "priority": parse_priority,
    "initialdir": parse_text,
    "universe": parse_universe,
    "should_transfer_files": partial(parse_choice, choices=("YES", "IF_NEEDED", "NO")),
    "when_to_transfer_output": partial(parse_choice, choices=("ON_EXIT", "ON_EXIT_OR_EVICT")),
    "notification": partial(
        parse_choice, choices=("never", "error", "complete", "always", "start")
    ),
    "getenv": parse_getenv,
    "use_x509userproxy": parse_bool,
    "x509userproxy": parse_text,
    "allowed_job_duration": parse_duration,
    "max_retries": parse_retries,
    "retry_until": parse_retry_until,
    "success_exit_code": parse_exit_code,
    **{
        f"{when}_{what}": parse_expression
        for when, what in (
            ("periodic", "hold"),
            ("periodic", "release"),
            ("periodic", "remove"),
            ("on_exit", "hold"),
            ("on_exit", "remove"),
            ("periodic", "hold_reason"),
            ("periodic", "hold_subcode"),
            ("on_exit", "hold_reason"),
            ("on_exit", "hold_subcode"),
        )
    },
    "transfer_output_remaps": parse_remaps,
    "stream_output": parse_bool,
    "stream_error": parse_bool,
    "batch_name": parse_label,
    "accounting_group": parse_name,
    "accounting_group_user": parse_name,
    "notify_user": parse_emails,
    "log_xml": parse_false_log_xml,
    "image_size": parse_disk_mb,
}


def _size_mb(value: str, *, plain: Fraction, low: int, high: int) -> int:
    match = _SIZE.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a size such as 512, 512M, 2G or 1.5GB")
    number, unit = match.groups()
    size_mb = math.ceil(Fraction(number) * (_UNIT_MB[unit[0].upper()] if unit else plain))
    if not low <= size_mb <= high:
        raise ValueError(f"{value!r} is {size_mb} MB: it must be between {low} MB and {high} MB")
    return size_mb


def _unquote(value: str) -> str:
    """Strip the outer double quotes of a new-style value.

    A stray quote left inside (``"a"b"``) is caught by :func:`_split_quoted`.
    """
    if len(value) < 2 or not value.endswith('"'):
        raise ValueError("the opening double quote has no closing double quote")
    return value[1:-1]


def _split_quoted(text: str) -> list[str]:
    """Tokenize the inside of a new-style value (see the module docstring)."""
    tokens: list[str] = []
    current: list[str] = []
    started = False  # Invariant: True while a token (possibly empty, as in '') is open.
    quoted = False  # Invariant: True between an opening ' and its closing '.
    i = 0
    while i < len(text):
        char = text[i]
        following = text[i + 1 : i + 2]
        if char == '"':
            if following != '"':
                raise ValueError('a double quote inside the value must be doubled ("")')
            current.append('"')
            started = True
            i += 2
        elif char == "'":
            if quoted and following == "'":
                current.append("'")
                i += 2
            else:
                quoted = not quoted
                started = True
                i += 1
        elif char.isspace() and not quoted:
            if started:
                tokens.append("".join(current))
                current, started = [], False
            i += 1
        else:
            current.append(char)
            started = True
            i += 1
    if quoted:
        raise ValueError("a single quote is not closed")
    if started:
        tokens.append("".join(current))
    return tokens
