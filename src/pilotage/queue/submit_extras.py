"""Submit commands that reach the worker node's hardware and network: GPU constraints,
containers and URL inputs (docs/submit.md).

- ``require_gpus = EXPR``, ``gpus_minimum_capability = X``, ``gpus_minimum_memory = SIZE``:
  one constraint every GPU assigned to the job must satisfy, ``RequireGPUs`` in its ad,
  evaluated against each device's ad (``Capability``, ``GlobalMemoryMb``, ``DeviceName``,
  ``Id``) as in HTCondor.
- ``universe = container`` and ``container_image = IMAGE``: the job runs in Apptainer on a
  slot that advertises ``HasContainer``. IMAGE is a path on the worker node (``/cvmfs/...``),
  a URI Apptainer pulls (``docker://``, ``oras://``, ``library://``, ``http(s)://``) or a
  relative path, transferred with the inputs unless ``transfer_container = false`` (or
  ``should_transfer_container = no``). An absolute ``executable`` is the image's program,
  not transferred, unless ``transfer_executable`` says otherwise.
  ``container_image`` alone implies the container universe (HTCondor 10 does the same);
  ``universe = container`` without an image is an error.
- ``http://`` and ``https://`` entries of ``transfer_input_files`` are downloaded by the
  pilot, not the submit host; ``URL#sha256=HEX`` names the SHA-256 the file must have.

Parsers raise ``ValueError`` with one clause, as in :mod:`pilotage.queue.submit_values`.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pilotage.queue.spec import URL, UrlInput
from pilotage.queue.submit_values import parse_bool, parse_expression, parse_memory_mb

T = TypeVar("T")
_SCHEMES = ("docker://", "oras://", "library://", "http://", "https://")
_FRAGMENT = re.compile(r"sha256=([0-9a-fA-F]{64})")


def parse_capability(value: str) -> float:
    """``gpus_minimum_capability``: a CUDA compute capability such as 7.5."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a compute capability such as 7.5") from None
    if not 0 < number < 100:
        raise ValueError(f"{value!r} is not a compute capability such as 7.5")
    return number


def parse_image(value: str) -> str:
    """``container_image``: a path or a URI Apptainer takes, without spaces."""
    if not value or any(c.isspace() or c in "\"'\\" or ord(c) < 32 for c in value):
        raise ValueError(f"{value!r} is not an image path or URI without spaces or quotes")
    if "://" in value and not value.startswith(_SCHEMES):
        raise ValueError(f"{value!r}: pilotage takes images as {', '.join(_SCHEMES)} or paths")
    return value


def is_url(entry: str) -> bool:
    """Whether a ``transfer_input_files`` entry is a URL the pilot downloads."""
    return entry.lower().startswith(("http://", "https://"))


def local_path(entry: str) -> str:
    """A ``transfer_input_files`` entry that is a file, not a URL of another scheme."""
    scheme, sep, _ = entry.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ValueError(
            f"{entry!r}: pilots fetch only http:// and https:// URLs (no transfer plugins); "
            "download it yourself and transfer the file, or serve it over HTTP"
        )
    return entry


def parse_url_input(entry: str) -> UrlInput:
    """A URL entry, with an optional ``#sha256=HEX``; it lands under its path's last part."""
    url, _, fragment = entry.partition("#")
    checksum = None
    if fragment:
        match = _FRAGMENT.fullmatch(fragment)
        if match is None:
            raise ValueError(
                f"{entry!r}: after '#' pilotage takes only sha256=<64 hex digits> (the "
                "SHA-256 the download must have)"
            )
        checksum = match.group(1).lower()
    if not URL.match(url):
        raise ValueError(f"{entry!r} is not an http:// or https:// URL without spaces")
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{entry!r} names no host")
    name = urllib.parse.unquote(posixpath.basename(parts.path))
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ValueError(f"{entry!r} names no file: its path must end with a file name")
    return UrlInput(url=url, name=name, sha256=checksum)


#: The commands of this module, with the parser that checks each value.
COMMANDS: dict[str, Callable[[str], object]] = {
    "require_gpus": parse_expression,
    "gpus_minimum_capability": parse_capability,
    "gpus_minimum_memory": parse_memory_mb,
    "container_image": parse_image,
    "transfer_container": parse_bool,
    "should_transfer_container": parse_bool,
}


class _Builder(Protocol):
    """What this module needs of the submit parser's job builder."""

    def get(self, key: str, parse: Callable[[str], T]) -> T | None: ...

    def line_of(self, key: str) -> int: ...


def require_gpus(job: _Builder) -> str | None:
    """``RequireGPUs``: ``require_gpus`` and the ``gpus_minimum_*`` commands, together."""
    parts = []
    expression = job.get("require_gpus", parse_expression)
    if expression is not None:
        parts.append(f"({expression})")
    capability = job.get("gpus_minimum_capability", parse_capability)
    if capability is not None:
        parts.append(f"Capability >= {capability!r}")
    memory = job.get("gpus_minimum_memory", parse_memory_mb)
    if memory is not None:
        parts.append(f"GlobalMemoryMb >= {memory}")
    return " && ".join(parts) or None


def in_container(job: _Builder) -> bool:
    """Whether the job runs in a container (``container_image``, or the universe)."""
    universe = job.get("universe", lambda v: v.lower())
    return universe == "container" or job.get("container_image", parse_image) is not None


def container(job: _Builder, universe: str | None) -> tuple[str | None, str | None]:
    """(image as the node sees it, a submit-host path to transfer) or ``ValueError``."""
    image = job.get("container_image", parse_image)
    if image is None:
        if universe == "container":
            raise ValueError("universe = container needs container_image = IMAGE")
        return None, None
    transfer = (
        job.get("transfer_container", parse_bool) is not False
        and job.get("should_transfer_container", parse_bool) is not False
    )
    if image.startswith("/") or "://" in image:
        return image, None
    if not transfer:
        raise ValueError(
            f"container_image {image!r} is relative, so it must be transferred: use an "
            "absolute path on the worker node with transfer_container = false"
        )
    return posixpath.basename(image.rstrip("/")), image


def check_names(urls: list[UrlInput], others: list[str]) -> None:
    """Refuse two inputs landing under one name in the job's directory."""
    seen = {posixpath.basename(path.rstrip("/")): path for path in others if path}
    for url in urls:
        if url.name in seen:
            raise ValueError(f"{url.url} and {seen[url.name]} would both arrive as {url.name!r}")
        seen[url.name] = url.url


def fields(urls: list[UrlInput], gpus: str | None, image: str | None) -> dict[str, Any]:
    """The JobSpec fields of this module's commands."""
    return {"url_inputs": urls, "require_gpus": gpus, "container_image": image}
