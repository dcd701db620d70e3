"""The switch's own small replacements for modules it no longer imports at start-up.

Each is checked against the module it replaces: the audit line against ``json.dumps``, the
environment's allow-list against ``fnmatch``, signal names against ``signal.Signals``, the
family key against its regular expression's intent (a trailing newline, which ``$`` let
through, is refused).
"""

from __future__ import annotations

import fnmatch
import json
import signal

import pytest

from pilotage.switch.audit import to_json
from pilotage.switch.environment import NEVER_NAMES, NEVER_PREFIXES, allowed
from pilotage.switch.family import check_key, parse_signal
from pilotage.switch.refusals import ClientError

#: What an argv or a DN may hold: quotes, backslashes, every control character, DEL,
#: U+2028, accents, an astral character, and the lone surrogates of undecodable bytes.
HOSTILE = '"\\/' + "".join(map(chr, range(32))) + "\x7f\u2028é€\U0001f600\udcff\ud800"


def test_the_audit_line_is_what_json_dumps_writes() -> None:
    record = {
        "command": ["/bin/sh", "-c", HOSTILE, ""], "user": HOSTILE, "pid": 4242,
        "exit": -1, "wall_s": 3.4, "cpu_user_s": 0.1 + 0.2, "max_rss_kb": 10**20,
        "linger": True, "cut": False, "groups": [], "pilot": None, "ratio": float("nan"),
        "far": float("inf"), "near": -float("inf"), "nested": {"a": [1, [2.5, {}]]},
    }  # fmt: skip
    assert to_json(record) == json.dumps(record)
    assert json.loads(to_json(record))["user"] == HOSTILE
    for value in (b"bytes", {1, 2}, {1: "key not a string"}, object()):
        with pytest.raises(TypeError):
            to_json(value)


@pytest.mark.parametrize("pattern", ["LANG", "LC_*", "PILOTAGE_JOB_*", "*", "", "L?NG",
                                     "LC_[AC]*", "A*B", "[*", "]*", "LC_"])  # fmt: skip
def test_the_allow_list_matches_as_fnmatch_does(pattern: str) -> None:
    names = ["LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_", "lc_all", "L", "PILOTAGE_JOB_X",
             "AB", "AXB", "[A", "]B", "A*B", "X"]  # fmt: skip
    for name in names:
        assert not name.startswith(NEVER_PREFIXES) and name not in NEVER_NAMES
        assert allowed(name, (pattern,)) == fnmatch.fnmatchcase(name, pattern), (name, pattern)


def test_family_keys() -> None:
    for good in ("c-3q2X_fT0", "1.0", "a" * 128, "A"):
        assert check_key(good) == good
    for bad in ("", "key\n", ".hidden", "-x", "a/b", "../1.0", "a" * 129, "é", "a b", "a\0"):
        with pytest.raises(ClientError, match="is not 1-128 letters, digits"):
            check_key(bad)


def test_signals_are_named_as_the_signal_module_names_them() -> None:
    words = [name for name in dir(signal) if name.startswith("SIG")]
    words += [word.removeprefix("SIG").lower() for word in words] + [str(n) for n in range(70)]
    for word in [*words, "", "SIG", "KILLS", "-9", "9x", "SIG_DFL", "DFL", "CTRL_C_EVENT"]:
        try:
            text = word.upper()
            number = int(text) if text.isdigit() else None
            member = signal.Signals(number) if number is not None else signal.Signals[
                text if text.startswith("SIG") else "SIG" + text
            ]  # fmt: skip
        except (KeyError, ValueError):
            with pytest.raises(ClientError, match="is not a signal name or number"):
                parse_signal(word)
        else:
            assert parse_signal(word) == (member.value, member.name), word
