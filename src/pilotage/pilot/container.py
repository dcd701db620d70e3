"""Container jobs (``universe = container``, ``container_image``): run them in Apptainer.

Standard library only. At start the agent looks for ``apptainer``, then ``singularity``,
on its ``PATH`` and asks it its version; one that answers is advertised in the slot's ad
as HTCondor names it (``HasContainer``, ``HasApptainer`` or ``HasSingularity``,
``ContainerRuntime``, ``ApptainerVersion``/``SingularityVersion``). A container job's
Requirements asks for ``HasContainer``, so only such slots get one.

The job's command becomes ``<runtime> exec --contain --ipc --pid --no-home --bind DIR
--pwd DIR [--nv] IMAGE PROGRAM ARGS...``: the job's directory is bound at its own path
and is the working directory, so its inputs, outputs and stdio are where they are for a
vanilla job; ``--nv`` when GPUs were assigned. The environment is the job's (the agent's
clean one, passed by the process environment, never on the command line). IMAGE is a
path on the node, a URI the runtime pulls, or a transferred image in the job's directory.
An absolute ``executable`` that is not transferred is looked up inside the image, not
on the node. With the switch the same command runs as the job's owner.

A container job on a slot without a runtime (a site that advertises ``HasContainer``
wrongly) cannot start: :class:`NoRuntime` holds it, saying so.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .wire import Claim

RUNTIMES = ("apptainer", "singularity")
_VERSION_TIMEOUT_S = 20.0


class NoRuntime(OSError):
    """A container job reached a node with no container runtime."""


@dataclass(frozen=True)
class Runtime:
    """A container runtime that answered: its program, name and version."""

    path: str
    name: str
    version: str


def detect(search_path: str | None = None) -> Runtime | None:
    """The first of :data:`RUNTIMES` on ``search_path`` (default ``PATH``) that answers
    ``--version``, or None."""
    for name in RUNTIMES:
        program = shutil.which(name, path=search_path)
        if program is None:
            continue
        try:
            done = subprocess.run(
                [program, "--version"],
                capture_output=True,
                text=True,
                timeout=_VERSION_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip():
            return Runtime(program, name, done.stdout.strip().split()[-1])
    return None


@functools.lru_cache(maxsize=1)
def runtime() -> Runtime | None:
    """This node's runtime, looked for once per agent."""
    return detect(os.environ.get("PATH"))


def slot_attrs(found: Runtime | None) -> dict[str, str]:
    """The slot attributes that advertise ``found`` (none without a runtime)."""
    if found is None:
        return {}
    title = found.name.capitalize()
    return {
        "HasContainer": "true",
        f"Has{title}": "true",
        "ContainerRuntime": json.dumps(found.name),
        f"{title}Version": json.dumps(found.version),
    }


def command(found: Runtime, claim: Claim, argv: list[str], scratch: Path) -> list[str]:
    """The command that runs ``argv`` in the claim's image (see the module's docstring)."""
    image = claim.container_image or ""
    if not image.startswith("/") and "://" not in image:
        image = str(scratch / image)  # transferred with the inputs
    where = str(scratch)
    options = ["--contain", "--ipc", "--pid", "--no-home", "--bind", where, "--pwd", where]
    if claim.assigned_gpus:
        options.append("--nv")
    return [found.path, "exec", *options, image, *argv]


def job_argv(claim: Claim, argv: list[str], scratch: Path) -> list[str]:
    """``argv`` itself for a vanilla job; wrapped in the runtime for a container job."""
    if claim.container_image is None:
        return argv
    found = runtime()
    if found is None:
        raise NoRuntime(
            f"the job needs a container runtime ({claim.container_image}) but this node "
            "has neither apptainer nor singularity on its PATH; release the job to run it "
            "elsewhere"
        )
    return command(found, claim, argv, scratch)


def program_in_image(claim: Claim) -> bool:
    """Whether the executable is looked up in the image, not on the node."""
    return claim.container_image is not None and claim.executable.startswith("/")
