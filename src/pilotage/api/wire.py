"""Typed messages of the pilot protocol (docs/pilot-protocol.md) and the user API.

Every body is validated here at the edge; the rest of the server never sees raw JSON.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pilotage.bodies import Body
from pilotage.queue.spec import ATTR_NAME, WIRE_VERSION, UrlInput

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$")
#: A host name as a registration gives it: 1-255 characters, no blanks (nor NUL).
HOST = r"^[^\s\x00]{1,255}$"

#: The header of every pilot call after registration: the secret the registration
#: answered (the agent's copy of this name is :data:`pilotage.pilot.wire.PILOT_SECRET_HEADER`).
PILOT_SECRET_HEADER = "X-Pilotage-Pilot-Secret"  # noqa: S105  (a header name, not a secret)


class Strict(Body):
    """Unknown fields are refused, so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")

    v: int = Field(default=WIRE_VERSION, json_schema_extra={"const": WIRE_VERSION})

    @field_validator("v")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != WIRE_VERSION:
            raise ValueError(f"protocol version {v} is not supported; this server speaks 1")
        return v


class Resources(Body):
    """An amount of cpus, memory, disk and gpus."""

    model_config = ConfigDict(extra="forbid")

    cpus: int = Field(ge=0, le=4096)
    memory_mb: int = Field(ge=0, le=64 * 1024 * 1024)
    disk_mb: int = Field(ge=0, le=1024 * 1024 * 1024)
    gpus: int = Field(default=0, ge=0, le=256)


class Resume(Body):
    """In a registration: the pilot this agent was, and the claims it still holds
    (docs/pilot-protocol.md, "Registering again"); its secret goes in the usual header."""

    model_config = ConfigDict(extra="forbid")

    pilot_id: str = Field(min_length=1, max_length=64)
    claims: list[str] = Field(default_factory=list, max_length=4096)


