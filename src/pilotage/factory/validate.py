"""The pilot's validation step, run by the bootstrap right after it has found Python.

Served to pilots as a pilot file and run as ``python3 -I validate.py DIR``: standard
library only, and it imports nothing else of pilotage (it runs before the agent, on a
bare node). ``DIR`` holds the files the bootstrap fetched and checked against the
manifest. In order:

1. the manifest's Ed25519 signature, by the factory key in ``factory.pub``;
2. Python's version, the node's cpus, memory and free disk, a writable scratch
   directory — against the minimums in ``pilot.json``;
3. the switch, by the pilot's mode in ``pilot.json`` (seed 000 §3.2): ``never`` does not
   look for it; otherwise ``switchcheck.py`` (a pilot file, :mod:`.switchcheck`) opens
   the work path and runs the two tests. ``required`` and a failure: refused, with the
   test, its exit code and the switch's message. ``optional`` and a failure: the agent
   runs jobs as the pilot account, and the slot ad says so. Passed: the agent gets
   ``--switch``. The slot ad gets ``PilotageSwitchMode``, ``PilotageSwitch``,
   ``PilotageSwitchTest1``, ``PilotageSwitchTest2``, ``PilotageSingleUser`` and the
   site's effective answers (``PolicySetuid``, ...);
4. the site administrator's scripts: every executable in the directory named by
   ``PILOTAGE_SITE_CHECKS`` (or ``site_checks`` in ``pilot.json``), in name order; each
   prints ``Key=ClassAdExpr`` lines that become slot attributes, and a non-zero exit
   fails validation;
5. the pilot's lifetime: the entry's max walltime and the token's expiry, less a margin.

It prints one line ``pilotage-validation: {json}`` (the factory reads it from the
pilot's log and forwards it to the collector) and writes ``validation.json``. Exit 0:
valid, and ``agent-args`` holds the agent's extra flags, one per line; exit 1: refused,
with a structured ``reason``.

The pilot's attributes (``--attr``), lowest precedence first: the entry's extra
attributes from ``pilot.json`` (signed, so they are the factory's), the site's checks
(which know the node), and ``EntryName``, always the entry's (the server refuses a
pilot whose token was minted for another entry).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# --- Ed25519 verification (RFC 8032), integers only ----------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_I = pow(2, (_P - 1) // 4, _P)  # a square root of -1

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x=X/Z, y=Y/Z, xy=T/Z


def _add(a: Point, b: Point) -> Point:
    """Sum of two points of the twisted Edwards curve -x^2 + y^2 = 1 + d x^2 y^2."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    e1 = (y1 - x1) * (y2 - x2) % _P
    e2 = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    zz = 2 * z1 * z2 % _P
    e, f, g, h = e2 - e1, zz - c, zz + c, e2 + e1
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _times(k: int, point: Point) -> Point:
    """``k`` times ``point``, by doubling and adding."""
    result: Point = (0, 1, 1, 0)
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def _decode(data: bytes) -> Point | None:
    """The point encoded in 32 bytes, or None when they encode none."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _I % _P
    if (x * x - x2) % _P or (x == 0 and sign):
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


_B = _decode((4 * pow(5, _P - 2, _P) % _P).to_bytes(32, "little"))


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``message``."""
    a = _decode(public)
    if a is None or _B is None or len(signature) != 64:
        return False
    r = _decode(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if r is None or s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _L
    left = _times(s, _B)
    right = _add(r, _times(h, a))
    # Projective equality: x1/z1 == x2/z2 and y1/z1 == y2/z2.
    return (left[0] * right[2] - right[0] * left[2]) % _P == 0 and (
        left[1] * right[2] - right[1] * left[2]
    ) % _P == 0


# --- the checks ----------------------------------------------------------------------


class Refused(Exception):
    """Validation failed; ``reason`` is a short machine word, the message a sentence."""

    def __init__(self, reason: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.details = details


def check_signature(files: Path) -> None:
    """The manifest's signature, by the factory key the manifest itself lists."""
    key_text = (files / "factory.pub").read_text(encoding="ascii")
    body = "".join(line for line in key_text.splitlines() if "-----" not in line)
    der = base64.b64decode(body)
    public = der[-32:]  # SubjectPublicKeyInfo for Ed25519 ends with the raw 32-byte key
    signature = base64.b64decode((files / "manifest.sig").read_text(encoding="ascii").strip())
    if not ed25519_verify(public, (files / "manifest").read_bytes(), signature):
        raise Refused("bad_signature", "the manifest's signature does not verify")


def check_node(config: dict[str, Any], scratch: Path) -> dict[str, int]:
    """Python, cpus, memory, disk and scratch against the minimums; the node's amounts."""
    need = config.get("require", {})
    version = tuple(need.get("python", [3, 11]))
    if sys.version_info[: len(version)] < version:
        have = ".".join(map(str, sys.version_info[:3]))
        raise Refused("python", f"Python {have} is older than {'.'.join(map(str, version))}")
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    memory_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    try:
        probe = scratch / f".pilotage-probe-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise Refused("scratch", f"scratch {scratch} is not writable: {exc.strerror}") from None
    disk_mb = shutil.disk_usage(scratch).free // 2**20
    found = {"cpus": cpus, "memory_mb": memory_mb, "disk_mb": disk_mb}
    for key, amount in found.items():
        if amount < int(need.get(key, 0)):
            raise Refused(key, f"{key} {amount} is below the entry's {need[key]}", have=amount)
    return found


def _literal(value: object) -> str:
    """A ClassAd literal of a string or a boolean."""
    return ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)


def _load_switchcheck(files: Path) -> Any:
    """The pilot file ``switchcheck.py`` (checked against the signed manifest) as a module."""
    spec = importlib.util.spec_from_file_location("switchcheck", files / "switchcheck.py")
    if spec is None or spec.loader is None:
        raise Refused("pilot_config", "switchcheck.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_switch(
    config: dict[str, Any], files: Path, scratch: Path, token_file: Path
) -> dict[str, Any]:
    """The switch by the pilot's mode (step 3): slot attributes, and the agent's ``--switch``
    command (``switch_command``) when the tests passed."""
    mode = config.get("switch", "never")
    if mode not in ("required", "optional", "never"):
        raise Refused("pilot_config", f"pilot.json: switch mode {mode!r} is unknown")
    single_user = config.get("single_user")
    attrs = {
        "PilotageSwitchMode": _literal(mode),
        "PilotageSwitch": _literal("none"),
        "PilotageSwitchTest1": "false",
        "PilotageSwitchTest2": "false",
        "PilotageSingleUser": _literal(single_user is not None),
    }
    policy = config.get("policy") or {}
    for question, name in _POLICY_ATTRS.items():
        attrs[name] = _literal(str(policy.get(question, "no")))
    result: dict[str, Any] = {"attrs": attrs, "switch_command": None}
    if mode == "never":
        return result
    outcome = _load_switchcheck(files).check(config, scratch / "agent", token_file)
    attrs["PilotageSwitchTest1"] = _literal(bool(outcome["tests"].get("test1")))
    attrs["PilotageSwitchTest2"] = _literal(bool(outcome["tests"].get("test2")))
    if outcome["ok"]:
        attrs["PilotageSwitch"] = _literal(outcome["switch"])
        result["switch_command"] = outcome["command"]
        return result
    failure = outcome["failure"]
    where = f" (directory {failure['directory']})" if "directory" in failure else ""
    sentence = (
        f"switch {failure['test']} failed with exit code {failure['exit_code']}: "
        f"{failure['message']}{where}"
    )
    if mode == "required":
        raise Refused(
            "switch",
            sentence,
            test=failure["test"],
            exit_code=failure["exit_code"],
            switch_message=failure["message"],
            directory=failure.get("directory"),
            switch=outcome["switch"],
        )
    # Optional: the pilot goes on, running jobs as itself, and says why in its ad.
    attrs["PilotageSwitchProblem"] = _literal(sentence[:500])
    return result


_POLICY_ATTRS = {
    "multi_user": "PolicyMultiUser",
    "setuid": "PolicySetuid",
    "log_only": "PolicyLogOnly",
    "bypass_on_error": "PolicyBypassOnError",
}

_ATTR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.+)$")


