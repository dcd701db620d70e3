"""``python -m pilotage.pilot`` and the zipapp's entry: parse flags, run the agent.

Exit codes: 0 when the agent leaves normally (idle, lifetime, retired, SIGTERM), 1 on a
fatal error (bad flags' values, registration refused, the server lost the pilot), 2 for
unusable flags (argparse).
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pilotage import __version__
from pilotage.errors import PilotageError

from .agent import run
from .config import DEFAULT_LIFETIME_S, AgentConfig, default_attrs
from .container import runtime as container_runtime
from .container import slot_attrs as container_attrs
from .gpus import Gpu, parse_flag
from .gpus import choose as choose_gpus
from .gpus import slot_attrs as gpu_attrs
from .renewal import RenewalSettings
from .resources import Resources, detect_cpus, detect_disk_mb, detect_memory_mb
from .switched import check_switch_mode
from .switchretry import SwitchRetry


def _attr(text: str) -> tuple[str, str]:
    key, sep, expr = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier() or not expr.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=EXPR (a ClassAd expression)")
    return key, expr.strip()


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
        return value

    return parse


def _command(text: str) -> tuple[str, ...]:
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a command line ({exc})") from None
    if not words:
        raise argparse.ArgumentTypeError("the switch command is empty")
    return words


def _gpus(text: str) -> tuple[Gpu, ...] | int:
    try:
        return parse_flag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _owner(text: str) -> str:
    if text != "*" and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an owner name, nor '*'")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The agent's command line."""
    p = argparse.ArgumentParser(
        prog="pilotage-agent",
        description="The pilotage agent: join a pool, pull jobs and run them on this node.",
    )
    p.add_argument(
        "--server",
        required=True,
        metavar="URL",
        help="https://host[:port], or several servers sharing one database, comma-separated",
    )
    p.add_argument("--ca", required=True, type=Path, metavar="FILE", help="the pool CA (PEM)")
    p.add_argument("--token", required=True, type=Path, metavar="FILE", help="pilot token file")
    p.add_argument("--workdir", required=True, type=Path, metavar="DIR", help="jobs' scratch root")
    p.add_argument("--cpus", type=_positive(int), help="default: the CPUs this process may use")
    p.add_argument("--memory", type=_positive(int), metavar="MB", help="default: physical RAM")
    p.add_argument("--disk", type=_positive(int), metavar="MB", help="default: free in workdir")
    p.add_argument(
        "--gpus",
        type=_gpus,
        metavar="IDS|N",
        help="GPU device ids (0,1 or GPU-uuid,...), or at most N of the detected ones; "
        "default: every device nvidia-smi or /proc/driver/nvidia reports",
    )
    p.add_argument("--site", default="local", metavar="NAME")
    p.add_argument("--name", default="", metavar="NAME", help="default: host-pid-random")
    p.add_argument(
        "--idle-timeout", type=_positive(float), metavar="S", help="default: the server's"
    )
    p.add_argument("--lifetime", type=_positive(float), default=DEFAULT_LIFETIME_S, metavar="S")
    p.add_argument("--start", default="true", metavar="EXPR", help="the slot's Requirements")
    p.add_argument(
        "--attr",
        type=_attr,
        action="append",
        default=[],
        metavar="KEY=EXPR",
        help="a slot attribute (repeatable); strings are quoted: OpSys='\"LINUX\"'",
    )
    p.add_argument(
        "--switch",
        type=_command,
        default=(),
        metavar="COMMAND",
        help="run each job under its owner's account through this pilotage-exec command, "
        "e.g. 'sudo -n -C 5 /opt/pilotage-exec/bin/pilotage-exec' (needs cryptography)",
    )
    p.add_argument(
        "--single-user",
        type=_owner,
        metavar="OWNER",
        help="run only OWNER's jobs ('*': the owner of the first job); for sites that do "
        "not allow multi-user pilots",
    )
    p.add_argument(
        "--bypass-on-error",
        choices=("yes", "no"),
        default="no",
        help="the site's answer: may a job run as the pilot account after the switch "
        "fails with an internal error (default: no)",
    )
    p.add_argument(
        "--renewal",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="credential renewal and expiry of switched jobs (repeatable): fraction, "
        "renew_margin_s, retry_s, expiry_margin_s, kill_grace_s",
    )
    p.add_argument(
        "--switch-retry",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a passing 202 of the switch (repeatable): retries, base_s, total_s, exclude_s",
    )
    p.add_argument("--version", action="version", version=f"pilotage-agent {__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Fill the node's defaults in; the work directory is made (0700) if missing."""
    workdir: Path = args.workdir.absolute()
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if args.switch:
        check_switch_mode()
        # Why: each job's directory below is its owner's; they must be able to reach it.
        workdir.chmod(0o711)
    attrs = default_attrs()
    if args.single_user is not None:
        attrs["PilotageSingleUser"] = "true"
    gpus = choose_gpus(args.gpus)
    attrs.update(gpu_attrs(gpus))
    attrs.update(container_attrs(container_runtime()))
    attrs.update(dict(args.attr))
    resources = Resources(
        cpus=args.cpus if args.cpus is not None else detect_cpus(),
        memory_mb=args.memory if args.memory is not None else detect_memory_mb(),
        disk_mb=args.disk if args.disk is not None else detect_disk_mb(workdir),
        gpus=len(gpus),
    )
    return AgentConfig(
        server_url=args.server,
        ca_file=args.ca,
        token_file=args.token.absolute(),
        workdir=workdir,
        resources=resources,
        site=args.site,
        name=args.name,
        lifetime_s=args.lifetime,
        idle_timeout_s=args.idle_timeout,
        attrs=attrs,
        start=args.start,
        switch=args.switch,
        single_user=args.single_user,
        bypass_on_error=args.bypass_on_error == "yes",
        renewal=RenewalSettings.parse(args.renewal),
        switch_retry=SwitchRetry.parse(args.switch_retry),
        gpu_ids=tuple(gpu.id for gpu in gpus),
    )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, log to stderr with UTC timestamps, and run the agent."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger("pilotage")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # A few lines per job, written from every claim's thread: the record's caller,
    # thread and process, which this format never shows, are not looked up (the
    # logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    try:
        return run(config_from_args(args))
    except (PilotageError, OSError) as exc:
        print(f"pilotage-agent: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
