"""Keeping a running job's credential alive: renewal, expiry, identity change.

A switched job runs with a short-lived proxy released for its claim (docs/pilot-protocol.md,
"The job's credential"); each release answers the claim's next one-time key. One
:class:`Keeper` thread per running job spends that key before the proxy nears its end
(seed 000 §3.1; seed 003): a new key and CSR each time, the new proxy handed to the job
through ``pilotage-exec --refresh``, which replaces the user's copy atomically and refuses
another identity. Releases never outlive the stored credential, so a user who
re-delegates a longer one extends every running job of theirs at its next renewal.

When no valid credential can be had (the renewal is refused, or the stored credential
ends with the current copy), the keeper stops the job ``expiry_margin_s`` before the
copy's end (seed 000 §4.5): TERM to the job's family, KILL after ``kill_grace_s``; the
job is then cleaned up as its owner and reported held with code 15, naming the commands
that fix it. A renewal refused because the stored credential changed identity leaves the
job running under its old one until then; the server records the refusal in the job's
history.

Timing is pure (:func:`next_renewal`, :func:`stop_time`) and the waits are on the
keeper's own event, set when the job ends, so nothing here sleeps.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pilotage.errors import OperatorError, PilotageError, Transient, UserError

from .client import Client, error_kind
from .jobcredential import make_key_request, proxy_file_bytes
from .wire import Claim, Failure, HoldCode

log = logging.getLogger("pilotage.pilot")

#: Refusals after which the claim's key is gone: no later renewal can succeed.
_KEY_LOST = ("ClaimEnded", "ClaimNotHeld", "WrongRetrievalKey", "RetrievalKeyUsed",
             "RetrievalKeyExpired")  # fmt: skip


@dataclass(frozen=True)
class RenewalSettings:
    """When the agent renews a job's credential and when it gives up (``--renewal K=V``)."""

    #: Renew once this fraction of a proxy's life (from its release) has passed...
    fraction: float = 2 / 3
    #: ...or earlier, so that at least this much of it is left.
    renew_margin_s: float = 300.0
    #: After a renewal that failed or gave no later end, try again this much later.
    retry_s: float = 60.0
    #: With no valid credential to be had, stop the job this long before its copy ends.
    expiry_margin_s: float = 120.0
    #: Between the TERM and the KILL of a job whose credential runs out.
    kill_grace_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise OperatorError(f"--renewal fraction={self.fraction} must be between 0 and 1")
        for name in ("renew_margin_s", "expiry_margin_s", "kill_grace_s"):
            if getattr(self, name) < 0:
                raise OperatorError(f"--renewal {name}={getattr(self, name)} must not be negative")
        if self.retry_s <= 0:
            raise OperatorError(f"--renewal retry_s={self.retry_s} must be positive")

    @classmethod
    def parse(cls, items: Sequence[str]) -> RenewalSettings:
        """Settings from ``KEY=SECONDS`` words (``fraction=0.5``); unknown keys refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, float] = {}
        for item in items:
            key, sep, text = item.partition("=")
            if not sep or key not in known:
                names = ", ".join(sorted(known))
                raise OperatorError(f"--renewal {item!r} is not KEY=VALUE, KEY one of {names}")
            try:
                values[key] = float(text)
            except ValueError:
                raise OperatorError(f"--renewal {item!r}: {text!r} is not a number") from None
        return cls(**values)

    def describe(self) -> str:
        """The settings as ``--renewal`` would take them."""
        return ",".join(f"{k}={v:g}" for k, v in dataclasses.asdict(self).items())


def next_renewal(got_at: float, not_after: float, settings: RenewalSettings) -> float:
    """When to renew a proxy got at ``got_at`` (wall clock) that ends at ``not_after``.

    At ``fraction`` of its life, earlier if that leaves less than ``renew_margin_s``, but
    never before half of that: a proxy shorter than the margin is not renewed in a loop.
    """
    life = max(0.0, not_after - got_at)
    planned = min(got_at + settings.fraction * life, not_after - settings.renew_margin_s)
    return max(got_at + settings.fraction * life / 2, planned)


def stop_time(not_after: float, settings: RenewalSettings) -> float:
    """When a job whose copy ends at ``not_after`` is stopped if nothing later comes."""
    return not_after - settings.expiry_margin_s


@dataclass(frozen=True)
class Grant:
    """One release: the proxy (leaf first, no key), its end, identity and the next key."""

    chain_pem: str
    not_after: float
    identity: str
    renewal_key: str = dataclasses.field(repr=False)

    @classmethod
    def from_wire(cls, body: Any) -> Grant:
        """The server's release answer, checked field by field."""
        if not isinstance(body, dict):
            raise OperatorError("the server's credential release is not an object")
        kinds: dict[str, type | tuple[type, ...]] = {
            "chain_pem": str, "not_after": (int, float), "identity": str, "renewal_key": str,
        }  # fmt: skip
        for name, kind in kinds.items():
            if not isinstance(body.get(name), kind) or isinstance(body.get(name), bool):
                raise OperatorError(f"the server's credential release has a bad {name!r}")
        return cls(
            chain_pem=body["chain_pem"],
            not_after=float(body["not_after"]),
            identity=body["identity"],
            renewal_key=body["renewal_key"],
        )


