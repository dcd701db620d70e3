"""Which settings a running server takes on reload, and what changed between two.

A server reloads ``pilotage.toml`` (and its environment, and its command-line flags
again) on SIGHUP or ``pilotage admin reload``. What it reads on every use reloads:
the ``[authz]`` rules, the ``[x509]`` trust directory, the ``[credentials]`` lifetimes,
and the ``[server]`` keys in :data:`RELOADABLE`. Everything else was built into
long-lived parts at start (the listening socket, the database, the spool's limits, the
matchmaker, the token issuer) and needs a restart; a reload keeps its running value
and says so. docs/configuration.md has the same answer for every key, and a test
checks that the two agree.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from pilotage.config import Settings

#: Sections whose every key reloads.
RELOADABLE_SECTIONS = frozenset({"authz", "x509", "credentials"})

#: Keys of other sections that reload: ``(section, key)``.
RELOADABLE = frozenset(
    {
        ("server", "lease_s"),
        ("server", "heartbeat_s"),
        ("server", "idle_timeout_s"),
        ("server", "max_attempts"),
        ("server", "max_denials"),
        ("server", "stop_rate_per_pilot_s"),
        ("server", "stop_rate_per_site_s"),
        ("server", "reap_interval_s"),
        ("server", "retry_after_s"),
        ("server", "work_wait_s"),
        ("server", "admins"),
        ("server", "revocation_refresh_s"),
        ("server", "accounting_groups"),
    }
)


def reloads(section: str, key: str) -> bool:
    """Whether a running server takes a new value of ``[section] key`` on reload."""
    return section in RELOADABLE_SECTIONS or (section, key) in RELOADABLE


@dataclass(frozen=True)
class Change:
    """One key whose value differs."""

    section: str
    key: str
    old: Any
    new: Any

    @property
    def reloads(self) -> bool:
        return reloads(self.section, self.key)

    @property
    def name(self) -> str:
        return f"[{self.section}] {self.key}"

    def describe(self) -> str:
        when = "reloads" if self.reloads else "needs a restart"
        return f"{self.name}: {self.old!r} -> {self.new!r} ({when})"


def _sections(settings: Settings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def plain(settings: Settings) -> dict[str, dict[str, Any]]:
    """The settings as JSON values (tuples as lists), as the server's API answers them."""
    value: dict[str, dict[str, Any]] = json.loads(json.dumps(settings.as_dict(), default=list))
    return value


def changes(old: Settings | dict[str, Any], new: Settings | dict[str, Any]) -> list[Change]:
    """Every key whose value differs between ``old`` and ``new`` (settings, or their
    :func:`plain` form), in the order of the settings' sections and keys."""
    before = plain(old) if isinstance(old, Settings) else old
    after = plain(new) if isinstance(new, Settings) else new
    found = []
    for section, values in after.items():
        for key, value in values.items():
            previous = before.get(section, {}).get(key)
            if previous != value:
                found.append(Change(section, key, previous, value))
    return found


def effective(old: Settings, new: Settings) -> Settings:
    """What a running server with ``old`` has after reloading ``new``: the new value of
    every key that reloads, the old one of every key that needs a restart."""
    sections: dict[str, Any] = {}
    new_sections = _sections(new)
    for section, old_values in _sections(old).items():
        new_values = new_sections[section]
        kept = {
            f.name: getattr(new_values if reloads(section, f.name) else old_values, f.name)
            for f in dataclasses.fields(old_values)
        }
        sections[section] = dataclasses.replace(old_values, **kept)
    return Settings(**sections)