class PilotRegistration(Strict):
    """A pilot joining the pool with its whole resources (one partitionable slot)."""

    name: str = Field(json_schema_extra={"pattern": NAME.pattern})
    site: str = Field(default="local", json_schema_extra={"pattern": NAME.pattern})
    host: str = Field(json_schema_extra={"pattern": HOST})
    cpus: int = Field(ge=1, le=4096)
    memory_mb: int = Field(ge=1, le=64 * 1024 * 1024)
    disk_mb: int = Field(ge=0, le=1024 * 1024 * 1024)
    gpus: int = Field(default=0, ge=0, le=256)
    lifetime_s: float = Field(gt=0, le=30 * 86400)
    attrs: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={"maxProperties": 200, "propertyNames": {"pattern": ATTR_NAME.pattern}},
    )
    start: str = "true"
    #: Set when the agent registers again after its pilot was declared lost.
    resume: Resume | None = None

    @field_validator("name", "site")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.fullmatch(v):
            raise ValueError(f"{v!r} must be 1-128 letters, digits or ._@:+-")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or len(v) > 255 or any(c.isspace() for c in v):
            raise ValueError("host must be a host name without spaces")
        return v

    @field_validator("attrs")
    @classmethod
    def _attrs(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 200:
            raise ValueError("at most 200 attributes")
        for key in v:
            if not ATTR_NAME.fullmatch(key):
                raise ValueError(f"attribute name {key!r} is not a valid ClassAd name")
        return v


class Registered(Strict):
    """The server's answer to a registration.

    ``pilot_secret`` is answered here only: the pilot sends it back in the
    ``X-Pilotage-Pilot-Secret`` header of every later call, and keeps it in memory.
    """

    pilot_id: str
    pilot_secret: str
    lease_s: float
    heartbeat_s: float
    idle_timeout_s: float
    max_sandbox_bytes: int
    #: Registering again (``resume``): the claims taken back, which keep running.
    resumed: list[str] = Field(default_factory=list)


#: The most claims one request may bring (``max_claims``) and results one report may carry.
MAX_BATCH = 64


class WorkRequest(Strict):
    """A pilot asking for a job that fits in its free resources.

    ``wait_s``: with no job for it now, hold the request up to that long (bounded by
    ``[server] work_wait_s``) and answer as soon as one is there. ``max_claims``: the
    answer may carry that many claims, each fitting what the ones before left free.
    """

    free: Resources
    time_left_s: float = Field(ge=0)
    wait_s: float = Field(default=0.0, ge=0, le=3600)
    max_claims: int = Field(default=1, ge=1, le=MAX_BATCH)


class Claim(BaseModel):
    """A job given to a slot, with everything the agent needs to run it."""

    claim_id: str
    job_id: str
    lease_s: float
    lease_expires_at: float
    owner: str
    executable: str
    arguments: list[str]
    environment: dict[str, str]
    input: str | None
    output: str | None
    error: str | None
    transfer_output_files: list[str] | None
    request_cpus: int
    request_memory_mb: int
    request_disk_mb: int
    request_gpus: int
    has_input_sandbox: bool
    #: The pilot's GPU devices given to the job (``AssignedGPUs``), one per requested GPU.
    assigned_gpus: list[str] = Field(default_factory=list)
    #: Inputs the agent downloads itself (``http(s)://`` in transfer_input_files).
    url_inputs: list[UrlInput] = Field(default_factory=list)
    #: The Apptainer image the job runs in (``container_image``), if any.
    container_image: str | None = None
    #: ``stream_output``: the agent sends the end of stdout while the job runs.
    stream_output: bool = False


class WorkAnswer(Strict):
    """A claim, or none and when to ask again; with ``max_claims``, the further claims
    in ``more_claims``."""

    claim: Claim | None = None
    more_claims: list[Claim] = Field(default_factory=list)
    retry_after_s: float = 5.0
    retire: bool = False
    #: Drained by an admin: no claim until resumed (docs/operations.md).
    drain: bool = False


class Heartbeat(Strict):
    """The claims a pilot still runs; their leases are renewed in one call."""

    claims: list[str] = Field(default_factory=list, max_length=4096)
    #: Every claim the pilot holds, running or stopping, when no request that could
    #: bring it a claim is under way; the server frees its other live claims (their
    #: answers were lost: pilotage.queue.orphans). Absent: nothing is freed.
    held: list[str] | None = Field(default=None, max_length=4096)


class Revoked(BaseModel):
    """A claim the pilot must stop, ``delay_s`` after this answer (the server spreads
    stop orders over time per pilot and per site, seed 000 §4.6; queue/stoppace.py)."""

    claim_id: str
    reason: str
    delay_s: float = 0.0


class HeartbeatAnswer(Strict):
    """New lease ends, claims to stop, and whether to retire."""

    renewed: dict[str, float]
    revoked: list[Revoked]
    retire: bool = False
    #: Drained by an admin: ask for no work until this is false again.
    drain: bool = False


class Failure(Body):
    """The agent could not run the job at all."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)
    code: int = Field(ge=1, le=99)


class Result(Strict):
    """How a job ended, and optionally a request for the next one."""

    exit_code: int | None = Field(default=None, ge=0, le=255)
    signal: int | None = Field(default=None, ge=1, le=128)
    wall_s: float = Field(default=0.0, ge=0)
    cpu_s: float = Field(default=0.0, ge=0)
    max_rss_kb: int = Field(default=0, ge=0, le=2**50)
    failure: Failure | None = None
    #: Set when the job ran as the pilot account because the switch failed with an
    #: internal error at a site that allows it (docs/pilot.md, "Switch exit codes"): why.
    without_switch: str | None = Field(default=None, min_length=1, max_length=2000)
    next: WorkRequest | None = None


class ClaimResult(Result):
    """One job's result in a report of several (``POST .../pilots/{id}/results``)."""

    claim_id: str = Field(min_length=1, max_length=64)
    next: None = None


class Results(Strict):
    """Several jobs' results in one call, and optionally a request for the next jobs."""

    results: list[ClaimResult] = Field(min_length=1, max_length=MAX_BATCH)
    next: WorkRequest | None = None


class ResultRefused(BaseModel):
    """A result of a report of several that was not recorded, and why (the error the
    single report would have had)."""

    claim_id: str
    status: int
    error: str
    message: str


class ResultsAnswer(WorkAnswer):
    """The results recorded (claim id → the job's state after it), those refused, and
    the next claims as for a request for work."""

    recorded: dict[str, str] = Field(default_factory=dict)
    refused: list[ResultRefused] = Field(default_factory=list)


class Vacate(Strict):
    """A pilot giving a live claim back unfinished: the job returns to IDLE at once.

    ``node_fault``: the cause is the node or the pilot (a broken switch, a work path the
    owner cannot search, a refused owner on a single-user pilot), not the job, so the
    attempt is not counted against it. ``exclude_s``: this pilot is not given the job
    again for that long (a back-off after a switch error, issue 10, uses it too).
    """

    reason: str = Field(min_length=1, max_length=2000)
    node_fault: bool = False
    exclude_s: float = Field(default=0.0, ge=0, le=7 * 86400)
    #: What the switch said, when it refused (issue 10): ``denied`` (203, the site will
    #: not run this owner: the pilot's site is added to the job's ``ExcludedSites``) or
    #: ``transient`` (202 after the agent's retries: reported against the pilot's entry).
    refusal: Literal["denied", "transient"] | None = None


class VacateAnswer(Strict):
    """The job's state after a vacate: IDLE, or HELD when a counted attempt was its last."""

    job_state: str


class PilotExit(Strict):
    """A pilot leaving the pool."""

    reason: str = Field(default="exit", max_length=2000)