class RefreshRefused(Exception):
    """The switch would not hand the new credential to the job (its code and sentence)."""


class RenewedJob(Protocol):
    """What a keeper needs of the job it keeps (:class:`~pilotage.pilot.switched.SwitchedRun`)."""

    claim: Claim

    @property
    def tag(self) -> str: ...

    def hand_credential(self, data: bytes) -> None:
        """Replace the job's credential with ``data``; raise RefreshRefused or OSError."""

    def expire(self, failure: Failure) -> bool:
        """Mark the job to be reported with ``failure``; false if it has already ended."""

    def signal_job(self, name: str) -> None:
        """Send the signal ``name`` (``TERM``) to the job's whole family."""


class Keeper:
    """Renews one running job's credential until the job ends, or stops the job."""

    def __init__(
        self, job: RenewedJob, client: Client, settings: RenewalSettings, grant: Grant
    ) -> None:
        self.job = job
        self.settings = settings
        self._client = client
        # Invariant: not_after is the end of the credential the job holds now.
        self.not_after = grant.not_after
        self.identity = grant.identity
        self._key: str | None = grant.renewal_key
        self._problem = "no renewal tried yet"
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"renew-{job.claim.claim_id}", daemon=True
        )
        #: Renewals handed to the job so far.
        self.renewals = 0

    def start(self) -> None:
        """Start keeping the credential (once the job runs)."""
        self._thread.start()

    def close(self) -> None:
        """The job has ended: stop, and wait for a renewal under way (never a long one)."""
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=120.0)

    def _run(self) -> None:
        try:
            self._keep()
        except Exception:  # one job's keeper must not take the pilot down
            log.exception("%s: credential renewal failed unexpectedly", self.job.tag)

    def _keep(self) -> None:
        due = next_renewal(time.time(), self.not_after, self.settings)
        while True:
            stop_at = stop_time(self.not_after, self.settings)
            if self._done.wait(max(0.0, min(due, stop_at) - time.time())):
                return
            now = time.time()
            # At the stop time a renewal is tried once more, whatever the retry plan says.
            if self._key is not None and self._renew():
                due = next_renewal(time.time(), self.not_after, self.settings)
                continue
            due = now + self.settings.retry_s
            if time.time() >= stop_time(self.not_after, self.settings):
                self._expire()
                return

    def _renew(self) -> bool:
        """One renewal; whether the job now holds a credential that ends later."""
        assert self._key is not None
        path = f"/pilot/v1/claims/{self.job.claim.claim_id}/credential"
        key_pem, csr_pem = make_key_request()
        body = {"v": 1, "key": self._key, "csr_pem": csr_pem}
        try:
            grant = Grant.from_wire(self._client.request("POST", path, body))
        except Transient as exc:
            return self._failed(f"the server is unreachable ({exc.message})")
        except UserError as exc:
            kind = error_kind(exc)
            if kind in _KEY_LOST:
                self._key = None
            return self._failed(f"{kind or type(exc).__name__}: {exc.message}")
        except PilotageError as exc:
            return self._failed(exc.message)
        self._key = grant.renewal_key  # the one just used is spent
        if grant.identity != self.identity:  # the server refuses this; never hand it over
            return self._failed(f"the release is for {grant.identity}, not {self.identity}")
        if grant.not_after <= self.not_after:
            return self._failed(
                f"the stored credential ends at {_utc(grant.not_after)}, no later than the "
                "job's copy"
            )
        try:
            self.job.hand_credential(proxy_file_bytes(grant.chain_pem, key_pem))
        except (RefreshRefused, OSError) as exc:
            return self._failed(f"pilotage-exec --refresh failed: {exc}")
        self.not_after = grant.not_after
        self.renewals += 1
        log.info("%s: credential renewed until %s", self.job.tag, _utc(grant.not_after))
        return True

    def _failed(self, problem: str) -> bool:
        self._problem = problem
        log.warning(
            "%s: credential not renewed (%s); the job's copy ends at %s",
            self.job.tag, problem, _utc(self.not_after),
        )  # fmt: skip
        return False

    def _expire(self) -> None:
        """Stop the job before its credential runs out, to be reported held (code 15)."""
        job_id = self.job.claim.job_id
        reason = (
            f"the job's credential ran out: its copy ends at {_utc(self.not_after)} and no "
            f"valid credential could be had ({self._problem}); the job was stopped "
            f"{self.settings.expiry_margin_s:g} s before that. Delegate a credential of "
            f"{self.identity} ('pilotage delegate'), then run 'pilotage release {job_id}'"
        )
        if not self.job.expire(Failure(HoldCode.CREDENTIAL_EXPIRED, reason)):
            return
        log.warning("%s: stopping: the job's credential runs out", self.job.tag)
        self.job.signal_job("TERM")
        if not self._done.wait(self.settings.kill_grace_s):
            log.info("%s: still running %g s after SIGTERM: SIGKILL", self.job.tag,
                     self.settings.kill_grace_s)  # fmt: skip
            self.job.signal_job("KILL")


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
