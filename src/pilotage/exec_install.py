"""Install ``pilotage-exec`` for a site: a root-owned copy of the switch and a wrapper.

``python -m pilotage.exec_install --prefix DIR [--config PATH] [--state-dir DIR]
[--python PY] [--site-packages DIR] [--sudoers FILE --invoker ACCOUNT]`` writes:

- ``DIR/lib/pilotage/switch/``: this package's modules, with the two constants of
  ``paths.py`` rewritten (the only change), so the installed switch reads *that* config
  and no caller can point it elsewhere: not by environment, not by flag; beside it
  ``DIR/lib/pilotage/x509/``, the X.509 library it uses, unchanged, and an empty
  ``DIR/lib/pilotage/__init__.py``;
- ``DIR/bin/pilotage-exec``: a wrapper run by ``PY -IS`` (no ``PYTHON*`` variables, no
  site directories, no current directory) that sets ``sys.path`` to the standard library
  directories found at install, then that copy and the site-packages holding
  ``cryptography`` *after* them, so nothing there can shadow a standard module, and first
  re-checks (one ``os.stat`` each, about 160 on a Debian node: under a millisecond)
  that the interpreter and every directory it imports from (each directory under the
  standard library, the copy and the packages, ``__pycache__`` included) are still
  root-owned and writable by nobody else, or exits 202 naming the path; the copy is
  compiled at install, so an unprivileged (namespace mode) switch never compiles it;
- with ``--sudoers``, the sudo rule: ``ACCOUNT ALL=(root) NOPASSWD: DIR/bin/pilotage-exec``
  plus the ``env_keep`` and ``closefrom_override`` the switch's interface needs.

Root runs all of it, so whoever can write any of it owns the node. The installer refuses,
naming the path, unless each of these is root-owned and not writable by group or others:
the prefix, the interpreter (the real file after links), the standard library (every file;
not the ``site-packages`` an ``-S`` interpreter never reads), the site-packages and the
packages the switch imports from it (every file), and every directory above each of them
(where a sticky directory such as ``/tmp`` is accepted: others may add entries there, not
replace ours).
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
    "PILOTAGE_EXEC_JOB_ID PILOTAGE_EXEC_JOB_NAME PILOTAGE_EXEC_STATUS_FD PILOTAGE_JOB_*"
)
#: What the switch imports from the site-packages: cryptography and its own dependencies.
SITE_PACKAGES = ("cryptography", "cffi", "pycparser", "_cffi_backend")

#: Directories of the standard library that ``-S`` never puts on ``sys.path``.
SITE_DIRS = frozenset({"site-packages", "dist-packages"})
WRAPPER = """#!{python} -IS
\"\"\"pilotage-exec, installed by pilotage.exec_install; see docs/switch.md.\"\"\"
import os
import sys

# Root's and closed to writers, or 202: the interpreter and every directory the switch
# imports from; then the directories above them, where a sticky one is accepted. One
# string each, split here: a literal list of paths would be compiled at every start.
for paths, sticky_ok in (({own!r}, False), ({above!r}, True)):
    for path in paths.split("\\n"):
        try:
            st = os.stat(path)
            bad = st.st_uid != 0 or (
                st.st_mode & 0o022 and not (sticky_ok and st.st_mode & 0o1000)
            )
        except OSError:
            bad = True
        if bad:
            sys.stderr.write(f"pilotage-exec: {{path}} is gone, not root-owned or writable by "
                             "others; this installation is unsafe, refusing to run.\\n")
            sys.exit(202)
# The standard library first, as found at install; nothing after it can shadow it.
sys.path[:] = {path!r}
from {package}.switch.main import main

