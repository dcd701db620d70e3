"""The agent: register, ask for work while the slot has room, run claims, leave.

The main thread runs :meth:`Agent.run`'s loop; each claim runs on its own thread
(:class:`~pilotage.pilot.jobrun.JobRun`) and reports its result itself, asking for the
next job in the same round trip; one :class:`~pilotage.pilot.heartbeat.Heartbeat` thread
renews every lease. Requests that may bring a claim (ask for work, a result with
``next``) go one at a time under ``_ask_lock``, so the free resources they announce are
never promised twice.

The agent leaves (``POST .../exit``) on idle timeout, at the end of its lifetime (running
jobs are killed then; no new work is asked for in the last ``lifetime_margin_s``), when
the server asks it to retire (once its jobs have ended), and on SIGTERM or SIGINT (jobs
are killed). If it dies without leaving (SIGKILL), its reaper kills its jobs
(:mod:`pilotage.pilot.reaper`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from pilotage.errors import Conflict, Denied, NotFound, PilotageError, Transient

from .client import Backoff, Client, retrying
from .config import AgentConfig
from .heartbeat import Heartbeat
from .jobrun import KILL_GRACE_S, JobRun
from .nodepolicy import report_line, switch_type_problem
from .reaper import Reaper, lock_workdir, sweep
from .reconnect import OutageClock, QuietLog, register_again
from .resources import Resources, Slot, SlotFull
from .session import WAIT_S, SessionWatcher
from .switched import SwitchedRun
from .wire import VERSION, Claim, GiveBack, JobResult, Registration, WorkAnswer, work_request

log = logging.getLogger("pilotage.pilot")


class Agent:
    """One pilot's agent. Build it with a config, then call :meth:`run` once."""

    def __init__(self, config: AgentConfig, client: Client | None = None) -> None:
        self.config = config
        self.client = client or Client(
            config.server_url,
            ca_file=config.ca_file,
            token_file=config.token_file,
            timeout_s=config.timeout_s,
        )
        self.slot = Slot(config.resources, config.gpu_ids)
        self.registration: Registration | None = None
        # Invariant: _runs holds every claim not yet reported or dropped, and each of them
        # holds its share in self.slot; both change together under _lock.
        self._lock = threading.Lock()
        self._ask_lock = threading.Lock()
        self._runs: dict[str, JobRun] = {}
        self._threads: list[threading.Thread] = []
        self._wake = threading.Event()
        self._started = time.monotonic()
        self._end = self._started + config.lifetime_s
        self._idle_since = self._started
        self._not_before = 0.0
        self._retire = False
        #: Drained by an admin (heartbeat and work answers): no asking for work meanwhile.
        self._drained = False
        # Written by signal handlers and other threads; plain attributes, read in the loop.
        self._signalled: str | None = None
        #: The server lost this pilot (why): the main loop registers again (reconnect.py).
        self._rejoin_due: str | None = None
        self._heartbeat: Heartbeat | None = None
        #: Server outages, not counted as idle time; their asks logged once each way.
        self._outage = OutageClock()
        self._ask_failures = QuietLog("asking for work")
        self._lost: str | None = None
        #: Why this node cannot run jobs (a switch refusal that is the node's fault): the
        #: pilot takes no more jobs and leaves once its running ones end.
        self._node_fault: str | None = None
        #: A single-user pilot's owner: the flag's, or its first job's (``*``).
        self._owner = None if config.single_user in (None, "*") else config.single_user
        #: Kills this agent's jobs if it dies (pilot/reaper.py); told of every claim.
        self.reaper = Reaper(config.workdir, config.switch, config.token_file)
        self._lock_fd: int | None = None

    # -- the main loop ---------------------------------------------------------------

    def run(self) -> int:
        """Register, serve until a reason to leave, leave; 0 normally, 1 on a fatal error."""
        log.info("agent starting: %s", self.config.describe())
        problem = switch_type_problem(self.config.attrs, bool(self.config.switch))
        if problem is not None:
            log.error("not starting: %s", problem)
            report_line("switch_type", problem, switch=self.config.attrs.get("PilotageSwitch"))
            return 1
        self._start_reaper()
        previous = self._install_signals()
        try:
            try:
                self.register()
            except PilotageError as exc:
                log.error("registration failed: %s", exc.message)
                return 1
            assert self.registration is not None
            self._heartbeat = heartbeat = Heartbeat(
                self.client,
                self.registration.pilot_id,
                self.registration.heartbeat_s,
                self.runs,
                on_retire=self._on_retire,
                on_lost=self._on_lost,
                quiet=self._quiet,
                outage=self._outage,
                on_back=self._on_back,
            )
            heartbeat.on_drain = self._on_drain
            heartbeat.start()
            # exec-in-job sessions: a long-poll held shorter than a call may take.
            wait_s = max(1.0, min(WAIT_S, self.config.timeout_s - 10.0))
            sessions = SessionWatcher(self.client, self._pilot_id, self.runs, wait_s=wait_s)
            sessions.start()
            try:
                reason = self._loop()
                self._drain(reason)
            finally:
                sessions.stop()
                heartbeat.stop()
            self._leave(reason)
            return 1 if self._lost or self._node_fault else 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.reaper.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)

    def _start_reaper(self) -> None:
        """Kill what a dead agent left in the work directory (when no live agent uses
        it), then fork the reaper that kills this agent's jobs if it dies (pilot/reaper.py).
        Called before any other thread starts."""
        cfg = self.config
        self._lock_fd = lock_workdir(cfg.workdir)
        if self._lock_fd is None:
            log.warning("another live agent uses %s: nothing left there is swept", cfg.workdir)
        else:
            sweep(cfg.workdir, cfg.switch, cfg.token_file)
        keep = () if self._lock_fd is None else (self._lock_fd,)
        self.reaper.start(keep)

    def register(self) -> Registration:
        """Join the pool, retrying an unreachable server until the end of the lifetime."""
        answer = retrying(
            lambda: self.client.request("POST", "/pilot/v1/pilots", self._registration_body()),
            what="registration",
            wait=lambda delay: self._sleep(delay) or time.monotonic() >= self._end,
        )
        self.registration = Registration.from_wire(answer)
        self.client.set_pilot_secret(self.registration.pilot_secret)
        log.info(
            "registered as pilot %s (heartbeat %.0f s, idle timeout %.0f s)",
            self.registration.pilot_id,
            self.registration.heartbeat_s,
            self.idle_timeout_s,
        )
        return self.registration

    def _registration_body(self) -> dict[str, Any]:
        """What registering says of this pilot: its slot and what is left of its life."""
        cfg = self.config
        r = cfg.resources
        return {
            "v": VERSION,
            "name": cfg.pilot_name,
            "site": cfg.site,
            "host": cfg.host,
            "cpus": r.cpus,
            "memory_mb": r.memory_mb,
            "disk_mb": r.disk_mb,
            "gpus": r.gpus,
            "lifetime_s": max(1.0, round(self._end - time.monotonic(), 3)),
            "attrs": cfg.attrs,
            "start": self._start_expression(),
        }

    def _rejoin(self) -> None:
        """Register again after the server lost this pilot (pilot/reconnect.py): the
        claims it takes back keep running, the others are stopped; refused, leave."""
        assert self.registration is not None and self._heartbeat is not None
        why, self._rejoin_due = self._rejoin_due, None
        log.warning("the server lost this pilot (%s); registering again", why)
        with self._ask_lock:  # no claim may arrive meanwhile: ``held`` is then all of them
            held = [run.claim.claim_id for run in self.runs()]
            try:
                again = register_again(
                    self.client,
                    self._registration_body(),
                    self.registration,
                    held,
                    wait=lambda delay: self._sleep(delay) or time.monotonic() >= self._end,
                )
            except PilotageError as exc:
                self._lost = f"{why}; registering again failed: {exc.message}"
                return
            self.registration = again
            self.client.set_pilot_secret(again.pilot_secret)
            self._heartbeat.set_pilot(again.pilot_id)
            self._outage.succeeded()
            self._not_before = 0.0
            for run in self.runs():
                if run.claim.claim_id not in again.resumed:
                    run.stop("the server no longer holds its claim (this pilot was lost)")

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[bool]:
        """Whether no request that could bring a claim is under way; if so, none starts
        until the caller is done (the heartbeat's complete list of claims)."""
        if not self._ask_lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            self._ask_lock.release()

    def _start_expression(self) -> str:
        """The slot's START: the flag's, and only its owner's jobs on a single-user pilot
        whose owner is named (``*`` is locked by the server at the first claim)."""
        if self._owner is None:
            return self.config.start
        return f"({self.config.start}) && TARGET.Owner == {json.dumps(self._owner)}"

    @property
    def idle_timeout_s(self) -> float:
        """The flag's value if given, else the server's."""
        if self.config.idle_timeout_s is not None:
            return self.config.idle_timeout_s
        return self.registration.idle_timeout_s if self.registration else 1200.0

    def _pilot_id(self) -> str:
        assert self.registration is not None
        return self.registration.pilot_id

    def runs(self) -> list[JobRun]:
        """The claims this pilot holds now."""
        with self._lock:
            return list(self._runs.values())

    def _loop(self) -> str:
        backoff = Backoff()
        while True:
            reason = self._exit_reason()
            if reason is not None:
                return reason
            if self._rejoin_due is not None:
                self._rejoin()
                backoff.reset()
                continue
            with self._lock:
                ask = self._may_ask(self.slot.free()) and time.monotonic() >= self._not_before
            if not ask:
                self._sleep(1.0)
                continue
            try:
                self._ask()
                backoff.reset()
                self._ask_failures.succeeded()
                self._outage.succeeded()
            except (NotFound, Denied, Conflict) as exc:
                self._on_lost(exc.message)
            except PilotageError as exc:  # transient, or e.g. 401 while a token is renewed
                delay = backoff.delay(exc.retry_after_s if isinstance(exc, Transient) else None)
                if isinstance(exc, Transient):
                    self._outage.failed()
                    self._ask_failures.failed(exc.message)
                else:
                    log.warning("asking for work failed (%s); again in %.0f s", exc.message, delay)
                self._not_before = time.monotonic() + delay

    def _exit_reason(self) -> str | None:
        now = time.monotonic()
        with self._lock:
            busy = self.slot.busy
        if self._signalled:
            return self._signalled
        if self._lost:
            return f"lost by the server: {self._lost}"
        if self._node_fault and not busy:
            return f"node fault: {self._node_fault}"
        if now >= self._end:
            return "lifetime reached"
        if busy:
            return None
        if self._retire:
            return "retired by the server"
        if self._end - now < self.config.lifetime_margin_s:
            return "lifetime nearly over"
        idle_s = now - self._idle_since - self._outage.unreachable_s(self._idle_since)
        if idle_s >= self.idle_timeout_s:  # time the server was out of reach is not idle
            return "idle timeout"
        return None

    def _may_ask(self, free: Resources) -> bool:
        """Whether to ask for more work with ``free`` resources (caller holds ``_lock``)."""
        return (
            not (self._retire or self._drained or self._signalled or self._lost or self._node_fault)
            and self._rejoin_due is None
            and self._end - time.monotonic() >= self.config.lifetime_margin_s
            and Slot.MIN_FREE.fits_in(free)
        )

    def _sleep(self, delay_s: float, always: bool = False) -> bool:
        """Sleep up to ``delay_s`` in short slices, so a signal is seen within a second.

        Returns whether the agent is leaving (at once, unless ``always``: the exit call
        retries even then).
        """
        deadline = time.monotonic() + delay_s
        self._wake.clear()
        while (left := deadline - time.monotonic()) > 0:
            leaving = bool(self._signalled or self._lost)
            if (leaving and not always) or self._wake.wait(min(left, 1.0)):
                break
        return bool(self._signalled or self._lost)

    # -- claims ----------------------------------------------------------------------

    def _ask(self) -> None:
        """Ask for one job with what is free; start it if one comes."""
        assert self.registration is not None
        path = f"/pilot/v1/pilots/{self.registration.pilot_id}/claims"
        with self._ask_lock:
            with self._lock:
                body = work_request(self.slot.free(), self._end - time.monotonic())
            sent = time.monotonic()
            answer = WorkAnswer.from_wire(self.client.request("POST", path, body))
            self._take(answer, sent)

    def _take(self, answer: WorkAnswer, sent: float) -> None:
        """Act on a work answer: start its claim, note retire and when to ask again."""
        if answer.retire and not self._retire:
            self._on_retire()
        self._on_drain(answer.drain)
        if answer.claim is None:
            self._not_before = time.monotonic() + max(0.0, answer.retry_after_s)
            return
        self._start(answer.claim, sent)

    def _start(self, claim: Claim, sent: float) -> None:
        assert self.registration is not None
        if self.config.single_user is not None:
            if self._owner is None:
                self._owner = claim.owner  # '*': the first job's owner, for good
            elif claim.owner != self._owner:
                why = f"a single-user pilot of {self._owner} does not run a job of {claim.owner}"
                log.error("claim %s job %s: %s", claim.claim_id, claim.job_id, why)
                left_s = max(0.0, self._end - time.monotonic())
                self._give_back(claim, f"claim {claim.claim_id}", GiveBack(why, exclude_s=left_s))
                return
        settings: dict[str, Any] = {
            "client": self.client,
            "workdir": self.config.workdir,
            "max_sandbox_bytes": self.registration.max_sandbox_bytes,
            "granted_at": sent,
            "pilot_credential": self.config.token_file,
        }
        run = (
            SwitchedRun(
                claim,
                switch=self.config.switch,
                renewal=self.config.renewal,
                retry=self.config.switch_retry,
                **settings,
            )
            if self.config.switch
            else JobRun(claim, **settings)
        )
        with self._lock:
            try:
                self.slot.carve(claim.claim_id, claim.request, claim.assigned_gpus)
            except SlotFull as exc:  # its lease will lapse and the job go elsewhere
                log.error("%s: not taken: %s", run.tag, exc)
                return
            self._runs[claim.claim_id] = run
            self.reaper.started(claim.claim_id)
            log.info("%s: claimed for %s (%s)", run.tag, claim.owner, claim.request)
            thread = threading.Thread(target=self._serve, args=(run,), name=claim.claim_id)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _serve(self, run: JobRun) -> None:
        """A claim's thread: run it, clean up, report (asking for the next) or give it
        back, release."""
        result = self._execute(run)
        if run.give_back is not None and run.give_back.bypassable and self._may_bypass(run):
            run, result = self._bypass(run, run.give_back)
        try:
            with self._ask_lock:
                sent = time.monotonic()
                if run.give_back is not None:
                    self._give_back(run.claim, run.tag, run.give_back)
                    answer = None
                else:
                    answer = self._report(run, result)
                self._release(run)
                if answer is not None:
                    self._take(answer, sent)
        except Exception:  # as above
            log.exception("%s: unexpected error while reporting", run.tag)
            self._release(run)
        finally:
            self.client.close()  # this thread's connection ends with the thread

    @staticmethod
    def _execute(run: JobRun) -> JobResult | None:
        try:
            return run.execute()
        except Exception:  # one job's bug must not take the pilot down
            log.exception("%s: unexpected error; dropping the claim", run.tag)
            run.stop("agent error")
            return None
        finally:
            run.cleanup()

    def _may_bypass(self, run: JobRun) -> bool:
        """Whether a job whose switch failed with an internal error may run as the pilot
        account: the site says so (``--bypass-on-error yes``), the VO does not require
        the switch, and the claim still lives."""
        required = self.config.attrs.get("PilotageSwitchMode", "").strip('"') == "required"
        return self.config.bypass_on_error and not required and run.alive

    def _bypass(self, run: JobRun, why: GiveBack) -> tuple[JobRun, JobResult | None]:
        """Run the claim again, as the pilot account; its result says why (seed 002 q. 4)."""
        assert self.registration is not None
        log.warning("%s: running it as the pilot account (bypass allowed): %s", run.tag, why.reason)
        plain = JobRun(
            run.claim,
            client=self.client,
            workdir=self.config.workdir,
            max_sandbox_bytes=self.registration.max_sandbox_bytes,
            granted_at=run.lease_deadline - run.claim.lease_s,
            pilot_credential=self.config.token_file,
        )
        with self._lock:
            if self._runs.get(run.claim.claim_id) is not run:
                return run, None
            self._runs[run.claim.claim_id] = plain
        result = self._execute(plain)
        if why.stop_pilot:
            self._stop_taking_jobs(why.reason)
        if result is None:
            return plain, None
        return plain, dataclasses.replace(result, without_switch=why.reason)

    def _give_back(self, claim: Claim, tag: str, why: GiveBack) -> None:
        """Give a claim back unfinished (a few quick tries; else its lease lapses); when the
        node is at fault, take no more jobs and say why."""
        give_up = time.monotonic() + 30.0
        try:
            state = retrying(
                lambda: self.client.vacate(claim.claim_id, why.to_wire()),
                what=f"{tag}: give back",
                wait=lambda delay: (
                    self._sleep(min(delay, 5.0), always=True) or time.monotonic() > give_up
                ),
                backoff=Backoff(first_s=1.0, max_s=5.0),
            )
            log.info("%s: given back (%s); the job is %s", tag, why.reason, state)
        except PilotageError as exc:
            log.warning("%s: not given back (%s); its lease will lapse", tag, exc.message)
        if why.stop_pilot:
            self._stop_taking_jobs(why.reason, claim)

    def _stop_taking_jobs(self, reason: str, claim: Claim | None = None) -> None:
        if self._node_fault is not None:
            return
        self._node_fault = reason
        log.error("this node cannot run jobs: %s; taking no more", reason)
        report_line(
            "node_fault", reason, job=claim.job_id if claim else None,
            claim=claim.claim_id if claim else None,
        )  # fmt: skip
        self._wake.set()

    def _report(self, run: JobRun, result: JobResult | None) -> WorkAnswer | None:
        """Report ``result`` (unless None), asking for the next job if there is room.

        The caller holds ``_ask_lock``; the claim keeps its share until reported, and the
        ``next`` request counts that share as free since it is given back right after.
        """
        if result is None or not run.alive:
            return None
        with self._lock:
            free = self.slot.free() + run.claim.request
            want_next = self._may_ask(free)
        next_request = work_request(free, self._end - time.monotonic()) if want_next else None
        path = f"/pilot/v1/claims/{run.claim.claim_id}/result"
        try:
            body = retrying(
                lambda: self.client.request("POST", path, result.to_wire(next_request)),
                what=f"{run.tag}: result report",
                wait=run.wait_or_stopped,
            )
        except PilotageError as exc:
            log.warning("%s: result not reported (%s)", run.tag, exc.message)
            return None
        log.info("%s: result reported", run.tag)
        return WorkAnswer.from_wire(body) if next_request is not None else None

    def _release(self, run: JobRun) -> None:
        self.reaper.ended(run.claim.claim_id)  # its job has ended and been cleaned up
        with self._lock:
            self._runs.pop(run.claim.claim_id, None)
            self.slot.release(run.claim.claim_id)
            if not self.slot.busy:
                self._idle_since = time.monotonic()
        self._wake.set()

    # -- leaving ---------------------------------------------------------------------

    def _on_retire(self) -> None:
        self._retire = True
        self._wake.set()

    def _on_drain(self, drained: bool) -> None:
        if drained != self._drained:
            log.info("drained by the server: %s", "no new job" if drained else "resumed")
            self._drained = drained
            self._wake.set()

    def _on_back(self) -> None:
        """The server answers again after an outage: ask for work now, not at the end of
        the back-off the outage built up."""
        self._not_before = 0.0
        self._wake.set()

    def _on_lost(self, message: str) -> None:
        """The server no longer knows or accepts this pilot: register again (the main
        loop does; if that is refused too, the agent leaves)."""
        self._rejoin_due = message
        self._wake.set()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handle(signum: int, _frame: FrameType | None) -> None:
            # Only an attribute store: the loop polls it (no lock taken in a handler).
            self._signalled = f"terminated by {signal.Signals(signum).name}"

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handle)
        return previous

    def _drain(self, reason: str) -> None:
        """Stop every claim (if any is left) and wait for their threads to end."""
        for run in self.runs():
            run.stop(reason)
        deadline = time.monotonic() + KILL_GRACE_S + 20.0
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def _leave(self, reason: str) -> None:
        """Tell the server this pilot leaves (best effort: a few quick tries)."""
        assert self.registration is not None
        log.info("leaving: %s", reason)
        path = f"/pilot/v1/pilots/{self.registration.pilot_id}/exit"
        give_up = time.monotonic() + 30.0
        try:
            retrying(
                lambda: self.client.request("POST", path, {"v": VERSION, "reason": reason}),
                what="exit",
                wait=lambda delay: (
                    self._sleep(min(delay, 5.0), always=True) or time.monotonic() > give_up
                ),
                backoff=Backoff(first_s=1.0, max_s=5.0),
            )
        except PilotageError as exc:
            log.warning("exit not acknowledged (%s)", exc.message)
        self.client.close()


def run(config: AgentConfig) -> int:
    """Run an agent with ``config`` until it leaves; the process exit code."""
    return Agent(config).run()
