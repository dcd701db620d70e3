"""Inputs the pilot downloads itself: ``http://`` and ``https://`` in transfer_input_files.

Standard library only. Each URL of the claim is fetched by the agent, as the pilot,
through the site's HTTP proxy when the pilot's environment names one (``http_proxy``,
``https_proxy``, ``no_proxy``, as the bootstrap's own downloads use), into the directory
the job's inputs are staged in; from there they reach the job as its other inputs do
(with the switch: packed, then unpacked by the job's owner, so the files are theirs).

Checks, each a hold of the job (code 10) whose reason names the URL and what failed:

- the status must be 200 after at most 10 redirects, each to ``http``/``https`` only;
- all URL inputs together must fit in the job's ``request_disk`` (a ``Content-Length``
  past it is refused before the body is read; the body is cut at the limit anyway);
- ``URL#sha256=HEX`` (the server keeps the hex apart from the URL): the file's SHA-256
  must be HEX;
- a name the input sandbox already has is refused (the submit side checks this too).

Connection failures, time-outs and 5xx answers are retried (3 tries, 2 s then 4 s apart)
while the claim lives. A file is written to a temporary name (``O_EXCL``, 0600) and
renamed once complete and checked, so a half download is never taken for an input. Log
lines name URLs without their query (pre-signed URLs carry credentials there).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .outputs import is_safe_relpath
from .wire import Claim, Failure, HoldCode, UrlInput

log = logging.getLogger("pilotage.pilot")

TRIES = 3
TIMEOUT_S = 60.0
_CHUNK = 1024 * 1024
_MIB = 1024 * 1024


class UrlInputError(Exception):
    """A URL input could not be had; the message is the job's hold reason."""


class _Retry(Exception):
    """A failure worth another try (connection, time-out, 5xx)."""


class _HttpOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http and https only (urllib would follow ftp too)."""

    max_redirections = 10

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise UrlInputError(f"{shown(req.full_url)} redirects to a non-HTTP URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def shown(url: str) -> str:
    """The URL as logs and messages show it: no query, no fragment, no user info."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def opener(proxies: Mapping[str, str] | None = None) -> urllib.request.OpenerDirector:
    """An opener through ``proxies`` (default: the environment's, honouring no_proxy)."""
    handler = urllib.request.ProxyHandler(None if proxies is None else dict(proxies))
    return urllib.request.build_opener(handler, _HttpOnly())


def fetch_all(
    claim: Claim,
    dest: Path,
    *,
    stopped: Callable[[float], bool],
    proxies: Mapping[str, str] | None = None,
) -> Failure | None:
    """Download every URL input of ``claim`` into ``dest``; a failure holds the job.

    ``stopped(delay)`` sleeps before a retry and says whether the claim was stopped
    meanwhile (then the remaining work is abandoned and a failure returned that the
    caller does not report).
    """
    if not claim.url_inputs:
        return None
    budget = claim.request.disk_mb * _MIB
    fetch = opener(proxies)
    for item in claim.url_inputs:
        try:
            budget -= fetch_one(fetch, item, dest, budget, stopped)
        except UrlInputError as exc:
            log.warning("claim %s job %s: %s", claim.claim_id, claim.job_id, exc)
            return Failure(HoldCode.INPUT_REFUSED, f"URL input refused: {exc}")
    return None


def fetch_one(
    fetch: urllib.request.OpenerDirector,
    item: UrlInput,
    dest: Path,
    budget: int,
    stopped: Callable[[float], bool],
) -> int:
    """Download one URL input into ``dest`` within ``budget`` bytes; its size."""
    if urllib.parse.urlsplit(item.url).scheme not in ("http", "https"):
        raise UrlInputError(f"{shown(item.url)} is not an http:// or https:// URL")
    if not is_safe_relpath(item.name) or "/" in item.name:
        raise UrlInputError(f"{shown(item.url)}: {item.name!r} is not a usable file name")
    target = dest / item.name
    if target.exists() or target.is_symlink():
        raise UrlInputError(f"{shown(item.url)}: the input sandbox already has {item.name!r}")
    delay = 2.0
    for attempt in range(1, TRIES + 1):
        try:
            size = _download(fetch, item, target, budget)
            log.info("URL input %s: %d bytes as %s", shown(item.url), size, item.name)
            return size
        except _Retry as exc:
            if attempt == TRIES:
                raise UrlInputError(f"{shown(item.url)}: {exc} (after {TRIES} tries)") from None
            log.warning("URL input %s: %s; again in %.0f s", shown(item.url), exc, delay)
            if stopped(delay):
                raise UrlInputError(f"{shown(item.url)}: the claim was stopped") from None
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _download(
    fetch: urllib.request.OpenerDirector, item: UrlInput, target: Path, budget: int
) -> int:
    # Only http(s): checked in fetch_one (and by the server, spec.URL).
    request = urllib.request.Request(item.url, headers={"User-Agent": "pilotage-agent"})  # noqa: S310
    try:
        response = fetch.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500:
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
        raise UrlInputError(f"{shown(item.url)}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retry(f"cannot be reached ({reason})") from None
    with response:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > budget:
            raise UrlInputError(_too_big(item, int(declared), budget))
        return _save(response, item, target, budget)


def _save(response: Any, item: UrlInput, target: Path, budget: int) -> int:
    """Stream the body into a temporary file beside ``target``; check, then rename."""
    tmp = target.with_name(f".url-{secrets.token_hex(8)}")
    digest = hashlib.sha256()
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Retry(f"the download was cut ({exc})") from None
                if not chunk:
                    break
                size += len(chunk)
                if size > budget:
                    raise UrlInputError(_too_big(item, size, budget))
                digest.update(chunk)
                out.write(chunk)
        if item.sha256 is not None and digest.hexdigest() != item.sha256:
            raise UrlInputError(
                f"{shown(item.url)}: its SHA-256 is {digest.hexdigest()}, not the "
                f"{item.sha256} the submit file gives"
            )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return size


def _too_big(item: UrlInput, size: int, budget: int) -> str:
    return (
        f"{shown(item.url)} is {size} bytes or more, past what is left of the job's "
        f"request_disk ({max(0, budget)} bytes); raise request_disk"
    )
