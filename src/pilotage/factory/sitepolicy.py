"""A site's answers to seed 002's questionnaire, as an entry writes them, and what they mean.

The four questions (seed 002, "Questionnaire"): may the VO run multi-user pilots here
(``multi_user``: no / depends / yes); does the site support the switch in setuid mode
(``setuid``: no / allow / require) and in log-only mode (``log_only``: same); when the
switch fails with an internal error, may the pilot run the payload itself
(``bypass_on_error``: no / depends / yes). ``unknown`` writes down the survey's ``-`` and
"not sure". An answer is a word, or a table that keeps what the survey said with it::

    [entry.policy]
    multi_user = { answer = "depends", condition = "compliant experiments", confirmed = true }
    setuid = { answer = "allow", becomes = "require", on = 2011-01-01 }   # "allow -> require"
    log_only = "no"
    bypass_on_error = "unknown"

    [entry.policy.vo.alice]       # this frontend's (VO's) answers differ from the site's
    log_only = "allow"

:meth:`SitePolicy.answers` reduces them to :class:`Answers`, the *effective* answers a
frontend decides with, by rules that never guess in the permissive direction:

- after ``on``, ``becomes`` holds (it must be the stricter answer);
- ``unknown`` means ``no``;
- ``depends``, and any answer with a ``condition``, means ``no`` until the operator sets
  ``confirmed = true`` (then ``depends`` means ``yes``); a ``require`` stays ``require``
  whatever its condition, since a site's demand never weakens by being qualified.

Answers that differ per cluster of one site are written as one entry per cluster (an
entry is one gateway to one cluster). Pure logic, no I/O.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

YesNo = Literal["no", "depends", "yes", "unknown"]
Mode = Literal["no", "allow", "require", "unknown"]
QUESTIONS = ("multi_user", "setuid", "log_only", "bypass_on_error")
#: The ad attribute of each question's effective answer.
AD_NAMES = {
    "multi_user": "PolicyMultiUser",
    "setuid": "PolicySetuid",
    "log_only": "PolicyLogOnly",
    "bypass_on_error": "PolicyBypassOnError",
}
#: The ad attribute with the effective answers of every VO that has its own (JSON text).
BY_VO_AD_NAME = "PolicyByVO"
# Strictness within each kind of question: a later answer may only move right.
_YES_NO_ORDER = ("yes", "depends", "no")
_STRICTER_MODE = {"allow": ("no", "require"), "unknown": ("no", "require")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _word_to_table(value: object) -> object:
    return {"answer": value} if isinstance(value, str) else value


class _Answer(_Strict):
    condition: Annotated[str, Field(max_length=500)] = ""
    confirmed: bool = False
    becomes: str | None = None
    on: datetime.date | None = None
    #: What the site said besides the answer (kept for people, never read by rules).
    note: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value: object) -> object:
        return _word_to_table(value)

    def _check_change(self, answer: str, stricter: tuple[str, ...]) -> None:
        if (self.becomes is None) != (self.on is None):
            raise ValueError("'becomes' and 'on' go together: the new answer and its date")
        if self.becomes is not None and self.becomes not in stricter:
            raise ValueError(
                f"'becomes = \"{self.becomes}\"' is not stricter than '{answer}' "
                f"(it may be one of: {', '.join(stricter) or 'none'})"
            )


class YesNoAnswer(_Answer):
    """An answer to questions 1 and 4: no / depends / yes / unknown."""

    answer: YesNo

    @model_validator(mode="after")
    def _change(self) -> YesNoAnswer:
        if self.answer in _YES_NO_ORDER:
            later = _YES_NO_ORDER[_YES_NO_ORDER.index(self.answer) + 1 :]
        else:
            later = ("no",)
        self._check_change(self.answer, later)
        return self


class ModeAnswer(_Answer):
    """An answer to questions 2 and 3: no / allow / require / unknown."""

    answer: Mode

    @model_validator(mode="after")
    def _change(self) -> ModeAnswer:
        self._check_change(self.answer, _STRICTER_MODE.get(self.answer, ()))
        return self


def _unknown_yes_no() -> YesNoAnswer:
    return YesNoAnswer(answer="unknown")


def _unknown_mode() -> ModeAnswer:
    return ModeAnswer(answer="unknown")


class VoAnswers(_Strict):
    """One VO's own answers at a site; a question left out takes the site's answer."""

    multi_user: YesNoAnswer | None = None
    setuid: ModeAnswer | None = None
    log_only: ModeAnswer | None = None
    bypass_on_error: YesNoAnswer | None = None


@dataclass(frozen=True)
class Answers:
    """The effective answers: multi_user and bypass_on_error ``yes``/``no``; setuid and
    log_only ``no``/``allow``/``require``."""

    multi_user: str = "no"
    setuid: str = "no"
    log_only: str = "no"
    bypass_on_error: str = "no"

    def ad(self) -> dict[str, object]:
        """As ad attributes (``PolicyMultiUser``, ...)."""
        return {AD_NAMES[q]: getattr(self, q) for q in QUESTIONS}

    def as_dict(self) -> dict[str, str]:
        """By question name (what ``pilot.json`` carries)."""
        return {q: getattr(self, q) for q in QUESTIONS}

    @classmethod
    def from_ad(cls, ad: Mapping[str, object], vo: str | None = None) -> Answers:
        """The answers an entry's ad states for ``vo``; anything missing or odd means ``no``."""
        values: Mapping[str, object] = ad
        if vo is not None and isinstance(ad.get(BY_VO_AD_NAME), str):
            try:
                by_vo = json.loads(str(ad[BY_VO_AD_NAME]))
            except ValueError:
                by_vo = {}
            if isinstance(by_vo, dict) and isinstance(by_vo.get(vo), dict):
                values = by_vo[vo]
        allowed = {"multi_user": ("yes",), "bypass_on_error": ("yes",)}
        found = {}
        for q in QUESTIONS:
            value = values.get(AD_NAMES[q])
            ok = allowed.get(q, ("allow", "require"))
            found[q] = value if isinstance(value, str) and value in ok else "no"
        return cls(**found)


