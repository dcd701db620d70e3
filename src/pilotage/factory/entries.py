"""The factory's entries: a TOML file turned into typed, validated objects.

An entry is one site gateway the factory can submit pilots to: a backend and its
parameters, the attributes it advertises (what a pilot there will offer, and the site's
policy from seed 002's questionnaire), limits and throttles. Example::

    [factory]
    name = "factory-1"

    [[entry]]
    name = "cluster-a"
    backend = "slurm"
    params = { partition = "debug" }   # local: user = "pilot" (the pilots' account),
                                       # scratch = "/scratch" (where they work)

    [entry.attrs]
    site = "SITE_A"
    cpus = 4
    memory_mb = 8192
    disk_mb = 20000
    max_walltime_s = 86400
    switch = "setuid"            # what the site's pilotage-exec does; "none" if absent

    [entry.policy]               # the site's four answers (seed 002)
    multi_user = "yes"           # no / depends / yes / unknown
    setuid = "require"           # no / allow / require / unknown
    log_only = "no"              # no / allow / require / unknown
    bypass_on_error = "no"       # no / depends / yes / unknown
    # an answer may be a table: { answer, condition, confirmed, becomes, on, note },
    # and [entry.policy.vo.<frontend>] holds one VO's own answers: see sitepolicy.py

    [entry.limits]
    max_idle = 20
    max_running = 200
    max_held = 10
    per_frontend = { max_idle = 10, max_running = 100, max_held = 5 }

    [entry.throttle]
    submits_per_cycle = 10
    removals_per_cycle = 20

A bad file is refused as a whole with :class:`~pilotage.errors.OperatorError`, whose
message names the file, the entry and the key (``entry 'cluster-a': limits.max_idle:
...``), so nothing half-read is ever used.
"""

from __future__ import annotations

import datetime
import enum
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pilotage.errors import OperatorError
from pilotage.factory.sitepolicy import SitePolicy
from pilotage.queue.spec import ATTR_NAME

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Count = Annotated[int, Field(ge=0)]


