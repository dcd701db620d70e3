"""The words of ``q -analyze``: suggestions for failing clauses, and the text rendering.

Kept apart from :mod:`pilotage.matchmaking.analyze`, which computes the counts, so the
phrasing can change without touching the logic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pilotage.matchmaking.ads import JobAd, SlotAd
from pilotage.matchmaking.classads import evaluate, references
from pilotage.matchmaking.clauses import resource_of

if TYPE_CHECKING:
    from pilotage.matchmaking.analyze import Analysis

#: resource -> (job attribute, slot attribute, submit-file command, unit, Resources field)
_RESOURCES = {
    "cpus": ("RequestCpus", "Cpus", "request_cpus", "", "cpus"),
    "memory": ("RequestMemory", "Memory", "request_memory", " MB", "memory_mb"),
    "disk": ("RequestDisk", "Disk", "request_disk", " MB", "disk_mb"),
    "gpus": ("RequestGpus", "GPUs", "request_gpus", "", "gpus"),
}


def _amount(ad: Any, name: str) -> int:
    value = evaluate(ad, name)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _resource_suggestion(
    resource: str, job: JobAd, slots: Sequence[SlotAd], idle_ads: Sequence[Any], idle_bits: int
) -> str:
    job_attr, slot_attr, command, unit, field = _RESOURCES[resource]
    wanted = getattr(job.request, field)
    if not idle_bits:
        largest = max(_amount(ad, slot_attr) for ad in idle_ads)
        return (
            f"{job_attr} = {wanted}{unit} but the largest slot has {largest}{unit}: "
            f"lower {command}."
        )
    most_free = max(_amount(s.ad, slot_attr) for s in slots)
    return (
        f"{job_attr} = {wanted}{unit}: {idle_bits.bit_count()} slot(s) have that much in total "
        f"but none has it free now (the most free is {most_free}{unit})."
    )


def _values_seen(name: str, idle_ads: Sequence[Any]) -> str:
    """``Name = value (count), ...`` over the slots, most common first."""
    seen: Counter[str] = Counter()
    for ad in idle_ads:
        seen[str(ad.lookup(name)) if name in ad else "undefined"] += 1
    shown = ", ".join(f"{value} ({k})" for value, k in seen.most_common(4))
    more = f" and {len(seen) - 4} other value(s)" if len(seen) > 4 else ""
    return f"{name} = {shown}{more}"


def clause_suggestion(
    text: str,
    expr: Any,
    job: JobAd,
    job_ad: Any,
    slots: Sequence[SlotAd],
    idle_ads: Sequence[Any],
    now_bits: int,
    idle_bits: int,
) -> str | None:
    """A plain-English sentence for a clause no slot satisfies now, with what to change."""
    if not slots:
        return None
    resource = resource_of(text)
    if resource is not None:
        return _resource_suggestion(resource, job, slots, idle_ads, idle_bits)
    if idle_bits:
        return f"{idle_bits.bit_count()} slot(s) satisfy {text} but only when idle."
    _, slot_refs = references(job_ad, expr)
    names = sorted(n for n in slot_refs if "." not in n)
    if not names:
        return f"{text} is false for this job whatever the slot: check the job's own attributes."
    # Show the attributes as the slots spell them when any slot has them.
    spelled = []
    for name in names[:3]:
        spelling = next((k for ad in idle_ads for k in ad if k.lower() == name), name)
        spelled.append(_values_seen(spelling, idle_ads))
    return f"No slot satisfies {text}; the slots have " + "; ".join(spelled) + "."


def conflict_sentence(texts: Sequence[str], idle_masks: Sequence[int]) -> str:
    """Name the clauses that no slot satisfies together (each alone is satisfied)."""
    for i, first in enumerate(idle_masks):
        for j in range(i + 1, len(idle_masks)):
            if not first & idle_masks[j]:
                return (
                    "Each clause alone is satisfied by some slot, but no slot satisfies both "
                    f"{texts[i]} and {texts[j]}."
                )
    together = -1
    for i, bits in enumerate(idle_masks):
        together &= bits
        if not together:
            return (
                f"Each clause alone is satisfied by some slot, but no slot satisfies {texts[i]} "
                "together with the clauses before it."
            )
    return "No slot satisfies all the clauses together."


def render_text(analysis: Analysis) -> str:
    """The analysis as the CLI prints it."""
    a = analysis
    lines = [
        f"Job {a.job} ({a.submitter}): {a.slots_matching_now} of {a.slots_total} slot(s) "
        f"can run it now, {a.slots_matching_idle} when idle.",
        "",
        a.summary,
        *a.details,
        "",
    ]
    if a.clauses:
        width = min(60, max(len(c.text) for c in a.clauses))
        lines.append(f"    {'Requirements clause':<{width}}  {'free now':>9}  {'when idle':>9}")
        for i, c in enumerate(a.clauses, 1):
            text = c.text if len(c.text) <= width else c.text[: width - 3] + "..."
            flag = "  <- no slot" if c.slots_idle == 0 else ""
            note = " (implicit)" if c.implicit else ""
            lines.append(f"{i:>3} {text:<{width}}  {c.slots_now:>9}  {c.slots_idle:>9}{flag}{note}")
        lines.append(
            f"    {'all clauses together':<{width}}  {a.slots_requirements_now:>9}"
            f"  {a.slots_requirements_idle:>9}"
        )
        lines.append("")
    lines.append(f"Slots whose START refuses the job: {a.slots_rejecting}")
    lines.append(
        f"Slots retiring before its MaxWallTime ({a.max_wall_time_s:.0f} s): "
        f"{a.slots_ttl_too_short}"
    )
    fs = a.fair_share
    lines.append(
        f"Fair share: {fs.submitter}, effective priority {fs.effective_priority:.2f}, "
        + (
            f"{fs.position} of {fs.competing} submitter(s) with idle jobs"
            if fs.position
            else "left out (group over quota)"
        )
    )
    return "\n".join(lines)