def run_site_checks(directory: Path | None, timeout_s: float = 60) -> dict[str, str]:
    """Run the site administrator's executables; their ``Key=Expr`` lines, merged."""
    attrs: dict[str, str] = {}
    if directory is None or not directory.is_dir():
        return attrs
    for script in sorted(directory.iterdir()):
        if not script.is_file() or not os.access(script, os.X_OK):
            continue
        try:
            done = subprocess.run(
                [str(script)], capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise Refused(
                "site_check", f"site check {script.name} timed out", script=script.name
            ) from None
        if done.returncode != 0:
            raise Refused(
                "site_check",
                f"site check {script.name} exited {done.returncode}: {done.stderr.strip()[:200]}",
                script=script.name,
            )
        for line in done.stdout.splitlines():
            found = _ATTR.match(line.strip())
            if found:
                attrs[found.group(1)] = found.group(2).strip()
    return attrs


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: the server verifies it; this only plans)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def lifetime_s(config: dict[str, Any], token: str, now: float) -> float:
    """The entry's max walltime and the token's validity, whichever ends first, less 5%."""
    walltime = float(config.get("max_walltime_s", 86400))
    exp = token_expiry(token)
    left = walltime if exp is None else min(walltime, exp - now)
    if left <= 120:
        raise Refused("lifetime", f"only {left:.0f} s of lifetime left (credential or walltime)")
    return left * 0.95


