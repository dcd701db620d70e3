"""The submit language: an HTCondor-style submit description in, one ``JobSpec`` per job out.

The language is ``condor_submit``'s: ``name = value`` commands with case-insensitive
names, full-line ``#`` comments, ``\\`` continuation, macros and function macros
(:mod:`pilotage.queue.submit_macros`), ``+Attr``/``MY.Attr`` ad attributes,
``if``/``elif``/``else``/``endif``, ``include : FILE`` and ``queue`` statements in all
their forms (:mod:`pilotage.queue.submit_items`). Where HTCondor is lenient this parser
is strict on purpose: an unknown command is an error (with a suggestion), as is a macro
that is never defined, a macro form not supported, a command after the last ``queue``,
or a universe other than vanilla. The commands are listed in ``docs/submit.md``.

Macros are looked up when a job is queued, not when they are defined, so each
``queue`` sees the commands in effect at that point and per-job macros (``$(Process)``,
``$(Item)``) reach every command. As in HTCondor, ``executable`` (and a ``queue ...
from`` items file) is relative to the submit directory, while the other submit-host
paths (``transfer_input_files``, ``input``, ``log``) are relative to ``initialdir``.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import random
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import pydantic

from pilotage.credentials.proxy import default_proxy_path
from pilotage.errors import BadInput
from pilotage.queue import submit_branches as branches_mod
from pilotage.queue import submit_extras as extras
from pilotage.queue import submit_macros as macros
from pilotage.queue import submit_values as values
from pilotage.queue.spec import ATTR_NAME, JobPolicy, JobSpec
from pilotage.queue.submit_items import Queue, parse_queue

T = TypeVar("T")
U = TypeVar("U")
_COMMANDS = {**values.COMMANDS, **extras.COMMANDS}
_EXPRESSION = values.parse_expression

#: Most jobs one submit description may queue (the API's limit for one cluster).
MAX_JOBS = 100_000
_MACRO_DEPTH = 32
_MAX_INCLUDES = 32
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"([^=\s]+)\s*=\s*(.*)", re.DOTALL)
_QUEUE = re.compile(r"queue(?:\s+(.*))?", re.IGNORECASE | re.DOTALL)
_INCLUDE = re.compile(r"include\s*(\w*)\s*:\s*(.*)", re.IGNORECASE | re.DOTALL)
#: Other spellings HTCondor accepts for a command.
_ALIASES = {"initial_dir": "initialdir", "jobbatchname": "batch_name"}
#: Macros the parser defines itself; a submit file may read but not set them.
_BUILTIN = frozenset(
    {"cluster", "clusterid", "process", "procid", "owner", "itemindex", "step", "row"}
    | {"dollar", "submit_file"}
)
#: Attributes a ``+Attr`` may not set: the command to use instead, or who sets it.
_RESERVED_ATTRS = {
    "requirements": "the requirements command",
    "rank": "the rank command",
    "jobprio": "the priority command",
    "requestcpus": "request_cpus",
    "requestmemory": "request_memory",
    "requestdisk": "request_disk",
    "requestgpus": "request_gpus",
    "cmd": "executable",
    "iwd": "initialdir",
    **{a: "the server" for a in ("owner", "user", "clusterid", "procid", "jobstatus", "qdate")},
}


class SubmitError(BadInput):
    """A submit description, or a file it names, is wrong.

    The message starts with ``<source>, line N:`` when the line is known (``line``
    is then 1-based), with ``<source>:`` when only the file is, and is the bare
    problem for checks that are not tied to a file (:func:`check_inputs`).
    """

    def __init__(self, problem: str, *, source: str | None = None, line: int | None = None):
        where = source if line is None else f"{source or 'submit description'}, line {line}"
        super().__init__(f"{where}: {problem}" if where else problem)
        self.problem = problem
        self.source = source
        self.line = line


#: JobSpec fields taken straight from the command of that name, once parsed.
_FIELDS = {
    **{c: c for c in ("arguments", "environment", "output", "error", "transfer_output_files")},
    **{c: c for c in ("request_cpus", "request_gpus", "requirements", "rank", "priority")},
    "request_memory_mb": "request_memory",
    "request_disk_mb": "request_disk",
    "max_walltime_s": "allowed_job_duration",
    **{c: c for c in ("transfer_output_remaps", "stream_output", "stream_error", "batch_name")},
    **{c: c for c in ("accounting_group", "accounting_group_user", "notify_user")},
    "notification": "notification",
}
#: JobPolicy fields, each from the command of that name.
_POLICY = tuple(JobPolicy.model_fields)
#: Commands accepted for compatibility: checked, then without effect.
_CHECK_ONLY = (
    "universe",
    "should_transfer_files",
    "when_to_transfer_output",
    "log_xml",
    "image_size",
)


@dataclass(frozen=True)
class _Setting:
    """One ``name = value`` as written: ``key`` keeps the user's spelling for messages."""

    key: str
    value: str
    line: int


