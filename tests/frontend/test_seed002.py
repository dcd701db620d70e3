"""Seed 002's whole table: the frontend's decision for every site and VO mode.

``tests/data/seed002_entries.toml`` holds the 60 rows as 63 entries (three sites answer
per cluster). ``EXPECTED`` was derived by hand from the rules in
``pilotage.frontend.switch`` and ``pilotage.factory.sitepolicy``, for a VO (frontend
``cms``) that accepts setuid and then log-only, on 2026-06-01: one column per VO mode,
``required`` / ``optional`` / ``never``. A label is ``none`` (no pilots), ``single-user``,
``never``, or a pilot mode with the switch types the pilot may accept.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from pilotage.factory.entries import load_config
from pilotage.frontend.switch import VoSwitchMode, switch_for

TABLE = Path(__file__).parents[1] / "data" / "seed002_entries.toml"
DAY = datetime.date(2026, 6, 1)
ACCEPTED = ("setuid", "log-only")

NO_MUPJ = ("none", "single-user", "single-user")
OPEN = ("required:setuid,log-only", "optional:setuid,log-only", "never")
NO_BYPASS = ("required:setuid,log-only", "required:setuid,log-only", "single-user")
SETUID_ONLY = ("required:setuid", "required:setuid", "single-user")
LOG_ONLY_REQUIRED = ("required:log-only", "required:log-only", "single-user")

EXPECTED: dict[str, tuple[str, str, str]] = {
    "BE-BelGrid-UCL": NO_MUPJ,
    "CERN": NO_MUPJ,  # depends, not confirmed
    "CH-CSCS": NO_MUPJ,
    "DE-EGEE-ITWM": NO_MUPJ,  # "yes, with restrictions"
    "DE-T1-KIT": OPEN,
    "DE-T2-DESY": LOG_ONLY_REQUIRED,  # setuid no, bypass "not sure"
    "DE-T2-GSI": OPEN,
    "DE-T2-TUDresden": ("required:log-only", "optional:log-only", "never"),
    "DE-T2-Wuppertal": OPEN,
    "ES-T1-PIC": OPEN,
    "ES-T2-CIEMAT": ("required:setuid", "optional:setuid", "never"),
    "ES-T2-UB": OPEN,
    "ES-T2-USC": OPEN,
    "FR": NO_MUPJ,  # yes, provided ...
    "HU-Budapest": NO_MUPJ,
    "IT-T1-CNAF": NO_MUPJ,
    "IT-T2-INFN-BARI": LOG_ONLY_REQUIRED,  # setuid "if imposed", log-only require
    "IT-T2-INFN-CATANIA": ("none", "never", "never"),  # nothing installed, nothing required
    "IT-T2-INFN-CNAF-LHCB": NO_MUPJ,
    "IT-T2-INFN-FRASCATI": NO_MUPJ,
    "IT-T2-INFN-LNL": NO_BYPASS,
    "IT-T2-INFN-MILANO-ATLASC": NO_MUPJ,
    "IT-T2-INFN-NAPOLI-ATLAS": NO_MUPJ,
    "IT-T2-INFN-PISA": LOG_ONLY_REQUIRED,
    "IT-T2-INFN-ROMA1": NO_MUPJ,
    "IT-T2-INFN-ROMA1-CMS": LOG_ONLY_REQUIRED,
    "IT-T2-INFN-TORINO": ("none", "single-user", "single-user"),  # log-only and bypass unknown
    "NDGF": NO_MUPJ,
    "NL-RU-TR": LOG_ONLY_REQUIRED,
    "PT": NO_MUPJ,
    "RO-02-NIPNE": OPEN,
    "RO-07-NIPNE": OPEN,
    "UKI-LT2-Brunel": SETUID_ONLY,
    "UKI-LT2-IC": NO_MUPJ,
    "UKI-LT2-QMUL": NO_MUPJ,
    "UKI-LT2-RHUL": NO_MUPJ,
    "UKI-NORTHGRID-LANCS-HEP": NO_BYPASS,
    "UKI-NORTHGRID-LIV-HEP-local": NO_MUPJ,
    "UKI-NORTHGRID-LIV-HEP-central": NO_MUPJ,
    "UKI-NORTHGRID-MAN-HEP": OPEN,
    "UKI-NORTHGRID-SHEF-HEP": NO_BYPASS,
    "UKI-RAL-LCG2": SETUID_ONLY,
    "UKI-SCOTGRID-Durham": NO_BYPASS,
    "UKI-SCOTGRID-ECDF": OPEN,
    "UKI-SCOTGRID-GLASGOW": NO_BYPASS,
    "UKI-SOUTHGRID-BHAM-HEP-local": NO_BYPASS,
    "UKI-SOUTHGRID-BHAM-HEP-shared": ("none", "single-user", "single-user"),
    "UKI-SOUTHGRID-BRIS-HEP-local": NO_BYPASS,
    "UKI-SOUTHGRID-BRIS-HEP-shared": NO_MUPJ,
    "UKI-SOUTHGRID-CAM-HEP": NO_BYPASS,
    "UKI-SOUTHGRID-OX-HEP": NO_BYPASS,
    "UKI-SOUTHGRID-RALPP": SETUID_ONLY,
    "USATLAS": SETUID_ONLY,  # setuid require, bypass "yes, for now"
    "USCMS-T1-FNAL": SETUID_ONLY,
    "USCMS-T2-BR-SPRACE": SETUID_ONLY,
    "USCMS-T2-Caltech": NO_MUPJ,  # yes, provided the job ad is updated
    "USCMS-T2-Florida": SETUID_ONLY,
    "USCMS-T2-MIT": NO_BYPASS,  # bypass "-"
    "USCMS-T2-Nebraska": SETUID_ONLY,
    "USCMS-T2-Purdue": NO_BYPASS,  # bypass "not sure"
    "USCMS-T2-TR-METU": LOG_ONLY_REQUIRED,
    "USCMS-T2-UCSD": OPEN,
    "USCMS-T2-Wisconsin": ("none", "single-user", "single-user"),
}

MODES = (VoSwitchMode.REQUIRED, VoSwitchMode.OPTIONAL, VoSwitchMode.NEVER)


def _ads() -> dict[str, dict[str, object]]:
    return {e.name: e.ad(DAY) for e in load_config(TABLE).entry}


def test_the_table_has_every_row() -> None:
    ads = _ads()
    assert set(ads) == set(EXPECTED)
    rows = {name.removesuffix("-local").removesuffix("-central").removesuffix("-shared")
            for name in ads}  # fmt: skip
    assert len(rows) == 60


@pytest.mark.parametrize("site", sorted(EXPECTED))
def test_the_frontend_decides_every_site_as_derived_by_hand(site: str) -> None:
    ad = _ads()[site]
    got = tuple(switch_for(mode, ad, ACCEPTED, "cms").label() for mode in MODES)
    assert got == EXPECTED[site]


def test_no_optional_vo_ever_falls_back_where_the_site_forbids_it() -> None:
    for site, ad in _ads().items():
        decision = switch_for(VoSwitchMode.OPTIONAL, ad, ACCEPTED, "cms")
        demands = "require" in (ad["PolicySetuid"], ad["PolicyLogOnly"])
        if demands or ad["PolicyBypassOnError"] == "no":
            assert decision.label() not in ("never",) and not decision.label().startswith(
                "optional"
            ), site
        if ad["PolicySetuid"] == "require" and decision.types:
            assert decision.types == ("setuid",), site


def test_torino_answers_alice_differently() -> None:
    ad = _ads()["IT-T2-INFN-TORINO"]
    got = tuple(switch_for(mode, ad, ACCEPTED, "alice").label() for mode in MODES)
    assert got == ("required:log-only", "optional:log-only", "never")


def test_a_setuid_only_vo_is_honoured() -> None:
    ads = _ads()
    assert switch_for(VoSwitchMode.REQUIRED, ads["DE-T2-DESY"], ("setuid",), "cms").mode is None
    assert switch_for(VoSwitchMode.OPTIONAL, ads["DE-T1-KIT"], ("setuid",), "cms").label() == (
        "optional:setuid"
    )


def test_cern_s_change_takes_effect_on_its_date() -> None:
    cern = next(e for e in load_config(TABLE).entry if e.name == "CERN")
    assert cern.ad(datetime.date(2010, 12, 31))["PolicySetuid"] == "allow"
    assert cern.ad(DAY)["PolicySetuid"] == "require"
