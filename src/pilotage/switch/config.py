"""The switch's configuration: one root-owned TOML file, read once per invocation.

Every file the switch trusts (this config, the CA directory and each file in it, the
policy, the grid-mapfile, the gridmapdir and its files, issuer keys) must be owned by root
and writable by nobody else; otherwise whoever can write it could choose who runs as whom.
Such a file makes the switch refuse to run (exit 202) with a message naming it. Example::

    mode = "setuid"                 # setuid | log-only | namespace
    linger = false                  # default when the caller passes neither flag
    invokers = ["pilot"]            # accounts allowed to call the switch
    path = "/usr/local/bin:/usr/bin:/bin"
    env_allow = ["LANG", "LC_*", "TZ", "TERM", "PILOTAGE_JOB_*"]
    trust_dir = "/etc/grid-security/certificates"
    audit_log = "/var/log/pilotage-exec/audit.jsonl"
    syslog = true                   # the same line to syslog, authpriv.info ...
    syslog_socket = "/dev/log"      # ... sent to this datagram socket
    pids_max = 4096                 # processes of one job (cgroup pids.max); 0: no limit
    min_uid = 1000                  # never map to an account below this uid
    cache_ttl_s = 60                # credential and decision cache; 0 turns it off

    [authz]
    kind = "local"                  # local | remote
    policy = "/etc/pilotage/policy.toml"
    # kind = "remote": url, ca_file, client_cert, client_key, timeout_s

    [tokens]
    audiences = ["https://site.example"]
    issuers = { "https://pool.example" = "/etc/pilotage/jwks/pool.json" }
"""

from __future__ import annotations

import os
import stat
from typing import Any, NamedTuple

from .refusals import SiteError

