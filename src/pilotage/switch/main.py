"""``pilotage-exec``: authenticate, authorize and map a user, then run a command as that user.

Usage::

    pilotage-exec [--linger|--no-linger] -- COMMAND [ARGS...]
    pilotage-exec --refresh
    pilotage-exec --signal SIG --job KEY
    pilotage-exec --enter --job KEY -- COMMAND [ARGS...]
    pilotage-exec --accounting [--since T] [--json]

Inputs from the environment (the only variables read; see docs/switch.md):
``PILOTAGE_EXEC_USER_CREDENTIAL`` (required), ``PILOTAGE_EXEC_PILOT_CREDENTIAL``,
``PILOTAGE_EXEC_TARGET_DIR`` (the claim's directory: the user's copy of the credential and
the job's directory ``job`` go there), ``PILOTAGE_EXEC_JOB_ID`` (the family key),
``PILOTAGE_EXEC_JOB_NAME`` (audit only) and ``PILOTAGE_EXEC_STATUS_FD``. Trust comes only
from root-owned files: the config at ``paths.CONFIG_PATH`` and what it names. Read ``_serve`` top to
bottom: every check is one call, each refusal one exception from ``refusals``.
"""

from __future__ import annotations

import os
import pwd
import sys
import time

from . import paths
from .refusals import ClientError, Denied, Refusal, SiteError

# Start-up is most of a warm call's time: each module is imported where it is needed, and
# a warm run imports no regular expression, json, enum, typing or OpenSSL (a test checks).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from .config import Config
    from .identity import Identity

USER_CREDENTIAL = "PILOTAGE_EXEC_USER_CREDENTIAL"
PILOT_CREDENTIAL = "PILOTAGE_EXEC_PILOT_CREDENTIAL"
TARGET_DIR = "PILOTAGE_EXEC_TARGET_DIR"
JOB_ID = "PILOTAGE_EXEC_JOB_ID"
JOB_NAME = "PILOTAGE_EXEC_JOB_NAME"
STATUS_FD = "PILOTAGE_EXEC_STATUS_FD"
USAGE = (
    "usage: pilotage-exec [--linger|--no-linger] -- COMMAND [ARGS...]\n"
    "       pilotage-exec --refresh\n"
    "       pilotage-exec --signal SIG --job KEY\n"
    "       pilotage-exec --enter --job KEY -- COMMAND [ARGS...]\n"
    "       pilotage-exec --accounting [--since T] [--json]"
)


class Invocation:
    """The request: ``action`` is ``run``, ``refresh``, ``signal`` or ``enter``; ``job`` the
    family key (``--job``, or ``PILOTAGE_EXEC_JOB_ID`` for a run) and ``name`` the pool's
    job id."""

    def __init__(self, action: str, linger: bool | None, command: list[str], signal: str,
                 job: str) -> None:  # fmt: skip
        self.action, self.linger, self.command = action, linger, command
        self.signal, self.job, self.name = signal, job, ""


def parse_args(argv: list[str]) -> Invocation:
    """Read the command line; ``ClientError`` with the usage for anything else."""
    linger: bool | None = None
    action, sig, job = "run", "", ""
    args = list(argv)
    while args and args[0] != "--":
        flag = args.pop(0)
        if flag in ("--linger", "--no-linger"):
            linger = flag == "--linger"
        elif flag == "--refresh":
            action = "refresh"
        elif flag == "--enter":
            action = "enter"
        elif flag in ("--signal", "--job") and args:
            value = args.pop(0)
            sig, job = (value, job) if flag == "--signal" else (sig, value)
            action = "signal" if flag == "--signal" else action
        else:
            raise ClientError(f"Unknown or incomplete option {flag[:40]!r}.\n{USAGE}")
    command = args[1:]
    if action in ("run", "enter") and not command:
        raise ClientError(f"No command given.\n{USAGE}")
    if action not in ("run", "enter") and (command or linger is not None):
        raise ClientError(f"--{action} takes no command and no linger flag.\n{USAGE}")
    if action == "enter" and (linger is not None or sig):
        raise ClientError(f"--enter takes no linger flag and no signal.\n{USAGE}")
    if action in ("signal", "enter") and not job:
        raise ClientError(f"--{action} needs --job ID.\n{USAGE}")
    if action == "run" and job:
        raise ClientError(f"--job goes with --signal; name a new job in {JOB_ID}.\n{USAGE}")
    return Invocation(action, linger, command, sig, job)


def main() -> None:
    """Entry point of the ``pilotage-exec`` console script."""
    sys.exit(run(sys.argv[1:], dict(os.environ)))


