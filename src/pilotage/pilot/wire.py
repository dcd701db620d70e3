"""The agent's side of the pilot protocol (docs/pilot-protocol.md) as frozen dataclasses.

Standard library only: the agent cannot use the server's pydantic models, so it parses
the server's answers here and nowhere else. A malformed answer raises
:class:`ProtocolError`; paths in a claim are checked later, when the job is set up,
so that a bad one holds that job instead of stopping the agent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from pilotage.errors import OperatorError

from .resources import Resources

VERSION = 1

#: The header carrying the pilot's secret on every call after registration (the server's
#: name for it is :data:`pilotage.api.wire.PILOT_SECRET_HEADER`; a test keeps them equal).
PILOT_SECRET_HEADER = "X-Pilotage-Pilot-Secret"  # noqa: S105  (a header name, not a secret)


class ProtocolError(OperatorError):
    """The server answered something this agent does not understand (version skew?)."""


class HoldCode(enum.IntEnum):
    """Why the agent could not run a job (the protocol's hold codes)."""

    INPUT_REFUSED = 10
    EXECUTABLE = 11
    OUTPUT = 12
    START = 13
    IDENTITY = 14
    #: The job was stopped before its credential ran out: no valid one could be had.
    CREDENTIAL_EXPIRED = 15


def _get(body: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(body, dict) or key not in body:
        raise ProtocolError(f"the server's {what} lacks the field {key!r}")
    value = body[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise ProtocolError(f"the server's {what} has a bad value for {key!r}: {value!r}")
    return value


def _number(body: Any, key: str, what: str) -> float:
    return float(_get(body, key, (int, float), what))


def _strings(body: Any, key: str, what: str) -> tuple[str, ...]:
    """An optional list of strings (absent: empty)."""
    value = body.get(key) if isinstance(body, dict) else None
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"the server's {what} has a bad value for {key!r}: {value!r}")
    return tuple(value)


def _list(body: Any, key: str, what: str) -> list[Any]:
    """An optional list (absent: empty)."""
    value = body.get(key) if isinstance(body, dict) else None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"the server's {what} has a bad value for {key!r}: {value!r}")
    return value


def _opt_str(body: Any, key: str, what: str) -> str | None:
    if isinstance(body, dict) and body.get(key) is None:
        return None
    return str(_get(body, key, str, what))


@dataclass(frozen=True)
class Registration:
    """The server's answer to a registration.

    ``pilot_secret`` proves, on every later call, that the caller is this pilot; it is
    kept in memory only and never shown (``repr=False``: not in a log line either).
    """

    pilot_id: str
    lease_s: float
    heartbeat_s: float
    idle_timeout_s: float
    max_sandbox_bytes: int
    pilot_secret: str = field(repr=False)
    #: Registering again: the claims the server took back (they keep running).
    resumed: frozenset[str] = frozenset()

    @classmethod
    def from_wire(cls, body: Any) -> Registration:
        what = "registration answer"
        resumed = body.get("resumed", []) if isinstance(body, dict) else []
        if not isinstance(resumed, list) or not all(isinstance(c, str) for c in resumed):
            raise ProtocolError(f"the server's {what} has a bad value for 'resumed'")
        return cls(
            pilot_id=_get(body, "pilot_id", str, what),
            lease_s=_number(body, "lease_s", what),
            heartbeat_s=max(1.0, _number(body, "heartbeat_s", what)),
            idle_timeout_s=_number(body, "idle_timeout_s", what),
            max_sandbox_bytes=int(_get(body, "max_sandbox_bytes", int, what)),
            pilot_secret=_get(body, "pilot_secret", str, what),
            resumed=frozenset(resumed),
        )


@dataclass(frozen=True)
class UrlInput:
    """An input the agent downloads itself (pilot/urlinputs.py)."""

    url: str
    name: str
    sha256: str | None = None

    @classmethod
    def from_wire(cls, body: Any) -> UrlInput:
        what = "claim's url_inputs"
        return cls(
            url=_get(body, "url", str, what),
            name=_get(body, "name", str, what),
            sha256=_opt_str(body, "sha256", what),
        )


@dataclass(frozen=True)
class Claim:
    """A job bound to a share of this pilot's slot, with a lease."""

    claim_id: str
    job_id: str
    lease_s: float
    lease_expires_at: float
    owner: str
    executable: str
    arguments: tuple[str, ...]
    environment: dict[str, str]
    input: str | None
    output: str | None
    error: str | None
    transfer_output_files: tuple[str, ...] | None
    request: Resources
    has_input_sandbox: bool
    #: The GPU devices the server assigned (``AssignedGPUs``), one per requested GPU.
    assigned_gpus: tuple[str, ...] = ()
    url_inputs: tuple[UrlInput, ...] = ()
    #: ``container_image``: run the job in Apptainer (pilot/container.py).
    container_image: str | None = None
    #: ``stream_output``: send the end of stdout while the job runs (pilot/streaming.py).
    stream_output: bool = False

    @classmethod
    def from_wire(cls, body: Any) -> Claim:
        what = "claim"
        arguments = _get(body, "arguments", list, what)
        environment = _get(body, "environment", dict, what)
        outputs = body.get("transfer_output_files") if isinstance(body, dict) else None
        if not all(isinstance(a, str) for a in arguments) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in environment.items()
        ):
            raise ProtocolError("the server's claim has non-string arguments or environment")
        if outputs is not None and (
            not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs)
        ):
            raise ProtocolError("the server's claim has a bad transfer_output_files")
        return cls(
            claim_id=_get(body, "claim_id", str, what),
            job_id=_get(body, "job_id", str, what),
            lease_s=max(1.0, _number(body, "lease_s", what)),
            lease_expires_at=_number(body, "lease_expires_at", what),
            owner=_get(body, "owner", str, what),
            executable=_get(body, "executable", str, what),
            arguments=tuple(arguments),
            environment=dict(environment),
            input=_opt_str(body, "input", what),
            output=_opt_str(body, "output", what),
            error=_opt_str(body, "error", what),
            transfer_output_files=None if outputs is None else tuple(outputs),
            request=Resources(
                cpus=int(_get(body, "request_cpus", int, what)),
                memory_mb=int(_get(body, "request_memory_mb", int, what)),
                disk_mb=int(_get(body, "request_disk_mb", int, what)),
                gpus=int(_get(body, "request_gpus", int, what)),
            ),
            has_input_sandbox=bool(_get(body, "has_input_sandbox", bool, what)),
            assigned_gpus=_strings(body, "assigned_gpus", what),
            url_inputs=tuple(UrlInput.from_wire(u) for u in _list(body, "url_inputs", what)),
            container_image=_opt_str(body, "container_image", what),
            stream_output=body.get("stream_output") is True,
        )


