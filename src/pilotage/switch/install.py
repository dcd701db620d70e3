"""Install ``pilotage-exec`` for a site: a root-owned copy of the switch and a wrapper.

``python -m pilotage.switch.install --prefix DIR [--config PATH] [--state-dir DIR]
[--sudoers FILE --invoker ACCOUNT]`` writes:

- ``DIR/lib/pilotage/switch/``: this package's modules, with the two constants of
  ``paths.py`` rewritten (the only change), so the installed switch reads *that* config
  and no caller can point it elsewhere: not by environment, not by flag; beside it
  ``DIR/lib/pilotage/x509/``, the X.509 library it uses, unchanged, and an empty
  ``DIR/lib/pilotage/__init__.py``;
- ``DIR/bin/pilotage-exec``: a wrapper run by ``python -IS`` (``--python`` picks which; no
  ``PYTHON*`` variables, no site directories) that puts only that copy and
  ``cryptography`` on ``sys.path``;
- with ``--sudoers``, the sudo rule: ``ACCOUNT ALL=(root) NOPASSWD: DIR/bin/pilotage-exec``
  plus the ``env_keep`` and ``closefrom_override`` the switch's interface needs.

Everything is owned by root, mode 0755 (0440 for the sudo rule). The prefix and every
directory above it must be root-owned and not writable by others, or the copy could be
swapped after installation; the installer refuses such a prefix.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

PACKAGE = "pilotage"
KEPT_VARIABLES = (
    "PILOTAGE_EXEC_USER_CREDENTIAL PILOTAGE_EXEC_PILOT_CREDENTIAL PILOTAGE_EXEC_TARGET_DIR "
    "PILOTAGE_EXEC_JOB_ID PILOTAGE_EXEC_STATUS_FD PILOTAGE_JOB_*"
)


def check_safe_directory(path: Path) -> None:
    """Refuse ``path`` unless it and each parent are root-owned and closed to writers."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            if st.st_mode & stat.S_ISVTX and directory != path:
                continue  # /tmp-like: others may add entries, not replace ours
            raise SystemExit(f"refusing to install under {directory}: not root-owned or writable")


def rewrite_paths(text: str, config: str, state_dir: str) -> str:
    """``paths.py`` with its two constants set to ``config`` and ``state_dir``."""
    text, n_config = re.subn(r'(?m)^CONFIG_PATH = ".*"$', f"CONFIG_PATH = {config!r}", text)
    text, n_state = re.subn(r'(?m)^STATE_DIR = ".*"$', f"STATE_DIR = {state_dir!r}", text)
    if (n_config, n_state) != (1, 1):
        raise SystemExit("paths.py does not have the expected two constants")
    return text.replace("'", '"')


def install(prefix: Path, config: str, state_dir: str, python: str = sys.executable) -> Path:
    """Write the copy and the wrapper under ``prefix``; return the wrapper's path.

    ``python`` runs the wrapper: any CPython of this one's minor version can, as long as
    every account that calls the switch may execute it (namespace mode runs unprivileged).
    """
    import cryptography

    if os.geteuid() != 0:
        raise SystemExit("run the installer as root: the installed switch must be root-owned")
    prefix = prefix.resolve()
    for sub in ("bin", "lib"):
        (prefix / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    check_safe_directory(prefix)
    source = Path(__file__).parent
    target = prefix / "lib" / PACKAGE
    staging = prefix / "lib" / f".{PACKAGE}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)
    (staging / "__init__.py").write_text("")
    for package in ("switch", "x509"):
        (staging / package).mkdir(mode=0o755)
        for module in sorted((source.parent / package).glob("*.py")):
            text = module.read_text()
            if (package, module.name) == ("switch", "paths.py"):
                text = rewrite_paths(text, config, state_dir)
            (staging / package / module.name).write_text(text)
    for path in staging.rglob("*.py"):
        path.chmod(0o644)
    (staging / "__init__.py").chmod(0o644)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    site = str(Path(cryptography.__file__).parent.parent)
    wrapper = prefix / "bin" / "pilotage-exec"
    temporary = wrapper.with_name(".pilotage-exec.new")
    temporary.write_text(
        f"#!{python} -IS\n"
        '"""pilotage-exec, installed by pilotage.switch.install; see docs/switch.md."""\n'
        "import sys\n\n"
        f"sys.path[:0] = [{str(prefix / 'lib')!r}, {site!r}]\n"
        f"from {PACKAGE}.switch.main import main\n\n"
        "main()\n"
    )
    temporary.chmod(0o755)
    temporary.rename(wrapper)
    for path in [prefix, prefix / "bin", prefix / "lib", *prefix.rglob("*")]:
        os.lchown(path, 0, 0)
    return wrapper


def write_sudoers(path: Path, wrapper: Path, invoker: str) -> None:
    """Write the sudo rule for ``invoker``, checked with ``visudo`` before it is installed."""
    text = (
        f"# pilotage-exec: written by pilotage.switch.install\n"
        f'Defaults!{wrapper} env_keep += "{KEPT_VARIABLES}", closefrom_override, !use_pty\n'
        f"{invoker} ALL=(root) NOPASSWD: {wrapper}\n"
    )
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(text)
    temporary.chmod(0o440)
    checked = subprocess.run(["visudo", "-cf", str(temporary)], capture_output=True, text=True)
    if checked.returncode != 0:
        temporary.unlink()
        raise SystemExit(f"visudo refused the rule: {checked.stdout}{checked.stderr}")
    temporary.rename(path)


def main(argv: list[str] | None = None) -> None:
    """Command line of the installer."""
    parser = argparse.ArgumentParser(prog="python -m pilotage.switch.install")
    parser.add_argument("--prefix", type=Path, required=True)
    parser.add_argument("--config", default="/etc/pilotage/exec.toml")
    parser.add_argument("--state-dir", default="/var/lib/pilotage-exec")
    parser.add_argument("--sudoers", type=Path, help="e.g. /etc/sudoers.d/pilotage-exec")
    parser.add_argument("--invoker", default="pilot", help="the pilot account of the rule")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run")
    args = parser.parse_args(argv)
    wrapper = install(args.prefix, args.config, args.state_dir, args.python)
    if args.sudoers:
        write_sudoers(args.sudoers, wrapper, args.invoker)
    print(wrapper)


if __name__ == "__main__":
    main()