def run(argv: list[str], environ: Mapping[str, str]) -> int:
    """Do one invocation; return the exit code (when the payload was not exec'd in place)."""
    audit: dict[str, Any] = {"event": "refused", "pid": os.getpid()}
    status_fd = -1
    config: Config | None = None
    try:
        status_fd = _status_fd(environ)
        invocation = parse_args(argv) if argv[:1] != ["--accounting"] else None
        if invocation is not None and invocation.action == "run":
            invocation = _job_names(invocation, environ)
        uid, caller = _caller(environ)
        audit["caller"] = caller
        from . import config as config_module

        config = config_module.load(paths.CONFIG_PATH)
        if invocation is None:
            from . import accounting

            return accounting.main(argv[1:], config.audit_log, from_sudo=uid != os.getuid())
        audit.update(mode=config.mode, command=invocation.command or None)
        if caller not in config.invokers:
            raise Denied(f"The account {caller} is not allowed to call pilotage-exec.")
        return _serve(invocation, config, uid, environ, audit, status_fd)
    except Refusal as exc:
        message = exc.message.splitlines()[0]
        print(f"pilotage-exec: {exc.message}", file=sys.stderr)
        if status_fd >= 0:
            _report(status_fd, f"{exc.exit_code} {message}\n")
        if config is not None:
            _audit(config, {**audit, "exit": exc.exit_code, "message": message})
        return exc.exit_code


def _job_names(invocation: Invocation, environ: Mapping[str, str]) -> Invocation:
    """A run's family key and job name from the environment, checked before anything is done."""
    if environ.get(JOB_ID) or environ.get(JOB_NAME):
        from .family import check_key

        invocation.job = check_key(environ[JOB_ID]) if environ.get(JOB_ID) else ""
        invocation.name = (
            check_key(environ[JOB_NAME], "job name") if environ.get(JOB_NAME) else invocation.job
        )
    return invocation


def _status_fd(environ: Mapping[str, str]) -> int:
    text = environ.get(STATUS_FD)
    if text is None:
        return -1
    try:
        fd = int(text)
        if fd < 3:
            raise ValueError
        os.fstat(fd)
    except (ValueError, OSError):
        raise ClientError(f"{STATUS_FD}={text[:20]!r} is not an open descriptor above 2.") from None
    os.set_inheritable(fd, False)  # Invariant: the payload never holds the status channel.
    return fd


