"""Whether pilots at an entry use the switch: the VO's mode against the site's policy.

The VO chooses one of seed 000 §3.2's three modes — ``required`` (a pilot that cannot
use the switch fails validation), ``optional`` (use it when it works), ``never`` (do not
even look for it). Each entry advertises what its site installed (``HasSwitch``,
``SwitchMode``) and the site's four answers from seed 002's questionnaire
(``PolicyMultiUser``, ``PolicySetuid``, ``PolicyLogOnly``, ``PolicyBypassOnError``).
:func:`switch_for` combines them into the mode written into the entry's ``pilot.json``,
or refuses the entry: then the frontend sends it no pilots at all. Pure logic.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class VoSwitchMode(enum.Enum):
    """The VO's choice (seed 000 §3.2)."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    NEVER = "never"


@dataclass(frozen=True)
class SwitchDecision:
    """The mode for the entry's pilots, or why the entry gets none (``mode`` None)."""

    mode: VoSwitchMode | None
    reason: str

    @property
    def usable(self) -> bool:
        """Whether the frontend may ask for pilots at this entry."""
        return self.mode is not None


def _allowed_by_site(switch_mode: object, ad: Mapping[str, object]) -> bool:
    """Whether the site's own policy allows the mode its switch runs in."""
    if switch_mode == "setuid":
        return ad.get("PolicySetuid") != "no"
    if switch_mode == "log-only":
        return ad.get("PolicyLogOnly") != "no"
    return switch_mode == "namespace"


def switch_for(vo: VoSwitchMode, ad: Mapping[str, object]) -> SwitchDecision:
    """The switch mode for pilots at the entry whose ad is ``ad``; see the module docstring.

    - a site that does not allow multi-user pilots gets none;
    - a site that *requires* the switch (setuid or log-only ``require``) gets none from
      a VO that never uses it;
    - a VO that requires the switch sends pilots only where a switch is installed in a
      mode the site's policy allows; ``optional`` falls back to ``never`` elsewhere.
    """
    if ad.get("PolicyMultiUser") == "no":
        return SwitchDecision(None, "the site does not allow multi-user pilots")
    site_requires = "require" in (ad.get("PolicySetuid"), ad.get("PolicyLogOnly"))
    if vo is VoSwitchMode.NEVER:
        if site_requires:
            return SwitchDecision(None, "the site requires the switch and the VO never uses it")
        return SwitchDecision(VoSwitchMode.NEVER, "the VO never uses the switch")
    has = ad.get("HasSwitch") is True
    if not has or not _allowed_by_site(ad.get("SwitchMode"), ad):
        why = (
            "no switch at the site"
            if not has
            else f"the site's policy does not allow its switch's mode {ad.get('SwitchMode')}"
        )
        if vo is VoSwitchMode.REQUIRED or site_requires:
            return SwitchDecision(None, why)
        return SwitchDecision(VoSwitchMode.NEVER, why)
    return SwitchDecision(vo, f"switch in {ad.get('SwitchMode')} mode")
