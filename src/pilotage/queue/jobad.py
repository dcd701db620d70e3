"""Building a job's ClassAd from its spec, and checking user expressions.

The server builds the ad itself from the validated :class:`JobSpec`; a user can add
attributes (``+Attr``) but never set the ones the pool relies on (owner, ids, requests).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import classad2
import htcondor2  # noqa: F401  (registers list functions such as stringListMember)

from pilotage.errors import BadInput, Denied
from pilotage.queue.spec import JobSpec

#: Attributes the server sets; a ``+Attr`` may not override them.
RESERVED = frozenset(
    {
        "clusterid",
        "procid",
        "owner",
        "requestcpus",
        "requestmemory",
        "requestdisk",
        "requestgpus",
        "requirements",
        "rank",
        "jobprio",
        "qdate",
        "globaljobid",
        # Fair share charges usage to these: the pool decides them, not the job.
        "acctgroup",
        "user",
        "x509userproxysubject",
        "maxwalltime",
        # Set from the submit commands of the same meaning, and evaluated by the server.
        "acctgroupuser",
        "accountinggroup",
        "jobbatchname",
        # GPUs and containers: from require_gpus / container_image; AssignedGPUs is the
        # server's choice at each claim.
        "requiregpus",
        "assignedgpus",
        "containerimage",
        "jobmaxretries",
        "jobsuccessexitcode",
        "numjobcompletions",
        "numjobstarts",
        *(p.lower() for p in ("PeriodicHold", "PeriodicRelease", "PeriodicRemove")),
        *(p.lower() for p in ("OnExitHold", "OnExitRemove", "OnExitHoldReason")),
        *(p.lower() for p in ("OnExitHoldSubCode", "PeriodicHoldReason", "PeriodicHoldSubCode")),
    }
)

#: JobPolicy field -> the job ad attribute HTCondor gives it.
POLICY_ATTRS = {
    "periodic_hold": "PeriodicHold",
    "periodic_hold_reason": "PeriodicHoldReason",
    "periodic_hold_subcode": "PeriodicHoldSubCode",
    "periodic_release": "PeriodicRelease",
    "periodic_remove": "PeriodicRemove",
    "on_exit_hold": "OnExitHold",
    "on_exit_hold_reason": "OnExitHoldReason",
    "on_exit_hold_subcode": "OnExitHoldSubCode",
    "on_exit_remove": "OnExitRemove",
}
#: HTCondor's numbers for ``notification`` (JobNotification).
NOTIFICATION = {"never": 0, "always": 1, "complete": 2, "error": 3, "start": 4}
#: ``max_retries`` when only ``retry_until`` is given (pilotage's choice, documented).
DEFAULT_RETRIES = 10

#: The resource clauses every job's Requirements carries, as HTCondor adds them.
RESOURCE_CLAUSES = (
    "TARGET.Cpus >= MY.RequestCpus && TARGET.Memory >= MY.RequestMemory"
    " && TARGET.Disk >= MY.RequestDisk && TARGET.GPUs >= MY.RequestGpus"
)


def whole_expression(text: str) -> Any:
    """Parse ``text`` as exactly one ClassAd expression, or raise ``ValueError``.

    ``classad2`` stops at the end of the first expression and ignores what follows
    (``blue ]`` parses as ``blue``). Parsing it inside parentheses, as the first of two
    attributes of an ad, makes any trailing text a syntax error, and counting the
    attributes catches text that closes the parentheses itself to add attributes.
    """
    try:
        probe = classad2.ClassAd(f"[__e = ({text}\n); __z = 1]")
        expr = classad2.ExprTree(text)
    except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
        raise ValueError(text) from None
    if len(probe) != 2:
        raise ValueError(text)
    return expr


def parse_expr(text: str, what: str) -> Any:
    """Parse a ClassAd expression or raise :class:`BadInput` naming ``what``."""
    try:
        return whole_expression(text)
    except ValueError:
        raise BadInput(f"{what} '{text}' is not a valid ClassAd expression") from None


def check_spec_expressions(spec: JobSpec) -> None:
    """Refuse a spec whose Requirements, Rank or +Attrs do not parse, or that sets a reserved
    attribute."""
    if spec.requirements is not None:
        parse_expr(spec.requirements, "requirements")
    if spec.rank is not None:
        parse_expr(spec.rank, "rank")
    if spec.require_gpus is not None:
        parse_expr(spec.require_gpus, "require_gpus")
    for field, value in spec.policy.expressions().items():
        parse_expr(value, field)
    for name, value in spec.attrs.items():
        if name.lower() in RESERVED:
            raise BadInput(f"attribute +{name} is set by the pool and cannot be given")
        parse_expr(value, f"attribute +{name}")


def check_accounting(spec: JobSpec, owner: str, groups: Mapping[str, Collection[str]]) -> None:
    """Refuse an accounting group the pool does not let ``owner`` use.

    Fair share charges a job to its ``AcctGroup``, so the group is the pool's word:
    ``groups`` maps each group to the users who may use it (``*`` for everyone). A job
    may name only its owner as ``accounting_group_user``.
    """
    if spec.accounting_group_user not in (None, owner):
        raise Denied(
            f"accounting_group_user {spec.accounting_group_user} is not you ({owner}): "
            "a job is charged to its owner"
        )
    group = spec.accounting_group
    if group is None:
        return
    members = groups.get(group)
    if members is None:
        raise Denied(
            f"accounting group {group!r} is not one this pool maps to users; drop "
            "accounting_group, or ask the pool's admins to map it to you"
        )
    if owner not in members and "*" not in members:
        raise Denied(f"{owner} may not use accounting group {group!r}")


#: Added when the job has ``require_gpus``: enough of the slot's free devices satisfy it
#: (entry ads, which list no devices, are not held to it: the frontend provisions for it).
GPU_CLAUSE = (
    "(TARGET.AvailableGPUs =?= undefined"
    " || countMatches(MY.RequireGPUs, TARGET.AvailableGPUs) >= MY.RequestGpus)"
)
#: Added for a container job: the slot runs containers (pilot/container.py).
CONTAINER_CLAUSE = "TARGET.HasContainer =?= true"


def requirements_of(spec: JobSpec) -> str:
    """The job's full Requirements: the user's expression, the resource clauses, and the
    GPU and container clauses its commands imply."""
    clauses = [RESOURCE_CLAUSES]
    if spec.require_gpus is not None and spec.request_gpus > 0:  # else ignored, as in HTCondor
        clauses.append(GPU_CLAUSE)
    if spec.container_image is not None:
        clauses.append(CONTAINER_CLAUSE)
    if spec.requirements is not None:
        clauses.insert(0, f"({spec.requirements})")
    return " && ".join(clauses)


def build_job_ad(spec: JobSpec, *, cluster_id: int, proc_id: int, owner: str, qdate: float) -> str:
    """The job's ClassAd, printed (the store keeps it as text)."""
    ad = classad2.ClassAd()
    for name, value in spec.attrs.items():
        ad[name] = classad2.ExprTree(value)
    ad["ClusterId"] = cluster_id
    ad["ProcId"] = proc_id
    ad["GlobalJobId"] = f"{cluster_id}.{proc_id}"
    ad["Owner"] = owner
    ad["RequestCpus"] = spec.request_cpus
    ad["RequestMemory"] = spec.request_memory_mb
    ad["RequestDisk"] = spec.request_disk_mb
    ad["RequestGpus"] = spec.request_gpus
    ad["JobPrio"] = spec.priority
    ad["QDate"] = int(qdate)
    ad["Cmd"] = spec.executable
    ad["Arguments"] = json.dumps(spec.arguments)
    # Whose credential the job runs with is the server's word, never a +Attr of the user's.
    if spec.x509_identity is not None:
        ad["x509userproxysubject"] = spec.x509_identity
    elif "x509userproxysubject" in ad:
        del ad["x509userproxysubject"]
    if spec.max_walltime_s is not None:
        ad["AllowedJobDuration"] = spec.max_walltime_s
        # The matchmaker keeps a job off a pilot that would retire before it could end.
        ad["MaxWallTime"] = spec.max_walltime_s
    ad["Requirements"] = classad2.ExprTree(requirements_of(spec))
    if spec.rank is not None:
        ad["Rank"] = classad2.ExprTree(spec.rank)
    _add_submit_attrs(ad, spec, owner)
    return str(ad)


