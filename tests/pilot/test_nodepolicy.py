"""Whose fault a switch refusal is, and which switch types a site's answers allow
(src/pilotage/pilot/nodepolicy.py; docs/pilot.md, "Switch exit codes")."""

from __future__ import annotations

import pytest

from pilotage.pilot.nodepolicy import Cause, classify, switch_type_problem


@pytest.mark.parametrize(
    ("code", "message", "cause", "stops"),
    [
        # What the job's owner must fix: held, the pilot goes on.
        (201, "The user credential is not valid: the proxy has expired.", Cause.OWNER, False),
        (201, "The user credential holds no private key.", Cause.OWNER, False),
        (203, "Authorization denied: The DN '/O=E/CN=Mallory' is banned.", Cause.OWNER, False),
        # The node's: given back, not counted, the pilot takes no more jobs.
        (201, "The directory /scratch is not searchable by alice; every directory on the "
              "path to /scratch/w.py must be (chmod o+x /scratch).", Cause.NODE, True),
        (201, "The program python3 is not in the configured PATH (/usr/bin).", Cause.NODE, True),
        (203, "The account pilot is not allowed to call pilotage-exec.", Cause.NODE, True),
        (203, "Authorization denied: This site requires the pilot credential as well.",
              Cause.NODE, True),
        (204, "anything", Cause.NODE, True),
        # Internal errors: given back (or run as the pilot where allowed).
        (202, "The site authorization service is overloaded (HTTP 503).", Cause.INTERNAL, False),
        (202, "The site authorization service at https://a is unreachable (refused).",
              Cause.INTERNAL, False),
        (202, "The config file /etc/x.toml is owned by uid 5, not by root.", Cause.INTERNAL, True),
        (None, "pilotage-exec ended without a status line", Cause.INTERNAL, True),
    ],
)  # fmt: skip
def test_each_refusal_has_one_cause(
    code: int | None, message: str, cause: Cause, stops: bool
) -> None:
    assert classify(code, message) == (cause, stops)


def policy(setuid: str, log_only: str, switch: str | None) -> dict[str, str]:
    attrs = {"PolicySetuid": f'"{setuid}"', "PolicyLogOnly": f'"{log_only}"'}
    if switch is not None:
        attrs["PilotageSwitch"] = f'"{switch}"'
    return attrs


@pytest.mark.parametrize(
    ("setuid", "log_only", "switch", "words"),
    [
        ("require", "allow", "log-only", "requires setuid"),
        ("require", "allow", "namespace", "requires setuid"),
        ("require", "no", None, "requires setuid"),
        ("no", "allow", "setuid", "does not allow setuid"),
        ("allow", "no", "log-only", "does not allow log-only"),
        ("allow", "allow", "none", "did not establish"),
    ],
)
def test_a_switch_type_the_site_does_not_allow_is_refused(
    setuid: str, log_only: str, switch: str | None, words: str
) -> None:
    problem = switch_type_problem(policy(setuid, log_only, switch), switched=True)
    assert problem is not None and words in problem


def test_allowed_types_and_unswitched_or_hand_started_pilots_pass() -> None:
    assert switch_type_problem(policy("require", "no", "setuid"), switched=True) is None
    assert switch_type_problem(policy("allow", "allow", "namespace"), switched=True) is None
    assert switch_type_problem(policy("require", "no", "log-only"), switched=False) is None
    assert switch_type_problem({"PilotageSwitch": '"log-only"'}, switched=True) is None
