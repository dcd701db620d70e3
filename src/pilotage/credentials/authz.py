"""Who may hold each role: the ``[authz]`` rules of ``pilotage.toml``.

Each role (user, pilot, frontend, factory, admin) lists entries of three kinds::

    "/O=Example/CN=Alice"        an exact identity: a DN in grid form, or a token subject
    "re:^/O=Example/OU=Pilots/.*$"  a regular expression the whole identity must match
    "fqan:/pilotage/Role=pilot"  any member of that VO group or role (``pilotage admin vo``)

The rules are applied at two places, with one difference a reviewer should keep in mind:

* every bearer token: a token grants one role; when that role has entries, the token's
  subject (or one of its groups) must match one, else the call is refused. A role with
  no entry accepts the tokens the pool's admins mint, as before the rules existed;
* X.509 login: the identity gets the role it asks for only when an entry matches,
  except ``user``, which any identity trusted by the CA directory gets while ``user``
  has no entry. A privileged role is never granted to a DN by default.

Regular expressions are compiled when the server starts; a bad one stops it with the
entry named, rather than failing open or closed at the first request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pilotage.config import AuthzSettings
from pilotage.credentials.errors import IdentityNotAuthorized
from pilotage.credentials.tokens import Role
from pilotage.errors import OperatorError

_REGEX = "re:"
_FQAN = "fqan:"


@dataclass(frozen=True)
class _Entry:
    """One entry of a role's list, parsed."""

    text: str
    exact: str | None = None
    pattern: re.Pattern[str] | None = None
    fqan: str | None = None

    def matches(self, identity: str, groups: Sequence[str]) -> bool:
        if self.exact is not None:
            return identity == self.exact
        if self.pattern is not None:
            return self.pattern.fullmatch(identity) is not None
        return self.fqan in groups


def _parse(role: Role, text: str) -> _Entry:
    if not text:
        raise OperatorError(f"configuration [authz] {role.value} has an empty entry")
    if text.startswith(_REGEX):
        try:
            return _Entry(text, pattern=re.compile(text[len(_REGEX) :]))
        except re.error as exc:
            raise OperatorError(
                f"configuration [authz] {role.value}: {text!r} is not a regular expression ({exc})"
            ) from None
    if text.startswith(_FQAN):
        return _Entry(text, fqan=text[len(_FQAN) :])
    return _Entry(text, exact=text)


class RoleRules:
    """The parsed ``[authz]`` section: which identities may hold which role."""

    def __init__(self, settings: AuthzSettings) -> None:
        # Invariant: a role is a key here exactly when it has at least one entry.
        self._entries: dict[Role, tuple[_Entry, ...]] = {}
        for role in Role:
            texts: tuple[str, ...] = getattr(settings, role.value)
            if texts:
                self._entries[role] = tuple(_parse(role, t) for t in texts)

    def restricted(self, role: Role) -> bool:
        """Whether ``role`` has entries (so only matching identities hold it)."""
        return role in self._entries

    def matches(self, role: Role, identity: str, groups: Sequence[str] = ()) -> bool:
        """Whether an entry of ``role`` matches ``identity`` or one of its ``groups``."""
        return any(e.matches(identity, groups) for e in self._entries.get(role, ()))

    def check_token(self, subject: str, role: Role, groups: Sequence[str]) -> None:
        """Refuse a token whose role has entries none of which matches its subject."""
        if self.restricted(role) and not self.matches(role, subject, groups):
            raise IdentityNotAuthorized(
                f"{subject} holds a {role.value} token but no [authz] {role.value} entry "
                "names it; ask the pool's admin"
            )

    def check_login(self, identity: str, role: Role, groups: Sequence[str]) -> None:
        """Refuse an X.509 login as ``role`` that no entry grants (``user`` is open by default)."""
        if role is Role.USER and not self.restricted(role):
            return
        if not self.matches(role, identity, groups):
            raise IdentityNotAuthorized(
                f"no [authz] {role.value} entry grants the {role.value} role to {identity}"
            )
