"""The site's authorization and mapping policy, shared by the switch and ``pilotage site-authz``.

In the roles of LCAS (bans), LCMAPS and GUMS (mapping) and the gridmapdir (pool accounts).
Read ``Policy.decide`` top to bottom: bans first, then the pilot rules, then the mapping
rules in file order, where the first match wins. The policy file (TOML)::

    require_pilot = true                 # both credentials needed (as on EGI)
    pilots = ["/DC=org/DC=example/CN=pilot"]   # accepted pilot identities; empty: any
    gridmapfile = "/etc/grid-security/grid-mapfile"   # optional, read after [[map]]
    gridmapdir = "/var/lib/pilotage/gridmapdir"       # where pool leases live

    [ban]
    dns = ["/DC=org/CN=Mallory"]
    subjects = ["https://pool.example mallory"]   # "ISSUER SUBJECT" or a bare subject
    issuers = []                                  # a CA's DN or a token issuer
    groups = ["/dteam/banned"]

    [[map]]
    dn = "/DC=org/CN=Alice"              # or subject = ..., group = ..., issuer = ...
    account = "alice"                    # or pool = "cms"

    [pools]
    cms = "cms001..cms050"

A group rule matches that group exactly, or with a trailing ``/*`` the group and every
subgroup. In the grid-mapfile, ``"DN" account`` maps a DN, ``"/vo/group" account`` a
group (FQAN), and an account written ``.cms`` names the pool ``cms``.
Imports: the standard library and the sibling ``leases`` only.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .leases import Leases, PoolExhausted, expand_pool


class Subject(NamedTuple):
    """A credential's identity as the policy sees it (``kind``: ``x509`` or ``token``)."""

    kind: str
    subject: str
    issuer: str
    groups: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """One string per person: what pool leases are keyed by."""
        return (
            f"dn:{self.subject}" if self.kind == "x509" else f"token:{self.issuer} {self.subject}"
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form used by the switch's remote callout."""
        return {"kind": self.kind, "subject": self.subject, "issuer": self.issuer,
                "groups": list(self.groups)}  # fmt: skip


class Decision(NamedTuple):
    """Permit with an account, or deny with a reason naming the rule; ``error`` means 202."""

    permit: bool
    account: str = ""
    reason: str = ""
    error: bool = False


class _Rule(NamedTuple):
    field: str
    value: str
    account: str
    pool: str


class PolicyError(ValueError):
    """The policy file or the grid-mapfile is malformed."""


class Policy:
    """A loaded policy; ``decide`` is pure apart from pool leases."""

    def __init__(self, raw: dict[str, Any], gridmap_text: str = "") -> None:
        ban = raw.get("ban", {})
        self.require_pilot = bool(raw.get("require_pilot", False))
        self.pilots = frozenset(_strings(raw, "pilots"))
        self.banned_dns = frozenset(_strings(ban, "dns"))
        self.banned_subjects = frozenset(_strings(ban, "subjects"))
        self.banned_issuers = frozenset(_strings(ban, "issuers"))
        self.banned_groups = tuple(_strings(ban, "groups"))
        self.pools = {name: expand_pool(spec) for name, spec in raw.get("pools", {}).items()}
        self.rules = [_rule(entry) for entry in raw.get("map", [])]
        self.rules += list(_gridmap_rules(gridmap_text))
        # Invariant: DN rules live in a dict (with their position, so the first match in
        # file order still wins), so a grid-mapfile of thousands of DNs costs one lookup.
        self._by_dn: dict[str, tuple[int, _Rule]] = {}
        self._others: list[tuple[int, _Rule]] = []
        for index, rule in enumerate(self.rules):
            if rule.field != "dn":
                self._others.append((index, rule))
            elif rule.value not in self._by_dn:
                self._by_dn[rule.value] = (index, rule)
        for rule in self.rules:
            if rule.pool and rule.pool not in self.pools:
                raise PolicyError(f"a rule names the pool {rule.pool!r}, not defined in [pools]")
        self.leases = Leases(raw["gridmapdir"]) if "gridmapdir" in raw else None
        if self.pools and self.leases is None:
            raise PolicyError("pools need a gridmapdir to keep their leases in")

    @classmethod
    def from_file(cls, path: str, check: Callable[[str, str], None] | None = None) -> Policy:
        """Load the policy at ``path`` and the grid-mapfile it names.

        ``check(path, what)`` is called on the grid-mapfile and the gridmapdir before
        either is used (the switch refuses them unless root-owned and closed to writers).
        """
        import tomllib

        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
            for key, what in (("gridmapfile", "grid-mapfile"), ("gridmapdir", "gridmapdir")):
                if check is not None and isinstance(raw.get(key), str):
                    check(raw[key], what)
            gridmap = ""
            if "gridmapfile" in raw:
                with open(raw["gridmapfile"], encoding="utf-8") as f:
                    gridmap = f.read()
            return cls(raw, gridmap)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError) as exc:
            raise PolicyError(f"the policy {path} cannot be read ({exc})") from None
        except PolicyError as exc:
            raise PolicyError(f"the policy {path} is invalid: {exc}") from None
        except ValueError as exc:
            raise PolicyError(f"the policy {path} is invalid: {exc}") from None

    def decide(self, user: Subject, pilot: Subject | None = None) -> Decision:
        """Authorize ``user`` (called by ``pilot``, when given) and map it to an account."""
        for who in (user, pilot):
            if who is not None and (reason := self._banned(who)):
                return Decision(False, reason=reason)
        if pilot is None and self.require_pilot:
            return Decision(False, reason="This site requires the pilot credential as well.")
        if pilot is not None and self.pilots and pilot.subject not in self.pilots:
            return Decision(False, reason=f"The pilot '{pilot.subject}' is not an accepted pilot.")
        rule = self._match(user)
        if rule is None:
            return Decision(False, reason=f"No mapping rule matches '{user.subject}'.")
        if not rule.pool:
            return Decision(True, account=rule.account, reason=f"mapped by {rule.field} rule")
        if self.leases is None:  # refused at load; kept so a bug cannot lease nowhere
            return Decision(False, reason="Pools need a gridmapdir.", error=True)
        try:
            account = self.leases.lease(user.key, rule.pool, self.pools[rule.pool])
        except PoolExhausted as exc:
            return Decision(False, reason=f"No pool account is free: {exc}.", error=True)
        except OSError as exc:
            return Decision(False, reason=f"The gridmapdir fails ({exc.strerror}).", error=True)
        return Decision(True, account=account, reason=f"pool {rule.pool} by {rule.field} rule")

    def _banned(self, who: Subject) -> str:
        if who.kind == "x509" and who.subject in self.banned_dns:
            return f"The DN '{who.subject}' is banned."
        if who.kind == "token" and (
            who.subject in self.banned_subjects
            or f"{who.issuer} {who.subject}" in self.banned_subjects
        ):
            return f"The token subject '{who.subject}' of {who.issuer} is banned."
        if who.issuer in self.banned_issuers:
            return f"The issuer '{who.issuer}' is banned."
        for group in who.groups:
            if any(_group_matches(pattern, group) for pattern in self.banned_groups):
                return f"The group '{group}' is banned."
        return ""

    def _match(self, user: Subject) -> _Rule | None:
        by_dn = self._by_dn.get(user.subject) if user.kind == "x509" else None
        for index, rule in self._others:
            if by_dn is not None and index > by_dn[0]:
                break
            if _rule_matches(rule, user):
                return rule
        return by_dn[1] if by_dn is not None else None