def effective(answer: YesNoAnswer | ModeAnswer, today: datetime.date) -> str:
    """One answer's meaning today; see the module docstring for the rules."""
    word: str = answer.answer
    conditional = bool(answer.condition) or word == "depends"
    if answer.becomes is not None and answer.on is not None and today >= answer.on:
        word, conditional = answer.becomes, False
    if word in ("unknown", "no"):
        return "no"
    if word == "require":
        return "require"
    if conditional and not answer.confirmed:
        return "no"
    return "yes" if word in ("yes", "depends") else "allow"


class SitePolicy(_Strict):
    """The site's answers (all ``unknown`` until written), and per-VO answers."""

    multi_user: YesNoAnswer = Field(default_factory=_unknown_yes_no)
    setuid: ModeAnswer = Field(default_factory=_unknown_mode)
    log_only: ModeAnswer = Field(default_factory=_unknown_mode)
    bypass_on_error: YesNoAnswer = Field(default_factory=_unknown_yes_no)
    #: By the name of the VO's frontend (a frontend speaks for one VO).
    vo: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")], VoAnswers] = (
        Field(default_factory=dict)
    )

    def answers(self, today: datetime.date, vo: str | None = None) -> Answers:
        """The effective answers for ``vo`` (the site's own when it has none) on ``today``."""
        own = self.vo.get(vo) if vo is not None else None
        found: dict[str, Any] = {}
        for q in QUESTIONS:
            answer = getattr(own, q, None) if own is not None else None
            found[q] = effective(answer if answer is not None else getattr(self, q), today)
        return Answers(**found)

    def ad(self, today: datetime.date) -> dict[str, object]:
        """The effective answers as ad attributes, with every VO's own in ``PolicyByVO``."""
        attrs = self.answers(today).ad()
        if self.vo:
            by_vo = {name: self.answers(today, name).ad() for name in sorted(self.vo)}
            attrs[BY_VO_AD_NAME] = json.dumps(by_vo, sort_keys=True, separators=(",", ":"))
        return attrs