def on_exit_remove(spec: JobSpec) -> str | None:
    """The job's OnExitRemove, built from the retry commands as ``condor_submit`` does."""
    policy = spec.policy
    if policy.on_exit_remove is not None:
        return policy.on_exit_remove
    if policy.max_retries is None and policy.retry_until is None:
        return None
    success = policy.success_exit_code or 0
    expression = f"NumJobCompletions > JobMaxRetries || ExitCode =?= {success}"
    if policy.retry_until is not None:
        expression += f" || ({policy.retry_until})"
    return expression


def _add_submit_attrs(ad: Any, spec: JobSpec, owner: str) -> None:
    """The attributes of the submit commands beyond resources: policy, batch, accounting."""
    for field, attr in POLICY_ATTRS.items():
        value = getattr(spec.policy, field)
        if value is not None:
            ad[attr] = classad2.ExprTree(value)
    exit_remove = on_exit_remove(spec)
    if exit_remove is not None:
        ad["OnExitRemove"] = classad2.ExprTree(exit_remove)
        ad["JobMaxRetries"] = (
            DEFAULT_RETRIES if spec.policy.max_retries is None else spec.policy.max_retries
        )
    if spec.policy.success_exit_code is not None:
        ad["JobSuccessExitCode"] = spec.policy.success_exit_code
    ad["NumJobStarts"] = 0
    ad["NumJobCompletions"] = 0
    if spec.batch_name is not None:
        ad["JobBatchName"] = spec.batch_name
    if spec.accounting_group is not None:
        user = spec.accounting_group_user or owner
        ad["AcctGroup"] = spec.accounting_group
        ad["AcctGroupUser"] = user
        ad["AccountingGroup"] = f"{spec.accounting_group}.{user}"
    if spec.notification is not None:
        ad["JobNotification"] = NOTIFICATION[spec.notification]
    if spec.notify_user is not None:
        ad["NotifyUser"] = spec.notify_user
    if spec.require_gpus is not None:
        ad["RequireGPUs"] = classad2.ExprTree(spec.require_gpus)
    if spec.container_image is not None:
        ad["ContainerImage"] = spec.container_image
        ad["JobUniverse"] = 5  # vanilla, as HTCondor records container jobs
        ad["WantContainer"] = True
    if spec.url_inputs:
        ad["TransferInputURLs"] = ",".join(u.url for u in spec.url_inputs)
    if spec.stream_output:
        ad["StreamOut"] = True
    if spec.stream_error:
        ad["StreamErr"] = True
    if spec.transfer_output_remaps:
        pairs = (f"{name}={dest}" for name, dest in spec.transfer_output_remaps.items())
        ad["TransferOutputRemaps"] = ";".join(pairs)


def load_ad(text: str) -> Any:
    """Parse a stored ad."""
    return classad2.ClassAd(text)


def slot_ad(attrs: dict[str, Any], start: str) -> Any:
    """A slot's ad from its attributes (Python values or expression strings) and START."""
    ad = classad2.ClassAd()
    for name, value in attrs.items():
        ad[name] = value
    ad["Requirements"] = parse_expr(start, "the slot's start expression")
    return ad


def symmetric_match(job: Any, slot: Any) -> bool:
    """Both sides' Requirements hold: the job's over the slot and the slot's over the job."""
    return bool(job.symmetricMatch(slot))
