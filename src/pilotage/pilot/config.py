"""The agent's settings, read once at its entry point and passed down.

The agent takes flags only (a pilot's bootstrap writes its command line); every default
is computed from the node here, and :meth:`AgentConfig.describe` prints the effective
values at start.
"""

from __future__ import annotations

import os
import platform
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .renewal import RenewalSettings
from .resources import Resources
from .switchretry import SwitchRetry

#: The lifetime a pilot assumes when its command line gives none.
DEFAULT_LIFETIME_S = 86400.0


def default_name(host: str) -> str:
    """A pilot name unique enough to tell pilots apart: ``host-pid-random``."""
    short = host.split(".")[0] or "pilot"
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in short)[:80]
    return f"{cleaned}-{os.getpid()}-{secrets.token_hex(2)}"


def default_attrs() -> dict[str, str]:
    """``OpSys`` and ``Arch`` as ClassAd string expressions, HTCondor's spelling."""
    machine = platform.machine()
    arch = {"x86_64": "X86_64", "amd64": "X86_64", "i686": "INTEL"}.get(machine.lower(), machine)
    return {"OpSys": f'"{platform.system().upper()}"', "Arch": f'"{arch}"'}


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to run; built by ``__main__`` from its flags."""

    server_url: str
    ca_file: Path
    token_file: Path
    workdir: Path
    resources: Resources
    site: str = "local"
    host: str = field(default_factory=socket.getfqdn)
    name: str = ""
    lifetime_s: float = DEFAULT_LIFETIME_S
    #: ``None``: take the server's value from the registration answer.
    idle_timeout_s: float | None = None
    attrs: dict[str, str] = field(default_factory=default_attrs)
    start: str = "true"
    timeout_s: float = 30.0
    #: ``--switch``: the command that runs a job's actions under its owner's account
    #: (``sudo -n -C 5 .../pilotage-exec``); empty: jobs run as the pilot, as before.
    switch: tuple[str, ...] = ()
    #: ``--single-user``: every job of this pilot belongs to this owner (``*``: the
    #: owner of its first job) — a site that does not allow multi-user pilots (seed 002).
    single_user: str | None = None
    #: ``--bypass-on-error``: the site's answer to seed 002's question 4 — may a job run
    #: as the pilot account after the switch fails with an internal error (202)?
    bypass_on_error: bool = False
    #: ``--renewal KEY=VALUE``: when a switched job's credential is renewed, and when the
    #: job is stopped because none can be had (docs/pilot.md, "Keeping control").
    renewal: RenewalSettings = field(default_factory=RenewalSettings)
    #: ``--switch-retry KEY=VALUE``: a passing 202's retries (count, first wait, total
    #: time) and how long the job is then kept from this pilot (docs/pilot.md).
    switch_retry: SwitchRetry = field(default_factory=SwitchRetry)
    #: The GPU devices of this pilot (``--gpus`` or detected; pilot/gpus.py).
    gpu_ids: tuple[str, ...] = ()

    @property
    def pilot_name(self) -> str:
        """The name given, or one made from the host."""
        return self.name or default_name(self.host)

    @property
    def lifetime_margin_s(self) -> float:
        """Stop asking for work when less than this is left of the lifetime."""
        return min(300.0, self.lifetime_s * 0.1)

    def describe(self) -> str:
        """The effective settings on one line (no secrets: the token is only a path)."""
        r = self.resources
        return (
            f"server={self.server_url} ca={self.ca_file} token_file={self.token_file} "
            f"workdir={self.workdir} site={self.site} host={self.host} cpus={r.cpus} "
            f"memory_mb={r.memory_mb} disk_mb={r.disk_mb} gpus={r.gpus} "
            f"lifetime_s={self.lifetime_s:.0f} idle_timeout_s={self.idle_timeout_s} "
            f"start={self.start!r} attrs={self.attrs}"
            + (f" switch={' '.join(self.switch)!r}" if self.switch else "")
            + (f" single_user={self.single_user!r}" if self.single_user is not None else "")
            + f" bypass_on_error={'yes' if self.bypass_on_error else 'no'}"
            + (f" renewal={self.renewal.describe()}" if self.switch else "")
            + (f" switch_retry={self.switch_retry.describe()}" if self.switch else "")
        )