def parse_submit(
    text: str, *, source: str, iwd: Path, cluster_id: int, owner: str
) -> list[JobSpec]:
    """Parse a submit description into the jobs of cluster ``cluster_id``, in ProcId order.

    ``source`` names the description in messages; ``iwd`` is the directory it was
    submitted from. Nothing is read from disk except ``queue ... from FILE`` items
    files; use :func:`check_inputs` to check the files the jobs will transfer.
    Raises :class:`SubmitError` on the first problem found.
    """
    return _Parser(text, source, iwd, cluster_id, owner).run()


def check_inputs(jobs: list[JobSpec]) -> None:
    """Check on the submit host that every job's files are there and readable.

    Covers each job's initial directory, its executable when transferred and its
    ``transfer_input_files`` (which include ``input``). Raises :class:`SubmitError`
    naming the first missing or unreadable one by its absolute path.
    """
    checked: set[str] = set()
    for job in jobs:
        wanted = [("initial directory", job.iwd)]
        if job.transfer_executable:
            wanted.append(("executable", job.executable))
        wanted += [("input file", path) for path in job.transfer_input_files]
        for what, path in wanted:
            if path not in checked:
                checked.add(path)
                _check_readable(what, path.rstrip("/") or "/")


def _check_readable(what: str, path: str) -> None:
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        raise SubmitError(f"{what} {path} does not exist") from None
    except OSError as error:  # A parent directory you cannot search, a loop of links...
        raise SubmitError(f"{what} {path} cannot be reached: {error.strerror}") from None
    if what == "initial directory" and not is_dir:
        raise SubmitError(f"{what} {path} is not a directory")
    if what == "executable" and is_dir:
        raise SubmitError(f"{what} {path} is a directory, not a program")
    if not os.access(path, os.R_OK | (os.X_OK if is_dir else 0)):
        raise SubmitError(f"{what} {path} is not readable by you")


