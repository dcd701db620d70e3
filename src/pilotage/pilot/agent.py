"""The agent: register, ask for work while the slot has room, run claims, leave.

The main thread runs :meth:`Agent.run`'s loop: it asks for work (as many claims as the
free cpus may take, the server holding the request open while it has none: the
long-poll) and reports the results of ended jobs, several in one call, asking for the
next jobs in the same round trip. Each claim runs on a worker thread
(:class:`~pilotage.pilot.jobrun.JobRun`, :mod:`pilotage.pilot.workers`), which hands its
result to the main loop; while a request for work is held open, it reports the result
itself instead, at once. One :class:`~pilotage.pilot.heartbeat.Heartbeat` thread renews
every lease. Requests that may bring a claim (ask for work, results with ``next``) go
one at a time under ``_ask_lock``, so the free resources they announce are never
promised twice. Leaving (a signal, retire, drain, lost) cancels a request held open
(:class:`~pilotage.pilot.client.Cancel`), so it never waits for the server's answer.

The agent leaves (``POST .../exit``) on idle timeout, at the end of its lifetime (running
jobs are killed then; no new work is asked for in the last ``lifetime_margin_s``), when
the server asks it to retire (once its jobs have ended), and on SIGTERM or SIGINT (jobs
are killed). If it dies without leaving (SIGKILL), its reaper kills its jobs
(:mod:`pilotage.pilot.reaper`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from pilotage.errors import Conflict, Denied, NotFound, PilotageError, Transient

from . import lastcalls
from .client import Backoff, Cancel, Cancelled, Client, retrying
from .config import AgentConfig
from .heartbeat import Heartbeat
from .jobrun import KILL_GRACE_S, JobRun
from .nodepolicy import report_line, switch_type_problem
from .reaper import Reaper
from .reconnect import REGISTER_PATH, OutageClock, QuietLog, register_again, registration_body
from .resources import Resources, Slot, SlotFull
from .results import Ended, Results
from .runs import bypass_run, execute, make_run, may_bypass, without_switch
from .session import WAIT_S, SessionWatcher
from .wire import Claim, GiveBack, JobResult, Registration, WorkAnswer, work_request
from .workers import Workers

log = logging.getLogger("pilotage.pilot")

#: The longest the agent asks the server to hold a request for work open (the server
#: bounds it too: ``[server] work_wait_s``).
WORK_WAIT_S = 20.0
#: The most claims one request asks for, and results one report carries.
MAX_BATCH = 64


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
        # Reentrant: the main loop holds it around a heartbeat it sends itself.
        self._ask_lock = threading.RLock()
        self._runs: dict[str, JobRun] = {}
        self._workers = Workers()
        self._wake = threading.Event()
        #: Results on their way, and the request for work under way (both under _lock).
        self._results = Results(self.client, self._lock, self._wake)
        #: Why the agent leaves, once it has begun to: it asks for no more work.
        self._leaving: str | None = None
        self._started = time.monotonic()
        self._end = self._started + config.lifetime_s
        self._idle_since = self._started
        #: Backing off after a failed call: no call until then (results wait too).
        self._not_before = 0.0
        #: The server had no work (its retry_after_s): no request for work until then,
        #: but the results of jobs that end meanwhile go at once.
        self._ask_not_before = 0.0
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
        self._lock_fd = self.reaper.take_workdir()  # pilot/reaper.py
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

    def register(self) -> Registration:
        """Join the pool, retrying an unreachable server until the end of the lifetime."""
        body = self._registration_body()
        answer = retrying(
            lambda: self.client.request("POST", REGISTER_PATH, body),
            what="registration",
            wait=self._until_end,
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
        return registration_body(self.config, self._owner, self._end - time.monotonic())

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
                    wait=self._until_end,
                )
            except PilotageError as exc:
                self._lost = f"{why}; registering again failed: {exc.message}"
                return
            self.registration = again
            self.client.set_pilot_secret(again.pilot_secret)
            self._heartbeat.set_pilot(again.pilot_id)
            self._outage.succeeded()
            self._not_before = self._ask_not_before = 0.0
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
            self._wake.clear()  # before looking: a wake-up after the look is not lost
            reason = self._exit_reason()
            if reason is not None:
                return reason
            if self._rejoin_due is not None:
                self._rejoin()
                backoff.reset()
                continue
            if self._heartbeat is not None and self._heartbeat.wants_complete:
                with self._ask_lock:  # no request for work under way: every claim listed
                    self._heartbeat.beat()
            cancel = None
            finished: list[Ended] = []
            with self._lock:
                now = time.monotonic()
                if now >= self._not_before:  # not backing off
                    finished = self._results.take()
                    if (
                        not finished
                        and now >= self._ask_not_before
                        and self._may_ask(self.slot.free())
                    ):
                        cancel = self._results.asking = Cancel()
            if not finished and cancel is None:
                self._idle_wait(1.0)
                continue
            try:
                if finished:
                    self._report_all(finished)
                else:
                    assert cancel is not None
                    self._ask(cancel)
                backoff.reset()
                self._ask_failures.succeeded()
                self._outage.succeeded()
            except Cancelled:
                pass  # the agent is leaving, drained or lost: the loop sees which
            except (NotFound, Denied, Conflict) as exc:
                self._on_lost(exc.message)
                self._requeue(finished)
            except PilotageError as exc:  # transient, or e.g. 401 while a token is renewed
                delay = backoff.delay(exc.retry_after_s if isinstance(exc, Transient) else None)
                if isinstance(exc, Transient):
                    self._outage.failed()
                    self._ask_failures.failed(exc.message)
                else:
                    log.warning("asking for work failed (%s); again in %.0f s", exc.message, delay)
                self._not_before = time.monotonic() + delay
                self._requeue(finished)
            finally:
                with self._lock:
                    if self._results.asking is cancel:
                        self._results.asking = None

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
            and self._leaving is None
            and self._rejoin_due is None
            and self._end - time.monotonic() >= self.config.lifetime_margin_s
            and Slot.MIN_FREE.fits_in(free)
        )

    def _idle_wait(self, delay_s: float) -> None:
        """Wait up to ``delay_s`` for something to do (a wake-up), in short slices so a
        signal is seen within a second."""
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0 and not self._signalled:
            if self._wake.wait(min(left, 1.0)):
                return

    def _sleep(self, delay_s: float, always: bool = False) -> bool:
        """Sleep up to ``delay_s`` in short slices, so a signal is seen within a second
        (any thread; the main loop's wake-ups are not touched).

        Returns whether the agent is leaving (at once, unless ``always``: the exit call
        retries even then).
        """
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            if (self._signalled or self._lost) and not always:
                break
            time.sleep(min(left, 0.5))
        return bool(self._signalled or self._lost)

    def _until_end(self, delay_s: float) -> bool:
        """Retry waits that end with the pilot's lifetime: whether to give up."""
        return self._sleep(delay_s) or time.monotonic() >= self._end

    def _sleep_always(self, delay_s: float) -> None:
        """Sleep up to ``delay_s``, even while leaving (the last calls)."""
        self._sleep(delay_s, always=True)

    # -- claims ----------------------------------------------------------------------

    def _ask(self, cancel: Cancel) -> None:
        """Ask for as many jobs as what is free may take, the server holding the request
        open (``wait_s``) while it has none; start those that come."""
        assert self.registration is not None
        path = f"/pilot/v1/pilots/{self.registration.pilot_id}/claims"
        with self._ask_lock:
            with self._lock:
                body = self._work_request(self.slot.free(), wait=True)
            sent = time.monotonic()
            answer = WorkAnswer.from_wire(self.client.request("POST", path, body, cancel=cancel))
            self._take(answer, sent)

    def _work_request(self, free: Resources, wait: bool = False) -> dict[str, Any]:
        """A request for as many jobs as ``free`` may take (one cpu each at least);
        ``wait``: held open by the server while it has none, at most until the next
        heartbeat is due (a heartbeat that must list every claim held waits for it)."""
        wait_s = 0.0
        if wait and self.registration is not None:
            wait_s = min(WORK_WAIT_S, self.config.timeout_s - 10.0, self.registration.heartbeat_s)
        return work_request(
            free,
            self._end - time.monotonic(),
            wait_s=max(0.0, wait_s),
            max_claims=max(1, min(MAX_BATCH, free.cpus)),
        )

    def _take(self, answer: WorkAnswer, sent: float) -> None:
        """Act on a work answer: start its claims, note retire and when to ask again."""
        if answer.retire and not self._retire:
            self._on_retire()
        self._on_drain(answer.drain)
        if answer.claim is None:
            self._ask_not_before = time.monotonic() + max(0.0, answer.retry_after_s)
            return
        for claim in answer.claims:
            self._start(claim, sent)

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
        run = make_run(claim, self.config, self.client, self.registration.max_sandbox_bytes, sent)
        with self._lock:
            try:
                self.slot.carve(claim.claim_id, claim.request, claim.assigned_gpus)
            except SlotFull as exc:  # its lease will lapse and the job go elsewhere
                log.error("%s: not taken: %s", run.tag, exc)
                return
            self._runs[claim.claim_id] = run
            self.reaper.started(claim.claim_id)
        log.info("%s: claimed for %s (%s)", run.tag, claim.owner, claim.request)
        self._workers.run(lambda: self._serve(run))

    def _serve(self, run: JobRun) -> None:
        """A claim's worker: run it, clean up, then give it back, or hand its result to
        the main loop (reported at once here if a request for work is held open)."""
        result = execute(run)
        why = run.give_back
        if why is not None and why.bypassable and may_bypass(self.config, run):
            run, result = self._bypass(run, why)
        try:
            if run.give_back is not None:
                self._give_back(run.claim, run.tag, run.give_back)
            elif result is not None and run.alive and self._results.hand_over(run, result):
                return  # queued: the main loop reports it, then releases it
        except Exception:  # one job's bug must not take the pilot down
            log.exception("%s: unexpected error while reporting", run.tag)
        self._release(run)

    def _bypass(self, run: JobRun, why: GiveBack) -> tuple[JobRun, JobResult | None]:
        """Run the claim again, as the pilot account; its result says why."""
        assert self.registration is not None
        plain = bypass_run(run, why, self.config, self.client, self.registration.max_sandbox_bytes)
        with self._lock:
            if self._runs.get(run.claim.claim_id) is not run:
                return run, None
            self._runs[run.claim.claim_id] = plain
        result = execute(plain)
        if why.stop_pilot:
            self._stop_taking_jobs(why.reason)
        return plain, without_switch(result, why)

    def _give_back(self, claim: Claim, tag: str, why: GiveBack) -> None:
        """Give a claim back unfinished; when the node is at fault, take no more jobs."""
        lastcalls.give_back(self.client, claim, tag, why, self._sleep_always)
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

    def _report_all(self, finished: list[Ended]) -> None:
        """Report the results of ended claims (pilot/results.py), asking for the next jobs
        with what they and the slot leave free; release them; start the claims that come.

        Raises what the call raised, the results unreported (the caller queues them
        again with :meth:`_requeue`).
        """
        assert self.registration is not None
        live = self._requeue(finished, queue=False)
        if not live:
            return
        with self._ask_lock:
            with self._lock:
                free = self.slot.free()
                for run, _result in live:
                    free = free + run.claim.request  # given back right after
                want_next = self._may_ask(free)
            sent = time.monotonic()
            next_request = self._work_request(free) if want_next else None
            answer = self._results.send(self.registration.pilot_id, live, next_request)
            for run, _result in live:
                self._release(run)
            if answer is not None and want_next:
                self._take(answer, sent)

    def _requeue(self, finished: list[Ended], queue: bool = True) -> list[Ended]:
        """Release the claims among ``finished`` stopped since (not reported); queue the
        others again (unless not ``queue``) and return them."""
        live = [(run, result) for run, result in finished if run.alive]
        for run, _result in finished:
            if not run.alive:
                self._release(run)
        if queue:
            self._results.requeue(live)
        return live

    def _release(self, run: JobRun) -> None:
        """Give a claim's share back (once: a second call is a no-op)."""
        with self._lock:
            if self._runs.pop(run.claim.claim_id, None) is None:
                return
            self.slot.release(run.claim.claim_id)
            if not self.slot.busy:
                self._idle_since = time.monotonic()
        self.reaper.ended(run.claim.claim_id)  # its job has ended and been cleaned up
        self._wake.set()

    # -- leaving ---------------------------------------------------------------------

    def _on_retire(self) -> None:
        self._retire = True
        self._cancel_ask()
        self._wake.set()

    def _on_drain(self, drained: bool) -> None:
        if drained != self._drained:
            log.info("drained by the server: %s", "no new job" if drained else "resumed")
            self._drained = drained
            if drained:
                self._cancel_ask()
            self._wake.set()

    def _cancel_ask(self) -> None:
        self._results.cancel_ask()

    def _on_back(self) -> None:
        """The server answers again after an outage: ask for work now, not at the end of
        the back-off the outage built up."""
        self._not_before = self._ask_not_before = 0.0
        self._wake.set()

    def _on_lost(self, message: str) -> None:
        """The server no longer knows or accepts this pilot: register again (the main
        loop does; if that is refused too, the agent leaves)."""
        self._rejoin_due = message
        self._cancel_ask()
        self._wake.set()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handle(signum: int, _frame: FrameType | None) -> None:
            # An attribute store the loop polls, and a socket shut down: no lock taken.
            self._signalled = f"terminated by {signal.Signals(signum).name}"
            self._cancel_ask()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handle)
        return previous

    def _drain(self, reason: str) -> None:
        """Report the results in hand, stop every claim (if any is left) and wait for
        them to end."""
        self._leaving = reason
        with self._lock:
            finished = self._results.take()
        if finished:
            try:
                self._report_all(finished)
            except PilotageError as exc:
                log.warning("results not reported (%s)", exc.message)
                for run, _result in finished:
                    self._release(run)
        for run in self.runs():
            run.stop(reason)
        deadline = time.monotonic() + KILL_GRACE_S + 20.0
        while self.runs() and time.monotonic() < deadline:
            self._wake.wait(0.2)
            self._wake.clear()
            with self._lock:
                finished = self._results.take()
            for run, _result in finished:  # ended as they were stopped: not reported
                self._release(run)
        self._workers.stop()

    def _leave(self, reason: str) -> None:
        """Tell the server this pilot leaves (best effort: a few quick tries)."""
        assert self.registration is not None
        lastcalls.leave(self.client, self.registration.pilot_id, reason, self._sleep_always)


def run(config: AgentConfig) -> int:
    """Run an agent with ``config`` until it leaves; the process exit code."""
    return Agent(config).run()
