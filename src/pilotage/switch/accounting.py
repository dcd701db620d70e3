"""``pilotage-exec --accounting [--since T] [--json]``: who used this node, from the audit.

Sums the usage records of the audit log (``exit`` of a lingering run, ``end`` of a family
closed by its final kill; each job has exactly one of them with usage) by mapped account
and by user identity: jobs, cpu hours (user + system), wall hours, the largest peak
memory. For root or a site administrator who can read the audit log; never through the
switch's sudo rule, which would show a pilot every user's usage.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from .refusals import ClientError, Denied

USAGE = "usage: pilotage-exec --accounting [--since YYYY-MM-DD[THH:MM:SSZ]] [--json]"


def main(argv: list[str], audit_log: str, *, from_sudo: bool) -> int:
    """Print the sums; 0, or a refusal (201 bad option or unreadable log, 203 through sudo)."""
    if from_sudo:
        raise Denied("--accounting is for root or a site administrator who can read the "
                     "audit log, not for the switch's callers.")  # fmt: skip
    since, as_json, args = "", False, list(argv)
    while args:
        flag = args.pop(0)
        if flag == "--json":
            as_json = True
        elif flag == "--since" and args:
            since = _time(args.pop(0))
        else:
            raise ClientError(f"Unknown or incomplete option {flag[:40]!r}.\n{USAGE}")
    try:
        with open(audit_log, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as exc:
        raise ClientError(f"The audit log {audit_log} cannot be read ({exc.strerror}).") from None
    sums = summarize(filter(None, map(_record, lines)), since)
    print(json.dumps({"since": since or None, **sums}, indent=1) if as_json else _table(sums))
    return 0


def _record(line: str) -> dict[str, Any] | None:
    """One audit line as a record; None for a line that is not one (a torn last write)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _time(text: str) -> str:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ClientError(f"--since {text[:40]!r} is not a date or time.\n{USAGE}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # the audit's own format: compared as text


def summarize(records: Any, since: str = "") -> dict[str, dict[str, dict[str, float]]]:
    """``{"by_account": {...}, "by_user": {...}}`` of jobs, cpu_h, wall_h, max_rss_kb."""
    sums: dict[str, dict[str, dict[str, float]]] = {"by_account": {}, "by_user": {}}
    for record in records:
        if record.get("event") not in ("exit", "end") or "wall_s" not in record:
            continue
        if record.get("time", "") < since:
            continue
        cpu = record.get("cpu_user_s", 0) + record.get("cpu_sys_s", 0) or record.get("cpu_s", 0)
        user = " ".join(filter(None, (record.get("issuer"), record.get("user"))))
        for table, name in (("by_account", record.get("account", "")), ("by_user", user)):
            row = sums[table].setdefault(
                name or "-", {"jobs": 0, "cpu_h": 0.0, "wall_h": 0.0, "max_rss_kb": 0}
            )
            row["jobs"] += 1
            row["cpu_h"] += cpu / 3600
            row["wall_h"] += record["wall_s"] / 3600
            row["max_rss_kb"] = max(row["max_rss_kb"], record.get("max_rss_kb", 0))
    return sums


def _table(sums: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = []
    for table, title in (("by_account", "account"), ("by_user", "user (issuer and subject)")):
        lines.append(f"{title:<60} {'jobs':>6} {'cpu h':>10} {'wall h':>10} {'max rss kB':>11}")
        for name, row in sorted(sums[table].items()):
            lines.append(f"{name:<60} {row['jobs']:>6} {row['cpu_h']:>10.4f} "
                         f"{row['wall_h']:>10.4f} {row['max_rss_kb']:>11}")  # fmt: skip
        lines.append("")
    return "\n".join(lines).rstrip("\n")