MODES = ("setuid", "log-only", "namespace")
DEFAULT_ENV_ALLOW = ("LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "PILOTAGE_JOB_*")


class AuthzConfig(NamedTuple):
    """Where decisions come from: the local policy file, or the site's remote service."""

    kind: str
    policy: str
    url: str
    ca_file: str
    client_cert: str
    client_key: str
    timeout_s: float


class Config(NamedTuple):
    """The validated configuration (see the module docstring for each key)."""

    path: str
    mode: str
    linger: bool
    invokers: tuple[str, ...]
    search_path: str
    env_allow: tuple[str, ...]
    trust_dir: str
    audit_log: str
    syslog: bool
    syslog_socket: str
    pids_max: int
    min_uid: int
    cache_ttl_s: float
    allow_limited: bool
    require_namespaces: bool
    hide: tuple[str, ...]
    cgroup_root: str
    authz: AuthzConfig
    token_audiences: tuple[str, ...]
    token_issuers: dict[str, str]


def check_trusted(path: str, what: str, *, directory: bool = False) -> os.stat_result:
    """Refuse ``path`` unless root owns it and neither group nor others may write it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SiteError(f"The {what} {path} cannot be read ({exc.strerror}).") from None
    if directory != stat.S_ISDIR(st.st_mode):
        kind = "a directory" if directory else "a regular file"
        raise SiteError(f"The {what} {path} is not {kind}.")
    _check_owner(st, path, what)
    return st


def _check_owner(st: os.stat_result, path: str, what: str) -> None:
    if st.st_uid != 0:
        raise SiteError(f"The {what} {path} is owned by uid {st.st_uid}, not by root.")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SiteError(f"The {what} {path} is writable by group or others.")


def check_trusted_dir(path: str, what: str) -> None:
    """Refuse the directory ``path`` unless it and every entry in it pass ``check_trusted``.

    Entries are read through the directory's descriptor without following links; a link
    must be root's, and what it points to is checked as well.
    """
    check_trusted(path, what, directory=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            entry = os.path.join(path, name)
            try:
                link = os.stat(name, dir_fd=fd, follow_symlinks=False)
                st = os.stat(name, dir_fd=fd) if stat.S_ISLNK(link.st_mode) else link
            except OSError as exc:
                reason = exc.strerror
                raise SiteError(f"The {what} file {entry} cannot be read ({reason}).") from None
            if link.st_uid != 0:  # a link of another account: what it points to may change
                _check_owner(link, entry, f"{what} file")
            _check_owner(st, entry, f"{what} file")
    finally:
        os.close(fd)


def load(path: str) -> Config:
    """Read and check the config at ``path``; raise :class:`SiteError` naming what is wrong."""
    import tomllib

    check_trusted(os.path.dirname(path) or "/", "config directory", directory=True)
    check_trusted(path, "config file")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SiteError(f"The config file {path} cannot be parsed ({exc}).") from None
    try:
        config = _parse(path, raw)
    except (TypeError, ValueError) as exc:
        raise SiteError(f"The config file {path} is invalid: {exc}.") from None
    check_trusted_dir(config.trust_dir, "CA directory")
    return config


def _parse(path: str, raw: dict[str, Any]) -> Config:
    known = {
        "mode", "linger", "invokers", "path", "env_allow", "trust_dir", "audit_log", "syslog",
        "min_uid", "cache_ttl_s", "allow_limited", "hide", "cgroup_root", "authz", "tokens",
        "pids_max", "syslog_socket", "require_namespaces",
    }  # fmt: skip
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    mode = _get(raw, "mode", str, "setuid")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if _get(raw, "pids_max", int, 4096) < 0:
        raise ValueError("pids_max must be 0 (no limit) or a number of processes")
    search_path = _get(raw, "path", str, "/usr/local/bin:/usr/bin:/bin")
    if any(not part.startswith("/") for part in search_path.split(":")):
        raise ValueError("every directory of path must be absolute")
    authz_raw = _get(raw, "authz", dict, {})
    kind = _get(authz_raw, "kind", str, "local")
    if kind not in ("local", "remote"):
        raise ValueError(f"authz.kind {kind!r} is not local or remote")
    authz = AuthzConfig(
        kind=kind,
        policy=_get(authz_raw, "policy", str, "/etc/pilotage/policy.toml"),
        url=_get(authz_raw, "url", str, ""),
        ca_file=_get(authz_raw, "ca_file", str, ""),
        client_cert=_get(authz_raw, "client_cert", str, ""),
        client_key=_get(authz_raw, "client_key", str, ""),
        timeout_s=float(_get(authz_raw, "timeout_s", (int, float), 5)),
    )
    if kind == "remote" and not authz.url.startswith("https://"):
        raise ValueError("authz.url must be an https:// URL when authz.kind is remote")
    tokens = _get(raw, "tokens", dict, {})
    issuers = _get(tokens, "issuers", dict, {})
    if not all(isinstance(v, str) for v in issuers.values()):
        raise ValueError("tokens.issuers maps each issuer to the path of its JWKS file")
    return Config(
        path=path,
        mode=mode,
        linger=_get(raw, "linger", bool, False),
        invokers=tuple(_get(raw, "invokers", list, [])),
        search_path=search_path,
        env_allow=tuple(_get(raw, "env_allow", list, list(DEFAULT_ENV_ALLOW))),
        trust_dir=_get(raw, "trust_dir", str, "/etc/grid-security/certificates"),
        audit_log=_get(raw, "audit_log", str, "/var/log/pilotage-exec/audit.jsonl"),
        syslog=_get(raw, "syslog", bool, True),
        syslog_socket=_get(raw, "syslog_socket", str, "/dev/log"),
        pids_max=_get(raw, "pids_max", int, 4096),
        min_uid=_get(raw, "min_uid", int, 1000),
        cache_ttl_s=float(_get(raw, "cache_ttl_s", (int, float), 60)),
        allow_limited=_get(raw, "allow_limited", bool, False),
        require_namespaces=_get(raw, "require_namespaces", bool, True),
        hide=tuple(_get(raw, "hide", list, [])),
        cgroup_root=_get(raw, "cgroup_root", str, ""),
        authz=authz,
        token_audiences=tuple(_get(tokens, "audiences", list, [])),
        token_issuers=dict(issuers),
    )


def _get(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = raw.get(key, default)
    # bool is an int: a "min_uid = true" must not pass as 1.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise TypeError(f"{key} has the wrong type ({type(value).__name__})")
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        raise TypeError(f"{key} must be a list of strings")
    return value