class _Parser:
    """One pass over a submit description; holds the commands in effect so far."""

    def __init__(self, text: str, source: str, iwd: Path, cluster_id: int, owner: str) -> None:
        self.lines = _logical_lines(text)
        self.source = source
        self.iwd = posixpath.normpath(os.path.abspath(iwd))
        self.fixed = {
            "cluster": str(cluster_id),
            "clusterid": str(cluster_id),
            "owner": owner,
            "dollar": "$",
            "submit_file": source,
        }
        # A name that is not a command may be set only if the file reads it somewhere.
        self.referenced: set[str] = set()
        for _, line in self.lines:
            self.referenced |= macros.referenced_names(line) | branches_mod.defined_names(line)
        self.settings: dict[str, _Setting] = {}
        self.attrs: dict[str, tuple[str, _Setting]] = {}  # lower name: (name, setting)
        self.jobs: list[JobSpec] = []
        self.random = random.Random()
        # Lines spliced in by 'include' carry numbers past every real one: number -> place.
        self.included: dict[int, tuple[str, int]] = {}
        self.includes = 0
        self.macros: dict[str, _Setting] = {}  # names set that are not commands

    def fail(self, line: int | None, problem: str) -> NoReturn:
        if line in self.included:
            source, number = self.included[line]
            raise SubmitError(problem, source=source, line=number)
        raise SubmitError(problem, source=self.source, line=line)

    def run(self) -> list[JobSpec]:
        lines = self.lines
        unused: _Setting | None = None  # the first setting since the last queue
        queued = False
        index = 0
        branches = branches_mod.Branches(self.condition, self.fail)
        while index < len(lines):
            number, text = lines[index]
            index += 1
            if "\x00" in text:
                self.fail(number, "the line contains a NUL byte")
            if branches.take(number, text) or not branches.active:
                continue
            assign = _ASSIGN.fullmatch(text)
            queue = None if assign else _QUEUE.fullmatch(text)
            include = None if assign or queue else _INCLUDE.fullmatch(text)
            if include:
                self.include(include.group(1), include.group(2).strip(), number, index)
            elif assign:
                setting = self.assign(assign.group(1), assign.group(2).strip(), number)
                unused = unused or setting
            elif queue:
                spec, index = parse_queue(queue.group(1) or "", number, lines, index, self)
                self.queue(spec)
                queued, unused = True, None
            else:
                self.fail(number, f"expected 'command = value' or 'queue', not {text!r}")
        branches.close()
        for lower, setting in sorted(self.macros.items(), key=lambda item: item[1].line):
            if lower not in self.referenced:
                close = difflib.get_close_matches(lower, list(_COMMANDS), n=1)
                hint = f" (no $({setting.key}) uses it as a macro)"
                hint = f" (did you mean {close[0]}?)" if close else hint
                self.fail(setting.line, f"unknown submit command {setting.key!r}{hint}")
        if not queued:
            self.fail(None, "no queue statement: end the description with 'queue'")
        if unused:
            self.fail(
                unused.line,
                f"{unused.key!r} comes after the last queue statement, so no job would use it; "
                "move it above 'queue'",
            )
        if not self.jobs:
            self.fail(None, "the queue statements queue no jobs")
        return self.jobs

    def assign(self, key: str, value: str, line: int) -> _Setting:
        """Record one ``key = value``; check what can be checked before any job exists."""
        lower = _ALIASES.get(key.lower(), key.lower())
        setting = _Setting(key, value, line)
        if key.startswith("+") or lower.startswith("my."):
            name = key[1:] if key.startswith("+") else key[3:]
            if not ATTR_NAME.fullmatch(name):
                self.fail(line, f"{name!r} is not a valid ClassAd attribute name")
            if name.lower() in _RESERVED_ATTRS:
                self.fail(line, f"{key} cannot be set here: use {_RESERVED_ATTRS[name.lower()]}")
            if not value:
                self.fail(line, f"{key} needs a ClassAd expression as its value")
            self.check_now(setting, values.parse_expression)
            self.attrs[name.lower()] = (name, setting)
            return setting
        if lower in _COMMANDS:
            self.check_now(setting, _COMMANDS[lower])
        elif lower in _BUILTIN:
            self.fail(line, f"$({key}) is set by pilotage and cannot be assigned")
        elif not _NAME.fullmatch(key):
            self.fail(line, f"{key!r} is not a valid command or macro name")
        else:  # A macro: checked at the end, once every include has been read.
            self.macros.setdefault(lower, setting)
        if value:
            self.settings[lower] = setting
        else:  # As in HTCondor, an empty value unsets the command.
            self.settings.pop(lower, None)
        return setting

    def include(self, form: str, name: str, line: int, index: int) -> None:
        """Splice the lines of ``include : FILE`` in after ``line`` (at ``index``)."""
        if form or name.endswith("|"):
            self.fail(
                line,
                "include of a command's output is not supported: run the command yourself "
                "and 'include : FILE' its output",
            )
        self.includes += 1
        if self.includes > _MAX_INCLUDES:
            self.fail(line, f"more than {_MAX_INCLUDES} includes (does a file include itself?)")
        path = posixpath.join(self.iwd, self.expand(name, line, self.fixed, ()))
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            why = getattr(error, "strerror", None) or "it is not UTF-8 text"
            self.fail(line, f"cannot include {path}: {why}")
        base = (self.includes + 1) * 10_000_000
        spliced = [(base + n, t) for n, t in _logical_lines(text)]
        self.included.update({base + n: (path, n) for n, _ in _logical_lines(text)})
        for _, t in spliced:
            self.referenced |= macros.referenced_names(t) | branches_mod.defined_names(t)
        self.lines[index:index] = spliced

    def check_now(self, setting: _Setting, parse: Callable[[str], object]) -> None:
        """Check a value that needs no macro at once, so even an overridden one is caught."""
        if setting.value and "$" not in setting.value:
            self.parse(setting, setting.value, parse)

    def parse(self, setting: _Setting, text: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(text)
        except ValueError as error:
            self.fail(setting.line, f"{setting.key}: {error}")

    def expand(self, text: str, line: int, scope: Mapping[str, str], chain: tuple[str, ...]) -> str:
        """Replace every macro in ``text`` (written on ``line``), recursively."""
        if "$" not in text:
            return text

        def lookup(name: str) -> str | None:
            lower = name.lower()
            if lower in scope:
                return scope[lower]
            if lower not in self.settings:
                return None
            if lower in chain or len(chain) >= _MACRO_DEPTH:
                loop = " -> ".join(f"$({n})" for n in (*chain, lower))
                self.fail(line, f"macro loop: {loop}")
            setting = self.settings[lower]
            return self.expand(setting.value, setting.line, scope, (*chain, lower))

        try:
            return macros.expand(text, lookup, rng=self.random, cwd=self.iwd)
        except macros.MacroError as error:
            hint = ""
            if "$(item)" in str(error).lower():
                hint = " (it is set by 'queue ... in' or 'queue ... from')"
            self.fail(line, f"{error}{hint}")

    def queue(self, spec: Queue) -> None:
        """Queue the jobs of one ``queue`` statement with the commands now in effect."""
        total = spec.count * len(spec.rows)
        if len(self.jobs) + total > MAX_JOBS:
            self.fail(
                spec.line, f"this queues {len(self.jobs) + total} jobs; the limit is {MAX_JOBS}"
            )
        for item_index, row in zip(spec.indexes, spec.rows, strict=True):
            for step in range(spec.count):
                proc = str(len(self.jobs))
                scope = {**self.fixed, "process": proc, "procid": proc, "step": str(step)}
                scope.update(itemindex=str(item_index), row=str(item_index))
                scope.update(zip((name.lower() for name in spec.names), row, strict=True))
                self.jobs.append(_JobBuilder(self, scope, spec.line).build())

    def queue_text(self, text: str, line: int) -> str:
        """Expand macros in the count or file name of a queue statement."""
        return self.expand(text, line, self.fixed, ())

    def reserved(self, name: str) -> bool:
        """Whether ``name`` cannot be a queue variable (it is built in); a command can be."""
        return name.lower() in _BUILTIN

    def condition(self, text: str, line: int) -> bool:
        """The truth of an ``if``/``elif`` condition (see :mod:`submit_branches`)."""
        return branches_mod.decide(
            text,
            line,
            expand=lambda t: self.expand(t, line, self.fixed, ()),
            is_defined=lambda n: n.lower() in self.settings or n.lower() in self.fixed,
            fail=self.fail,
        )


class _JobBuilder:
    """Assemble one job from the commands in effect and its own macros."""

    def __init__(self, parser: _Parser, scope: Mapping[str, str], line: int) -> None:
        self.parser = parser
        self.scope = scope
        self.line = line

    def get(self, key: str, parse: Callable[[str], T]) -> T | None:
        setting = self.parser.settings.get(key)
        if key in self.scope and key not in _BUILTIN:  # A queue variable names the command.
            setting = _Setting(key, self.scope[key], self.line)
            return self.parser.parse(setting, self.scope[key], parse) if setting.value else None
        if setting is None:
            return None
        text = self.parser.expand(setting.value, setting.line, self.scope, (key,)).strip()
        return self.parser.parse(setting, text, parse) if text else None

    def parsed(self, key: str, parse: Callable[[U], T], value: U) -> T:
        """``parse(value)``; a ValueError fails naming ``key``'s line."""
        try:
            return parse(value)
        except ValueError as error:
            self.parser.fail(self.line_of(key), f"{key}: {error}")

    def line_of(self, key: str) -> int:
        setting = self.parser.settings.get(key)
        return self.line if setting is None else setting.line

    def build(self) -> JobSpec:
        parser = self.parser
        for key in (*_CHECK_ONLY, "getenv"):
            self.get(key, _COMMANDS[key])
        initialdir = self.get("initialdir", values.parse_text)
        iwd = posixpath.normpath(posixpath.join(parser.iwd, initialdir or "."))
        executable = self.get("executable", values.parse_text)
        if executable is None:
            parser.fail(self.line, "no executable: add 'executable = <program>' above 'queue'")
        transfer_executable = self.get("transfer_executable", values.parse_bool)
        if transfer_executable is None:  # a container job's absolute program is the image's
            transfer_executable = not (executable.startswith("/") and extras.in_container(self))
        if transfer_executable:
            executable = _absolute(parser.iwd, executable)
        elif not executable.startswith("/"):
            parser.fail(
                self.line_of("executable"),
                f"executable {executable!r} must be an absolute path on the worker node "
                "when transfer_executable is false",
            )
        items = self.get("transfer_input_files", values.split_list) or []
        inputs = [
            _absolute(iwd, self.parsed("transfer_input_files", extras.local_path, p))
            for p in items
            if not extras.is_url(p)
        ]
        urls = [self.parsed("transfer_input_files", extras.parse_url_input, p) for p in items
                if extras.is_url(p)]  # fmt: skip
        image, image_path = self.parsed("container_image", lambda u: extras.container(self, u),
                                        self.get("universe", values.parse_universe))  # fmt: skip
        inputs += [] if image_path is None else [_absolute(iwd, image_path)]
        stdin = self.get("input", values.parse_input_name)
        if stdin is not None:
            stdin_path = _absolute(iwd, stdin)
            inputs += [] if stdin_path in inputs else [stdin_path]
            stdin = posixpath.basename(stdin_path)
        self.check_sandbox_names(executable if transfer_executable else None, inputs)
        self.parsed("transfer_input_files", lambda u: extras.check_names(u, [executable, *inputs]),
                    urls)  # fmt: skip
        log = self.get("log", values.parse_text)
        attrs = {
            name: parser.parse(s, parser.expand(s.value, s.line, self.scope, ()), _EXPRESSION)
            for name, s in parser.attrs.values()
        }
        fields: dict[str, object] = {
            "x509userproxy": self.proxy_path(iwd),
            "executable": executable,
            "transfer_executable": transfer_executable,
            "input": stdin,
            "log": None if log is None else _absolute(iwd, log),
            "transfer_input_files": inputs,
            "attrs": attrs,
            "iwd": iwd,
        }
        # Commands left unset take JobSpec's own defaults.
        for field, key in _FIELDS.items():
            value = self.get(key, _COMMANDS[key])
            if value is not None:
                fields[field] = value
        if isinstance(fields.get("notification"), str):
            fields["notification"] = str(fields["notification"]).lower()
        fields["policy"] = self.policy()
        fields.update(extras.fields(urls, extras.require_gpus(self), image))
        try:
            return JobSpec.model_validate(fields)
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            parser.fail(self.line, f"job {self.scope['process']}: {where}: {first['msg']}")

    def policy(self) -> JobPolicy:
        """The job's policy commands; ``on_exit_remove`` cannot be mixed with retries."""
        policy = {key: self.get(key, _COMMANDS[key]) for key in _POLICY}
        retries = [k for k in ("max_retries", "retry_until") if policy[k] is not None]
        if policy["on_exit_remove"] is not None and retries:
            self.parser.fail(
                self.line_of(retries[0]),
                f"{retries[0]} cannot be used with on_exit_remove: both decide when a job "
                "leaves the queue; keep one",
            )
        return JobPolicy.model_validate({k: v for k, v in policy.items() if v is not None})

    def proxy_path(self, iwd: str) -> str | None:
        """The job's proxy file: ``x509userproxy``, else the default one when
        ``use_x509userproxy`` is true (``$X509_USER_PROXY`` or ``/tmp/x509up_u<uid>``)."""
        path = self.get("x509userproxy", values.parse_text)
        if path is not None:
            return _absolute(iwd, path)
        if self.get("use_x509userproxy", values.parse_bool):
            return str(default_proxy_path())
        return None

    def check_sandbox_names(self, executable: str | None, inputs: list[str]) -> None:
        """Refuse two different files that would land under one name in the job's directory."""
        seen: dict[str, str] = {}
        for path in [executable] * (executable is not None) + inputs:
            if path is None or path.endswith("/"):  # "dir/" spills its contents: not checked.
                continue
            name = posixpath.basename(path)
            if seen.setdefault(name, path) != path:
                key = (
                    "transfer_input_files"
                    if "transfer_input_files" in self.parser.settings
                    else "input"
                )
                self.parser.fail(
                    self.line_of(key),
                    f"{seen[name]} and {path} would both arrive in the job's directory as {name!r}",
                )


def _absolute(base: str, path: str) -> str:
    """``path`` made absolute against ``base``; a trailing ``/`` (contents only) is kept."""
    joined = posixpath.normpath(posixpath.join(base, path))
    return joined + "/" if path.endswith("/") and joined != "/" else joined


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Number, text of each statement line: comments and blanks dropped, ``\\`` joined."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        lines.append((start, "".join([*pending, raw]).strip()))
        pending = []
    if pending:
        lines.append((start, "".join(pending).strip()))
    return lines
