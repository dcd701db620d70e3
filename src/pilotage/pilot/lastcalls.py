"""The calls by which the agent lets go: giving a claim back unfinished, and leaving.

Both are best effort, a few quick tries for 30 s at most, made even while the agent is
leaving: when they fail, the server finds out anyway (the claim's lease lapses; the
pilot, silent, is declared lost), only later.

Standard library only (the agent's zipapp).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pilotage.errors import PilotageError

from .client import Backoff, Client, retrying
from .wire import VERSION, Claim, GiveBack

log = logging.getLogger("pilotage.pilot")
T = TypeVar("T")

#: How long the last calls keep trying.
GIVE_UP_S = 30.0


def quickly(call: Callable[[], T], what: str, sleep: Callable[[float], object]) -> T:
    """``call``, retried after a transient failure with short waits (``sleep(s)``) for
    :data:`GIVE_UP_S`; then, or on a refusal, what it raised."""
    give_up = time.monotonic() + GIVE_UP_S

    def wait(delay_s: float) -> bool:
        sleep(min(delay_s, 5.0))
        return time.monotonic() > give_up

    return retrying(call, what=what, wait=wait, backoff=Backoff(first_s=1.0, max_s=5.0))


def give_back(
    client: Client, claim: Claim, tag: str, why: GiveBack, sleep: Callable[[float], object]
) -> None:
    """Give ``claim`` back unfinished (``POST .../vacate``); else its lease will lapse."""
    try:
        state = quickly(
            lambda: client.vacate(claim.claim_id, why.to_wire()), f"{tag}: give back", sleep
        )
        log.info("%s: given back (%s); the job is %s", tag, why.reason, state)
    except PilotageError as exc:
        log.warning("%s: not given back (%s); its lease will lapse", tag, exc.message)


def leave(client: Client, pilot_id: str, reason: str, sleep: Callable[[float], object]) -> None:
    """Tell the server this pilot leaves (``POST .../exit``), then close the client."""
    log.info("leaving: %s", reason)
    path = f"/pilot/v1/pilots/{pilot_id}/exit"
    try:
        quickly(
            lambda: client.request("POST", path, {"v": VERSION, "reason": reason}), "exit", sleep
        )
    except PilotageError as exc:
        log.warning("exit not acknowledged (%s)", exc.message)
    client.close()
