"""The pilot's one partitionable slot: what it has, what its claims hold, what is free.

Pure state, no I/O, except the ``detect_*`` helpers that read the node's defaults.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .gpus import DeviceBusy, Devices

_MIB = 1024 * 1024


@dataclass(frozen=True)
class Resources:
    """An amount of cpus, memory (MiB), disk (MiB) and gpus."""

    cpus: int = 0
    memory_mb: int = 0
    disk_mb: int = 0
    gpus: int = 0

    def fits_in(self, other: Resources) -> bool:
        """Whether this amount can be carved out of ``other``."""
        return (
            self.cpus <= other.cpus
            and self.memory_mb <= other.memory_mb
            and self.disk_mb <= other.disk_mb
            and self.gpus <= other.gpus
        )

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpus + other.cpus,
            self.memory_mb + other.memory_mb,
            self.disk_mb + other.disk_mb,
            self.gpus + other.gpus,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpus - other.cpus,
            self.memory_mb - other.memory_mb,
            self.disk_mb - other.disk_mb,
            self.gpus - other.gpus,
        )

    def to_wire(self) -> dict[str, int]:
        """The protocol's ``free`` object."""
        return {
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "disk_mb": self.disk_mb,
            "gpus": self.gpus,
        }


class SlotFull(Exception):
    """A claim asks for more than the slot has free (the server matched it wrongly)."""


class Slot:
    """The pilot's resources, carved into one share per live claim.

    Invariant: the sum of ``claims`` fits in ``total``, so ``free()`` is never negative.
    Not thread-safe by itself: the agent holds its lock around every call.
    """

    #: Asking for work with less than this free is pointless: no job requests less.
    MIN_FREE = Resources(cpus=1, memory_mb=1)

    def __init__(self, total: Resources, gpu_ids: tuple[str, ...] = ()) -> None:
        self.total = total
        self.claims: dict[str, Resources] = {}
        #: The GPU devices each claim holds (pilot/gpus.py).
        self.devices = Devices(gpu_ids)

    def free(self) -> Resources:
        """What no claim holds."""
        cpus = memory_mb = disk_mb = gpus = 0
        for share in self.claims.values():  # no Resources made per claim: called per job
            cpus += share.cpus
            memory_mb += share.memory_mb
            disk_mb += share.disk_mb
            gpus += share.gpus
        t = self.total
        return Resources(t.cpus - cpus, t.memory_mb - memory_mb, t.disk_mb - disk_mb, t.gpus - gpus)

    def can_ask(self) -> bool:
        """Whether enough is free to ask the server for another job."""
        return self.MIN_FREE.fits_in(self.free())

    def carve(self, claim_id: str, request: Resources, gpus: tuple[str, ...] = ()) -> None:
        """Hold ``request`` and the GPU devices ``gpus`` for ``claim_id``; refuse
        (SlotFull) if it does not fit, or a device is not this pilot's or is held."""
        if claim_id in self.claims:
            raise SlotFull(f"claim {claim_id} already holds a share of this slot")
        if not request.fits_in(self.free()):
            raise SlotFull(f"claim {claim_id} asks for {request} but only {self.free()} is free")
        if self.devices.ids and len(gpus) != request.gpus:
            raise SlotFull(
                f"claim {claim_id} asks for {request.gpus} GPUs but was assigned {list(gpus)}"
            )
        try:
            self.devices.hold(claim_id, gpus)
        except DeviceBusy as exc:
            raise SlotFull(str(exc)) from None
        self.claims[claim_id] = request

    def release(self, claim_id: str) -> None:
        """Give back the share of ``claim_id`` (no-op if it holds none)."""
        self.claims.pop(claim_id, None)
        self.devices.release(claim_id)

    @property
    def busy(self) -> bool:
        """Whether any claim holds a share."""
        return bool(self.claims)


def detect_cpus() -> int:
    """The CPUs this process may run on (its affinity: a batch slot may pin it to a few)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def detect_memory_mb() -> int:
    """The node's physical memory in MiB."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1024
    return max(1, pages * page_size // _MIB)


def detect_disk_mb(path: Path) -> int:
    """Free space in MiB of the file system holding ``path``."""
    return shutil.disk_usage(path).free // _MIB
