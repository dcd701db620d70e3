"""Typed messages between factories, frontends and the collector (the provisioning API).

The server validates every body with these models (``extra="forbid"``, a protocol
version), and the factory and frontend services build their bodies and read their
answers with the same ones, so the three never disagree on a field. Routes:

=============================================  ==========  =================================
``PUT  /api/v1/entries/{name}``                factory     :class:`EntryAdvert`
``GET  /api/v1/entries``                       frontend    list of :class:`EntryView`
``PUT  /api/v1/requests/{frontend}/{entry}``   frontend    :class:`PilotRequest`
``GET  /api/v1/requests``                      factory     list of :class:`RequestView`
``GET  /api/v1/idle-autoclusters``             frontend    list of :class:`IdleAutocluster`
``POST /api/v1/pilot-tokens``                  frontend    :class:`PilotTokenRequest`
``POST /api/v1/validation-reports``            pilot       :class:`ValidationReport`
=============================================  ==========  =================================
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from pilotage.api.wire import Strict
from pilotage.bodies import Body
from pilotage.factory.entries import NAME_PATTERN

EntryName = Annotated[str, Field(pattern=NAME_PATTERN)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
#: A literal of an ad: what an entry advertises and what job attributes a frontend reads.
Literal_ = str | int | float | bool | None
AdValues = Annotated[dict[Annotated[str, Field(max_length=128)], Literal_], Field(max_length=256)]

#: Longest pilot token a frontend may mint (a pilot renews nothing: keep it short).
MAX_PILOT_TOKEN_S = 2 * 86400


class SwitchModeName(enum.Enum):
    """The switch mode a frontend decided for an entry's pilots (seed 000 §3.2), or
    single-user pilots (``pilotage.frontend.switch.PilotMode``)."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    NEVER = "never"
    SINGLE_USER = "single-user"


class RemovalName(enum.Enum):
    """What a request asks the factory to remove (see ``pressure.Removal``)."""

    NONE = "none"
    IDLE = "idle"
    ALL = "all"


class PilotCounts(Body):
    """A factory's pilots at one entry, by state."""

    model_config = ConfigDict(extra="forbid")

    idle: Count = 0
    running: Count = 0
    held: Count = 0


class EntryAdvert(Strict):
    """What a factory advertises for one entry each cycle."""

    ad: AdValues
    pilots: PilotCounts = Field(default_factory=PilotCounts)
    #: The same counts for each frontend's pilots.
    by_frontend: Annotated[dict[str, PilotCounts], Field(max_length=256)] = Field(
        default_factory=dict
    )


class Registered(BaseModel):
    """The pool's own view of an entry's pilots: joined, and running at least one job."""

    model_config = ConfigDict(extra="forbid")

    total: int = 0
    busy: int = 0


class EntryView(BaseModel):
    """One entry as the collector holds it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    factory: str
    ad: dict[str, Literal_]
    pilots: PilotCounts
    by_frontend: dict[str, PilotCounts]
    #: Pilots of this entry that registered with the server (by their ``EntryName``).
    registered: Registered
    updated_at: float


class PilotRequest(Strict):
    """What one frontend wants at one entry."""

    idle_wanted: Count
    max_running: Count
    removal: RemovalName = RemovalName.NONE
    remove_idle: Count = 0
    switch_mode: SwitchModeName = SwitchModeName.NEVER
    #: The token the factory hands to the pilots it submits for this request.
    pilot_token: Annotated[str, Field(min_length=1, max_length=8192)] | None = None


class RequestView(BaseModel):
    """A stored request, as its entry's factory reads it."""

    model_config = ConfigDict(extra="forbid")

    frontend: str
    entry: str
    idle_wanted: int
    max_running: int
    removal: RemovalName
    remove_idle: int
    switch_mode: SwitchModeName
    pilot_token: str | None
    updated_at: float


class IdleAutocluster(BaseModel):
    """Idle jobs alike for provisioning: their requests and what their Requirements read."""

    model_config = ConfigDict(extra="forbid")

    id: int
    idle: int
    cpus: int
    memory_mb: int
    disk_mb: int
    gpus: int
    max_wall_time_s: float
    #: The job's own Requirements, without the standard resource clauses.
    requirements: str
    #: The job attributes ``requirements`` reads, with their values.
    attrs: dict[str, Literal_]
    owners: list[str]


class PilotTokenRequest(Strict):
    """A frontend asking for a pilot token for one entry."""

    entry: EntryName
    lifetime_s: Annotated[int, Field(ge=60, le=MAX_PILOT_TOKEN_S)]


class PilotToken(BaseModel):
    """A minted pilot token: its subject is ``entry:<entry>/<frontend>``."""

    model_config = ConfigDict(extra="forbid")

    token: str
    subject: str
    expires_at: float


class ValidationReport(Strict):
    """A pilot's validation outcome (the bootstrap's ``pilotage-validation`` line)."""

    entry: EntryName
    #: The factory's id of the pilot, or the pilot's own name.
    pilot: Annotated[str, Field(min_length=1, max_length=128)]
    ok: bool
    reason: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = "ok"
    message: Annotated[str, Field(max_length=4000)] = ""
    #: The file that did not match, for ``file_mismatch``.
    file: Annotated[str, Field(max_length=128)] | None = None
    details: Annotated[
        dict[Annotated[str, Field(max_length=64)], Literal_], Field(max_length=32)
    ] = Field(default_factory=dict)


class ValidationView(BaseModel):
    """A stored validation report."""

    model_config = ConfigDict(extra="forbid")

    id: int
    at: float
    reporter: str
    entry: str
    pilot: str
    ok: bool
    reason: str
    message: str
    details: dict[str, Literal_]
