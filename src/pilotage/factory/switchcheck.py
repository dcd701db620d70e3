"""The switch's validation on the node: the work path and the two tests (seed 000 §3.2, §4.3).

Served to pilots as a pilot file next to ``validate.py``, which loads it after the
manifest's signature is checked; standard library only, like ``validate.py``. A site
administrator may also run it alone, as the pilot account::

    python3 -I switchcheck.py PILOT_JSON WORKDIR TOKEN_FILE

which prints the outcome as JSON and exits 0 when both tests passed.

1. **Locate** the switch: ``PILOTAGE_SWITCH`` (the node's word), else ``switch_path`` from
   ``pilot.json`` (the entry's), else ``pilotage-exec`` on ``PATH``.
2. **Open the work path** (§4.3): the mapped account must search every directory down to
   what it runs, so each directory from ``/`` to the work directory that others cannot
   search gets ``o+x`` if the pilot owns it; the others are named in the outcome.
3. **Test 1**: ``sh -c 'id && echo "Hello World"'`` through the switch — catches site
   wrappers that mangle arguments. **Test 2**: a script the pilot writes in the work
   directory (mode 0755) — catches directories the mapped account cannot search. Each
   passes when the switch exits 0 *and* the last line printed is ``Hello World``.
4. **Learn the switch's type** without asking the switch: a uid other than the pilot's
   in test 1's ``id`` is ``setuid``; the pilot's uid with another user namespace
   (``/proc/self/uid_map`` in test 2 differs from the pilot's) is ``namespace``; else
   ``log-only``.

Both tests run with the pilot's own credential (its token file) as user and pilot
credential, by the switch's calling convention (docs/switch.md, "Calling it"): the
credentials by environment, the status line on a pipe (``PILOTAGE_EXEC_STATUS_FD``),
through ``sudo -n -C N`` so sudo passes that descriptor on. Nothing secret is in argv.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HELLO = "Hello World"
TEST1 = ["sh", "-c", 'id && echo "Hello World"']
TEST2_NAME = "pilotage-switch-test2.sh"
TEST2_SCRIPT = (
    "#!/bin/sh\n"
    "# pilotage: the switch's second validation test (seed 000 section 3.2)\n"
    'echo "uid=$(id -u)"\n'
    "echo \"uid_map=$(head -n 1 /proc/self/uid_map 2>/dev/null | tr -s ' ')\"\n"
    'echo "Hello World"\n'
)
#: The descriptor the agent gives the switch its status pipe on (``pilot/switched.py``).
AGENT_STATUS_FD = 3
_UID = re.compile(r"\buid=(\d+)")


def locate(config: dict[str, Any]) -> str | None:
    """The switch's path (step 1), or None when there is none to be found."""
    named = os.environ.get("PILOTAGE_SWITCH") or config.get("switch_path")
    if named:
        return str(named) if os.path.isfile(named) and os.access(named, os.X_OK) else None
    return shutil.which("pilotage-exec")


def open_work_path(workdir: Path) -> list[str]:
    """Make ``workdir`` and every directory above it searchable by others where the pilot
    owns it; the directories it could not open, top first (step 2)."""
    blocked = []
    me = os.geteuid()
    for directory in reversed([workdir, *workdir.parents]):
        mode = os.stat(directory).st_mode
        if mode & 0o001:
            continue
        if os.stat(directory).st_uid == me:
            os.chmod(directory, (mode & 0o7777) | 0o001)
        else:
            blocked.append(str(directory))
    return blocked