def validate(files: Path, scratch: Path, token_file: Path) -> dict[str, Any]:
    """Every check; the result to report (raises :class:`Refused`)."""
    token = token_file.read_text(encoding="utf-8").strip()
    check_signature(files)
    config = json.loads((files / "pilot.json").read_text(encoding="utf-8"))
    entry_attrs(config)  # refused here, before the agent's arguments are written
    node = check_node(config, scratch)
    switch = check_switch(config, files, scratch, token_file)
    attrs = switch["attrs"]
    site_dir = os.environ.get("PILOTAGE_SITE_CHECKS") or config.get("site_checks")
    attrs.update(run_site_checks(Path(site_dir) if site_dir else None))
    return {
        "node": node,
        "attrs": attrs,
        "lifetime_s": lifetime_s(config, token, time.time()),
        "switch_command": switch["switch_command"],
    }


def agent_args(files: Path, scratch: Path, token_file: Path, result: dict[str, Any]) -> list[str]:
    """The agent's command line: where the server is, what to offer, how long to live."""
    config = json.loads((files / "pilot.json").read_text(encoding="utf-8"))
    args = [
        f"--server={config['server_url']}",
        f"--ca={files / 'ca.pem'}",
        f"--token={token_file}",
        f"--workdir={scratch / 'agent'}",
        f"--site={config.get('site', 'unknown')}",
        f"--lifetime={result['lifetime_s']:.0f}",
    ]
    offer = config.get("offer", {})
    for key, flag in (("cpus", "--cpus"), ("memory_mb", "--memory"), ("disk_mb", "--disk")):
        if key in offer:
            args.append(f"{flag}={min(int(offer[key]), result['node'][key])}")
    if "gpus" in offer:
        args.append(f"--gpus={int(offer['gpus'])}")
    attrs = entry_attrs(config)
    attrs.update(result["attrs"])
    if "entry" in config:
        attrs["EntryName"] = json.dumps(config["entry"])
    args += [f"--attr={k}={v}" for k, v in sorted(attrs.items())]
    if result.get("switch_command"):
        args.append(f"--switch={result['switch_command']}")
    single_user = config.get("single_user")
    if single_user is not None:
        args.append(f"--single-user={single_user}")
    bypass = (config.get("policy") or {}).get("bypass_on_error", "no")
    args.append(f"--bypass-on-error={'yes' if bypass == 'yes' else 'no'}")
    return args


def entry_attrs(config: dict[str, Any]) -> dict[str, str]:
    """The entry's extra attributes from ``pilot.json``: name -> ClassAd expression."""
    found = config.get("attrs", {})
    if not isinstance(found, dict):
        raise Refused("pilot_config", "pilot.json: attrs is not an object")
    for name, expr in found.items():
        # One argument per line in agent-args: an expression may not span lines.
        if not _ATTR.match(f"{name}={expr}") or "\n" in str(expr):
            raise Refused("pilot_config", f"pilot.json: attribute {name!r} is not Key=Expr")
    return dict(found)


def main(argv: list[str]) -> int:
    """``validate.py FILES_DIR SCRATCH TOKEN_FILE``; see the module docstring."""
    files, scratch, token_file = Path(argv[0]), Path(argv[1]), Path(argv[2])
    try:
        result = validate(files, scratch, token_file)
    except Refused as exc:
        report = {"ok": False, "reason": exc.reason, "message": str(exc), **exc.details}
    except (OSError, ValueError, KeyError) as exc:
        report = {"ok": False, "reason": "validation_error", "message": str(exc)}
    else:
        report = {"ok": True, **result}
        args = agent_args(files, scratch, token_file, result)
        (files / "agent-args").write_text("".join(a + "\n" for a in args), encoding="utf-8")
    (files / "validation.json").write_text(json.dumps(report), encoding="utf-8")
    print("pilotage-validation: " + json.dumps(report, sort_keys=True), flush=True)
    if not report["ok"]:
        print(f"pilotage-validation: refused: {report['message']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
