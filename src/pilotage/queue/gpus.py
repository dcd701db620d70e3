"""GPU devices, the server's side: which of a pilot's devices are free, which a claim gets.

A pilot registers its devices as HTCondor names them (pilot/gpus.py): ``DetectedGPUs``
(the ids), one nested ad ``GPUs_<id>`` per device and ``AvailableGPUs``, their list. The
server is the one place that knows every live claim, so it chooses the devices:

- when a pilot asks for work, its offered ad lists in ``AvailableGPUs`` only the devices
  no running job of that pilot holds, so ``require_gpus`` (``countMatches(RequireGPUs,
  AvailableGPUs) >= RequestGPUs`` in the job's Requirements) is matched against free
  devices;
- when a job requesting GPUs is claimed, the first free devices its ``RequireGPUs``
  accepts are written to its ad as ``AssignedGPUs`` and sent in the claim; the agent
  refuses a claim naming a device another of its claims holds (two jobs never share one).

A pilot asks for one job at a time, so two claims of one pilot are never chosen at once.
The cost is paid only by pilots with GPUs and jobs that request them.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import classad2
import sqlalchemy as sa

from pilotage.errors import BadInput, Transient
from pilotage.queue.jobad import load_ad
from pilotage.queue.states import JobState
from pilotage.store.tables import jobs

_ASSIGNED = re.compile(r'\bAssignedGPUs = "([^"]*)"')
_P = sa.bindparam
_HELD = sa.select(jobs.c.ad).where(
    jobs.c.pilot_id == _P("pilot"),
    jobs.c.state == JobState.RUNNING.value,
    jobs.c.request_gpus > 0,
)


def ad_name(gpu_id: str) -> str:
    """The slot attribute of a device's nested ad (the agent's spelling)."""
    return "GPUs_" + re.sub(r"[^A-Za-z0-9]", "_", gpu_id)


@functools.lru_cache(maxsize=1024)
def _devices(registered: str) -> tuple[tuple[str, str], ...]:
    """(id, nested ad text) of each device a pilot registered, in its order."""
    attrs = {k.lower(): v for k, v in json.loads(registered)["attrs"].items()}
    text = attrs.get("detectedgpus")
    if text is None:
        return ()
    try:
        ids = classad2.ExprTree(text).eval()
    except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
        return ()
    if not isinstance(ids, str):
        return ()
    found = []
    for gpu_id in (i.strip() for i in ids.split(",") if i.strip()):
        found.append((gpu_id, attrs.get(ad_name(gpu_id).lower(), f"[ Id = {json.dumps(gpu_id)} ]")))
    return tuple(found)


def check_registration(gpus: int, attrs: dict[str, str]) -> None:
    """Refuse (BadInput) a registration whose ``DetectedGPUs`` does not list exactly its
    ``gpus`` distinct devices: the server assigns devices by those ids."""
    devices = _devices(json.dumps({"attrs": attrs}))
    ids = {gpu_id for gpu_id, _ in devices}
    if gpus and (len(ids) != gpus or len(devices) != gpus):
        raise BadInput(
            f"a pilot with gpus = {gpus} must list {gpus} distinct device ids in "
            f"DetectedGPUs (it lists {len(devices)}); start the agent with --gpus ID,ID"
        )
    if not gpus and devices:
        raise BadInput("a pilot with gpus = 0 must not list DetectedGPUs")


def held(conn: sa.Connection, pilot_id: str) -> set[str]:
    """The devices the running jobs of a pilot hold."""
    taken: set[str] = set()
    for (text,) in conn.execute(_HELD, {"pilot": pilot_id}):
        match = _ASSIGNED.search(text)
        if match:
            taken.update(d for d in match.group(1).split(",") if d)
    return taken


def free_devices(conn: sa.Connection, pilot: Any) -> list[tuple[str, str]]:
    """(id, nested ad text) of the pilot's devices no running job holds."""
    devices = _devices(pilot.ad)
    if not devices:
        return []
    taken = held(conn, pilot.id)
    return [(gpu_id, text) for gpu_id, text in devices if gpu_id not in taken]


def offer(conn: sa.Connection, pilot: Any, slot: Any) -> Any:
    """The offered slot ad with ``AvailableGPUs`` listing only the free devices."""
    if pilot.gpus <= 0 or not _devices(pilot.ad):
        return slot
    names = ", ".join(ad_name(gpu_id) for gpu_id, _ in free_devices(conn, pilot))
    slot["AvailableGPUs"] = classad2.ExprTree("{ " + names + " }")
    return slot


def assign(conn: sa.Connection, job_id: int, pilot: Any, count: int) -> list[str]:
    """Choose ``count`` free devices the job's ``RequireGPUs`` accepts, record them as its
    ``AssignedGPUs`` and return them. Not enough (the pilot's registered devices and its
    GPU count disagree) is :class:`Transient`: the whole claim is undone and the pilot
    asks again later."""
    (text,) = conn.execute(sa.select(jobs.c.ad).where(jobs.c.id == job_id)).one()
    ad = load_ad(text)
    require = ad.lookup("RequireGPUs") if "RequireGPUs" in ad else None
    chosen = []
    for gpu_id, device in free_devices(conn, pilot):
        if require is None or _accepts(require, device):
            chosen.append(gpu_id)
            if len(chosen) == count:
                break
    if len(chosen) < count:
        raise Transient(
            f"pilot {pilot.id} has {len(chosen)} free GPUs that job id {job_id} accepts, "
            f"not {count}; ask again"
        )
    ad["AssignedGPUs"] = ",".join(chosen)
    conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(ad=str(ad)))
    return chosen


def _accepts(require: Any, device: str) -> bool:
    try:
        return require.eval(classad2.ClassAd(device)) is True
    except Exception:  # noqa: BLE001  (a device ad or expression classad2 cannot take)
        return False
