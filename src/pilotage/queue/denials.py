"""A site that denies a job's owner (switch 203): the job is matched elsewhere, not held.

Seed 000 §4.7: a denied job put back in the queue unchanged is matched to the same pilot
again and again (a try-and-fail loop that also loads the site's authorization service);
holding it at once loses the other sites that would run it. So a denial adds the pilot's
site to the job's ``ExcludedSites`` (a ClassAd list of site names) and the job's
Requirements gain :data:`~pilotage.matchmaking.clauses.EXCLUDED_SITES_CLAUSE` (once): no
slot of an excluded site matches it again, whichever pilot asks. The job goes back to IDLE
without an attempt counted. It is HELD (code 14), with every site's denial in its reason,
when ``max_denials`` distinct sites have denied it, or when no site is left: no entry
the collector knows and no live pilot is at a site that has not denied it.

The site is the one in the pilot's row (what its token is bound to at registration),
never a name the pilot sends with the denial.

Invariant (as in :mod:`pilotage.queue.claims`): the change is guarded by the claim id.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from pilotage.errors import Conflict
from pilotage.matchmaking.clauses import EXCLUDED_SITES, EXCLUDED_SITES_CLAUSE
from pilotage.queue import history
from pilotage.queue.jobad import load_ad, parse_expr
from pilotage.queue.states import JobState, Trigger, transition
from pilotage.store.tables import entry_ads, jobs, pilots

#: The job ad attribute keeping each denial's words (``"<site>: <message>"``).
DENIALS = "PilotageDenials"
#: The hold code of a job its owner's identity cannot run anywhere (docs/pilot-protocol.md).
IDENTITY_HOLD_CODE = 14
#: Each denial's words are cut to this length in the ad (the reason keeps them all).
_MAX_WORDS = 500


def _strings(ad: Any, name: str) -> list[str]:
    """A ClassAd list of strings in ``ad`` (empty if absent or not such a list)."""
    if name not in ad:
        return []
    value = ad.eval(name)
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _squeezed(text: str) -> str:
    """``text`` without blanks (classad2 prints expressions with its own spacing)."""
    return "".join(text.split()).lower()


def _list_expr(values: list[str], what: str) -> Any:
    """A ClassAd list literal of strings (JSON string quoting is ClassAd's too)."""
    return parse_expr("{" + ", ".join(json.dumps(v) for v in values) + "}", what)


def sites_left(conn: sa.Connection, excluded: set[str], now: float) -> bool:
    """Whether a site not in ``excluded`` could still run the job: an entry the collector
    knows there, or a live pilot registered there."""
    for (text,) in conn.execute(sa.select(entry_ads.c.ad)):
        site = json.loads(text).get("Site")
        if isinstance(site, str) and site not in excluded:
            return True
    other = conn.execute(
        sa.select(pilots.c.id)
        .where(
            pilots.c.state == "active",
            pilots.c.expires_at > now,
            pilots.c.site.not_in(sorted(excluded)),
        )
        .limit(1)
    ).first()
    return other is not None


def deny(
    conn: sa.Connection,
    claim_id: str,
    job_id: int,
    pilot: sa.Row[Any],
    message: str,
    *,
    max_denials: int,
    now: float,
) -> JobState:
    """Record that ``pilot``'s site denies the job of a live claim; IDLE, or HELD if no
    site is left. The caller has checked that ``pilot`` holds the claim (and its secret).

    Raises Conflict when the claim no longer holds its job (a late denial).
    """
    row = conn.execute(
        sa.select(jobs.c.ad).where(jobs.c.id == job_id, jobs.c.claim_id == claim_id)
    ).first()
    if row is None:
        raise Conflict(f"claim {claim_id} no longer holds its job; nothing was given back")
    ad = load_ad(row.ad)
    site = str(pilot.site)
    sites = _strings(ad, EXCLUDED_SITES)
    if site not in sites:
        sites.append(site)
    denials = [*_strings(ad, DENIALS), f"{site}: {message}"[:_MAX_WORDS]]
    ad[EXCLUDED_SITES] = _list_expr(sites, EXCLUDED_SITES)
    ad[DENIALS] = _list_expr(denials, DENIALS)
    requirements = str(ad.lookup("Requirements")) if "Requirements" in ad else "true"
    if _squeezed(EXCLUDED_SITES_CLAUSE) not in _squeezed(requirements):
        ad["Requirements"] = parse_expr(
            f"({requirements}) && {EXCLUDED_SITES_CLAUSE}", "the excluded sites clause"
        )
    # The claim counted an attempt; a denial is the site's answer, not a run.
    attempts = sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0)
    values: dict[str, Any] = {"ad": str(ad), "attempts": attempts}
    if len(sites) >= max_denials or not sites_left(conn, set(sites), now):
        change = transition(JobState.RUNNING, Trigger.FAILURE)
        ended = (
            f"{len(sites)} site(s) denied it, the most allowed"
            if len(sites) >= max_denials
            else "no other site is left"
        )
        why = (
            f"{ended}; pilotage-exec refused its owner at each: {'; '.join(denials)}. "
            "Ask those sites to allow you, then release it"
        )
        values.update(hold_reason=why[:4000], hold_code=IDENTITY_HOLD_CODE)
    else:
        change = transition(JobState.RUNNING, Trigger.RELEASED_BY_PILOT)
        why = f"denied at site {site} by pilot {pilot.id}: {message}; matched elsewhere"
        values.update(pilot_id=None, site=None)
    won = history.apply(
        conn,
        job_id,
        change,
        actor=f"pilot:{pilot.id}",
        now=now,
        values=values,
        reason=why,
        expect_claim=claim_id,
        pilot_id=pilot.id,
    )
    if not won:
        raise Conflict(f"claim {claim_id} no longer holds its job; nothing was given back")
    history.end_claim(conn, claim_id, reason="denied", now=now)
    to_state: JobState = change.to_state
    return to_state
