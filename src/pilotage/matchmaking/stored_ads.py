"""Reading idle jobs from their stored ads for the index, parsing each shape once.

A server that starts, or catches up after a big submit, adds every idle job to the index
from the ad text the database holds. Parsing a ClassAd costs about 100 µs, so a million
jobs would take minutes. But the jobs of a cluster differ only in their per-job
attributes: ``ClusterId``, ``ProcId``, ``QDate``, ``JobPrio`` and those the matchmaker
ignores (``Arguments``, ``GlobalJobId``, ...). Their lines are cut out of the text; what
is left is the same for every job of one shape, and is parsed once. Each further job
costs two regular-expression passes.

The shortcut holds only when nothing the matchmaker reads from a job depends on those
per-job lines: its owner, accounting group, requests and ``MaxWallTime`` must be
literals in the ad (they are, as submitted; an expression there is read the long way).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from typing import Any

from pilotage.matchmaking.ads import IDENTITY_ATTRS, JobAd, MatchConfig, job_shape
from pilotage.matchmaking.autocluster import AutoclusterIndex, Shape
from pilotage.matchmaking.classads import LITERAL_TYPES, attributes
from pilotage.queue.jobad import load_ad

#: The attributes :class:`JobAd` reads besides the per-job ones.
_READ = (
    "owner", "acctgroup", "requestcpus", "requestmemory", "requestdisk", "requestgpus",
    "maxwalltime",
)  # fmt: skip
_IDENTITY = frozenset(IDENTITY_ATTRS)
_KEEP = "keep"
_IGNORED = "ignored"
#: Per-job attributes that must be at least zero (JobPrio may be negative).
_COUNTED = ("clusterid", "procid", "qdate")
#: A per-job value the shortcut reads: a plain integer.
_COUNT = re.compile(r"^-?\d{1,18}$")
#: Distinct shapes remembered (about 150 bytes each); past this many the older half is
#: forgotten (jobs that each have a shape of their own gain nothing from it).
_CAPACITY = 65536


class StoredAds:
    """Adds jobs to an index from their stored ad text (see the module's docstring)."""

    def __init__(self, config: MatchConfig) -> None:
        self.config = config
        self._ignored = frozenset(config.ignored_job_attrs)
        # The start of a line (up to " = ", indentation included) -> what the line holds.
        self._kinds: dict[str, str] = {}
        # The digest of a shape's text (an ad less its per-job lines) -> the first job read
        # with it (without its ad) and its pairs; None: read each such job the long way.
        self._shapes: dict[bytes, tuple[JobAd, Shape] | None] = {}
        self.parsed = 0  # ads parsed (the others were read from a remembered shape)

    def add(self, index: AutoclusterIndex, job_id: int, text: str) -> None:
        """Index the idle job ``job_id`` whose stored ad is ``text``."""
        index.add_job(*self.read(job_id, text))

    def read(self, job_id: int, text: str) -> tuple[JobAd, Shape]:
        """The job and its shape, as :meth:`AutoclusterIndex.add_job` takes them (no index
        is touched: a caller may read without holding the index's lock). Raises
        ``BadInput`` for a job the index refuses."""
        split = self._split(text)
        if split is None:
            return self._parse(job_id, text)  # missing, an expression, or refused
        rest, identity = split
        digest = hashlib.blake2b(rest.encode(), digest_size=16).digest()
        if digest not in self._shapes:
            if len(self._shapes) >= _CAPACITY:
                for old in list(itertools.islice(self._shapes, _CAPACITY // 2)):
                    del self._shapes[old]
            ad = load_ad(text)
            self.parsed += 1
            self._shapes[digest] = self._read_shape(job_id, ad)
            if self._shapes[digest] is None:
                return self._whole(job_id, ad)
        known = self._shapes[digest]
        if known is None:
            return self._parse(job_id, text)
        first, pairs = known
        job = JobAd(
            job_id=job_id,
            ad=None,  # the index makes one from the shape if it needs one
            submitter=first.submitter,
            cluster_id=identity["clusterid"],
            proc_id=identity["procid"],
            qdate=identity["qdate"],
            job_prio=identity["jobprio"],
            request=first.request,
            max_wall_time_s=first.max_wall_time_s,
        )
        return job, pairs

    def _split(self, text: str) -> tuple[str, dict[str, int]] | None:
        """The ad's text less its per-job lines, and its per-job values; ``None`` unless
        each per-job value is a plain integer (ids and submit time at least zero)."""
        kept = []
        identity: dict[str, int] = {}
        kinds = self._kinds
        for line in text.split("\n"):  # one attribute a line, in both forms of a ClassAd
            name, _, value = line.partition(" = ")
            kind = kinds.get(name)
            if kind is None:
                kind = kinds[name] = self._kind(name)
            if kind is _KEEP:
                kept.append(line)
            elif kind is not _IGNORED:
                number = value.rstrip("; \t")
                if not _COUNT.match(number):
                    return None
                identity[kind] = int(number)
        if len(identity) < len(_IDENTITY) or min(identity[n] for n in _COUNTED) < 0:
            return None
        return "\n".join(kept), identity

    def _kind(self, name: str) -> str:
        """What a line that starts with ``name`` holds: a per-job attribute (its lower-case
        name), an ignored one, or one of the shape."""
        lname = name.strip().lower()
        if lname in _IDENTITY:
            return lname
        if len(self._kinds) >= _CAPACITY:
            self._kinds.clear()
        return _IGNORED if lname in self._ignored else _KEEP

    def _read_shape(self, job_id: int, ad: Any) -> tuple[JobAd, Shape] | None:
        values = attributes(ad)
        for name in _READ:
            value = values.get(name)
            if value is not None and type(value) not in LITERAL_TYPES:
                return None  # an expression: it may read the per-job attributes
        job = JobAd.from_classad(job_id, ad, self.config, values)
        pairs = job_shape(ad, self.config.ignored_job_attrs, values)
        return dataclasses.replace(job, ad=None), pairs  # remembered without its ClassAd

    def _parse(self, job_id: int, text: str) -> tuple[JobAd, Shape]:
        """The long way: the whole ad parsed, as :meth:`AutoclusterIndex.add` reads it."""
        self.parsed += 1
        return self._whole(job_id, load_ad(text))

    def _whole(self, job_id: int, ad: Any) -> tuple[JobAd, Shape]:
        values = attributes(ad)
        job = JobAd.from_classad(job_id, ad, self.config, values)
        return job, job_shape(ad, self.config.ignored_job_attrs, values)
