"""Macro expansion of the submit language: ``$(name)`` and HTCondor's function macros.

Forms, as ``condor_submit`` defines them::

    $(name)  $(name:default)            a macro, or ``default`` when it is not defined
    $ENV(VAR)  $ENV(VAR:default)        a variable of the submitter's environment
    $INT(name[,fmt])  $REAL(name[,fmt]) the macro evaluated as a ClassAd number, printf-formatted
    $F[fpdnxbqau](name)                 parts of a file name: full path, directory, last
                                        directory, name, extension, b(are), quoted
    $DIRNAME(name)  $BASENAME(name)     the same as $Fp and $Fnx
    $SUBSTR(name, start[, length])      a piece of a macro (negative counts from the end)
    $CHOICE(index, a, b, ...)           the index-th (from 0) of the choices, or of a list macro
    $RANDOM_CHOICE(a, b, ...)           one of the choices, drawn at random
    $RANDOM_INTEGER(min, max[, step])   a random whole number in [min, max]

Anything else that looks like a macro (``$$(attr)``, ``$WORD(...)``, ``$Fw`` for Windows
paths) is an error, never left in the text: a job must not run with a literal ``$ENV(X)``
as its argument because a form was misspelt. A ``$`` not followed by ``(`` or a function
name and ``(`` (``$HOME``, ``$1``) is ordinary text.

Nothing here knows about submit files: :func:`expand` takes a ``lookup`` that returns a
macro's fully expanded value (or ``None``) and raises :class:`MacroError`, a ``ValueError``
whose message is one clause; the parser adds the file and line.
"""

from __future__ import annotations

import os
import posixpath
import random
import re
from collections.abc import Callable, Mapping

import classad2

Lookup = Callable[[str], "str | None"]

_HEAD = re.compile(r"\$([A-Za-z_]*)\(")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
#: ``$F`` letters understood; ``w`` (Windows backslashes) is not.
_FILE_PARTS = frozenset("fpdnxbqau")


class MacroError(ValueError):
    """A macro cannot be expanded: unsupported form, bad argument, undefined name."""


def expand(
    text: str,
    lookup: Lookup,
    *,
    rng: random.Random,
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
) -> str:
    """Expand every macro of ``text`` once; a macro's value comes expanded from ``lookup``.

    ``cwd`` is the submit directory, against which ``$Ff`` makes a path absolute.
    """
    out: list[str] = []
    i = 0
    while (j := text.find("$", i)) >= 0:
        out.append(text[i:j])
        if text.startswith("$$(", j):
            raise MacroError(
                "$$(...) is replaced at match time from the slot's ad in HTCondor; pilotage "
                "does not support it: write the value, or match on it in requirements"
            )
        head = _HEAD.match(text, j)
        if head is None:
            out.append("$")
            i = j + 1
            continue
        close = _closing(text, head.end())
        body = text[head.end() : close]
        call = _Call(lookup, rng, os.environ if env is None else env, cwd)
        out.append(call.run(head.group(1), body))
        i = close + 1
    out.append(text[i:])
    return "".join(out)


