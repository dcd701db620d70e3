"""Typed settings, loaded once at the entry point and passed down.

Precedence, lowest first: defaults < ``pilotage.toml`` in the state directory <
environment (``PILOTAGE_<SECTION>_<KEY>``, e.g. ``PILOTAGE_SERVER_PORT``) < command-line
flags. ``pilotage config`` prints the effective values.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pilotage.config_mappings import PARSERS as MAPPINGS
from pilotage.errors import OperatorError

ENV_PREFIX = "PILOTAGE_"


@dataclass(frozen=True)
class PoolSettings:
    """What identifies the pool."""

    name: str = "pilotage"
    #: Token audience and issuer; defaults to ``pilotage:<name>``.
    issuer: str = ""


@dataclass(frozen=True)
class ServerSettings:
    """The central server."""

    host: str = "127.0.0.1"
    port: int = 9618
    #: Database URL; empty means SQLite in the state directory.
    db: str = ""
    lease_s: float = 300.0
    heartbeat_s: float = 60.0
    idle_timeout_s: float = 1200.0
    max_sandbox_mb: int = 256
    max_sandbox_members: int = 10000
    #: Where sandboxes are kept: ``files`` in the state directory, ``database``, or
    #: ``auto`` (the database on PostgreSQL, so servers sharing it share sandboxes).
    spool: str = "auto"
    #: A job started and lost this many times is held.
    max_attempts: int = 5
    #: A job denied (switch 203) at this many distinct sites is held (docs/pilot.md).
    max_denials: int = 3
    #: Stop orders (removed, held, vacated running jobs) handed to one pilot, and to the
    #: pilots of one site, at most one per this many seconds (seed 000 section 4.6).
    stop_rate_per_pilot_s: float = 0.2
    stop_rate_per_site_s: float = 0.05
    #: How often the server looks for expired leases and lost pilots.
    reap_interval_s: float = 2.0
    #: Seconds an empty pilot is told to wait before asking again.
    retry_after_s: float = 5.0
    #: The longest a request for work is held open while no job is there for it (the
    #: pilot's ``wait_s``, docs/pilot-protocol.md); 0: every request is answered at once.
    work_wait_s: float = 20.0
    #: exec-in-job and ssh-to-job sessions (docs/pilot.md, "Keeping control"): the
    #: longest life and silence of one, the bytes it may carry each way, its largest
    #: frame, how long the job's pilot has to join it, and how many one job may have
    #: open at once (each costs the site a call of its switch).
    session_max_s: float = 3600.0
    session_idle_s: float = 900.0
    session_max_bytes: int = 64 * 1024 * 1024
    session_frame_bytes: int = 64 * 1024
    session_join_s: float = 60.0
    session_max_per_job: int = 4
    #: The name clients and pilots reach the server by (``server.url``); empty: ``host``,
    #: or this machine's fully qualified name when ``host`` is a wildcard.
    public_name: str = ""
    #: How stale a server's list of revoked tokens may get: a token revoked through
    #: another server sharing the database is refused here within this time.
    revocation_refresh_s: float = 10.0
    #: Fair share: how fast past usage is forgotten (seconds for usage to halve).
    fairshare_half_life_s: float = 86400.0
    #: How often the matchmaker reloads its index of idle jobs from the database whole.
    match_full_sync_s: float = 30.0
    #: Unix users (besides the server's own user and root) with the admin role.
    admins: tuple[str, ...] = ()
    #: Accounting groups and the users who may name them (``*``: everyone); a job may
    #: name no group that is not here (docs/configuration.md).
    accounting_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Static quotas in cpus by accounting group, and whether a group at its quota
    #: still gets slots no one else can use.
    group_quotas: Mapping[str, float] = field(default_factory=dict)
    groups_accept_surplus: bool = True
    #: How long a slot that asked for work is remembered as free for a job that ranks it
    #: higher, and how long such a job waits for it at most (docs/submit.md, "Rank").
    rank_window_s: float = 15.0
    rank_wait_s: float = 60.0
    #: ``host:port`` of the SMTP relay for ``notification`` mail; empty: no mail.
    mail_relay: str = ""
    #: The sender of that mail; empty: ``pilotage@<this host>``.
    mail_from: str = ""
    #: Mail goes to ``notify_user``, else to ``<owner>@<mail_domain>``; empty: this host.
    mail_domain: str = ""


@dataclass(frozen=True)
class AuthzSettings:
    """Who may hold each role (docs/security.md, "Authorization").

    Each entry is an exact identity (a DN in grid form such as ``/O=Example/CN=Alice``,
    or a token subject), ``re:<regular expression>`` matched against the whole identity,
    or ``fqan:<FQAN>`` for members of a VO group or role (``fqan:/vo/Role=pilot``). A
    role with no entry keeps the tokens the pool's admins mint for it; X.509 login grants
    only ``user`` without an entry, never another role.
    """

    user: tuple[str, ...] = ()
    pilot: tuple[str, ...] = ()
    frontend: tuple[str, ...] = ()
    factory: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()


@dataclass(frozen=True)
class X509Settings:
    """Trusting X.509 credentials (login, delegation)."""

    #: Trust directory in the grid layout (``<hash>.0``, ``<hash>.r0``); empty: X.509 off.
    ca_dir: str = ""
    #: Refuse a chain whose CA has no CRL in the trust directory.
    require_crl: bool = False
    #: Refuse a CA that has neither ``.namespaces`` nor ``.signing_policy`` (a CA with
    #: either file is always held to it).
    require_namespaces: bool = True


@dataclass(frozen=True)
class CredentialSettings:
    """The credential store: sessions, submit-time lifetimes, releases to pilots."""

    #: Longest session token an X.509 login returns (never beyond the proxy's end).
    session_lifetime_s: int = 12 * 3600
    #: Walltime of a job whose submit file names none (``allowed_job_duration``).
    default_walltime_s: int = 24 * 3600
    #: How long a stored credential must outlive a job's walltime at submit.
    lifetime_margin_s: int = 3600
    #: Lifetime of a proxy released to a pilot (never beyond the stored credential).
    release_lifetime_s: int = 3600
    #: Released proxies are limited (RFC 3820 limited policy) unless this is false.
    release_limited: bool = True
    #: A claim's first retrieval key must be used within this many seconds.
    retrieval_key_ttl_s: int = 600
    #: A delegation's key pair waits this long for the client's signed proxy.
    delegation_ttl_s: int = 300


@dataclass(frozen=True)
class Settings:
    """Every section of ``pilotage.toml``."""

    pool: PoolSettings = field(default_factory=PoolSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    authz: AuthzSettings = field(default_factory=AuthzSettings)
    x509: X509Settings = field(default_factory=X509Settings)
    credentials: CredentialSettings = field(default_factory=CredentialSettings)

    @property
    def issuer(self) -> str:
        """The token issuer (and audience) of this pool."""
        return self.pool.issuer or f"pilotage:{self.pool.name}"

    def as_dict(self) -> dict[str, Any]:
        """The effective settings, as ``pilotage config`` prints them."""
        return dataclasses.asdict(self)


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    """Turn a TOML or environment value into the type of ``default``, or refuse it."""
    where = f"[{section}] {key}"
    if (section, key) in MAPPINGS:
        try:
            return MAPPINGS[section, key](value)
        except ValueError as exc:
            raise OperatorError(f"configuration {where}: {exc}; fix pilotage.toml") from None
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, (bool, float)):
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except ValueError:
        raise OperatorError(
            f"configuration {where} = {value!r} is not a valid {type(default).__name__}; "
            "fix pilotage.toml or the environment variable"
        ) from None
    raise OperatorError(f"configuration {where} has an unsupported type")  # pragma: no cover


def _section(cls: type[Any], section: str, table: dict[str, Any], env: dict[str, str]) -> Any:
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise OperatorError(
                f"configuration [{section}] has an unknown key '{key}'; "
                f"known keys are: {', '.join(sorted(known))}"
            )
    values: dict[str, Any] = {}
    defaults = cls()
    for name in known:
        default = getattr(defaults, name)
        if name in table:
            values[name] = _coerce(section, name, table[name], default)
        env_name = f"{ENV_PREFIX}{section.upper()}_{name.upper()}"
        if env_name in env:
            values[name] = _coerce(section, name, env[env_name], default)
    return cls(**values)


def load_settings(path: Path | None, env: dict[str, str] | None = None) -> Settings:
    """Read ``pilotage.toml`` (if given and present) and the environment."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise OperatorError(f"configuration file {path} is not valid TOML: {exc}") from None
    sections: dict[str, type[Any]] = {
        "pool": PoolSettings,
        "server": ServerSettings,
        "authz": AuthzSettings,
        "x509": X509Settings,
        "credentials": CredentialSettings,
    }
    for name, table in data.items():
        if name not in sections:
            raise OperatorError(
                f"configuration file {path} has an unknown section [{name}]; "
                f"known sections are: {', '.join(sorted(sections))}"
            )
        if not isinstance(table, dict):
            raise OperatorError(f"configuration file {path}: '{name}' must be a [section]")
    return Settings(
        **{name: _section(cls, name, data.get(name, {}), env) for name, cls in sections.items()}
    )


def with_overrides(settings: Settings, section: str, **overrides: Any) -> Settings:
    """Apply command-line flags (``None`` means "not given") on top of ``settings``."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return settings
    current = getattr(settings, section)
    return dataclasses.replace(settings, **{section: dataclasses.replace(current, **given)})
