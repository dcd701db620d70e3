"""What a user submits: one ``JobSpec`` per job, macros already expanded.

The submit-language parser (:mod:`pilotage.queue.submit`) produces these on the submit
host; the API receives them as the body of a cluster commit and validates them again,
because nothing from outside is trusted.
"""

from __future__ import annotations

import posixpath
import re

from pydantic import ConfigDict, Field, field_validator

from pilotage.bodies import Body

#: An attribute name as ClassAds accept it (``+Attr`` in a submit file).
ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: An environment variable name.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

WIRE_VERSION = 1


def check_relative_path(value: str, what: str) -> str:
    """Refuse a sandbox path that is absolute, empty, or climbs out with ``..``."""
    if not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty path without NUL bytes")
    if value.startswith("/"):
        raise ValueError(f"{what} {value!r} must be relative to the job's directory")
    if ".." in posixpath.normpath(value).split("/"):
        raise ValueError(f"{what} {value!r} must not climb out of the job's directory")
    return value


#: What a URL input may be: http or https, no whitespace, quotes or control characters.
URL = re.compile(r"^https?://[^\s\"'<>\\\x00-\x1f\x7f]{1,4096}$")


class UrlInput(Body):
    """A ``transfer_input_files`` entry that the pilot downloads (docs/submit.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(max_length=4096)
    #: Where it lands in the job's directory: the URL path's last part.
    name: str = Field(max_length=255)
    #: The SHA-256 the file must have (``#sha256=HEX`` after the URL), lower-case hex.
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not URL.match(v) or "#" in v:
            raise ValueError(f"{v[:200]!r} is not an http:// or https:// URL")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_relative_path(v, "URL input name")
        if "/" in v:
            raise ValueError(f"URL input name {v!r} must be a file name")
        return v


class JobPolicy(Body):
    """The job's own policy, as ClassAd expressions the server evaluates (HTCondor's names).

    ``periodic_*`` are evaluated by the server's sweep while the job is queued;
    ``on_exit_*``, ``max_retries``, ``retry_until`` and ``success_exit_code`` when it ends.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    periodic_hold: str | None = None
    periodic_hold_reason: str | None = None
    periodic_hold_subcode: str | None = None
    periodic_release: str | None = None
    periodic_remove: str | None = None
    on_exit_hold: str | None = None
    on_exit_hold_reason: str | None = None
    on_exit_hold_subcode: str | None = None
    on_exit_remove: str | None = None
    max_retries: int | None = Field(default=None, ge=0, le=10_000)
    retry_until: str | None = None
    success_exit_code: int | None = Field(default=None, ge=0, le=255)

    def expressions(self) -> dict[str, str]:
        """The fields that hold expressions and are set, by field name."""
        return {
            name: value
            for name, value in self.model_dump().items()
            if isinstance(value, str) and value is not None
        }


