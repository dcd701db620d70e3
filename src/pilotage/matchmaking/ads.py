"""Job ads and slot ads: building them, normalising them, and what in them matters.

Ads are real ClassAds from ``classad2``, reached only through
:mod:`pilotage.matchmaking.classads`.

Attribute names are case-insensitive in ClassAds; every name this package keeps for
bookkeeping (significant attributes, references) is lower case.

Job ad attributes the server builds: ``ClusterId``, ``ProcId``, ``Owner``, ``AcctGroup``
(optional), ``RequestCpus``, ``RequestMemory`` (MB), ``RequestDisk`` (MB),
``RequestGpus``, ``Requirements`` (the resource clauses of
:data:`~pilotage.matchmaking.clauses.RESOURCE_REQUIREMENTS` and the user's own
expression), ``Rank``, ``JobPrio``, ``QDate``, ``MaxWallTime`` (s, optional) and the
user's ``+Attr`` s.

Slot ad attributes a pilot sends: ``Name``, ``PilotId``, ``Cpus``, ``Memory``, ``Disk``,
``GPUs`` (free amounts), ``TotalCpus``, ``TotalMemory``, ``TotalDisk``, ``TotalGPUs``,
``OpSys``, ``Arch``, ``Site``, ``TimeToLive`` (s until the pilot retires),
``Requirements`` (the slot's START expression, over ``TARGET`` = the job) and the
switch's capabilities ``HasSwitch`` and ``SwitchMode``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from pilotage.errors import BadInput
from pilotage.matchmaking.classads import (
    LITERAL_TYPES,
    attributes,
    evaluate,
    evaluate_number,
    evaluate_string,
    hashable_value,
    new_ad,
    parse_expr,
    references,
)
from pilotage.matchmaking.partitionable import Resources

#: Per-job attributes: kept with each job in the index, never in an autocluster's shape.
IDENTITY_ATTRS: Final = ("jobprio", "qdate", "clusterid", "procid")
#: Job attributes always significant for matching (besides what Requirements references).
STANDARD_SIGNIFICANT: Final = frozenset(
    {"requestcpus", "requestmemory", "requestdisk", "requestgpus", "maxwalltime", "requirements"}
    # Rank too: jobs of one autocluster must prefer the same slots (matchmaking/rank.py).
    | {"rank"}
)


@dataclass(frozen=True)
class MatchConfig:
    """The matchmaker's settings (part of the server's settings)."""

    #: Wall time assumed for a job without ``MaxWallTime``; compared to ``TimeToLive``.
    default_max_wall_time_s: float = 3600.0
    #: Extra job attributes to treat as significant (autocluster key), whatever refers to them.
    significant_attrs: frozenset[str] = frozenset()
    #: Job attributes invisible to matchmaking: bookkeeping and what often differs from
    #: job to job (``arguments = $(Process)``). A START that reads one sees ``undefined``.
    #: Each job whose other attributes differ from all others costs a shape of its own
    #: (about 1 KB); keep per-job attributes here.
    ignored_job_attrs: frozenset[str] = frozenset(
        {
            "globaljobid", "cmd", "arguments", "environment", "iwd", "in", "out", "err",
            "userlog", "transferinput", "transferoutput", "enteredcurrentstatus",
            "jobstatus", "lastjobstatus",
        }
    )  # fmt: skip
    #: Cached match results kept per autocluster before the cache is cleared.
    cache_entries_per_autocluster: int = 4096


class Submitter(NamedTuple):
    """Who is charged for a job: its owner within an optional accounting group."""

    owner: str
    group: str | None = None

    @property
    def name(self) -> str:
        """``group.owner``, or ``owner`` alone outside any group."""
        return f"{self.group}.{self.owner}" if self.group else self.owner


# --- jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobAd:
    """A job ad with the values the matchmaker needs taken out and checked."""

    job_id: int
    ad: Any
    submitter: Submitter
    cluster_id: int
    proc_id: int
    qdate: int
    job_prio: int
    request: Resources
    max_wall_time_s: float

    @classmethod
    def from_classad(
        cls,
        job_id: int,
        ad: Any,
        config: MatchConfig,
        values: Mapping[str, object] | None = None,
    ) -> JobAd:
        """Normalise a job ad; :class:`~pilotage.errors.BadInput` names a bad attribute.

        Requests are rounded up to whole units; missing ones default to 1 cpu and 0 of
        the rest. ``values`` (from :func:`~pilotage.matchmaking.classads.attributes`)
        saves look-ups.
        """
        if values is None:
            values = attributes(ad)
        owner = evaluate_string(ad, "Owner", values)
        if not owner:
            raise BadInput(f"job {job_id} has no Owner")
        group = evaluate_string(ad, "AcctGroup", values) or None

        def count(name: str, default: float) -> int:
            value = evaluate_number(ad, name, default, values)
            assert value is not None
            if value < 0 or not math.isfinite(value):
                raise BadInput(f"{name} of job {job_id} must be a finite number >= 0")
            return math.ceil(value)

        wall = evaluate_number(ad, "MaxWallTime", config.default_max_wall_time_s, values)
        assert wall is not None
        return cls(
            job_id=job_id,
            ad=ad,
            submitter=Submitter(owner, group),
            cluster_id=count("ClusterId", 0),
            proc_id=count("ProcId", 0),
            qdate=count("QDate", 0),
            job_prio=int(evaluate_number(ad, "JobPrio", 0, values) or 0),
            request=Resources(
                count("RequestCpus", 1),
                count("RequestMemory", 0),
                count("RequestDisk", 0),
                count("RequestGpus", 0),
            ),
            max_wall_time_s=wall,
        )

    @property
    def name(self) -> str:
        """``ClusterId.ProcId``, as users know the job."""
        return f"{self.cluster_id}.{self.proc_id}"


def job_shape(
    ad: Any, ignored: frozenset[str], values: Mapping[str, object] | None = None
) -> tuple[tuple[str, Hashable], ...]:
    """Every attribute of a job ad but the per-job ones, sorted, as hashable pairs.

    Two jobs with the same shape are interchangeable for matching whatever the
    significant attributes are; literal values are kept as Python values, expressions as
    ``("expr", text)``.
    """
    pairs: list[tuple[str, Hashable]] = []
    for lname, value in (attributes(ad) if values is None else values).items():
        if lname in IDENTITY_ATTRS or lname in ignored:
            continue
        if type(value) in LITERAL_TYPES:
            pairs.append((lname, hashable_value(value)))
        else:
            # Expressions, lists, nested ads, undefined: kept as ClassAd text.
            pairs.append((lname, ("expr", str(ad.lookup(lname)))))
    pairs.sort()
    return tuple(pairs)


def ad_from_shape(shape: tuple[tuple[str, Hashable], ...], identity: Mapping[str, int]) -> Any:
    """Rebuild a job ad from its shape and per-job values (the inverse of :func:`job_shape`)."""
    ad = new_ad({})
    for name, value in shape:
        if isinstance(value, str):
            ad[name] = value
        elif isinstance(value, tuple) and value[0] == "expr":
            ad[name] = parse_expr(value[1])
        elif isinstance(value, tuple):
            ad[name] = value[1]
    for name, number in identity.items():
        ad[name] = number
    return ad


def build_job_ad(
    *,
    cluster_id: int,
    proc_id: int,
    owner: str,
    qdate: int,
    request: Resources,
    requirements: str | None = None,
    rank: str | None = None,
    job_prio: int = 0,
    acct_group: str | None = None,
    max_wall_time_s: float | None = None,
    attrs: Mapping[str, str] | None = None,
) -> Any:
    """The job ad the server stores: the resource clauses ANDed with the user's Requirements.

    ``attrs`` are the submit file's ``+Attr`` s, values as ClassAd expression text.
    """
    from pilotage.matchmaking.clauses import RESOURCE_REQUIREMENTS

    user = f" && ({requirements})" if requirements and requirements.strip() else ""
    expressions = {"Requirements": RESOURCE_REQUIREMENTS + user}
    if rank:
        expressions["Rank"] = rank
    for name, text in (attrs or {}).items():
        expressions[name] = text
    return new_ad(
        {
            "ClusterId": cluster_id,
            "ProcId": proc_id,
            "Owner": owner,
            "AcctGroup": acct_group,
            "QDate": qdate,
            "JobPrio": job_prio,
            "RequestCpus": request.cpus,
            "RequestMemory": request.memory_mb,
            "RequestDisk": request.disk_mb,
            "RequestGpus": request.gpus,
            "MaxWallTime": max_wall_time_s,
        },
        expressions,
    )


# --- slots --------------------------------------------------------------------------------


@dataclass
class SlotAd:
    """A slot ad as it asks for work: free resources, time to live, START expression."""

    ad: Any
    name: str
    free: Resources
    ttl_s: float | None
    start: Any | None
    start_text: str
    _values: dict[str, Hashable] = field(default_factory=dict, repr=False)
    _keys: dict[tuple[str, ...], tuple[Hashable, ...]] = field(default_factory=dict, repr=False)
    _start_key: tuple[Hashable, ...] | None = field(default=None, repr=False)

    @classmethod
    def from_classad(cls, ad: Any) -> SlotAd:
        """Normalise a slot ad. Free amounts are rounded down; a missing START means ``true``."""

        def count(name: str) -> int:
            value = evaluate_number(ad, name, 0.0)
            assert value is not None
            return max(0, math.floor(value)) if math.isfinite(value) else 0

        start = ad.lookup("Requirements") if "Requirements" in ad else None
        return cls(
            ad=ad,
            name=evaluate_string(ad, "Name") or "",
            free=Resources(count("Cpus"), count("Memory"), count("Disk"), count("GPUs")),
            ttl_s=evaluate_number(ad, "TimeToLive", None),
            start=start,
            start_text="true" if start is None else str(start),
        )

    def value(self, name: str) -> Hashable:
        """The hashable value of slot attribute ``name`` (lower case), memoised."""
        try:
            return self._values[name]
        except KeyError:
            pass
        if "." in name:
            value: object = parse_expr(name).eval(self.ad)
        else:
            value = evaluate(self.ad, name)
        result = self._values[name] = hashable_value(value)
        return result

    def values(self, names: tuple[str, ...]) -> tuple[Hashable, ...]:
        """The values of several attributes, in order."""
        return tuple(self.value(n) for n in names)

    def key_for(self, names: tuple[str, ...]) -> tuple[Hashable, ...]:
        """:meth:`values`, memoised by ``names`` (many autoclusters read the same ones)."""
        key = self._keys.get(names)
        if key is None:
            key = self._keys[names] = self.values(names)
        return key

    @property
    def start_key(self) -> tuple[Hashable, ...]:
        """What the slot side of a match depends on: START's text and the values it reads."""
        if self._start_key is None:
            if self.start is None:
                self._start_key = ("true",)
            else:
                mine, _ = references(self.ad, self.start)
                self._start_key = (self.start_text, *self.values(tuple(sorted(mine))))
        return self._start_key

    def job_refs(self) -> frozenset[str]:
        """The job attributes the START expression reads (what it does not define itself)."""
        if self.start is None:
            return frozenset()
        return references(self.ad, self.start)[1]


def build_slot_ad(
    *,
    name: str,
    pilot_id: str,
    free: Resources,
    total: Resources,
    ttl_s: float,
    opsys: str = "LINUX",
    arch: str = "X86_64",
    site: str | None = None,
    start: str | None = None,
    switch_mode: str | None = None,
    attrs: Mapping[str, object] | None = None,
) -> Any:
    """A slot ad with the standard attributes; ``switch_mode`` ``None`` means no switch."""
    values: dict[str, object] = {
        "Name": name,
        "PilotId": pilot_id,
        **free.slot_attrs(),
        **total.slot_attrs("Total"),
        "TimeToLive": ttl_s,
        "OpSys": opsys,
        "Arch": arch,
        "Site": site,
        "HasSwitch": switch_mode is not None,
        "SwitchMode": switch_mode,
        **(attrs or {}),
    }
    return new_ad(values, {"Requirements": start} if start else None)
