"""Fair share between submitters: usage, half-life, priority factors, group quotas.

Model (pure; time is always passed in, in seconds since the epoch):

- Each submitter (an owner, within an optional accounting group) has an accumulated
  *usage* in cpu-seconds that decays exponentially with the configured half-life, and a
  number of *running cpus* (the cpus its claims hold right now).
- Between two updates the running cpus are taken as constant, and usage is integrated
  exactly: with ``k = ln 2 / half_life_s``, after ``dt`` seconds
  ``usage = usage * exp(-k dt) + running * (1 - exp(-k dt)) / k``.
  So a submitter running ``r`` cpus for a long time tends to ``usage = r / k``.
- Usage is fed as events: :meth:`Accountant.adjust` when a claim starts (+cpus) or ends
  (-cpus), :meth:`~Accountant.observe` with a snapshot of running cpus per submitter
  (e.g. summed from the claims table, which is how several server replicas agree), and
  :meth:`~Accountant.charge` for a lump of cpu-seconds (e.g. a correction).
- *Real priority* = ``max(base, k * usage + w * running)``: the decayed average of cpus
  in use plus ``w`` (``running_weight``) times the cpus in use right now. The second term
  makes a burst of requests in the same second spread over submitters (each claim
  worsens its submitter's priority at once) instead of all going to whoever was ahead.
  In a steady state both terms are proportional to the submitter's share, so the shares
  the factors set are unchanged. ``w`` must stay below 1: at ``w >= 1`` the instant term
  can outweigh the usage term at the margin and pin an allocation one slot away from
  the target share (e.g. 13:7 instead of 2:1 on 20 slots). The default, 0.25, kept the
  simulated shares of the tests within 2% of their targets on 10 to 50 slots.
- *Effective priority* = real priority x priority factor. Lower is better. Factors are
  looked up by submitter name (``group.owner``), then by owner, then the default.
- The order of submitters is cached (:meth:`Accountant.ranked`): every event moves its
  submitter at once, and the whole ranking is recomputed when ``now`` has moved on by
  ``order_refresh_s`` (by default a thousandth of the half-life), which is when the
  decay since the last computation could matter. Accounts idle and worth less than a
  cpu-second of usage are dropped then: they are indistinguishable from new ones.

Group quotas (static, in cpus). A group whose running cpus are at or above its quota is
*over quota*. :meth:`Accountant.order` puts every submitter of an over-quota group after
every other submitter, whatever the priorities; since the matchmaker gives a slot to the
first submitter in that order with a matching idle job, an over-quota group gets a slot
only when no submitter outside over-quota groups has an idle job that slot can run. With
``groups_accept_surplus = False`` over-quota groups get nothing at all. Submitters
without a group, and groups without a quota, are never over quota.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from pilotage.errors import BadInput, OperatorError
from pilotage.matchmaking.ads import Submitter

STATE_VERSION = 1

#: A submitter's place in the ranking: (over quota, effective priority, running cpus,
#: name, owner, group, submitter). The fields before the last identify the submitter,
#: so sorting never compares two Submitter tuples.
_Key = tuple[bool, float, float, str, str, str, Submitter]


@dataclass(frozen=True)
class FairShareConfig:
    """Fair-share settings (part of the server's settings)."""

    half_life_s: float = 86_400.0
    #: The best possible real priority (so new submitters are not all tied at zero).
    base_priority: float = 0.5
    default_factor: float = 1.0
    #: Priority factors by submitter name or owner.
    factors: Mapping[str, float] = field(default_factory=dict)
    #: Static quotas in cpus, by accounting group.
    group_quotas: Mapping[str, float] = field(default_factory=dict)
    groups_accept_surplus: bool = True
    #: Weight of the cpus in use right now in the real priority (0 = usage only).
    running_weight: float = 0.25
    #: How stale (in seconds of decay) the cached ranking of submitters may get; ``None``
    #: is a thousandth of the half-life (usage decays by 0.07% in that time).
    order_refresh_s: float | None = None

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise OperatorError(f"half_life_s must be > 0, not {self.half_life_s}")
        if not 0 <= self.running_weight < 1:
            raise OperatorError(f"running_weight must be in [0, 1), not {self.running_weight}")
        if not self.base_priority > 0:
            raise OperatorError(f"base_priority must be > 0, not {self.base_priority}")
        for name, factor in {"default": self.default_factor, **self.factors}.items():
            if not factor > 0:
                raise OperatorError(f"priority factor of {name} must be > 0, not {factor}")


class _Account:
    __slots__ = ("running_cpus", "updated_at", "usage_cpu_s")

    def __init__(self, usage_cpu_s: float = 0.0, running_cpus: float = 0.0, at: float = 0.0):
        self.usage_cpu_s = usage_cpu_s
        self.running_cpus = running_cpus
        self.updated_at = at


class Accountant:
    """Usage and priorities of every submitter. Pure: events in, numbers out."""

    def __init__(self, config: FairShareConfig | None = None) -> None:
        self.config = config or FairShareConfig()
        self._k = math.log(2) / self.config.half_life_s
        refresh = self.config.order_refresh_s
        self._refresh_s = self.config.half_life_s / 1000 if refresh is None else refresh
        self._accounts: dict[Submitter, _Account] = {}
        self._factors: dict[str, float] = dict(self.config.factors)
        self._group_running: dict[str, float] = {}
        # The ranking, a cache of order(): one sort key per account, sorted, computed at
        # _ranked_at. Invariant: when _ranked is not None, it holds exactly the values of
        # _keys, and each key reflects its account's latest event (events re-position
        # their submitter at once); only the decay since _ranked_at is missing, and a
        # rebuild every order_refresh_s of simulated time adds it.
        self._ranked: list[_Key] | None = None
        self._ranked_at = 0.0
        self._keys: dict[Submitter, _Key] = {}
        self._over: dict[str, bool] = {}

    # --- events ---------------------------------------------------------------------------

    def adjust(self, submitter: Submitter, delta_cpus: float, at: float) -> None:
        """A claim started (``+cpus``) or ended (``-cpus``) at time ``at``."""
        account = self._advanced(submitter, at)
        self._set_running(submitter, account, account.running_cpus + delta_cpus)
        self._touch(submitter)

    def observe(self, running_cpus: Mapping[Submitter, float], at: float) -> None:
        """A snapshot: these submitters run these cpus from ``at`` on; all others none."""
        for submitter in set(self._accounts) | set(running_cpus):
            account = self._advanced(submitter, at)
            self._set_running(submitter, account, float(running_cpus.get(submitter, 0.0)))
        self._ranked = None

    def charge(self, submitter: Submitter, cpu_seconds: float, at: float) -> None:
        """Add a lump of usage at time ``at``."""
        if cpu_seconds < 0 or not math.isfinite(cpu_seconds):
            raise BadInput(f"cannot charge {cpu_seconds} cpu-seconds")
        self._advanced(submitter, at).usage_cpu_s += cpu_seconds
        self._touch(submitter)

    def set_factor(self, name: str, factor: float) -> None:
        """Set the priority factor of a submitter name or an owner (an admin action)."""
        if not factor > 0 or not math.isfinite(factor):
            raise BadInput(f"priority factor must be a finite number > 0, not {factor}")
        self._factors[name] = factor
        self._ranked = None

    def _set_running(self, submitter: Submitter, account: _Account, cpus: float) -> None:
        cpus = max(0.0, cpus)
        if submitter.group is not None:
            groups = self._group_running
            groups[submitter.group] = groups.get(submitter.group, 0.0) + cpus - account.running_cpus
        account.running_cpus = cpus

    def _advanced(self, submitter: Submitter, at: float) -> _Account:
        """The submitter's account, integrated up to ``at`` (never backwards in time)."""
        account = self._accounts.get(submitter)
        if account is None:
            account = self._accounts[submitter] = _Account(at=at)
            return account
        if at > account.updated_at:
            account.usage_cpu_s = self._usage_at(account, at)
            account.updated_at = at
        return account

    def _usage_at(self, account: _Account, now: float) -> float:
        dt = now - account.updated_at
        if dt <= 0:
            return account.usage_cpu_s
        decay = math.exp(-self._k * dt)
        return account.usage_cpu_s * decay + account.running_cpus * (1.0 - decay) / self._k

    # --- reading --------------------------------------------------------------------------

    def submitters(self) -> AbstractSet[Submitter]:
        """Submitters with an account (usage not yet decayed away, or running cpus)."""
        return self._accounts.keys()

    def factor(self, submitter: Submitter) -> float:
        """The priority factor that applies to ``submitter``."""
        factors = self._factors
        if submitter.name in factors:
            return factors[submitter.name]
        return factors.get(submitter.owner, self.config.default_factor)

    def usage(self, submitter: Submitter, now: float) -> float:
        """Decayed usage in cpu-seconds at ``now``."""
        account = self._accounts.get(submitter)
        return 0.0 if account is None else self._usage_at(account, now)

    def running(self, submitter: Submitter) -> float:
        """Cpus the submitter's claims hold now."""
        account = self._accounts.get(submitter)
        return 0.0 if account is None else account.running_cpus

    def real_priority(self, submitter: Submitter, now: float) -> float:
        """``max(base, k * usage + w * running cpus)``: lower is better."""
        account = self._accounts.get(submitter)
        if account is None:
            return self.config.base_priority
        value = (
            self._k * self._usage_at(account, now)
            + self.config.running_weight * account.running_cpus
        )
        return max(self.config.base_priority, value)

    def effective_priority(self, submitter: Submitter, now: float) -> float:
        """Real priority times the submitter's factor: lower is better."""
        return self.real_priority(submitter, now) * self.factor(submitter)

    def group_running(self, group: str) -> float:
        """Cpus held by the claims of every submitter of ``group``."""
        return max(0.0, self._group_running.get(group, 0.0))

    def over_quota(self, group: str | None) -> bool:
        """Whether ``group`` has a quota and runs at least that many cpus."""
        if group is None:
            return False
        quota = self.config.group_quotas.get(group)
        return quota is not None and self.group_running(group) >= quota

    def order(self, submitters: Iterable[Submitter], now: float) -> list[Submitter]:
        """Submitters best first: not over quota before over quota, then effective priority.

        Ties go to fewer running cpus, then to the name, so the order is deterministic.
        Over-quota groups are left out entirely unless ``groups_accept_surplus``.
        """
        return list(self.ranked(frozenset(submitters), now))

    def ranked(self, submitters: AbstractSet[Submitter], now: float) -> Iterator[Submitter]:
        """:meth:`order`, lazily, from the cached ranking: the matchmaker's fast path.

        Cost: O(submitters examined), plus a rebuild (O(n log n)) when ``now`` has moved
        ``order_refresh_s`` past the last one. Do not feed events while iterating.
        """
        if self._ranked is None or not 0 <= now - self._ranked_at < self._refresh_s:
            self._rebuild(now)
        for submitter in submitters - self._accounts.keys():
            self._accounts[submitter] = _Account(at=now)
            self._touch(submitter)
        ranked = self._ranked
        assert ranked is not None
        if len(submitters) * 8 < len(ranked):  # few candidates: sort them, skip the rest
            ranked = sorted(self._keys[s] for s in submitters)
        skip_over = not self.config.groups_accept_surplus
        for key in ranked:
            submitter = key[-1]
            if submitter in submitters and not (skip_over and key[0]):
                yield submitter

    def _key(self, submitter: Submitter, at: float) -> _Key:
        account = self._accounts[submitter]
        real = max(
            self.config.base_priority,
            self._k * self._usage_at(account, at)
            + self.config.running_weight * account.running_cpus,
        )
        over = submitter.group is not None and self._over.get(submitter.group, False)
        return (
            over,
            real * self.factor(submitter),
            account.running_cpus,
            submitter.name,
            submitter.owner,
            submitter.group or "",
            submitter,
        )

    def _rebuild(self, now: float) -> None:
        forgotten = [
            s
            for s, a in self._accounts.items()
            if a.running_cpus == 0 and self._usage_at(a, now) < 1.0
        ]
        for submitter in forgotten:
            del self._accounts[submitter]
        self._ranked_at = now
        self._over = {g: self.over_quota(g) for g in self.config.group_quotas}
        self._keys = {s: self._key(s, now) for s in self._accounts}
        self._ranked = sorted(self._keys.values())

    def _touch(self, submitter: Submitter) -> None:
        """Re-position one submitter in the ranking after an event changed its account."""
        ranked = self._ranked
        if ranked is None:
            return
        group = submitter.group
        if group in self._over and self.over_quota(group) != self._over[group]:
            self._ranked = None  # a group crossed its quota: every member moves
            return
        old = self._keys.get(submitter)
        if old is not None:
            del ranked[bisect.bisect_left(ranked, old)]
        key = self._keys[submitter] = self._key(submitter, self._ranked_at)
        bisect.insort(ranked, key)

    # --- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The state to persist (accounts and factors set at run time), JSON-ready."""
        return {
            "v": STATE_VERSION,
            "accounts": [
                {
                    "owner": s.owner,
                    "group": s.group,
                    "usage_cpu_s": a.usage_cpu_s,
                    "running_cpus": a.running_cpus,
                    "updated_at": a.updated_at,
                }
                for s, a in sorted(
                    self._accounts.items(), key=lambda kv: (kv[0].owner, kv[0].group or "")
                )
            ],
            "factors": dict(sorted(self._factors.items())),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], config: FairShareConfig | None = None
    ) -> Accountant:
        """Restore state saved by :meth:`to_dict`; ``BadInput`` if it is not such a state."""
        if data.get("v") != STATE_VERSION:
            raise BadInput(f"fair-share state version {data.get('v')!r} is not {STATE_VERSION}")
        accountant = cls(config)
        try:
            for row in data["accounts"]:
                submitter = Submitter(str(row["owner"]), row["group"] and str(row["group"]))
                account = accountant._accounts[submitter] = _Account(
                    float(row["usage_cpu_s"]), 0.0, float(row["updated_at"])
                )
                accountant._set_running(submitter, account, float(row["running_cpus"]))
            for name, factor in data["factors"].items():
                accountant.set_factor(str(name), float(factor))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"fair-share state is malformed: {exc}") from None
        return accountant
