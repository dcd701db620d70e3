"""The node's GPUs: which devices the pilot has, how it advertises them, who holds each.

Standard library only (the agent runs on bare worker nodes).

Devices come from, in order: the ``--gpus`` flag when it lists device ids (``--gpus
0,1`` or ``--gpus GPU-8a1c...,GPU-77f0...``: no detection at all); else ``nvidia-smi``
(``--query-gpu`` for the id, name, memory and compute capability, else ``-L``); else
``/proc/driver/nvidia/gpus/*/information``. ``--gpus N`` (a bare number) keeps at most
N of the detected devices and ``--gpus 0`` none; a device is never invented.

The slot advertises HTCondor's attributes: ``DetectedGPUs`` (the ids, comma-separated),
one nested ad per device ``GPUs_<id>`` (``Id`` and, when known, ``DeviceName``,
``Capability``, ``GlobalMemoryMb``) and ``AvailableGPUs``, the list of those ads, which
``require_gpus`` is matched against. The server chooses the devices of each claim
(``AssignedGPUs``); :class:`Devices` checks here that no device is held by two live
claims, and the job gets them as ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_PROC = Path("/proc/driver/nvidia/gpus")
_SMI_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Gpu:
    """One device: its id (an index or a UUID, as ``CUDA_VISIBLE_DEVICES`` takes it)."""

    id: str
    name: str | None = None
    capability: float | None = None
    memory_mb: int | None = None

    @property
    def ad_name(self) -> str:
        """The slot attribute of its nested ad: ``GPUs_`` and the id, letters kept."""
        return "GPUs_" + re.sub(r"[^A-Za-z0-9]", "_", self.id)

    def ad(self) -> str:
        """Its nested ClassAd, as expression text."""
        parts = [f"Id = {json.dumps(self.id)}"]
        if self.name is not None:
            parts.append(f"DeviceName = {json.dumps(self.name)}")
        if self.capability is not None:
            parts.append(f"Capability = {self.capability!r}")
        if self.memory_mb is not None:
            parts.append(f"GlobalMemoryMb = {self.memory_mb}")
        return "[ " + "; ".join(parts) + " ]"


def parse_flag(text: str) -> tuple[Gpu, ...] | int:
    """``--gpus``: device ids (a tuple) or a count (a bare number). ``ValueError`` names
    what is wrong."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise ValueError(f"{text!r} names no device: give ids such as 0,1 or a count")
    for gpu_id in ids:
        if not _ID.fullmatch(gpu_id):
            raise ValueError(f"{gpu_id!r} is not a device id such as 0 or GPU-8a1c2b3d")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{text!r} names a device twice")
    return tuple(Gpu(gpu_id) for gpu_id in ids)


def parse_query(text: str) -> tuple[Gpu, ...]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total,compute_cap
    --format=csv,noheader,nounits`` output."""
    found = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5 or not fields[1].startswith("GPU-"):
            continue
        found.append(Gpu(fields[1], fields[2] or None, _number(fields[4]), _int(fields[3])))
    return tuple(found)


def parse_list(text: str) -> tuple[Gpu, ...]:
    """``nvidia-smi -L`` output: ``GPU 0: Tesla T4 (UUID: GPU-...)``."""
    found = []
    for match in re.finditer(r"^GPU \d+: (.*?) \(UUID: (GPU-[0-9A-Za-z-]+)\)", text, re.M):
        found.append(Gpu(match.group(2), match.group(1).strip() or None))
    return tuple(found)


def parse_proc(texts: Iterable[str]) -> tuple[Gpu, ...]:
    """The ``information`` files of ``/proc/driver/nvidia/gpus/*``."""
    found = []
    for text in texts:
        fields = dict(
            (key.strip(), value.strip())
            for key, sep, value in (line.partition(":") for line in text.splitlines())
            if sep
        )
        gpu_id = fields.get("GPU UUID") or fields.get("Device Minor")
        if gpu_id and _ID.fullmatch(gpu_id):
            found.append(Gpu(gpu_id, fields.get("Model")))
    return tuple(found)


def detect() -> tuple[Gpu, ...]:
    """The node's NVIDIA devices, or none (see the module's docstring)."""
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        query = "--query-gpu=index,uuid,name,memory.total,compute_cap"
        for args in ([query, "--format=csv,noheader,nounits"], ["-L"]):
            out = _run([smi, *args])
            gpus = (parse_query if args[0] == query else parse_list)(out)
            if gpus:
                return gpus
    try:
        files = sorted(_PROC.glob("*/information"))
        return parse_proc(f.read_text(errors="replace") for f in files)
    except OSError:
        return ()


def choose(flag: tuple[Gpu, ...] | int | None) -> tuple[Gpu, ...]:
    """The pilot's devices: the flag's ids, or at most its count of the detected ones."""
    if isinstance(flag, tuple):
        return flag
    detected = detect()
    return detected if flag is None else detected[:flag]


def slot_attrs(gpus: tuple[Gpu, ...]) -> dict[str, str]:
    """The slot attributes that describe ``gpus`` (none without a device)."""
    if not gpus:
        return {}
    attrs = {gpu.ad_name: gpu.ad() for gpu in gpus}
    attrs["DetectedGPUs"] = json.dumps(",".join(gpu.id for gpu in gpus))
    attrs["AvailableGPUs"] = "{ " + ", ".join(gpu.ad_name for gpu in gpus) + " }"
    return attrs


class DeviceBusy(Exception):
    """A claim names a device this pilot lacks or another live claim holds."""


class Devices:
    """Which live claim holds each device. Invariant: a device is held by one claim at most.

    Not thread-safe by itself: the agent holds its lock around every call.
    """

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = tuple(ids)
        self._held: dict[str, str] = {}  # device id -> claim id

    def hold(self, claim_id: str, ids: Iterable[str]) -> None:
        """Give ``ids`` to ``claim_id``; refuse (DeviceBusy) any unknown or held one."""
        wanted = list(ids)
        for gpu_id in wanted:
            if gpu_id not in self.ids:
                raise DeviceBusy(f"claim {claim_id} names GPU {gpu_id!r}, not one of {self.ids}")
            holder = self._held.get(gpu_id)
            if holder is not None and holder != claim_id:
                raise DeviceBusy(f"claim {claim_id} names GPU {gpu_id}, held by claim {holder}")
        for gpu_id in wanted:
            self._held[gpu_id] = claim_id

    def release(self, claim_id: str) -> None:
        """Give back every device of ``claim_id``."""
        self._held = {d: c for d, c in self._held.items() if c != claim_id}

    def held_by(self, claim_id: str) -> tuple[str, ...]:
        """The devices ``claim_id`` holds, in the pilot's order."""
        return tuple(d for d in self.ids if self._held.get(d) == claim_id)


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None
