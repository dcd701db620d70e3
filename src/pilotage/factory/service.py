"""The factory service: each cycle, the frontends' requests turned into pilots.

The decisions are pure and live elsewhere (:func:`~pilotage.factory.planner.plan_entry`,
the pilot state machine of :mod:`pilotage.factory.pilots`); this module is the I/O
around them. One cycle:

1. read the requests for this factory's entries (``GET /api/v1/requests``); a request
   older than ``request_max_age_s`` counts as wanting nothing (its frontend is gone);
2. at each entry: ask the backend where the live pilots are and move them through the
   state machine; read the logs of pilots that ended and forward their failed
   validation lines to the collector (``POST /api/v1/validation-reports``);
3. plan the entry and apply the plan: submit the bootstrap with the requesting
   frontend's pilot token (no token, no pilots), release, retire running pilots a
   frontend no longer wants (``POST /api/v1/entries/{name}/retirements``: they end their
   jobs and leave) and remove;
4. advertise the entry's ad and its pilot counts (``PUT /api/v1/entries/{name}``);
5. save the ledger.

Pilot files are published per (entry, switch terms): the frontend decides the mode, the
factory adds the site's answers for that frontend
(:func:`~pilotage.factory.pilotfiles.pilot_terms`), and each set's ``pilot.json``
carries them. They are served by the factory's own
:class:`~pilotage.factory.fileserver.FileServer`. One log line per decision.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pilotage.cli.client import Client
from pilotage.errors import PilotageError
from pilotage.factory.backends.base import BatchSystem
from pilotage.factory.backends.condor import CondorBatch
from pilotage.factory.backends.local import LocalBatch
from pilotage.factory.backends.slurm import SlurmBatch
from pilotage.factory.backends.ssh import SshBatch
from pilotage.factory.bootstrap import bootstrap_launch
from pilotage.factory.entries import Entry, FactoryConfig
from pilotage.factory.fileserver import FileServer
from pilotage.factory.ledger import Ledger, counts, report_body, validation_lines
from pilotage.factory.manifest import Published, load_or_create_key, publish
from pilotage.factory.pilotfiles import PilotConfig, PilotTerms, entry_files, pilot_terms
from pilotage.factory.pilots import (
    HeldPolicy,
    Pilot,
    PilotEvent,
    PilotState,
    apply_observed,
    new_pilot,
    transition,
)
from pilotage.factory.planner import Wanted, plan_entry
from pilotage.frontend.pressure import Removal
from pilotage.frontend.wire import EntryAdvert, RequestView
from pilotage.pilot.zipapp import build_zipapp

log = logging.getLogger("pilotage.factory")


@dataclass(frozen=True)
class FactoryOptions:
    """What the factory needs besides its entries file."""

    workdir: Path
    #: The server's URL as pilots reach it, and the CA they trust for it.
    server_url: str
    ca_pem: bytes
    held_policy: HeldPolicy = field(default_factory=HeldPolicy)
    #: Requests older than this want nothing; default: ten cycles.
    request_max_age_s: float | None = None


def make_backend(entry: Entry, workdir: Path) -> BatchSystem:
    """The backend of one entry, from its kind and parameters."""
    if entry.backend == "local":
        user = entry.params.get("user")
        return LocalBatch(workdir / "pilots" / entry.name, user=str(user) if user else None)
    if entry.backend == "ssh":
        return SshBatch(entry.params)
    if entry.backend == "slurm":
        return SlurmBatch(entry.params)
    if entry.backend == "condor":
        return CondorBatch(entry.params)
    raise PilotageError(f"entry {entry.name}: backend {entry.backend} is not available yet")


def _scratch_env(entry: Entry) -> dict[str, str]:
    """``PILOTAGE_SCRATCH`` from the entry's ``scratch`` param: where its pilots work."""
    scratch = entry.params.get("scratch")
    return {"PILOTAGE_SCRATCH": str(scratch)} if scratch else {}


