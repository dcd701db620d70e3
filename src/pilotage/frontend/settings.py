"""The frontend's settings file (TOML) turned into typed, validated settings. Example::

    [frontend]
    name = "vo-frontend"        # must be the subject of the frontend's token
    cycle_s = 30
    group = "main"
    switch = "optional"         # the VO's switch mode: required / optional / never
    switch_types = ["setuid"]   # the switch types the VO accepts, preferred first
    token_lifetime_s = 3600     # pilot tokens minted for each entry
    entry_max_age_s = 300       # entries not advertised for this long are left out

    [pressure]                  # pilotage.frontend.pressure.PressureConfig
    max_idle = 10
    max_running = 100
    idle_curb = 5
    ramp_up_min = 2
    ramp_up_factor = 2.0
    remove_excess = "wait"      # no / wait / idle / all
    remove_wait_cycles = 3

    [pressure.entries.cluster-a]
    max_idle = 2
    max_running = 10
    idle_curb = 1

    [pressure.total]
    max_running = 500

A bad file is refused as a whole with :class:`~pilotage.errors.OperatorError` naming the
file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pilotage.errors import OperatorError
from pilotage.factory.entries import Name
from pilotage.frontend.pressure import UNLIMITED, Limits, PressureConfig, RemoveExcess
from pilotage.frontend.switch import VoSwitchMode
from pilotage.frontend.wire import MAX_PILOT_TOKEN_S

Count = Annotated[int, Field(ge=0)]
SwitchType = Literal["setuid", "log-only", "namespace"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitSettings(_Strict):
    """Caps on queued and on queued plus running pilots (see ``pressure.Limits``)."""

    max_idle: Count = 10
    max_running: Count = 1000
    idle_curb: Count = 5

    @model_validator(mode="after")
    def _curb_within_idle(self) -> LimitSettings:
        if self.idle_curb > self.max_idle:
            raise ValueError(f"idle_curb ({self.idle_curb}) exceeds max_idle ({self.max_idle})")
        return self

    def limits(self) -> Limits:
        return Limits(self.max_idle, self.max_running, self.idle_curb)


class PressureSettings(LimitSettings):
    """The ``[pressure]`` table: per-entry defaults, overrides, and ramp-up and removal."""

    ramp_up_min: Annotated[int, Field(ge=1)] = 2
    ramp_up_factor: Annotated[float, Field(ge=1.0)] = 2.0
    remove_excess: Literal["no", "wait", "idle", "all"] = "wait"
    remove_wait_cycles: Count = 3
    entries: dict[str, LimitSettings] = Field(default_factory=dict)
    groups: dict[str, LimitSettings] = Field(default_factory=dict)
    total: LimitSettings | None = None


class FrontendSettings(_Strict):
    """The ``[frontend]`` table."""

    name: Name = "frontend"
    cycle_s: Annotated[float, Field(gt=0)] = 30.0
    group: Name = "main"
    switch: Literal["required", "optional", "never"] = "optional"
    #: The switch types the VO accepts, in order of preference (setuid separates users
    #: from each other; log-only and namespace do not).
    switch_types: Annotated[list[SwitchType], Field(min_length=1, max_length=3)] = Field(
        default_factory=lambda: list[SwitchType](["setuid"])
    )
    token_lifetime_s: Annotated[int, Field(ge=300, le=MAX_PILOT_TOKEN_S)] = 3600
    entry_max_age_s: Annotated[float, Field(gt=0)] = 300.0
    #: An entry with this many reports of a switch that kept answering 202 within
    #: ``transient_window_s`` gets no pilots until they age out (frontend/health.py);
    #: 0 turns the rule off.
    transient_reports: Annotated[int, Field(ge=0)] = 3
    transient_window_s: Annotated[float, Field(gt=0)] = 900.0

    @model_validator(mode="after")
    def _types_once(self) -> FrontendSettings:
        if len(set(self.switch_types)) != len(self.switch_types):
            raise ValueError(f"switch_types names a type twice: {self.switch_types}")
        return self

    def vo_switch_mode(self) -> VoSwitchMode:
        """The VO's switch mode as the enum :func:`switch_for` takes."""
        return VoSwitchMode(self.switch)


class FrontendConfig(_Strict):
    """A whole frontend settings file."""

    frontend: FrontendSettings = Field(default_factory=FrontendSettings)
    pressure: PressureSettings = Field(default_factory=PressureSettings)

    def pressure_config(self) -> PressureConfig:
        """The settings of :func:`pilotage.frontend.pressure.plan`."""
        p = self.pressure
        return PressureConfig(
            entry=p.limits(),
            entries={k: v.limits() for k, v in p.entries.items()},
            groups={k: v.limits() for k, v in p.groups.items()},
            total=p.total.limits() if p.total is not None else UNLIMITED,
            ramp_up_min=p.ramp_up_min,
            ramp_up_factor=p.ramp_up_factor,
            remove_excess=RemoveExcess(p.remove_excess),
            remove_wait_cycles=p.remove_wait_cycles,
        )


def parse_frontend_config(data: dict[str, Any], source: str = "frontend") -> FrontendConfig:
    """Validate already-parsed TOML; refuse it with one sentence naming the bad key."""
    try:
        return FrontendConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise OperatorError(f"{source}: {where}: {message}{more}") from None


def load_frontend_config(path: Path) -> FrontendConfig:
    """Read and validate a frontend settings file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OperatorError(f"cannot read frontend settings {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OperatorError(f"frontend settings {path} are not valid TOML: {exc}") from None
    return parse_frontend_config(data, str(path))