class JobSpec(Body):
    """One job of a cluster as the submitter described it.

    Sandbox paths (``executable`` when transferred, ``input``, ``output``, ``error``,
    ``transfer_output_files``) are relative to the job's scratch directory on the
    worker node. ``iwd`` is the absolute submit directory on the submit host, where
    outputs come back to; the server stores it and never uses it as a path itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    executable: str = Field(json_schema_extra={"pattern": r"^[^\x00]+$"})
    transfer_executable: bool = True
    arguments: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    input: str | None = None
    output: str | None = None
    error: str | None = None
    log: str | None = None
    transfer_input_files: list[str] = Field(default_factory=list)
    transfer_output_files: list[str] | None = None
    request_cpus: int = Field(default=1, ge=1, le=1024)
    request_memory_mb: int = Field(default=128, ge=1, le=16 * 1024 * 1024)
    request_disk_mb: int = Field(default=100, ge=0, le=1024 * 1024 * 1024)
    request_gpus: int = Field(default=0, ge=0, le=64)
    requirements: str | None = None
    rank: str | None = None
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    attrs: dict[str, str] = Field(default_factory=dict)
    iwd: str = "/"
    #: Digest of the input sandbox uploaded for this job (``None``: no input sandbox).
    input_sandbox: str | None = None
    #: The proxy file on the submit host (``x509userproxy``), stored like ``iwd``; the
    #: client reads its identity into ``x509_identity`` before sending the job.
    x509userproxy: str | None = Field(default=None, min_length=1, max_length=4096)
    #: The X.509 identity (grid-form DN) whose delegated credential the job runs with;
    #: the server checks it against the credential store at submit and at each release.
    x509_identity: str | None = Field(default=None, min_length=1, max_length=512)
    #: The walltime the job asks for, in seconds (``allowed_job_duration``).
    max_walltime_s: int | None = Field(default=None, ge=1, le=366 * 86400)
    policy: JobPolicy = Field(default_factory=JobPolicy)
    #: Output name in the job's directory -> where it lands on the submit host.
    transfer_output_remaps: dict[str, str] = Field(default_factory=dict)
    #: Accepted; the output comes back when the job ends (the agent does not stream).
    stream_output: bool = False
    stream_error: bool = False
    batch_name: str | None = Field(default=None, min_length=1, max_length=256)
    accounting_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$")
    accounting_group_user: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$"
    )
    notification: str | None = Field(default=None, pattern=r"^(never|error|complete|always|start)$")
    notify_user: str | None = Field(default=None, max_length=1024)
    #: ``require_gpus`` (with ``gpus_minimum_*``): what each assigned GPU must satisfy.
    require_gpus: str | None = Field(default=None, max_length=4096)
    #: Inputs the pilot downloads itself (``http://``/``https://`` in transfer_input_files).
    url_inputs: list[UrlInput] = Field(default_factory=list, max_length=1000)
    #: ``container_image`` (``universe = container``): the Apptainer image the job runs in.
    container_image: str | None = Field(default=None, min_length=1, max_length=4096)

    @field_validator("executable")
    @classmethod
    def _executable(cls, v: str) -> str:
        if not v or "\x00" in v:
            raise ValueError("executable must be a non-empty path")
        return v

    @field_validator("input", "output", "error")
    @classmethod
    def _sandbox_path(cls, v: str | None) -> str | None:
        return None if v is None else check_relative_path(v, "sandbox path")

    @field_validator("transfer_output_files")
    @classmethod
    def _outputs(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for item in v:
                check_relative_path(item, "transfer_output_files entry")
        return v

    @field_validator("transfer_output_remaps")
    @classmethod
    def _remaps(cls, v: dict[str, str]) -> dict[str, str]:
        for name, destination in v.items():
            check_relative_path(name, "transfer_output_remaps name")
            if not destination or "\x00" in destination:
                raise ValueError(f"transfer_output_remaps destination of {name!r} is empty")
        return v

    @field_validator("environment")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_NAME.match(key):
                raise ValueError(f"environment variable name {key!r} is not valid")
            if "\x00" in value:
                raise ValueError(f"environment variable {key} contains a NUL byte")
        return v

    @field_validator("attrs")
    @classmethod
    def _attrs(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not ATTR_NAME.match(key):
                raise ValueError(f"attribute name {key!r} is not a valid ClassAd name")
        return v

    @field_validator("input_sandbox")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("input_sandbox must be a SHA-256 hex digest")
        return v

    @property
    def sandbox_executable(self) -> str:
        """The executable as the worker node sees it: its base name when transferred."""
        return posixpath.basename(self.executable) if self.transfer_executable else self.executable


class ClusterSubmission(Body):
    """The body of ``POST /api/v1/clusters/{id}/jobs``: every job of one cluster at once."""

    model_config = ConfigDict(extra="forbid")

    v: int = Field(default=WIRE_VERSION, json_schema_extra={"const": WIRE_VERSION})
    jobs: list[JobSpec] = Field(min_length=1, max_length=100_000)

    @field_validator("v")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != WIRE_VERSION:
            raise ValueError(f"version {v} is not supported; this server speaks {WIRE_VERSION}")
        return v
