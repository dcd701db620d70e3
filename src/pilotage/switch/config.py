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

Root's switch keeps the parsed TOML in its state directory (root's, mode 0700, checked at
each use; the first call served creates it, a refused one does not), keyed by the file's
path, device, inode, size, mtime and ctime, and parses the file again when any of them
changes: ``tomllib`` costs more imports than the rest of a warm call. The cached TOML is
validated like a fresh one at every call; a file that changed in the last 2 s is not
cached, since two changes within one clock tick may leave the same times.
"""

from __future__ import annotations

import os
import stat
import time

from .refusals import SiteError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MODES = ("setuid", "log-only", "namespace")
DEFAULT_ENV_ALLOW = ("LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "PILOTAGE_JOB_*")
#: A config changed less than this long ago is not cached: a file system keeps times to a
#: clock tick, so two changes within one tick could otherwise look like one.
SETTLED_NS = 2_000_000_000


class AuthzConfig:
    """Where decisions come from: the local policy file, or the site's remote service."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.kind: str = _get(raw, "kind", str, "local")
        if self.kind not in ("local", "remote"):
            raise ValueError(f"authz.kind {self.kind!r} is not local or remote")
        self.policy: str = _get(raw, "policy", str, "/etc/pilotage/policy.toml")
        self.url: str = _get(raw, "url", str, "")
        self.ca_file: str = _get(raw, "ca_file", str, "")
        self.client_cert: str = _get(raw, "client_cert", str, "")
        self.client_key: str = _get(raw, "client_key", str, "")
        self.timeout_s = float(_get(raw, "timeout_s", (int, float), 5))
        if self.kind == "remote" and not self.url.startswith("https://"):
            raise ValueError("authz.url must be an https:// URL when authz.kind is remote")


class Config:
    """The validated configuration (see the module docstring for each key).

    ``ValueError`` or ``TypeError`` names the first key that is wrong.
    """

    def __init__(self, path: str, raw: dict[str, Any]) -> None:
        unknown = sorted(set(raw) - KNOWN_KEYS)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}")
        self.path = path
        self.mode: str = _get(raw, "mode", str, "setuid")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        self.pids_max: int = _get(raw, "pids_max", int, 4096)
        if self.pids_max < 0:
            raise ValueError("pids_max must be 0 (no limit) or a number of processes")
        self.search_path: str = _get(raw, "path", str, "/usr/local/bin:/usr/bin:/bin")
        if any(not part.startswith("/") for part in self.search_path.split(":")):
            raise ValueError("every directory of path must be absolute")
        self.authz = AuthzConfig(_get(raw, "authz", dict, {}))
        tokens = _get(raw, "tokens", dict, {})
        issuers = _get(tokens, "issuers", dict, {})
        if not all(isinstance(v, str) for v in issuers.values()):
            raise ValueError("tokens.issuers maps each issuer to the path of its JWKS file")
        self.token_issuers: dict[str, str] = dict(issuers)
        self.token_audiences: tuple[str, ...] = tuple(_get(tokens, "audiences", list, []))
        self.linger: bool = _get(raw, "linger", bool, False)
        self.invokers: tuple[str, ...] = tuple(_get(raw, "invokers", list, []))
        self.env_allow: tuple[str, ...] = tuple(
            _get(raw, "env_allow", list, list(DEFAULT_ENV_ALLOW))
        )
        self.trust_dir: str = _get(raw, "trust_dir", str, "/etc/grid-security/certificates")
        self.audit_log: str = _get(raw, "audit_log", str, "/var/log/pilotage-exec/audit.jsonl")
        self.syslog: bool = _get(raw, "syslog", bool, True)
        self.syslog_socket: str = _get(raw, "syslog_socket", str, "/dev/log")
        self.min_uid: int = _get(raw, "min_uid", int, 1000)
        self.cache_ttl_s = float(_get(raw, "cache_ttl_s", (int, float), 60))
        self.allow_limited: bool = _get(raw, "allow_limited", bool, False)
        self.require_namespaces: bool = _get(raw, "require_namespaces", bool, True)
        self.hide: tuple[str, ...] = tuple(_get(raw, "hide", list, []))
        self.cgroup_root: str = _get(raw, "cgroup_root", str, "")


KNOWN_KEYS = frozenset({
    "mode", "linger", "invokers", "path", "env_allow", "trust_dir", "audit_log", "syslog",
    "min_uid", "cache_ttl_s", "allow_limited", "hide", "cgroup_root", "authz", "tokens",
    "pids_max", "syslog_socket", "require_namespaces",
})  # fmt: skip


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
    check_trusted(os.path.dirname(path) or "/", "config directory", directory=True)
    st = check_trusted(path, "config file")
    # Invariant: the cache holds this very file's TOML, and it is validated again below.
    stamp = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    cache = _cache_file(path)
    cached = _cached(cache, stamp)
    raw = cached if cached is not None else _read(path)
    try:
        config = Config(path, raw)
    except (TypeError, ValueError) as exc:
        raise SiteError(f"The config file {path} is invalid: {exc}.") from None
    if cache and cached is None and time.time_ns() - st.st_ctime_ns > SETTLED_NS:
        from .state import write_private

        try:  # a TOML value marshal cannot write (a date) leaves it uncached
            write_private(cache, (stamp, raw))
        except (OSError, ValueError):
            pass
    check_trusted_dir(config.trust_dir, "CA directory")
    return config


def _read(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SiteError(f"The config file {path} cannot be parsed ({exc}).") from None


def _cache_file(path: str) -> str:
    """Where the parsed config at ``path`` is cached: root's state directory, or "" (none).

    For root only, and only if that directory is root's and closed: an unprivileged
    switch's directory belongs to its caller, who must not choose the config it runs under.
    """
    from . import paths
    from .state import digest, private

    try:
        if os.geteuid() != 0 or not private(os.lstat(paths.STATE_DIR)):
            return ""
    except OSError:
        return ""
    return os.path.join(paths.STATE_DIR, f"config-{digest(path.encode())}.marshal")


def _cached(cache: str, stamp: tuple[str, int, int, int, int, int]) -> dict[str, Any] | None:
    """The TOML of the config file as parsed when it had ``stamp``, if cached."""
    from .state import read_private

    entry = read_private(cache) if cache else None
    if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == stamp:
        return entry[1] if isinstance(entry[1], dict) else None
    return None


def _get(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = raw.get(key, default)
    # bool is an int: a "min_uid = true" must not pass as 1.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise TypeError(f"{key} has the wrong type ({type(value).__name__})")
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        raise TypeError(f"{key} must be a list of strings")
    return value
