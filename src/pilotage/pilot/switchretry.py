"""Retrying a switch call that failed for a passing reason (202), and what comes after.

Seed 000 §4.5: the documents' agent took any refusal of the switch as final and gave up
the job. A 202 whose sentence says the site's service is unreachable or overloaded
(:func:`~pilotage.pilot.nodepolicy.classify`: internal, not stopping the pilot) is retried
here with randomised exponential back-off, a few times within a total time, so that many
pilots of one site never retry in step (seed 000 §4.6). When that fails too, the claim is
given back at once, not counted against the job, and the server keeps the job from this
pilot for ``exclude_s`` and reports the site to the frontend (docs/pilot.md, "Keeping
control").

Pure: the caller sleeps (on its claim's stop event) and calls the switch.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pilotage.errors import OperatorError


@dataclass(frozen=True)
class SwitchRetry:
    """``--switch-retry KEY=VALUE``: how a passing 202 is retried, then given back."""

    #: Calls after the first one.
    retries: int = 4
    #: The first wait; each next one doubles, each drawn between half and one and a half.
    base_s: float = 2.0
    #: No retry starts later than this after the first call.
    total_s: float = 60.0
    #: After the last refusal: how long the server keeps the job from this pilot.
    exclude_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise OperatorError(f"--switch-retry retries={self.retries} must not be negative")
        for name in ("base_s", "total_s", "exclude_s"):
            if getattr(self, name) < 0:
                raise OperatorError(
                    f"--switch-retry {name}={getattr(self, name)} must not be negative"
                )

    @classmethod
    def parse(cls, items: Sequence[str]) -> SwitchRetry:
        """Settings from ``KEY=VALUE`` words (``retries=3``); unknown keys refused."""
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, float | int] = {}
        for item in items:
            key, sep, text = item.partition("=")
            if not sep or key not in known:
                names = ", ".join(sorted(known))
                raise OperatorError(f"--switch-retry {item!r} is not KEY=VALUE, KEY one of {names}")
            try:
                values[key] = int(text) if key == "retries" else float(text)
            except ValueError:
                kind = "a whole number" if key == "retries" else "a number"
                raise OperatorError(f"--switch-retry {item!r}: {text!r} is not {kind}") from None
        return cls(**values)  # type: ignore[arg-type]

    def describe(self) -> str:
        """The settings as ``--switch-retry`` would take them."""
        return ",".join(f"{k}={v:g}" for k, v in dataclasses.asdict(self).items())

    def delay(self, done: int, spent_s: float, draw: random.Random | None = None) -> float | None:
        """The wait before retry number ``done + 1``, ``spent_s`` after the first call;
        None when no retry is left (count or total time)."""
        if done >= self.retries:
            return None
        factor: float = (draw or _DRAW).uniform(0.5, 1.5)
        wait = self.base_s * float(2**done) * factor
        if spent_s + wait > self.total_s:
            return None
        return wait


#: Back-off jitter only: not a secret, so the module's generator is enough.
_DRAW = random.Random()