def _read_status(fd: int, deadline: float) -> str:
    """The status line from the switch (empty when it wrote none)."""
    data = b""
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def run_test(
    name: str, switch: str, sudo: bool, command: list[str], token_file: Path, timeout_s: float
) -> dict[str, Any]:
    """Run ``command`` through the switch with the pilot's credential; its outcome."""
    read_end, write_end = os.pipe()
    prefix = ["sudo", "-n", "-C", str(write_end + 1), switch] if sudo else [switch]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PILOTAGE_EXEC_USER_CREDENTIAL": str(token_file),
        "PILOTAGE_EXEC_PILOT_CREDENTIAL": str(token_file),
        "PILOTAGE_EXEC_STATUS_FD": str(write_end),
    }
    deadline = time.monotonic() + timeout_s
    try:
        done = subprocess.run(
            [*prefix, "--", *command],
            env=env,
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd="/",
            check=False,
        )
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        code, out, err = 202, "", f"the switch did not finish within {timeout_s:.0f} s"
    except OSError as exc:
        code, out, err = 202, "", f"the switch cannot be run: {exc.strerror}"
    finally:
        os.close(write_end)
    try:
        status = _read_status(read_end, deadline + 1)
    finally:
        os.close(read_end)
    lines = [line for line in out.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    message = ""
    code_word, _, rest = status.partition(" ")
    if code_word.isdigit() and code_word != "0":
        message = rest
    elif code != 0:
        said = [line for line in err.splitlines() if line.strip()]
        message = said[-1].removeprefix("pilotage-exec: ") if said else ""
    ok = code == 0 and last == HELLO
    if not message and not ok:
        message = f"the last line printed was {last!r}, not {HELLO!r}"
    return {"test": name, "ok": ok, "exit_code": code, "message": message, "output": out[-2000:]}


def switch_type(test1: dict[str, Any], test2: dict[str, Any]) -> str | None:
    """setuid, namespace or log-only from what the tests printed (step 4); None if unknown."""
    uid = None
    for test in (test1, test2):
        found = _UID.search(test["output"])
        if found and test["exit_code"] == 0:
            uid = int(found.group(1))
            break
    if uid is None:
        return None
    if uid != os.getuid():
        return "setuid"
    inside = re.search(r"^uid_map=(.*)$", test2["output"], re.MULTILINE)
    try:
        mine = " ".join(Path("/proc/self/uid_map").read_text().split("\n")[0].split())
    except OSError:
        mine = ""
    if inside and " ".join(inside.group(1).split()) != mine:
        return "namespace"
    return "log-only"


def check(config: dict[str, Any], workdir: Path, token_file: Path) -> dict[str, Any]:
    """Steps 1-4. The outcome: ``ok``, ``switch`` (type or ``none``), ``command`` (for the
    agent's ``--switch``), ``tests``, and when not ok ``failure`` (test, exit_code, message,
    and ``directory`` when the work path is to blame)."""
    timeout_s = float(config.get("switch_timeout_s", 60))
    path = locate(config)
    if path is None:
        where = os.environ.get("PILOTAGE_SWITCH") or config.get("switch_path") or "PATH"
        failure = {"test": "locate", "exit_code": -1, "message": f"no switch found ({where})"}
        return {"ok": False, "switch": "none", "command": None, "tests": {}, "failure": failure}
    workdir.mkdir(mode=0o711, parents=True, exist_ok=True)
    blocked = open_work_path(workdir)
    script = workdir / TEST2_NAME
    script.unlink(missing_ok=True)
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "w") as out:
        out.write(TEST2_SCRIPT)
    # Whatever the umask: the mapped account must read and run it (seed 000 §3.2).
    os.chmod(script, 0o755)  # noqa: S103
    sudo = bool(config.get("switch_sudo", True))
    try:
        test1 = run_test("test1", path, sudo, TEST1, token_file, timeout_s)
        test2 = run_test("test2", path, sudo, [str(script)], token_file, timeout_s)
    finally:
        script.unlink(missing_ok=True)
    kind = switch_type(test1, test2)
    tests = {"test1": test1["ok"], "test2": test2["ok"]}
    command = shlex.join(["sudo", "-n", "-C", str(AGENT_STATUS_FD + 2), path] if sudo else [path])
    outcome: dict[str, Any] = {"ok": True, "switch": kind or "none", "command": command}
    outcome["tests"] = tests
    for test in (test1, test2):
        if not test["ok"]:
            failure = {k: test[k] for k in ("test", "exit_code", "message")}
            if blocked:
                failure["directory"] = blocked[0]
            outcome.update(ok=False, failure=failure)
            return outcome
    types = config.get("switch_types") or []
    if kind not in types:
        message = f"the switch runs in {kind} mode; this site and VO accept {types or 'none'}"
        outcome.update(ok=False, failure={"test": "type", "exit_code": 0, "message": message})
    return outcome


def main(argv: list[str]) -> int:
    """``switchcheck.py PILOT_JSON WORKDIR TOKEN_FILE``: the outcome as JSON."""
    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    outcome = check(config, Path(argv[1]).absolute(), Path(argv[2]).absolute())
    print(json.dumps(outcome, indent=2, sort_keys=True))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