@dataclass(frozen=True)
class WorkAnswer:
    """The answer to "ask for work" (and to results carrying ``next``)."""

    claim: Claim | None
    retry_after_s: float
    retire: bool
    #: Drained by an admin: ask for no work until an answer says otherwise.
    drain: bool = False
    #: The further claims of a request with ``max_claims`` (``more_claims``).
    more: tuple[Claim, ...] = ()
    #: Results of a report of several: those recorded (claim id → the job's state) and
    #: those refused (claim id → the server's message).
    recorded: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def claims(self) -> tuple[Claim, ...]:
        """Every claim the answer carries."""
        return self.more if self.claim is None else (self.claim, *self.more)

    @classmethod
    def from_wire(cls, body: Any) -> WorkAnswer:
        what = "answer to a request for work"
        raw = body.get("claim") if isinstance(body, dict) else None
        retry = body.get("retry_after_s", 5.0) if isinstance(body, dict) else 5.0
        refused = {}
        for item in _list(body, "refused", what):
            refused[_get(item, "claim_id", str, what)] = str(item.get("message", "refused"))
        recorded = body.get("recorded") if isinstance(body, dict) else None
        return cls(
            claim=None if raw is None else Claim.from_wire(raw),
            retry_after_s=float(retry) if isinstance(retry, int | float) else 5.0,
            retire=bool(body.get("retire", False)) if isinstance(body, dict) else False,
            drain=bool(body.get("drain", False)) if isinstance(body, dict) else False,
            more=tuple(Claim.from_wire(c) for c in _list(body, "more_claims", what)),
            recorded=(
                {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}
            ),
            refused=refused,
        )