#: Attributes of an entry's ad or of a pilot's slot ad that pilotage sets itself
#: (lower case: ClassAd names ignore case); an entry's ``extra`` may not use them.
BUILT_IN_ATTRS = frozenset(
    name.lower()
    for name in [
        "EntryName",
        "Site",
        "Cpus",
        "Memory",
        "Disk",
        "GPUs",
        "TotalCpus",
        "TotalMemory",
        "TotalDisk",
        "TotalGPUs",
        "TimeToLive",
        "MaxWallTime",
        "OpSys",
        "Arch",
        "HasSwitch",
        "SwitchMode",
        "PolicyMultiUser",
        "PolicySetuid",
        "PolicyLogOnly",
        "PolicyBypassOnError",
        "PolicyByVO",
        "Name",
        "PilotId",
        "Machine",
    ]
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SwitchMode(enum.Enum):
    """What the site's switch does, as its root-owned config says (DESIGN.md)."""

    NONE = "none"
    SETUID = "setuid"
    LOG_ONLY = "log-only"
    NAMESPACE = "namespace"


class EntryAttrs(_Strict):
    """What a pilot at this entry offers; advertised to the collector."""

    site: Name
    cpus: Annotated[int, Field(ge=1)] = 1
    memory_mb: Annotated[int, Field(ge=1)] = 2048
    disk_mb: Annotated[int, Field(ge=1)] = 10240
    gpus: Count = 0
    max_walltime_s: Annotated[int, Field(ge=60)] = 86400
    opsys: str = "LINUX"
    arch: str = "X86_64"
    switch: SwitchMode = SwitchMode.NONE
    #: Where the switch is on the site's nodes (the pilot looks for ``pilotage-exec`` on
    #: its PATH when this is not given), and whether it is called through ``sudo -n``
    #: (setuid and log-only installs; a site's own wrapper that calls sudo itself: false).
    switch_path: Annotated[str, Field(pattern=r"^/[^\s]*$")] | None = None
    switch_sudo: bool = True
    #: Further attributes, advertised as they are (strings, numbers, booleans), in the
    #: entry's ad and by every pilot of the entry (through its ``pilot.json``).
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _extra_names(
        cls, extra: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for name, value in extra.items():
            if not ATTR_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid ClassAd attribute name")
            # ClassAd names ignore case; a built-in one would differ between the entry's
            # ad and its pilots' ads, where the pilot's own value wins.
            if name.lower() in BUILT_IN_ATTRS:
                raise ValueError(f"{name!r} is an attribute pilotage sets itself")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name}: {value} is not a finite number")
        return extra


class HeldLimits(_Strict):
    """Caps on one entry's pilots, queued, queued plus running, and held."""

    max_idle: Count = 10
    max_running: Count = 100
    max_held: Count = 10


class EntryLimits(HeldLimits):
    """The entry's caps, and the caps for each frontend using it."""

    per_frontend: HeldLimits = Field(default_factory=HeldLimits)

    @model_validator(mode="after")
    def _frontend_within_entry(self) -> EntryLimits:
        pf = self.per_frontend
        for key in ("max_idle", "max_running", "max_held"):
            if getattr(pf, key) > getattr(self, key):
                raise ValueError(
                    f"per_frontend.{key} ({getattr(pf, key)}) exceeds the entry's {key} "
                    f"({getattr(self, key)})"
                )
        return self


class Throttle(_Strict):
    """How much the factory does at one entry per cycle."""

    submits_per_cycle: Annotated[int, Field(ge=1)] = 10
    removals_per_cycle: Annotated[int, Field(ge=1)] = 20
    #: A running pilot asked to retire (end its jobs, then leave) is removed through the
    #: batch system only if it is still there this many seconds later.
    retire_grace_s: Annotated[float, Field(ge=0)] = 3600.0


class Entry(_Strict):
    """One entry of the factory."""

    name: Name
    backend: Literal["local", "slurm", "ssh", "condor"] = "local"
    #: The backend's own parameters (host, partition, ...), checked by the backend.
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    attrs: EntryAttrs
    policy: SitePolicy = Field(default_factory=SitePolicy)
    limits: EntryLimits = Field(default_factory=EntryLimits)
    throttle: Throttle = Field(default_factory=Throttle)

    def ad(self, today: datetime.date | None = None) -> dict[str, object]:
        """The entry's ad: the attributes of a would-be pilot's slot, and the site's policy.

        Named like a slot ad's (:mod:`pilotage.matchmaking.ads`), so a job's
        ``Requirements`` read an entry as they read a slot. The policy is the effective
        answers on ``today`` (default: the UTC date), see :mod:`.sitepolicy`.
        """
        a = self.attrs
        day = today or datetime.datetime.now(datetime.UTC).date()
        return {
            "EntryName": self.name,
            "Site": a.site,
            "Cpus": a.cpus,
            "Memory": a.memory_mb,
            "Disk": a.disk_mb,
            "GPUs": a.gpus,
            "TotalCpus": a.cpus,
            "TotalMemory": a.memory_mb,
            "TotalDisk": a.disk_mb,
            "TotalGPUs": a.gpus,
            "TimeToLive": a.max_walltime_s,
            "MaxWallTime": a.max_walltime_s,
            "OpSys": a.opsys,
            "Arch": a.arch,
            "HasSwitch": a.switch is not SwitchMode.NONE,
            "SwitchMode": None if a.switch is SwitchMode.NONE else a.switch.value,
            **self.policy.ad(day),
            **a.extra,
        }


class FactorySettings(_Strict):
    """The ``[factory]`` table."""

    name: Name = "factory"
    cycle_s: Annotated[float, Field(gt=0)] = 30.0
    #: Where the pilot files are served (``host:port``; port 0 picks a free one).
    files_listen: str = "127.0.0.1:0"


class FactoryConfig(_Strict):
    """A whole entries file: the factory's settings and its entries (unique names)."""

    factory: FactorySettings = Field(default_factory=FactorySettings)
    entry: list[Entry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> FactoryConfig:
        seen: set[str] = set()
        for e in self.entry:
            if e.name in seen:
                raise ValueError(f"entry name '{e.name}' is used twice")
            seen.add(e.name)
        return self

    def by_name(self) -> dict[str, Entry]:
        """The entries by name."""
        return {e.name: e for e in self.entry}


def _where(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """``entry 'name': key.sub`` for a pydantic error location inside ``data``."""
    if len(loc) >= 2 and loc[0] == "entry" and isinstance(loc[1], int):
        entries = data.get("entry")
        name: object = None
        if (
            isinstance(entries, list)
            and loc[1] < len(entries)
            and isinstance(entries[loc[1]], dict)
        ):
            name = entries[loc[1]].get("name")
        label = f"entry '{name}'" if isinstance(name, str) else f"entry #{loc[1] + 1}"
        parts = list(loc[2:])
        if len(parts) == 3 and parts[0] == "policy" and parts[2] == "answer":
            parts.pop()  # an answer written as a word: name the question, not the table
        rest = ".".join(str(p) for p in parts)
        return f"{label}: {rest}" if rest else label
    return ".".join(str(p) for p in loc) or "the file"


def parse_config(data: dict[str, Any], source: str = "entries") -> FactoryConfig:
    """Validate already-parsed TOML; refuse it with one sentence naming the bad key."""
    try:
        return FactoryConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(tuple(first["loc"]), data)
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise OperatorError(f"{source}: {where}: {message}{more}") from None


def load_config(path: Path) -> FactoryConfig:
    """Read and validate an entries file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OperatorError(f"cannot read entries file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OperatorError(f"entries file {path} is not valid TOML: {exc}") from None
    return parse_config(data, str(path))
