"""Which subjects each CA may sign: the grid's namespace policies, read and applied.

A grid CA directory trusts many CAs at once, each for its own part of the name space:
a CA in Germany signs ``/C=DE/O=GermanGrid/...``, not ``/DC=ch/DC=cern/...``. Without
this check any CA of the directory could sign any DN and so impersonate any user. Two
formats say it, next to the CA's ``<hash>.0``, where ``<hash>`` is the CA's subject hash:

``<hash>.namespaces`` (IGTF)::

    #NAMESPACES-VERSION: 1.0
    TO Issuer "/C=NL/O=Example/CN=Example CA" \\
      PERMIT Subject "/C=NL/O=Example/.*"
    TO Issuer SELF DENY Subject "/C=NL/O=Example/CN=root"

  One rule per logical line (``\\`` continues a line, ``#`` starts a comment). The
  subject is a regular expression matched against the whole DN in its slash form,
  ignoring case. ``SELF`` is the CA the file belongs to. A DENY rule that matches
  refuses; otherwise some PERMIT rule must match.

``<hash>.signing_policy`` (Globus EACL)::

    access_id_CA   X509    '/C=NL/O=Example/CN=Example CA'
    pos_rights     globus  CA:sign
    cond_subjects  globus  '"/C=NL/O=Example/*" "/C=NL/O=Other/*"'

  Each pattern is a glob: ``*`` matches any run of characters (``/`` included), every
  other character itself, ignoring case. Some pattern must match.

When both exist the namespaces file decides, as the grid's own tools do. A file that
cannot be parsed is never half-applied: ``TrustStore`` keeps the error and refuses every
chain through that CA, naming the file. Imports: the standard library, ``cryptography``
and the sibling ``certificate`` module only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

from .certificate import dn_slash

#: Other spellings of attribute names found in policy files, mapped to ``dn_slash``'s.
_ALIASES = re.compile(r"/(e|email|emailaddress|userid)=", re.IGNORECASE)
_ALIAS_TARGET = {
    "e": "emailAddress",
    "email": "emailAddress",
    "emailaddress": "emailAddress",
    "userid": "UID",
}
_NS_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"]+')
_EACL_TOKEN = re.compile(r"'[^']*'|[^\s']+")
#: One EACL entry: these words, with the CA's DN after "x509" and the patterns last.
_EACL_KEYWORDS = [
    "access_id_ca",
    "x509",
    "pos_rights",
    "globus",
    "ca:sign",
    "cond_subjects",
    "globus",
]
_VERSION = re.compile(r"^#\s*NAMESPACES-VERSION:\s*(\S+)", re.IGNORECASE)


class PolicySyntaxError(ValueError):
    """A policy file does not follow its format; the message names the line."""


@dataclass(frozen=True)
class SubjectRule:
    """One rule: CA ``issuer`` (None: the file's own CA) may (or may not) sign ``pattern``."""

    permit: bool
    issuer: str | None
    pattern: re.Pattern[str]
    text: str
    line: int


@dataclass(frozen=True)
class CaPolicy:
    """The rules of one policy file, in file order."""

    file: str
    rules: tuple[SubjectRule, ...]

    def rules_for(self, ca: x509.Certificate) -> tuple[SubjectRule, ...]:
        """The rules that speak of ``ca`` (by its DN, or as SELF)."""
        name = _normal(dn_slash(ca.subject)).casefold()
        return tuple(r for r in self.rules if r.issuer is None or r.issuer.casefold() == name)


def decide(subject: x509.Name, rules: tuple[SubjectRule, ...]) -> tuple[bool, SubjectRule | None]:
    """Whether ``rules`` let their CA sign ``subject``, and the rule that decided (if any).

    Invariant: a matching DENY wins over every PERMIT; no matching PERMIT means refused.
    """
    dn = _normal(dn_slash(subject))
    matching = [r for r in rules if r.pattern.fullmatch(dn)]
    denied = next((r for r in matching if not r.permit), None)
    if denied is not None:
        return False, denied
    return (True, matching[0]) if matching else (False, None)


def parse_namespaces(text: str, file: str) -> CaPolicy:
    """Read an IGTF ``.namespaces`` file; ``PolicySyntaxError`` names the bad line."""
    rules: list[SubjectRule] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        version = _VERSION.match(raw.strip())
        if version and version.group(1) != "1.0":
            raise PolicySyntaxError(
                f"line {number}: namespaces version {version.group(1)} is not supported (only 1.0)"
            )
        line = _strip_comment(raw).rstrip()
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical, pending = (pending + line).strip(), ""
        if logical:
            rules.append(_namespace_rule(logical, start))
        start = 0
    if pending.strip():
        raise PolicySyntaxError(f"line {start}: the last line ends with a continuation '\\'")
    return CaPolicy(file, tuple(rules))


def _namespace_rule(logical: str, number: int) -> SubjectRule:
    words = _NS_TOKEN.findall(logical)
    shape = [w.upper() if not w.startswith('"') else '"' for w in words]
    well_formed = (
        len(words) == 6
        and shape[:2] == ["TO", "ISSUER"]
        and shape[2] in ('"', "SELF")
        and shape[3] in ("PERMIT", "DENY")
        and shape[4:] == ["SUBJECT", '"']
    )
    if not well_formed:
        raise PolicySyntaxError(
            f'line {number}: expected TO Issuer "<DN>"|SELF PERMIT|DENY Subject "<pattern>"'
        )
    issuer = None if shape[2] == "SELF" else _normal(_unquote(words[2]))
    pattern_text = _unquote(words[5])
    try:
        pattern = re.compile(_normal(pattern_text), re.IGNORECASE)
    except re.error as exc:
        raise PolicySyntaxError(f"line {number}: the subject pattern is invalid ({exc})") from None
    return SubjectRule(shape[3] == "PERMIT", issuer, pattern, pattern_text, number)


def parse_signing_policy(text: str, file: str) -> CaPolicy:
    """Read a Globus ``.signing_policy`` (EACL) file; ``PolicySyntaxError`` names the bad line."""
    words: list[tuple[str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.strip().startswith("#"):
            continue
        words += [(w, number) for w in _EACL_TOKEN.findall(raw)]
    rules: list[SubjectRule] = []
    at = 0
    while at < len(words):
        entry = [w for w, _ in words[at : at + 9]]
        number = words[at][1]
        keywords = [e.lower() for i, e in enumerate(entry) if i not in (2, 8)]
        well_formed = (
            len(entry) == 9
            and keywords == _EACL_KEYWORDS
            and entry[2].startswith("'")
            and entry[8].startswith("'")
        )
        if not well_formed:
            raise PolicySyntaxError(
                f"line {number}: expected access_id_CA X509 '<DN>', pos_rights globus CA:sign, "
                "cond_subjects globus '\"<pattern>\" ...'"
            )
        issuer = _normal(entry[2][1:-1])
        patterns = entry[8][1:-1]
        if not re.fullmatch(r'\s*("[^"]*"\s*)+', patterns):
            raise PolicySyntaxError(
                f"line {words[at + 8][1]}: cond_subjects needs one or more double-quoted "
                "patterns inside the single quotes"
            )
        for glob in re.findall(r'"([^"]*)"', patterns):
            regex = ".*".join(re.escape(part) for part in _normal(glob).split("*"))
            rules.append(SubjectRule(True, issuer, re.compile(regex, re.IGNORECASE), glob, number))
        at += 9
    return CaPolicy(file, tuple(rules))


def _strip_comment(line: str) -> str:
    """``line`` up to a ``#`` that is outside double quotes."""
    quoted = escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:i]
    return line


def _unquote(word: str) -> str:
    return word[1:-1].replace('\\"', '"')


def _normal(dn: str) -> str:
    """A DN (or pattern) with attribute-name aliases spelled as ``dn_slash`` spells them."""
    return _ALIASES.sub(lambda m: "/" + _ALIAS_TARGET[m.group(1).lower()] + "=", dn)
