"""Where a process's time went, from py-spy's raw stacks (``--format raw``, as
``bench/e2e.py --profile DIR`` and ``bench/dispatch.py --profile DIR`` write them).

Two tables per file (or per group of files given together): the share of samples by the
library of the innermost frame (its "self" time: ``sqlalchemy``, ``psycopg``, ``ssl``,
a ``pilotage`` module...), and the share by the innermost frame of our own code (a
``pilotage`` function, with the library calls it made: what that step of ours costs).
The agent runs from its zipapp, where py-spy names files without their package: a file
named as one of the package's modules counts as ours.

    .venv/bin/python bench/spysummary.py /tmp/prof/postgres-1/server-*.txt
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

import pilotage

#: Basenames of the package's modules (the zipapp's frames carry no package path).
OURS = {p.name for p in Path(pilotage.__file__).parent.rglob("*.py")} - {
    "__init__.py", "__main__.py", "client.py", "config.py",
}  # fmt: skip
OURS |= {"client.py", "config.py", "__main__.py"} & {
    p.name for p in (Path(pilotage.__file__).parent / "pilot").glob("*.py")
}
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")
#: Libraries named by their top package; pilotage by module (pilotage/api/x.py: api.x).
STDLIB_GROUPS = {
    "ssl.py": "ssl",
    "selectors.py": "selectors",
    "socket.py": "socket",
    "threading.py": "threading",
    "json": "json",
    "subprocess.py": "subprocess",
    "logging": "logging",
}


def ours(path: str) -> bool:
    return path.startswith("pilotage/") or ("/" not in path and path in OURS)


def library(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "pilotage" and len(parts) > 1:
        return "pilotage." + ".".join(p.removesuffix(".py") for p in parts[1:3])
    if ours(path):
        return "pilotage.pilot." + path.removesuffix(".py")
    if len(parts) > 1 or parts[0] in STDLIB_GROUPS:
        return STDLIB_GROUPS.get(parts[0], parts[0].removesuffix(".py"))
    return parts[0].removesuffix(".py") or "?"


def read(paths: list[Path]) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            text, _, count = line.rpartition(" ")
            if not text or not count.isdigit():
                continue
            frames = []
            for frame in text.split(";"):
                match = FRAME.match(frame)
                frames.append((match["func"], match["file"]) if match else (frame, "?"))
            stacks.append((frames, int(count)))
    return stacks


def summarise(stacks: list[tuple[list[tuple[str, str]], int]], top: int) -> str:
    total = sum(n for _, n in stacks) or 1
    self_time: Counter[str] = Counter()
    charged: Counter[str] = Counter()
    for frames, n in stacks:
        self_time[library(frames[-1][1])] += n
        mine = [f"{file.removesuffix('.py')}:{func}" for func, file in frames if ours(file)]
        charged[mine[-1] if mine else "(no frame of ours)"] += n
    out = [f"{total} samples", "", "| innermost frame's library | share |", "|---|---|"]
    out += [f"| {k} | {100 * v / total:.1f} % |" for k, v in self_time.most_common(top)]
    out += ["", "| innermost function of ours (with what it called) | share |", "|---|---|"]
    out += [f"| {k} | {100 * v / total:.1f} % |" for k, v in charged.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="py-spy raw files (one process)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(summarise(read(args.files), args.top))


if __name__ == "__main__":
    main()