def referenced_names(text: str) -> set[str]:
    """Lower-case names ``text`` reads as macros, in any form (to allow setting them)."""
    names: set[str] = set()
    for head in _HEAD.finditer(text):
        if head.group(1).upper() == "ENV":
            continue
        close = text.find(")", head.end())
        body = text[head.end() : close if close >= 0 else len(text)]
        names.update(n.lower() for n in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", body))
    return names


def _closing(text: str, start: int) -> int:
    """Index of the ``)`` that closes the ``(`` just before ``start``."""
    depth = 1
    for k in range(start, len(text)):
        if text[k] == "(":
            depth += 1
        elif text[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    raise MacroError(f"the macro starting {text[start - 2 : start + 20]!r} has no closing ')'")


class _Call:
    """One function-macro call: its name picks the method, its body holds the arguments."""

    def __init__(
        self, lookup: Lookup, rng: random.Random, env: Mapping[str, str], cwd: str
    ) -> None:
        self.lookup = lookup
        self.rng = rng
        self.env = env
        self.cwd = cwd

    def again(self, text: str) -> str:
        return expand(text, self.lookup, rng=self.rng, env=self.env, cwd=self.cwd)

    def run(self, function: str, body: str) -> str:
        name = function.upper()
        if name == "":
            return self.macro(body)
        if name == "ENV":
            return self.environ(body)
        letters = {"DIRNAME": "p", "BASENAME": "nx"}.get(name, function[1:])
        if name in ("DIRNAME", "BASENAME") or (name[:1] == "F" and set(letters) <= _FILE_PARTS):
            path = self.value(self.again(body.strip()), f"${function}")
            if "f" in letters:
                path = posixpath.normpath(posixpath.join(self.cwd, path))
            return _file_part(letters, path)
        handler = {
            "INT": self.integer,
            "REAL": self.real,
            "SUBSTR": self.substr,
            "CHOICE": self.choice,
            "RANDOM_CHOICE": self.random_choice,
            "RANDOM_INTEGER": self.random_integer,
        }.get(name)
        if handler is None:
            raise MacroError(
                f"${function}(...) is not a supported macro; supported: $(name), $ENV, $INT, "
                "$REAL, $F[fpdnxbqau], $DIRNAME, $BASENAME, $SUBSTR, $CHOICE, $RANDOM_CHOICE, "
                "$RANDOM_INTEGER"
            )
        return handler(self.args(body))

    def args(self, body: str) -> list[str]:
        """Comma-separated arguments, each with its own ``$(...)`` expanded."""
        return [self.again(a.strip()) for a in body.split(",")]

    def macro(self, body: str) -> str:
        name, colon, default = body.partition(":")
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise MacroError(f"$({body}) is not a supported macro: use $(name) or $(name:default)")
        value = self.lookup(name)
        if value is not None:
            return value
        if colon:
            return self.again(default)
        raise MacroError(f"undefined macro $({name}); define it above, or write $({name}:default)")

    def environ(self, body: str) -> str:
        name, colon, default = body.partition(":")
        if name not in self.env:
            if colon:
                return default
            raise MacroError(
                f"$ENV({name}): {name} is not in your environment; set it, or write "
                f"$ENV({name}:default)"
            )
        return self.env[name]

    def value(self, argument: str, function: str) -> str:
        """A macro argument: a name's value, or the (already expanded) text itself."""
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", argument):
            value = self.lookup(argument)
            if value is None:
                raise MacroError(f"{function}({argument}): undefined macro $({argument})")
            return value
        return argument

    def number(self, args: list[str], function: str) -> int | float:
        if not 1 <= len(args) <= 2:
            raise MacroError(f"{function} takes a macro name and an optional format")
        text = self.value(args[0], function)
        try:
            result = classad2.ExprTree(text).eval()
        except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
            result = None
        if type(result) not in (int, float):  # Not bool, nor classad2's Value enum.
            raise MacroError(f"{function}({args[0]}): {text!r} is not a number")
        return float(result) if isinstance(result, float) else int(result)

    def formatted(self, number: int | float, args: list[str], function: str) -> str:
        if len(args) < 2:
            return str(number) if isinstance(number, int) else f"{number:g}"
        try:
            return args[1] % number
        except (TypeError, ValueError):
            raise MacroError(
                f"{function}: {args[1]!r} is not a printf format for a number"
            ) from None

    def integer(self, args: list[str]) -> str:
        return self.formatted(int(self.number(args, "$INT")), args, "$INT")

    def real(self, args: list[str]) -> str:
        return self.formatted(float(self.number(args, "$REAL")), args, "$REAL")

    def substr(self, args: list[str]) -> str:
        if not 2 <= len(args) <= 3 or not all(_INTEGER.fullmatch(a) for a in args[1:]):
            raise MacroError("$SUBSTR takes a macro name, a start and an optional length")
        text = self.value(args[0], "$SUBSTR")
        start = int(args[1])
        start = max(0, len(text) + start) if start < 0 else start
        if len(args) == 2:
            return text[start:]
        length = int(args[2])
        return text[start : start + length] if length >= 0 else text[start:length]

    def choice(self, args: list[str]) -> str:
        if len(args) < 2:
            raise MacroError("$CHOICE takes an index and a list of choices")
        index_text = self.value(args[0], "$CHOICE")
        if not _INTEGER.fullmatch(index_text.strip()):
            raise MacroError(f"$CHOICE: the index {index_text!r} is not a whole number")
        choices = args[1:]
        if len(choices) == 1:  # One argument: a macro holding the list.
            choices = [c.strip() for c in self.value(choices[0], "$CHOICE").split(",")]
        index = int(index_text)
        if not 0 <= index < len(choices):
            raise MacroError(f"$CHOICE: index {index} is outside the {len(choices)} choices")
        return choices[index]

    def random_choice(self, args: list[str]) -> str:
        return self.rng.choice(args)

    def random_integer(self, args: list[str]) -> str:
        if not 2 <= len(args) <= 3 or not all(_INTEGER.fullmatch(a) for a in args):
            raise MacroError("$RANDOM_INTEGER takes whole numbers: min, max and an optional step")
        low, high, step = int(args[0]), int(args[1]), int(args[2]) if len(args) == 3 else 1
        if step < 1 or high < low:
            raise MacroError("$RANDOM_INTEGER needs min <= max and a step of at least 1")
        return str(self.rng.randrange(low, high + 1, step))


def _file_part(letters: str, path: str) -> str:
    """The ``$F`` parts of ``path``: p directory, d last directory (``dd`` two), n name
    without extension, x extension, b no trailing slash, q double-quoted."""
    directory, base = posixpath.split(path)
    directory = directory + "/" if directory and not directory.endswith("/") else directory
    stem, extension = posixpath.splitext(base)
    result = ""
    if "p" in letters:
        result = directory
    elif "d" in letters:
        parts = [p for p in directory.split("/") if p]
        depth = letters.count("d")
        result = "/".join(parts[-depth:]) + "/" if parts else ""
    if "n" in letters or "x" in letters:
        if "x" in letters and "b" in letters:
            extension = extension[1:]
        result += (stem if "n" in letters else "") + (extension if "x" in letters else "")
    elif not set(letters) & set("pd"):
        result = path
    if "b" in letters:
        result = result.rstrip("/")
    if "q" in letters:
        result = f"'{result}'" if "a" in letters else f'"{result}"'
    return result