def _rule_matches(rule: _Rule, user: Subject) -> bool:
    if rule.field == "subject":
        return user.kind == "token" and rule.value in (
            user.subject, f"{user.issuer} {user.subject}"
        )  # fmt: skip
    if rule.field == "issuer":
        return rule.value == user.issuer
    return any(_group_matches(rule.value, group) for group in user.groups)


def _group_matches(pattern: str, group: str) -> bool:
    if pattern.endswith("/*"):
        base = pattern[:-2]
        return group == base or group.startswith(base + "/")
    return group == pattern


def _strings(raw: dict[str, Any], key: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{key} must be a list of strings")
    return value


def _rule(entry: dict[str, Any]) -> _Rule:
    fields = [f for f in ("dn", "subject", "group", "issuer") if f in entry]
    targets = [t for t in ("account", "pool") if t in entry]
    if len(fields) != 1 or len(targets) != 1:
        raise PolicyError(f"map rule {entry!r} needs one of dn/subject/group/issuer and one of "
                          "account/pool")  # fmt: skip
    value, target = entry[fields[0]], entry[targets[0]]
    if not isinstance(value, str) or not isinstance(target, str) or not target:
        raise PolicyError(f"map rule {entry!r} has a non-string value")
    if targets[0] == "pool":
        return _Rule(fields[0], value, "", target)
    return _Rule(fields[0], value, target, "")


def _gridmap_rules(text: str) -> Iterable[_Rule]:
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            words = []
        if len(words) != 2 or not words[0].startswith("/"):
            raise PolicyError(f"grid-mapfile line {number} is not '\"DN\" account'")
        key, target = words
        field = "dn" if "=" in key.split("/")[1] else "group"
        target = target.split(",")[0]  # classic files may list several accounts; use the first
        if target.startswith("."):
            yield _Rule(field, key, "", target[1:])
        else:
            yield _Rule(field, key, target, "")