main()
"""


def unsafe(path: Path, *, sticky_ok: bool = False) -> str:
    """Why ``path`` may not be trusted by root ("" if it may)."""
    st = path.lstat() if path.is_symlink() else path.stat()
    if st.st_uid != 0:
        return f"{path} is owned by uid {st.st_uid}, not by root"
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return ""
    if sticky_ok and st.st_mode & stat.S_ISVTX:
        return ""
    return f"{path} is writable by group or others"


def walk(root: Path) -> tuple[list[Path], list[Path]]:
    """The directories under ``root`` (``root`` first), and every other entry under it (or
    ``root`` itself if it is a file), leaving out the site directories ``-S`` never reads."""
    if not root.is_dir() or root.is_symlink():
        return [], [root]
    directories, others = [], []
    for directory, subdirectories, names in os.walk(root):
        links = [name for name in subdirectories if os.path.islink(os.path.join(directory, name))]
        subdirectories[:] = sorted(set(subdirectories) - SITE_DIRS - set(links))
        directories.append(Path(directory))
        others += [Path(directory, name) for name in sorted([*names, *links])]
    return directories, others


def trusted_paths(paths: list[Path], trees: list[Path]) -> tuple[list[str], list[str]]:
    """Check ``paths``, everything under ``trees``, and every directory above them; return
    what the wrapper re-checks at each start: ``paths`` with every directory under
    ``trees``, then the directories above (where a sticky one is accepted). ``SystemExit``
    naming the first unsafe one."""
    own = dict.fromkeys(paths)
    checked = list(paths)
    for root in trees:
        directories, others = walk(root)
        own.update(dict.fromkeys(directories))
        checked += [*directories, *others]
    above = dict.fromkeys(parent for path in own for parent in path.parents if parent not in own)
    for item, sticky in [*((path, False) for path in checked), *((path, True) for path in above)]:
        if reason := unsafe(item, sticky_ok=sticky):
            raise SystemExit(f"refusing to install: {reason}; root would run code from it")
        if "\n" in str(item):
            raise SystemExit(f"refusing to install: {item!r} has a newline in its name")
    return [str(path) for path in own], [str(path) for path in above]


def rewrite_paths(text: str, config: str, state_dir: str) -> str:
    """``paths.py`` with its two constants set to ``config`` and ``state_dir``."""
    text, n_config = re.subn(r'(?m)^CONFIG_PATH = ".*"$', f"CONFIG_PATH = {config!r}", text)
    text, n_state = re.subn(r'(?m)^STATE_DIR = ".*"$', f"STATE_DIR = {state_dir!r}", text)
    if (n_config, n_state) != (1, 1):
        raise SystemExit("paths.py does not have the expected two constants")
    return text.replace("'", '"')


def install(
    prefix: Path, config: str, state_dir: str, python: str = sys.executable,
    site: Path | None = None,
) -> Path:  # fmt: skip
    """Write the copy and the wrapper under ``prefix``; return the wrapper's path.

    ``python`` runs the wrapper: any CPython of this one's minor version can, as long as
    every account that calls the switch may execute it (namespace mode runs unprivileged).
    ``site`` is the site-packages holding ``cryptography`` (default: this one's).
    """
    if os.geteuid() != 0:
        raise SystemExit("run the installer as root: the installed switch must be root-owned")
    if site is None:
        import cryptography

        site = Path(cryptography.__file__).parent.parent
    site = site.resolve()
    if not (site / "cryptography").is_dir():
        raise SystemExit(f"{site} holds no cryptography package")
    interpreter = Path(python).resolve()
    code = "import os, sys; print(*(p for p in sys.path if os.path.exists(p)))"
    stdlib = [Path(p) for p in subprocess.run([str(interpreter), "-IS", "-c", code],
              capture_output=True, text=True, check=True).stdout.split()]  # fmt: skip
    prefix = prefix.resolve()
    for sub in ("bin", "lib"):
        (prefix / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    packages = [site / name for name in SITE_PACKAGES if (site / name).is_dir()]
    packages += sorted(site.glob("_cffi_backend*"))
    trusted_paths([prefix, interpreter, site], [*stdlib, *packages])
    source = Path(__file__).parent  # src/pilotage
    lib = prefix / "lib"
    target = lib / PACKAGE
    staging = lib / f".{PACKAGE}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)
    (staging / "__init__.py").write_text("")
    for package in ("switch", "x509", "sitepolicy"):
        (staging / package).mkdir(mode=0o755)
        for module in sorted((source / package).glob("*.py")):
            text = module.read_text()
            if (package, module.name) == ("switch", "paths.py"):
                text = rewrite_paths(text, config, state_dir)
            (staging / package / module.name).write_text(text)
    # Compiled by the interpreter that runs the switch, so no call compiles it again (an
    # unprivileged one could not write its __pycache__, and would compile at every call).
    subprocess.run([str(interpreter), "-IS", "-m", "compileall", "-q", "-d", str(target),
                    str(staging)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    for path in [staging, *staging.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    for path in [prefix, prefix / "bin", lib, *prefix.rglob("*")]:
        os.lchown(path, 0, 0)
    own, above = trusted_paths([interpreter, site], [*stdlib, *packages, lib])
    wrapper = prefix / "bin" / "pilotage-exec"
    temporary = wrapper.with_name(".pilotage-exec.new")
    temporary.write_text(WRAPPER.format(
        python=interpreter, package=PACKAGE, own="\n".join(own), above="\n".join(above),
        path=[*map(str, stdlib), str(lib), str(site)],
    ))  # fmt: skip
    os.chown(temporary, 0, 0)
    temporary.chmod(0o755)
    temporary.rename(wrapper)
    return wrapper


def write_sudoers(path: Path, wrapper: Path, invoker: str) -> None:
    """Write the sudo rule for ``invoker``, checked with ``visudo`` before it is installed."""
    text = (
        f"# pilotage-exec: written by pilotage.exec_install\n"
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
    parser = argparse.ArgumentParser(prog="python -m pilotage.exec_install")
    parser.add_argument("--prefix", type=Path, required=True)
    parser.add_argument("--config", default="/etc/pilotage/exec.toml")
    parser.add_argument("--state-dir", default="/var/lib/pilotage-exec")
    parser.add_argument("--sudoers", type=Path, help="e.g. /etc/sudoers.d/pilotage-exec")
    parser.add_argument("--invoker", default="pilot", help="the pilot account of the rule")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run")
    parser.add_argument("--site-packages", type=Path, help="where cryptography is installed")
    args = parser.parse_args(argv)
    wrapper = install(args.prefix, args.config, args.state_dir, args.python, args.site_packages)
    if args.sudoers:
        write_sudoers(args.sudoers, wrapper, args.invoker)
    print(wrapper)


if __name__ == "__main__":
    main()
