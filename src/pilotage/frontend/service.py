"""The frontend service: each cycle, idle jobs and entry ads turned into requests.

The decisions are pure and live elsewhere (:class:`~pilotage.frontend.matching.Matcher`,
:func:`~pilotage.frontend.switch.switch_for`, :func:`~pilotage.frontend.pressure.plan`);
this module is the I/O around them. One cycle:

1. read the entries (``GET /api/v1/entries``; one not advertised for ``entry_max_age_s``
   is left out) and the idle autoclusters (``GET /api/v1/idle-autoclusters``);
2. keep the entries the VO's switch mode allows, and match the job groups to them;
3. observe each (group, entry): the demand, and this frontend's pilots there. A pilot
   the batch system runs but that runs no job yet counts as *idle*: it is about to take
   a job, so asking for another on its account would overshoot (the pool's registered
   pilots tell which are busy);
   An entry whose pilots lately report a switch that keeps answering 202
   (:mod:`pilotage.frontend.health`) has no demand, so no pilots are asked for there;
4. plan, and publish one request per entry (``PUT /api/v1/requests/{me}/{entry}``) with
   a pilot token for the entry, minted again once half its lifetime has passed, while
   pilots are wanted there.

One log line per decision that changed since the previous cycle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pilotage.cli.client import Client
from pilotage.frontend.health import HealthRule, Report, paused_entries
from pilotage.frontend.matching import JobGroup, Matcher
from pilotage.frontend.pressure import EntryState, Observation, Removal, Request, plan
from pilotage.frontend.settings import FrontendConfig
from pilotage.frontend.switch import switch_for
from pilotage.frontend.wire import (
    EntryView,
    IdleAutocluster,
    PilotRequest,
    PilotToken,
    RemovalName,
    SwitchModeName,
)

log = logging.getLogger("pilotage.frontend")


@dataclass(frozen=True)
class EntryDecision:
    """What the frontend publishes for one entry this cycle (the groups' requests summed)."""

    entry: str
    demand: float
    idle_wanted: int
    max_running: int
    removal: Removal
    remove_idle: int
    switch_mode: str


def summed(entry: str, requests: list[Request], demand: float, switch_mode: str) -> EntryDecision:
    """The groups' requests for one entry as one: sums, and the strongest removal."""
    removal = Removal.NONE
    if any(r.removal is Removal.ALL for r in requests):
        removal = Removal.ALL
    elif any(r.removal is Removal.IDLE for r in requests):
        removal = Removal.IDLE
    return EntryDecision(
        entry,
        demand,
        sum(r.idle_wanted for r in requests),
        sum(r.max_running for r in requests),
        removal,
        sum(r.remove_idle for r in requests),
        switch_mode,
    )


class Frontend:
    """One frontend: its settings, its matcher and pressure state, its tokens."""

    def __init__(
        self, config: FrontendConfig, client: Client, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.client = client
        self.clock = clock
        self.pressure = config.pressure_config()
        self.matcher = Matcher()
        self.states: dict[tuple[str, str], EntryState] = {}
        self.tokens: dict[str, PilotToken] = {}
        self._said: dict[str, tuple[object, ...]] = {}

    @property
    def name(self) -> str:
        return self.config.frontend.name

    def _entries(self, now: float) -> list[EntryView]:
        views = [EntryView.model_validate(e) for e in self.client.call("GET", "/api/v1/entries")]
        fresh = [e for e in views if now - e.updated_at <= self.config.frontend.entry_max_age_s]
        return fresh

    def _groups(self) -> list[JobGroup]:
        answer = self.client.call("GET", "/api/v1/idle-autoclusters")
        groups = []
        for item in answer:
            ac = IdleAutocluster.model_validate(item)
            groups.append(
                JobGroup(
                    id=ac.id,
                    idle=ac.idle,
                    cpus=ac.cpus,
                    memory_mb=ac.memory_mb,
                    disk_mb=ac.disk_mb,
                    gpus=ac.gpus,
                    max_wall_time_s=ac.max_wall_time_s,
                    requirements=ac.requirements,
                    attrs=dict(ac.attrs),
                    group=self.config.frontend.group,
                )
            )
        return groups

    def decide(
        self,
        entries: list[EntryView],
        groups: list[JobGroup],
        paused: dict[str, int] | None = None,
    ) -> list[EntryDecision]:
        """One cycle's decisions (no I/O): see steps 2 and 3 of the module docstring.

        ``paused``: entries whose switch pilots report failing (:mod:`.health`), with
        their counts: their demand is 0, so no pilot is asked for there.
        """
        paused = paused or {}
        settings = self.config.frontend
        vo_mode = settings.vo_switch_mode()
        modes: dict[str, str] = {}
        usable: dict[str, EntryView] = {}
        for e in entries:
            decision = switch_for(vo_mode, e.ad, settings.switch_types, self.name)
            self._say(
                f"switch {e.name}",
                (decision.label(),),
                "entry %s: %s: %s",
                e.name,
                decision.reason,
                "no pilots there" if decision.mode is None else f"{decision.label()} pilots",
            )
            if decision.mode is not None:
                usable[e.name] = e
                modes[e.name] = decision.mode.value
        demand = self.matcher.demand(groups, {n: e.ad for n, e in usable.items()})
        for name, count in sorted(paused.items()):
            if name in usable:
                demand = {k: (0.0 if k[1] == name else v) for k, v in demand.items()}
            self._say(f"paused {name}", (count > 0,),
                      "entry %s: %d pilot(s) report its switch failing (202): no pilots there",
                      name, count)  # fmt: skip
        for name in usable:
            if name not in paused and self._said.get(f"paused {name}") == (True,):
                self._say(f"paused {name}", (False,), "entry %s: pilots again", name)
        group_names = sorted({g.group for g in groups} | {self.config.frontend.group})
        observations = []
        for name, e in usable.items():
            mine = e.by_frontend.get(self.name)
            idle, running, held = (mine.idle, mine.running, mine.held) if mine else (0, 0, 0)
            busy = min(running, e.registered.busy)
            for group in group_names:
                # Pilots are counted against the frontend's first group only (one group
                # per frontend is the usual case; the factory does not know groups).
                first = group == group_names[0]
                observations.append(
                    Observation(
                        group,
                        name,
                        demand.get((group, name), 0.0),
                        pilots_idle=idle + running - busy if first else 0,
                        pilots_running=busy if first else 0,
                        pilots_held=held if first else 0,
                    )
                )
        requests, self.states = plan(observations, self.states, self.pressure)
        decisions = []
        for name in sorted(usable):
            mine_ = [r for r in requests if r.entry == name]
            total = sum(v for (_g, n), v in demand.items() if n == name)
            decisions.append(summed(name, mine_, total, modes[name]))
        return decisions

    def _paused(self, now: float) -> dict[str, int]:
        """The entries :func:`~pilotage.frontend.health.paused_entries` pauses now."""
        settings = self.config.frontend
        rule = HealthRule(settings.transient_reports, settings.transient_window_s)
        if rule.reports == 0:
            return {}
        answer = self.client.call("GET", "/api/v1/validation-reports", params={"limit": 1000})
        reports = [Report(r["entry"], float(r["at"]), bool(r["ok"]), r["reason"]) for r in answer]
        return paused_entries(reports, now, rule)

    def _token(self, entry: str, wanted: bool, now: float) -> str | None:
        """The entry's pilot token, minted or renewed while pilots are wanted there."""
        token = self.tokens.get(entry)
        lifetime = self.config.frontend.token_lifetime_s
        if wanted and (token is None or token.expires_at - now < lifetime / 2):
            answer = self.client.call(
                "POST", "/api/v1/pilot-tokens", json={"entry": entry, "lifetime_s": lifetime}
            )
            token = self.tokens[entry] = PilotToken.model_validate(answer)
            log.info("entry %s: new pilot token %s, valid %d s", entry, token.subject, lifetime)
        if token is not None and token.expires_at <= now:
            return None
        return token.token if token is not None else None

    def cycle(self) -> list[EntryDecision]:
        """One cycle: read, decide, publish; the decisions."""
        now = self.clock()
        decisions = self.decide(self._entries(now), self._groups(), self._paused(now))
        for d in decisions:
            wanted = d.idle_wanted > 0 or d.max_running > 0
            body = PilotRequest(
                idle_wanted=d.idle_wanted,
                max_running=d.max_running,
                removal=RemovalName(d.removal.value),
                remove_idle=d.remove_idle,
                switch_mode=SwitchModeName(d.switch_mode),
                pilot_token=self._token(d.entry, wanted, now),
            )
            self.client.call(
                "PUT",
                f"/api/v1/requests/{self.name}/{d.entry}",
                json=body.model_dump(mode="json"),
            )
            self._say(
                f"request {d.entry}",
                (d.idle_wanted, d.max_running, d.removal, d.remove_idle),
                "entry %s: demand %.1f pilots -> want %d idle, at most %d running, remove %s%s",
                d.entry,
                d.demand,
                d.idle_wanted,
                d.max_running,
                d.removal.value,
                f" {d.remove_idle}" if d.removal is Removal.IDLE else "",
            )
        return decisions

    def _say(self, key: str, value: tuple[object, ...], message: str, *args: object) -> None:
        """Log ``message`` when ``value`` differs from the last one logged under ``key``."""
        if self._said.get(key) != value:
            self._said[key] = value
            log.info(message, *args)
