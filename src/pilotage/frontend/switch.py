"""What pilots an entry gets: the VO's switch mode and switch types against the site's policy.

The VO chooses one of seed 000 §3.2's three modes — ``required`` (a pilot that cannot
use the switch fails validation), ``optional`` (use it when it works), ``never`` (do not
even look for it) — and the switch types it accepts, in order of preference (e.g.
``["setuid"]``, or ``["setuid", "log-only"]``). Each entry advertises the switch its site
installed (``SwitchMode``) and the site's effective answers to seed 002's questionnaire
(:class:`~pilotage.factory.sitepolicy.Answers`). The site's demand wins over the VO's
tolerance:

1. multi-user pilots not allowed: single-user pilots for a VO in ``optional`` or
   ``never`` mode; nothing for a ``required`` VO (it runs only pilots that switch);
2. the types the site allows: setuid if its setuid answer is ``allow`` or ``require``;
   log-only and namespace (both run as the caller; the questionnaire has no separate
   question for namespace) if its log-only answer is ``allow`` or ``require`` — but
   *only setuid* when setuid is ``require``;
3. the site *requires the switch* when setuid or log-only is ``require``, or bypass on
   internal error is ``no``;
4. the switch is *usable* when the installed type is one the site allows and the VO
   accepts;
5. ``never``: pilots in mode never, or single-user pilots where the site requires the
   switch;
6. ``required``: pilots in mode required where the switch is usable, else nothing;
7. ``optional``: where usable, pilots in mode ``required`` if the site requires the
   switch (they may never fall back to running jobs as the pilot account), else
   ``optional``; where not usable, single-user pilots if the site requires the switch,
   else mode never.

Pure logic; :func:`decide` is the rule, :func:`switch_for` reads an entry's ad for it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pilotage.factory.sitepolicy import Answers

#: The switch types, in the order a VO that accepts them all would prefer them.
SWITCH_TYPES = ("setuid", "log-only", "namespace")


class VoSwitchMode(enum.Enum):
    """The VO's choice (seed 000 §3.2)."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    NEVER = "never"


class PilotMode(enum.Enum):
    """What the pilots sent to an entry do (the request's ``switch_mode``)."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    NEVER = "never"
    #: No switch; every job of one pilot belongs to one owner.
    SINGLE_USER = "single-user"


@dataclass(frozen=True)
class SwitchDecision:
    """The pilots for the entry, or why it gets none (``mode`` None).

    ``types`` are the switch types a pilot may accept on the node, in the VO's order
    (empty for ``never`` and ``single-user``).
    """

    mode: PilotMode | None
    reason: str
    types: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """Whether the frontend may ask for pilots at this entry."""
        return self.mode is not None

    def label(self) -> str:
        """Short form for tables and logs: ``none``, ``single-user``, ``required:setuid``."""
        if self.mode is None:
            return "none"
        if not self.types:
            return self.mode.value
        return f"{self.mode.value}:{','.join(self.types)}"


def site_types(answers: Answers) -> tuple[str, ...]:
    """The switch types the site allows (rule 2)."""
    if answers.setuid == "require":
        return ("setuid",)
    found: tuple[str, ...] = ("setuid",) if answers.setuid == "allow" else ()
    if answers.log_only in ("allow", "require"):
        found += ("log-only", "namespace")
    return found


def site_requires_switch(answers: Answers) -> bool:
    """Rule 3: multi-user pilots here must use the switch."""
    return "require" in (answers.setuid, answers.log_only) or answers.bypass_on_error == "no"


def decide(
    vo: VoSwitchMode, accepted: Sequence[str], answers: Answers, installed: str | None
) -> SwitchDecision:
    """The pilots for one entry; see the module docstring for rules 1-7."""
    if answers.multi_user != "yes":
        if vo is VoSwitchMode.REQUIRED:
            return SwitchDecision(None, "the site does not allow multi-user pilots")
        return SwitchDecision(PilotMode.SINGLE_USER, "the site does not allow multi-user pilots")
    requires = site_requires_switch(answers)
    allowed = site_types(answers)
    types = tuple(t for t in accepted if t in allowed)
    usable = installed in types
    if vo is VoSwitchMode.NEVER:
        if requires:
            return SwitchDecision(
                PilotMode.SINGLE_USER, "the site requires the switch and the VO never uses it"
            )
        return SwitchDecision(PilotMode.NEVER, "the VO never uses the switch")
    if usable:
        strict = vo is VoSwitchMode.REQUIRED or requires
        why = f"switch {installed}" + (" required by the site" if requires else "")
        return SwitchDecision(PilotMode.REQUIRED if strict else PilotMode.OPTIONAL, why, types)
    if installed is None:
        why = "no switch at the site"
    elif installed not in allowed:
        why = f"the site's policy does not allow its switch's type {installed}"
    else:
        why = f"the VO does not accept the site's switch type {installed}"
    if vo is VoSwitchMode.REQUIRED:
        return SwitchDecision(None, why)
    if requires:
        return SwitchDecision(PilotMode.SINGLE_USER, f"{why}, and the site requires the switch")
    return SwitchDecision(PilotMode.NEVER, why)


def switch_for(
    vo: VoSwitchMode,
    ad: Mapping[str, object],
    accepted: Sequence[str] = SWITCH_TYPES,
    frontend: str | None = None,
) -> SwitchDecision:
    """:func:`decide` for the entry whose ad is ``ad``, with ``frontend``'s own answers."""
    installed = ad.get("SwitchMode")
    return decide(
        vo,
        accepted,
        Answers.from_ad(ad, frontend),
        installed if isinstance(installed, str) and installed in SWITCH_TYPES else None,
    )
