"""What each entry's pilots download: the agent, the validation script, configuration.

One file set per entry (its ``pilot.json`` differs), published with
:func:`pilotage.factory.manifest.publish`:

- ``agent.pyz`` — the agent's zipapp (standard library only);
- ``validate.py`` — the validation step (:mod:`pilotage.factory.validate`);
- ``pilot.json`` — the server's URL, the entry's name and site, what a pilot offers
  (cpus, memory, disk, gpus), the entry's extra attributes (as ClassAd expressions,
  which the pilot advertises), the node's minimums, the max walltime, where the site's
  own checks are, and the switch terms (:class:`PilotTerms`): the mode, the switch
  types the pilot may accept, where the switch is, the site's four effective answers
  and whether the pilot is single-user (docs/pilot.md, "pilot.json");
- ``ca.pem`` — the CA the agent trusts for the server;
- ``factory.pub`` — added by ``publish``: the key the manifest is signed with.

Nothing secret: the files go over plain HTTP and through caches. The pilot token comes
through the batch system (see :mod:`pilotage.factory.bootstrap`).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

import classad2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pilotage.factory import switchcheck, validate
from pilotage.factory.entries import Entry, SwitchMode
from pilotage.factory.manifest import Published, publish
from pilotage.factory.sitepolicy import Answers
from pilotage.frontend.switch import SWITCH_TYPES, site_types
from pilotage.pilot.zipapp import build_zipapp

#: The switch modes of a VO (seed 000 §3.2).
VO_SWITCH_MODES = ("required", "optional", "never")
#: What a single-user pilot's owner is when no name is given: its first job's owner.
FIRST_OWNER = "*"


@dataclass(frozen=True)
class PilotTerms:
    """How one entry's pilots treat the switch, for one frontend (hashable: a file set's key).

    ``switch`` is the pilot's mode (``single-user`` pilots have mode ``never`` and a
    ``single_user`` owner); ``types`` the switch types it may accept on the node, those
    the site allows, in the order of :data:`SWITCH_TYPES`; ``policy`` the site's effective
    answers for the frontend.
    """

    switch: str = "never"
    types: tuple[str, ...] = ()
    policy: Answers = field(default_factory=Answers)
    single_user: str | None = None

    def __post_init__(self) -> None:
        if self.switch not in VO_SWITCH_MODES:
            raise ValueError(f"switch mode {self.switch!r} is not one of {VO_SWITCH_MODES}")


def pilot_terms(entry: Entry, mode: str, frontend: str | None, today: datetime.date) -> PilotTerms:
    """The terms for pilots of ``entry`` that a frontend asked for in ``mode``.

    The frontend decided ``mode`` from the entry's ad (:func:`pilotage.frontend.switch.decide`);
    the factory, which holds the entry, adds what the node must check: the types the site
    allows and its answers. The VO's own preference among types is the frontend's to apply.
    """
    answers = entry.policy.answers(today, frontend)
    if mode == "single-user":
        return PilotTerms("never", (), answers, FIRST_OWNER)
    allowed = site_types(answers)
    types = tuple(t for t in SWITCH_TYPES if t in allowed) if mode != "never" else ()
    return PilotTerms(mode, types, answers)


@dataclass(frozen=True)
class PilotConfig:
    """The VO-side settings every entry's ``pilot.json`` carries."""

    server_url: str
    ca_pem: bytes
    #: The VO's switch terms for this entry, as the frontend decided them.
    terms: PilotTerms = field(default_factory=PilotTerms)
    #: Where the site's own checks are on the node (``PILOTAGE_SITE_CHECKS`` overrides).
    site_checks: str | None = None
    min_python: tuple[int, int] = (3, 11)


def classad_literal(value: str | int | float | bool) -> str:
    """``value`` as a ClassAd literal (strings quoted and escaped by ``classad2`` itself)."""
    return str(classad2.ClassAd({"v": value}).lookup("v"))


def pilot_json(entry: Entry, config: PilotConfig) -> bytes:
    """The ``pilot.json`` of one entry.

    Covered by the signed manifest like every pilot file, so the entry's attributes the
    pilot advertises (``attrs``) are the factory's, not whatever a cache served.
    """
    a = entry.attrs
    document = {
        "version": 1,
        "server_url": config.server_url,
        "entry": entry.name,
        "site": a.site,
        "offer": {
            "cpus": a.cpus,
            "memory_mb": a.memory_mb,
            "disk_mb": a.disk_mb,
            "gpus": a.gpus,
        },
        # A node with less than half of what the entry promises is not worth a pilot.
        "require": {
            "python": list(config.min_python),
            "cpus": 1,
            "memory_mb": a.memory_mb // 2,
            "disk_mb": a.disk_mb // 2,
        },
        "attrs": {name: classad_literal(value) for name, value in sorted(a.extra.items())},
        "max_walltime_s": a.max_walltime_s,
        "site_checks": config.site_checks,
        "switch": config.terms.switch,
        "switch_types": list(config.terms.types),
        "switch_path": a.switch_path,
        "switch_sudo": a.switch_sudo,
        "switch_installed": None if a.switch is SwitchMode.NONE else a.switch.value,
        "policy": config.terms.policy.as_dict(),
        "single_user": config.terms.single_user,
    }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def entry_files(entry: Entry, config: PilotConfig, agent: bytes) -> dict[str, bytes]:
    """The file set of one entry (without ``factory.pub``, which ``publish`` adds)."""
    return {
        "agent.pyz": agent,
        "validate.py": Path(validate.__file__).read_bytes(),
        "switchcheck.py": Path(switchcheck.__file__).read_bytes(),
        "pilot.json": pilot_json(entry, config),
        "ca.pem": config.ca_pem,
    }


def publish_entries(
    root: Path, entries: list[Entry], config: PilotConfig, key: Ed25519PrivateKey
) -> dict[str, Published]:
    """Build the agent once and publish every entry's set; by entry name."""
    root.mkdir(parents=True, exist_ok=True)
    agent = build_zipapp(root / "agent.pyz").read_bytes()
    return {e.name: publish(root, entry_files(e, config, agent), key) for e in entries}
