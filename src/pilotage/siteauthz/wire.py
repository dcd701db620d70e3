"""The decision API's messages, version 1: what the switch sends and what it gets back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pilotage.sitepolicy.policy import Decision, Subject

API_VERSION = 1


class SubjectModel(BaseModel):
    """A credential's identity: a DN (``x509``) or an issuer and subject (``token``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["x509", "token"]
    subject: str = Field(min_length=1, max_length=1024)
    issuer: str = Field(default="", max_length=1024)
    groups: tuple[str, ...] = Field(default=(), max_length=64)

    def to_subject(self) -> Subject:
        """The policy engine's form."""
        return Subject(self.kind, self.subject, self.issuer, self.groups)


class DecisionRequest(BaseModel):
    """Authorize ``user``, called by ``pilot`` when the switch has its credential."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    user: SubjectModel
    pilot: SubjectModel | None = None


class DecisionResponse(BaseModel):
    """Permit with an account, or deny with a reason; ``error``: the service itself failed."""

    permit: bool
    account: str
    reason: str
    error: bool = False

    @classmethod
    def of(cls, decision: Decision) -> DecisionResponse:
        """The wire form of an engine decision."""
        return cls(
            permit=decision.permit,
            account=decision.account,
            reason=decision.reason,
            error=decision.error,
        )