@dataclass(frozen=True)
class HeartbeatAnswer:
    """Renewed lease ends, revoked claims (id → reason), and whether to retire."""

    renewed: dict[str, float]
    revoked: dict[str, str]
    retire: bool
    #: How long after the answer to stop each revoked claim (the server's pacing).
    delays: dict[str, float] = field(default_factory=dict)
    #: Drained by an admin: ask for no work until an answer says otherwise.
    drain: bool = False

    @classmethod
    def from_wire(cls, body: Any) -> HeartbeatAnswer:
        what = "heartbeat answer"
        renewed = _get(body, "renewed", dict, what)
        revoked: dict[str, str] = {}
        delays: dict[str, float] = {}
        for item in _get(body, "revoked", list, what):
            claim_id = _get(item, "claim_id", str, what)
            revoked[claim_id] = str(item.get("reason", "revoked"))
            delay = item.get("delay_s", 0.0)
            if isinstance(delay, int | float) and not isinstance(delay, bool) and delay > 0:
                delays[claim_id] = min(float(delay), 3600.0)
        return cls(
            renewed={str(k): float(v) for k, v in renewed.items()},
            revoked=revoked,
            retire=bool(body.get("retire", False)),
            delays=delays,
            drain=bool(body.get("drain", False)),
        )


@dataclass(frozen=True)
class Failure:
    """Why the agent could not run a job at all; the job goes to HELD."""

    code: HoldCode
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {"reason": self.reason[:2000], "code": int(self.code)}


@dataclass(frozen=True)
class JobResult:
    """How a job ended: exit code or signal, usage, or the failure that prevented it."""

    exit_code: int | None = None
    signal: int | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_kb: int = 0
    failure: Failure | None = None
    #: Why the job ran as the pilot account (the switch failed with an internal error at
    #: a site that allows it); the job's history records it.
    without_switch: str | None = None

    def to_wire(self, next_request: dict[str, Any] | None) -> dict[str, Any]:
        """The body of ``POST .../result``, with ``next`` when another job is wanted."""
        extra = (
            {} if self.without_switch is None else {"without_switch": self.without_switch[:2000]}
        )
        return {
            **extra,
            "v": VERSION,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "max_rss_kb": self.max_rss_kb,
            "failure": None if self.failure is None else self.failure.to_wire(),
            "next": next_request,
        }

    def to_item(self, claim_id: str) -> dict[str, Any]:
        """One item of ``POST .../pilots/{id}/results``."""
        item = self.to_wire(None)
        del item["v"], item["next"]
        item["claim_id"] = claim_id
        return item


@dataclass(frozen=True)
class GiveBack:
    """A claim to give back unfinished (``POST .../vacate``), and what the agent does next.

    ``node_fault``: not the job's fault, so the server does not count the attempt.
    ``exclude_s``: the server keeps the job from this pilot that long. The last two
    fields stay in the agent: ``stop_pilot`` (the node is unfit: take no more jobs) and
    ``bypassable`` (an internal error of the switch, after which a site that allows it
    lets the job run as the pilot account).
    """

    reason: str
    node_fault: bool = True
    exclude_s: float = 0.0
    stop_pilot: bool = False
    bypassable: bool = False
    #: ``"denied"`` (203: the server excludes this pilot's site for the job) or
    #: ``"transient"`` (202 after retries: reported against the pilot's entry); issue 10.
    refusal: str | None = None

    def to_wire(self) -> dict[str, Any]:
        body = {
            "v": VERSION,
            "reason": self.reason[:2000] or "given back",
            "node_fault": self.node_fault,
            "exclude_s": round(max(0.0, min(self.exclude_s, 7 * 86400.0)), 3),
        }
        if self.refusal is not None:
            body["refusal"] = self.refusal
        return body


def work_request(
    free: Resources, time_left_s: float, *, wait_s: float = 0.0, max_claims: int = 1
) -> dict[str, Any]:
    """The body of "ask for work" (also the ``next`` of results): up to ``max_claims``
    claims, the server holding the request up to ``wait_s`` while it has none."""
    body: dict[str, Any] = {
        "v": VERSION, "free": free.to_wire(), "time_left_s": max(0.0, round(time_left_s))
    }  # fmt: skip
    if wait_s > 0:
        body["wait_s"] = round(wait_s, 3)
    if max_claims > 1:
        body["max_claims"] = max_claims
    return body
