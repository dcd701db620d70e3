"""What ``condor_q``, ``condor_history`` and ``condor_rm`` users expect from the output.

The batch view groups jobs by ``JobBatchName`` (``ID: <cluster>`` when unnamed) with
counts per state; ``-af`` prints attribute values, one job per line; ``-l`` prints whole
ads in ``Name = value`` form, separated by blank lines. Targets of ``rm``/``hold``/
``release`` are job ids, user names or a ``-constraint``, resolved to job ids here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pilotage.errors import BadInput

if TYPE_CHECKING:
    from pilotage.cli.client import Client

_JOB_ID = re.compile(r"^\d{1,18}(\.\d{1,9})?$")
#: A user name as the pool knows them: a Unix name, or a token subject.
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]{0,255}$")


def split_targets(words: list[str], *, names: bool = True) -> tuple[list[str], list[str]]:
    """Job ids and other words (user names, or with ``-af`` attribute names) of a command
    line, as HTCondor reads them; a word that can be neither is refused.
    """
    ids = [w for w in words if _JOB_ID.match(w)]
    others = [w for w in words if not _JOB_ID.match(w)]
    for word in others:
        if names and not _USER.match(word):
            raise BadInput(
                f"'{word}' is not a job id; use CLUSTER or CLUSTER.PROC, e.g. 12 or 12.3 "
                "(or a user name)"
            )
    return ids, others


def fetch_ads(
    client: Client,
    *,
    ids: list[str],
    owners: list[str],
    constraint: str | None,
    finished: bool,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The jobs (each with its whole ``ad`` text) the selection names."""
    params: dict[str, Any] = {"id": ids, "finished": finished}
    if constraint:
        params["constraint"] = constraint
    if limit is not None:
        params["limit"] = limit
    if not owners:
        return list(client.call("GET", "/api/v1/jobads", params=params))
    found: list[dict[str, Any]] = []
    for owner in owners:
        found += client.call("GET", "/api/v1/jobads", params={**params, "owner": owner})
    return found


def group_batches(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs (with their ``ad``) grouped by owner and batch, counted by state: the rows of
    :func:`pilotage.cli.queue_view.batch_table` for a selection the server cannot count
    (a ``-constraint``)."""
    batches: dict[tuple[str, str | int], dict[str, Any]] = {}
    clusters: dict[tuple[str, str | int], set[int]] = {}
    for job in jobs:
        name = _attr(job["ad"], "JobBatchName")
        name = name if isinstance(name, str) else None
        key = (job["owner"], name if name is not None else job["cluster"])
        batch = batches.setdefault(
            key,
            {"owner": job["owner"], "name": name, "submitted": job["qdate"], "first": job["id"]}
            | dict.fromkeys(("total", "done", "running", "idle", "held"), 0),
        )
        clusters.setdefault(key, set()).add(job["cluster"])
        batch["last"] = job["id"]
        batch["clusters"] = len(clusters[key])
        batch["submitted"] = min(batch["submitted"], job["qdate"])
        batch["total"] += 1
        column = {"RUNNING": "running", "IDLE": "idle", "HELD": "held"}.get(job["state"], "done")
        batch[column] += 1
    return list(batches.values())


def autoformat(jobs: list[dict[str, Any]], attrs: list[str]) -> str:
    """``-af``: the values of ``attrs`` for each job, space-separated, one job per line."""
    if not attrs:
        raise BadInput("-af needs attribute names, e.g. pilotage q -af ClusterId ProcId JobStatus")
    lines = []
    for job in jobs:
        values = [_attr(job["ad"], name) for name in attrs]
        lines.append(" ".join(_show(v) for v in values))
    return "\n".join(lines)


def long_form(jobs: list[dict[str, Any]]) -> str:
    """``-l``: every job's whole ad, one ``Name = value`` per line, blank line between."""
    return "\n".join(str(job["ad"]) for job in jobs)


def _attr(ad_text: str, name: str) -> Any:
    import classad2

    ad = classad2.parseOne(ad_text)  # the server sends the old "Name = value" form
    if name not in ad:
        return None
    try:
        return ad.eval(name)
    except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
        return None


def _show(value: Any) -> str:
    import classad2

    if value is None or type(value) is classad2.Value:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def held_explanation(job: dict[str, Any]) -> str:
    """``q -analyze`` of a held job: why it is held and how to let it run again."""
    code = job.get("hold_code")
    subcode = job.get("hold_subcode") or 0
    lines = [
        f"Job {job['id']} is held, so it will not be matched to any slot.",
        f"Hold reason: {job.get('hold_reason') or 'none given'} "
        f"(HoldReasonCode {code}, HoldReasonSubCode {subcode}).",
    ]
    if code == 3:
        lines.append(
            "It was held by its own policy (periodic_hold or on_exit_hold); a "
            "periodic_release expression, if it has one, may release it."
        )
    elif code == 20:
        lines.append("It was started and lost too many times: check the pilots' sites.")
    lines.append(
        f"Fix the cause, then release it with: pilotage release {job['id']} "
        f"(or remove it with: pilotage rm {job['id']})."
    )
    return "\n".join(lines)
