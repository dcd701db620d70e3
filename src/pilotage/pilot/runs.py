"""A claim's run: made for the agent's mode, executed on a worker, and run again as the
pilot account when the switch failed and the site allows it (the bypass).

Standard library only (the agent's zipapp).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .client import Client
from .config import AgentConfig
from .jobrun import JobRun
from .switched import SwitchedRun
from .wire import Claim, GiveBack, JobResult

log = logging.getLogger("pilotage.pilot")


def make_run(
    claim: Claim, config: AgentConfig, client: Client, max_sandbox_bytes: int, granted_at: float
) -> JobRun:
    """The run of ``claim``: through the switch when the agent has one, else as the
    pilot account. ``granted_at``: when the request that brought it was sent."""
    if config.switch:
        return SwitchedRun(
            claim,
            switch=config.switch,
            renewal=config.renewal,
            retry=config.switch_retry,
            client=client,
            workdir=config.workdir,
            max_sandbox_bytes=max_sandbox_bytes,
            granted_at=granted_at,
            pilot_credential=config.token_file,
        )
    return _plain(claim, client, config.workdir, max_sandbox_bytes, granted_at, config.token_file)


def _plain(
    claim: Claim,
    client: Client,
    workdir: Path,
    max_sandbox_bytes: int,
    granted_at: float,
    token_file: Path,
) -> JobRun:
    return JobRun(
        claim,
        client=client,
        workdir=workdir,
        max_sandbox_bytes=max_sandbox_bytes,
        granted_at=granted_at,
        pilot_credential=token_file,
    )


def execute(run: JobRun) -> JobResult | None:
    """Run the claim to its end and clean up; its result, or None if none may be
    reported (a bug of one job's run drops that claim, not the pilot)."""
    try:
        return run.execute()
    except Exception:  # one job's bug must not take the pilot down
        log.exception("%s: unexpected error; dropping the claim", run.tag)
        run.stop("agent error")
        return None
    finally:
        run.cleanup()


def may_bypass(config: AgentConfig, run: JobRun) -> bool:
    """Whether a job whose switch failed with an internal error may run as the pilot
    account: the site says so (``--bypass-on-error yes``), the VO does not require the
    switch, and the claim still lives."""
    required = config.attrs.get("PilotageSwitchMode", "").strip('"') == "required"
    return config.bypass_on_error and not required and run.alive


def bypass_run(
    run: JobRun, why: GiveBack, config: AgentConfig, client: Client, max_sandbox_bytes: int
) -> JobRun:
    """The run that runs ``run``'s claim again as the pilot account (seed 002 q. 4)."""
    log.warning("%s: running it as the pilot account (bypass allowed): %s", run.tag, why.reason)
    granted_at = run.lease_deadline - run.claim.lease_s
    return _plain(
        run.claim, client, config.workdir, max_sandbox_bytes, granted_at, config.token_file
    )


def without_switch(result: JobResult | None, why: GiveBack) -> JobResult | None:
    """A bypassed run's result, saying why it ran without the switch."""
    return None if result is None else dataclasses.replace(result, without_switch=why.reason)
