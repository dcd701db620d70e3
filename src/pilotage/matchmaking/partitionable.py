"""Partitionable slots: a pilot's whole resources, carved into claims and given back.

A pilot advertises one partitionable slot with everything it has. Each claim carves the
job's requested cpus, memory, disk and gpus out of it; several jobs, of one user or of
several, then run side by side in the same pilot, and a claim's share returns to the
free pool when the claim ends. The slot ad a pilot sends when it asks for work carries
the *free* amounts, so the matchmaker only ever sees what is left.

This is the server's view of that bookkeeping (for ``status`` and for checking what an
agent reports); the agent keeps its own standard-library copy of the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from pilotage.errors import Conflict


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of the four carvable resources; all fields are non-negative integers."""

    cpus: int = 0
    memory_mb: int = 0
    disk_mb: int = 0
    gpus: int = 0

    def __post_init__(self) -> None:
        if min(self.cpus, self.memory_mb, self.disk_mb, self.gpus) < 0:
            raise ValueError(f"resources cannot be negative: {self}")

    def fits_in(self, other: Resources) -> bool:
        """Whether every amount of ``self`` is at most the same amount of ``other``."""
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
        """The difference; raises ``ValueError`` if any amount would go negative."""
        return Resources(
            self.cpus - other.cpus,
            self.memory_mb - other.memory_mb,
            self.disk_mb - other.disk_mb,
            self.gpus - other.gpus,
        )

    def slot_attrs(self, prefix: str = "") -> dict[str, int]:
        """These amounts under the slot ad's names (``Cpus``, ``Memory``, ``Disk``, ``GPUs``)."""
        return {
            f"{prefix}Cpus": self.cpus,
            f"{prefix}Memory": self.memory_mb,
            f"{prefix}Disk": self.disk_mb,
            f"{prefix}GPUs": self.gpus,
        }


class Partition:
    """One partitionable slot: its total resources and the claims carved out of it.

    Carving is all-or-nothing: a claim gets exactly what it asked for or nothing.
    """

    def __init__(self, total: Resources) -> None:
        self.total = total
        # Invariant: free + sum(claims.values()) == total, and every amount of free >= 0.
        self._free = total
        self._claims: dict[str, Resources] = {}

    @property
    def free(self) -> Resources:
        """What is left for new claims."""
        return self._free

    @property
    def used(self) -> Resources:
        """What the current claims hold."""
        return self.total - self._free

    @property
    def claims(self) -> dict[str, Resources]:
        """A copy of the current claims, by claim id."""
        return dict(self._claims)

    def carve(self, claim_id: str, request: Resources) -> bool:
        """Carve ``request`` for ``claim_id``; ``False`` (and no change) if it does not fit.

        Raises :class:`~pilotage.errors.Conflict` if ``claim_id`` already holds a share.
        """
        if claim_id in self._claims:
            raise Conflict(f"claim {claim_id} already holds resources in this slot")
        if not request.fits_in(self._free):
            return False
        self._free = self._free - request
        self._claims[claim_id] = request
        return True

    def release(self, claim_id: str) -> Resources:
        """Give back what ``claim_id`` holds and return it.

        Raises :class:`~pilotage.errors.Conflict` for an unknown (or already released)
        claim, so a double release can never inflate the free amounts past the total.
        """
        try:
            share = self._claims.pop(claim_id)
        except KeyError:
            raise Conflict(f"claim {claim_id} holds nothing in this slot") from None
        self._free = self._free + share
        return share

    def slot_attrs(self) -> dict[str, int]:
        """The resource attributes of the slot ad: free amounts and ``Total*`` amounts."""
        return {**self._free.slot_attrs(), **self.total.slot_attrs("Total")}