class Factory:
    """One factory: its entries, backends, ledger, file server and server client."""

    def __init__(
        self,
        config: FactoryConfig,
        client: Client,
        options: FactoryOptions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.client = client
        self.options = options
        self.clock = clock
        self.entries = config.entry
        workdir = options.workdir
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ledger = Ledger.load(workdir / "pilots.json")
        self.backends = {e.name: make_backend(e, workdir) for e in self.entries}
        self._key = load_or_create_key(workdir / "factory.key")
        self._agent = build_zipapp(workdir / "agent.pyz").read_bytes()
        self._published: dict[tuple[str, PilotTerms], Published] = {}
        host, _, port = config.factory.files_listen.rpartition(":")
        self.files = FileServer(workdir / "files", host or "127.0.0.1", int(port or 0)).start()
        log.info("factory: %d entries; pilot files at %s", len(self.entries), self.files.url)

    def close(self) -> None:
        """Stop serving files and free the backends (pilots keep running)."""
        self.files.stop()
        for backend in self.backends.values():
            backend.close()

    def _files(self, entry: Entry, request: RequestView, now: float) -> Published:
        """The entry's pilot files for the request's terms, published on first use."""
        today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
        terms = pilot_terms(entry, request.switch_mode.value, request.frontend, today)
        key = (entry.name, terms)
        found = self._published.get(key)
        if found is None:
            config = PilotConfig(self.options.server_url, self.options.ca_pem, terms=terms)
            files = entry_files(entry, config, self._agent)
            found = self._published[key] = publish(self.options.workdir / "files", files, self._key)
            log.info(
                "entry %s: pilot files %s (switch %s%s%s)",
                entry.name,
                found.manifest_sha256,
                terms.switch,
                f" {','.join(terms.types)}" if terms.types else "",
                ", single-user" if terms.single_user else "",
            )
        return found

    def _requests(self, now: float) -> list[RequestView]:
        answer = self.client.call("GET", "/api/v1/requests")
        max_age = self.options.request_max_age_s or 10 * self.config.factory.cycle_s
        views = []
        for item in answer:
            view = RequestView.model_validate(item)
            if now - view.updated_at > max_age:
                view = view.model_copy(update={"idle_wanted": 0, "max_running": 0})
            views.append(view)
        return views

    def cycle(self) -> None:
        """One cycle over every entry; see the module docstring."""
        now = self.clock()
        requests = self._requests(now)
        for entry in self.entries:
            mine = [r for r in requests if r.entry == entry.name]
            try:
                self._cycle_entry(entry, mine, now)
            except PilotageError as exc:
                log.error("entry %s: this cycle failed: %s", entry.name, exc.message)
            except OSError as exc:
                log.error("entry %s: this cycle failed: %s", entry.name, exc)
            self._advertise(entry)
        self.ledger.save()

    def _observe(self, entry: Entry, now: float) -> None:
        """Move the entry's pilots to what the backend reports; forward ended pilots' reports."""
        backend = self.backends[entry.name]
        pilots = [p for p in self.ledger.at(entry.name) if not p.state.final]
        if pilots:
            seen = backend.status([p.backend_id for p in pilots])
            for p in pilots:
                self.ledger.put(apply_observed(p, seen[p.backend_id], now))
        for p in self.ledger.at(entry.name):
            if p.state.final:
                self._forward_reports(entry, p, backend)
                self.ledger.drop(p.id)

    def _forward_reports(self, entry: Entry, pilot: Pilot, backend: BatchSystem) -> None:
        try:
            text = backend.logs(pilot.backend_id)
        except PilotageError:
            text = ""
        for report in validation_lines(text):
            if report["ok"]:
                continue
            body = report_body(entry.name, pilot.id, report)
            log.warning(
                "pilot %s at %s refused validation: %s (%s)",
                pilot.id,
                entry.name,
                body["reason"],
                body["message"],
            )
            self.client.call("POST", "/api/v1/validation-reports", json=body)

    def _cycle_entry(self, entry: Entry, requests: list[RequestView], now: float) -> None:
        self._observe(entry, now)
        wanted = [
            Wanted(
                r.frontend,
                r.entry,
                r.idle_wanted,
                r.max_running,
                Removal(r.removal.value),
                r.remove_idle,
            )
            for r in requests
        ]
        plan = plan_entry(entry, wanted, self.ledger.at(entry.name), self.options.held_policy, now)
        backend = self.backends[entry.name]
        by_frontend = {r.frontend: r for r in requests}
        for frontend, count in sorted(plan.submit.items()):
            request = by_frontend[frontend]
            if request.pilot_token is None:
                log.warning(
                    "entry %s: %s wants %d pilots but sent no pilot token",
                    entry.name,
                    frontend,
                    count,
                )
                continue
            files = self._files(entry, request, now)
            launch = bootstrap_launch(
                f"{self.files.url}/{files.manifest_sha256}",
                files.manifest_sha256,
                request.pilot_token,
                walltime_s=entry.attrs.max_walltime_s,
                name=entry.name,
                extra_env=_scratch_env(entry),
            )
            ids = backend.submit(count, launch)
            log.info("entry %s: submitted %d pilots for %s", entry.name, len(ids), frontend)
            for backend_id in ids:
                self.ledger.put(
                    new_pilot(f"{entry.name}/{backend_id}", entry.name, backend_id, now, frontend)
                )
        if plan.release:
            backend.release([self.ledger.get(i).backend_id for i in plan.release])
            for pilot_id in plan.release:
                self.ledger.put(transition(self.ledger.get(pilot_id), PilotEvent.RELEASE, now))
        for frontend, ids in sorted(plan.retire.items()):
            self._retire(entry, frontend, ids, now)
        if plan.remove:
            backend.remove([self.ledger.get(i).backend_id for i, _ in plan.remove])
            for pilot_id, reason in plan.remove:
                pilot = self.ledger.get(pilot_id)
                log.info("entry %s: removing pilot %s: %s", entry.name, pilot_id, reason)
                self.ledger.put(transition(pilot, PilotEvent.REMOVE, now, reason))

    def _retire(self, entry: Entry, frontend: str, ids: list[str], now: float) -> None:
        """Ask the pool to retire the running pilots ``frontend`` has at ``entry``: they end
        their jobs and leave. Those still there after the entry's ``retire_grace_s`` are
        removed by a later plan. A failed call is tried again next cycle."""
        answer = self.client.call(
            "POST", f"/api/v1/entries/{entry.name}/retirements", json={"frontend": frontend}
        )
        log.info(
            "entry %s: %s wants no more pilots here: asked %d running pilots to retire "
            "(%d in the pool)",
            entry.name,
            frontend,
            len(ids),
            answer["retired"],
        )
        for pilot_id in ids:
            self.ledger.put(dataclasses.replace(self.ledger.get(pilot_id), retiring_since=now))

    def _advertise(self, entry: Entry) -> None:
        total, by_frontend = counts(self.ledger.at(entry.name))
        today = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC).date()
        advert = EntryAdvert(ad=entry.ad(today), pilots=total, by_frontend=by_frontend)  # type: ignore[arg-type]
        self.client.call(
            "PUT", f"/api/v1/entries/{entry.name}", json=advert.model_dump(mode="json")
        )

    def live(self) -> dict[str, dict[PilotState, int]]:
        """Live pilots by entry and state (for logs and tests)."""
        found: dict[str, dict[PilotState, int]] = {}
        for p in self.ledger:
            if not p.state.final:
                by_state = found.setdefault(p.entry, {})
                by_state[p.state] = by_state.get(p.state, 0) + 1
        return found