def _report(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass


def _caller(environ: Mapping[str, str]) -> tuple[int, str]:
    """The calling account: the real uid, or sudo's ``SUDO_UID`` when run by sudo as root.

    Only root (or sudo, which sets it itself) can start this process with real uid 0, and
    root may claim any caller, so ``SUDO_UID`` is trusted only then.
    """
    uid = os.getuid()
    if uid == 0 and environ.get("SUDO_UID", "").isdigit():
        uid = int(environ["SUDO_UID"])
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        raise ClientError(f"The calling uid {uid} has no account on this node.") from None


def _identify(config: Config, uid: int, environ: Mapping[str, str], cache: Any) -> tuple[
    Identity, Identity | None, bytes
]:  # fmt: skip
    from .identity import identify, read_credential

    user_path = environ.get(USER_CREDENTIAL)
    if not user_path:
        raise ClientError(f"{USER_CREDENTIAL} does not name the user credential file.")
    user_data = read_credential(user_path, uid, "user credential")  # as the caller
    user = identify(user_data, config, cache, "user credential")
    pilot_path = environ.get(PILOT_CREDENTIAL)
    pilot = None
    if pilot_path:
        pilot_data = read_credential(pilot_path, uid, "pilot credential")
        pilot = identify(pilot_data, config, cache, "pilot credential")
    return user, pilot, user_data


def _account(config: Config, mapped: str, caller_uid: int) -> pwd.struct_passwd:
    """The account the payload runs as: the ``mapped`` one in setuid mode, else the caller."""
    if config.mode != "setuid":
        return pwd.getpwuid(caller_uid)
    try:
        account = pwd.getpwnam(mapped)
    except KeyError:
        raise SiteError(f"The mapped account {mapped} does not exist on this node.") from None
    if account.pw_uid < config.min_uid:
        raise SiteError(
            f"The mapped account {mapped} has uid {account.pw_uid}, below min_uid "
            f"{config.min_uid}; refusing to run as a system account."
        )
    return account


def _serve(
    invocation: Invocation,
    config: Config,
    caller_uid: int,
    environ: Mapping[str, str],
    audit: dict[str, Any],
    status_fd: int,
) -> int:
    from .callout import authorize
    from .state import Cache, state_dir

    state = state_dir()
    cache = Cache(os.path.join(state, "cache"), config.cache_ttl_s)
    os.makedirs(cache.directory, mode=0o700, exist_ok=True)
    user, pilot, user_data = _identify(config, caller_uid, environ, cache)
    audit.update(user=user.subject, issuer=user.issuer or None, groups=list(user.groups) or None,
                 pilot=pilot.subject if pilot else None)  # fmt: skip
    mapped = authorize(config.authz, cache, user, pilot)
    audit["account"] = mapped
    account = _account(config, mapped, caller_uid)
    if config.mode == "setuid" and os.geteuid() != 0:
        raise SiteError("setuid mode needs root: run pilotage-exec through its sudo rule.")
    jobs = os.path.join(state, "jobs")
    if invocation.action == "signal":
        return _signal(invocation, config, account, caller_uid, jobs, audit)
    if invocation.action == "enter":
        from .enter import enter

        return enter(invocation.command, invocation.job, config, account, user.kind, caller_uid,
                     environ, jobs, environ.get(TARGET_DIR, ""), status_fd, audit,
                     lambda record: _audit(config, record))  # fmt: skip
    target_dir = environ.get(TARGET_DIR, "")
    if invocation.action == "refresh":
        return _refresh(config, target_dir, user, user_data, account, caller_uid, audit)
    from .access import check_program, resolve

    program = resolve(invocation.command[0], config.search_path)
    gids = os.getgrouplist(account.pw_name, account.pw_gid)
    check_program(program, account.pw_name, account.pw_uid, frozenset(gids))
    credential = None
    if target_dir:
        from . import delivery

        dir_fd = delivery.open_target_dir(target_dir, caller_uid, (caller_uid, account.pw_uid))
        try:
            delivery.ensure_job_dir(dir_fd, account.pw_uid, account.pw_gid)
            name = delivery.write_copy(dir_fd, user.kind, user_data, account.pw_uid, account.pw_gid)
        finally:
            os.close(dir_fd)
        credential = (delivery.NAMES[user.kind][1], os.path.join(target_dir, name))
    return _start(invocation, config, account, gids, program, credential, environ, caller_uid,
                  jobs, audit, status_fd)  # fmt: skip


def _start(
    invocation: Invocation,
    config: Config,
    account: pwd.struct_passwd,
    gids: list[int],
    program: str,
    credential: tuple[str, str] | None,
    environ: Mapping[str, str],
    caller_uid: int,
    jobs: str,
    audit: dict[str, Any],
    status_fd: int,
) -> int:
    from . import environment, family, launch

    env = environment.build(
        environ, config.env_allow, search_path=config.search_path, account=account.pw_name,
        home=account.pw_dir, shell=account.pw_shell, credential=credential,
    )  # fmt: skip
    key, name = invocation.job, invocation.name
    cgroup, limited = "", False
    if key and os.geteuid() == 0:
        cgroup, limited = family.make_cgroup(config.cgroup_root, caller_uid, key, config.pids_max)
    plan = launch.Launch(
        argv=[program, *invocation.command[1:]], env=env, uid=account.pw_uid,
        gid=account.pw_gid, groups=gids, switch_user=os.geteuid() == 0, cgroup=cgroup,
        nproc=0 if limited else config.pids_max,
    )  # fmt: skip
    linger = config.linger if invocation.linger is None else invocation.linger
    audit.update(event="exec", linger=linger, job=name or None, family=key or None,
                 cgroup=cgroup or None)  # fmt: skip
    started = time.monotonic()
    # Invariant: a lingering run's usage is in its exit record, so its family's end has none.
    entry: dict[str, object] = {"uid": account.pw_uid, "cgroup": cgroup, "name": name,
                                "started": time.time(),
                                "accounted": linger or config.mode == "namespace"}  # fmt: skip
    if config.mode == "namespace":
        pid = _start_namespace(config, plan, environ)
        entry["init"] = pid
    elif not linger:
        if key:
            family.record(jobs, caller_uid, key, {**entry, "sid": os.getpid(),
                                                  "pgid": os.getpid()})  # fmt: skip
        _audit(config, audit)
        launch.exec_in_place(plan, status_fd)
    else:
        pid = launch.spawn(lambda fd: launch.child_exec(plan, fd))
        entry.update(sid=pid, pgid=pid)
    if key:
        family.record(jobs, caller_uid, key, entry)
    if status_fd >= 0:
        _report(status_fd, f"0 started {pid}\n")
        os.close(status_fd)
    outcome = launch.wait(pid, config.mode != "namespace", started)
    if cgroup:
        family.remove_cgroup(cgroup)
    audit.update(event="exit", pid=pid, exit=outcome.exit_code, cpu_user_s=outcome.cpu_user_s,
                 cpu_sys_s=outcome.cpu_sys_s, wall_s=outcome.wall_s,
                 max_rss_kb=outcome.max_rss_kb)  # fmt: skip
    _audit(config, audit)
    return outcome.exit_code


def _start_namespace(config: Config, plan: Any, environ: Mapping[str, str]) -> int:
    from . import launch, namespace
    from .state import state_dir

    hidden_files = [environ[PILOT_CREDENTIAL]] if environ.get(PILOT_CREDENTIAL) else []
    hidden_dirs = [*config.hide, state_dir()]
    namespace.enter()

    def init(report_fd: int) -> Any:
        os.setsid()
        namespace.hide(hidden_dirs, hidden_files)
        code = namespace.run_init(lambda: _fork_payload(plan, report_fd))
        os._exit(code)

    return launch.spawn(init)


def _fork_payload(plan: Any, report_fd: int) -> int:
    from . import launch

    pid = os.fork()
    if pid == 0:
        launch.child_exec(plan, report_fd, session=False)
    os.close(report_fd)
    return pid


def _signal(
    invocation: Invocation, config: Config, account: pwd.struct_passwd, caller_uid: int,
    jobs: str, audit: dict[str, Any],
) -> int:  # fmt: skip
    from . import family, launch

    key = family.check_key(invocation.job)
    number, name = family.parse_signal(invocation.signal)
    entry = family.lookup(jobs, caller_uid, key)  # only the caller's own families
    if entry.get("uid") != account.pw_uid:
        raise ClientError(f"The job {key} does not run as {account.pw_name}.")
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        # Why: as the job's own uid, the kernel refuses any process of another account.
        # A child does it, so the switch itself stays root to write the audit record.
        count, left = 0, True
        try:
            if os.geteuid() == 0:
                launch.become(account.pw_uid, account.pw_gid, [account.pw_gid])
            init = entry.get("init")
            if isinstance(init, int):
                try:
                    os.kill(init, number)
                    count = 1
                except (ProcessLookupError, PermissionError):
                    pass
            else:
                count, left = family.signal_family(entry, number)
            os.write(write_fd, f"{count} {int(left)}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        said = pipe.read().split()
    os.waitpid(child, 0)
    count = int(said[0]) if said and said[0].isdigit() else 0
    audit.update(event="signal", family=key, signal=name, signalled=count, exit=0)
    _audit(config, audit)
    # The child's last scan found the family empty, or (namespace mode, no word) scan again.
    if name == "SIGKILL" and (said[1:] == [b"0"] or not family.members(entry)):
        usage = family.end(jobs, caller_uid, key, entry)
        _audit(config, {**audit, "event": "end", "job": entry.get("name"), "signal": None,
                        "signalled": None, "cgroup": entry.get("cgroup") or None,
                        **usage})  # fmt: skip
    return 0


def _refresh(
    config: Config, target_dir: str, user: Identity, user_data: bytes,
    account: pwd.struct_passwd, caller_uid: int, audit: dict[str, Any],
) -> int:  # fmt: skip
    from . import delivery
    from .identity import claimed

    if not target_dir:
        raise ClientError(f"--refresh needs {TARGET_DIR}, the directory holding the copy.")
    dir_fd = delivery.open_target_dir(target_dir, caller_uid, (caller_uid, account.pw_uid))
    try:
        current = delivery.existing_copy(dir_fd, user.kind, account.pw_uid)
        if current is None:
            raise ClientError(f"There is no credential copy to refresh in {target_dir}.")
        current_key, current_end = claimed(current)
        if current_key != user.key:
            raise ClientError(
                f"The new credential is for {user.key!r} but the current copy is for "
                f"{current_key!r}; a refresh must keep the identity."
            )
        if user.not_after < current_end:
            raise ClientError("The new credential ends before the current copy; it is not newer.")
        delivery.write_copy(dir_fd, user.kind, user_data, account.pw_uid, account.pw_gid)
    finally:
        os.close(dir_fd)
    audit.update(event="refresh", exit=0)
    _audit(config, audit)
    return 0


def _audit(config: Config, record: dict[str, Any]) -> None:
    from . import audit
    from .state import state_dir

    path = config.audit_log if os.geteuid() == 0 else os.path.join(state_dir(), "audit.jsonl")
    audit.write(path, config.syslog_socket if config.syslog else "", record)
