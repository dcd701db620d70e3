"""The OpenAPI document as the API's contract (docs/api.md).

FastAPI writes a document from the routes: paths, parameters, bodies and success
answers. :func:`install` completes it, here in one place rather than route by route:

- every refusal a route can answer, with the one error body (:data:`ERROR`): 400 a
  body that is not JSON, 401 no or a bad credential, 403 another role or not yours, 404
  an unknown object, 409 a state that forbids the call, 413 too large, 422 bad input,
  503 a fault of the moment (with ``Retry-After``). Which apply follows from the route
  (its parameters, its body, whether it authenticates) and from :data:`EXTRA`;
- the constraints the server checks on path and query parameters with its own
  messages (job ids, state names, submitter names): :data:`PARAMETERS`;
- that no text of a request holds NUL (:class:`pilotage.api.refusals.RefuseNul`,
  :class:`pilotage.bodies.Body`): :data:`NO_NUL` on every string of a parameter or a
  body that no other pattern constrains;
- the bodies that are not JSON (tar streams, stdout pieces) and the answers that are
  tar streams: :data:`RAW_BODIES`, :data:`RAW_ANSWERS`;
- ``x-pilotage-checks`` on the operations whose input the server checks beyond what
  JSON Schema can say (ClassAd expressions, tar streams, X.509 chains): there a
  schema-valid request may still be refused with 422 (or 401/403 for credentials).

:func:`unmatched` lists the table entries that name no route or parameter, so the
contract's test sees the tables drift from the routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from pilotage.credentials.vo import FQAN, MAX_IDENTITY_CHARS
from pilotage.queue.states import JobState

#: The body of every refusal.
ERROR: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "A refusal: the error's class and one sentence saying what to do.",
    "properties": {
        "error": {"type": "string", "description": "the error's class, e.g. NotFound"},
        "message": {"type": "string", "description": "what is wrong, and what to do"},
    },
    "required": ["error", "message"],
    "additionalProperties": False,
}

REASONS = {
    400: "The request cannot be read: a body that is not JSON, or a cursor no page gave.",
    401: "No credential, or one that is wrong, expired, revoked or forged.",
    403: "The caller's role or identity may not do this.",
    404: "An object the call names does not exist (or is not the caller's to see).",
    409: "The object's state forbids the call now.",
    413: "The body is larger than the server takes.",
    422: (
        "A parameter or the body is not valid, or (a reload) the configuration file; "
        "the message names it."
    ),
    503: "A fault of the moment (database, disk, overload): try again after Retry-After.",
}

#: Operations that need no credential.
PUBLIC = {
    ("get", "/api/v1/jwks"),
    ("post", "/api/v1/login/nonce"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}

#: Operations that never touch the database (so never answer 503).
NO_DATABASE = {("get", "/api/v1/jwks"), ("get", "/healthz")}

#: Refusals a route gives beyond those its shape implies (see :func:`_statuses`).
EXTRA: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/api/v1/sandboxes"): (413, 422),
    ("post", "/api/v1/clusters/{cluster_id}/jobs"): (409,),
    ("get", "/api/v1/jobs"): (400, 404),
    ("get", "/api/v1/jobads"): (404,),
    ("post", "/api/v1/jobs/actions"): (404, 409),
    ("post", "/api/v1/jobs/{job_id}/attrs"): (409,),
    ("get", "/api/v1/jobs/{job_id}/tail"): (409,),
    ("get", "/api/v1/sessions"): (404,),
    ("post", "/pilot/v1/pilots"): (404, 409),
    ("post", "/pilot/v1/pilots/{pilot_id}/claims"): (409,),
    ("post", "/pilot/v1/pilots/{pilot_id}/heartbeat"): (409,),
    ("get", "/pilot/v1/pilots/{pilot_id}/sessions"): (409,),
    ("post", "/pilot/v1/pilots/{pilot_id}/results"): (409,),
    ("post", "/pilot/v1/pilots/{pilot_id}/exit"): (409,),
    ("get", "/pilot/v1/claims/{claim_id}/input"): (409,),
    ("put", "/pilot/v1/claims/{claim_id}/output"): (409, 413, 422),
    ("put", "/pilot/v1/claims/{claim_id}/stdout"): (409,),
    ("post", "/pilot/v1/claims/{claim_id}/result"): (409,),
    ("post", "/pilot/v1/claims/{claim_id}/vacate"): (409,),
    ("post", "/pilot/v1/claims/{claim_id}/credential-key"): (409,),
    ("post", "/pilot/v1/claims/{claim_id}/credential"): (409,),
    ("post", "/api/v1/tokens/revocations"): (404,),
    ("post", "/api/v1/pilots/actions"): (404, 409),
    ("put", "/api/v1/delegations/{delegation_id}"): (409,),
    ("get", "/api/v1/credential"): (404,),
    ("delete", "/api/v1/credential"): (404,),
    ("delete", "/api/v1/vo/members"): (404,),
    ("put", "/api/v1/entries/{name}"): (409,),
    ("post", "/api/v1/pilot-tokens"): (404,),
    ("post", "/api/v1/validation-reports"): (404,),
    ("post", "/api/v1/admin/reload"): (422,),
}

#: A job id as :func:`pilotage.queue.jobs.parse_job_ref` reads it (blanks around it are
#: dropped): a cluster, or one job of it.
JOB_ID = r"^\s*\d{1,18}(\.\d{1,9})?\s*$"
#: One job: CLUSTER.PROC.
ONE_JOB = r"^\s*\d{1,18}\.\d{1,9}\s*$"
#: A listing's cursor, as a page gave it (:func:`pilotage.queue.listing.parse_cursor`).
CURSOR = r"^\d{1,18}\.\d{1,9}$"
#: A submitter: an owner, or ``group.owner`` (:data:`pilotage.api.matchmaking.NAME`).
SUBMITTER = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,255}$"
#: A job state's name, in any case.
STATE = "^(" + "|".join("".join(f"[{c}{c.lower()}]" for c in s.value) for s in JobState) + ")$"
#: What ``str.isprintable`` refuses that a pattern can name: control characters (the
#: server refuses other non-printable characters too: see ``x-pilotage-checks``).
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
#: An X.509 identity or token subject (:func:`pilotage.credentials.vo.check_identity`).
IDENTITY = {"pattern": NO_CONTROL, "minLength": 1, "maxLength": MAX_IDENTITY_CHARS}

#: What every text of a request must match when nothing stricter is said.
NO_NUL = r"^[^\x00]*$"

#: Constraints of parameters the server checks itself, by (method, path, name); a
#: schema of a list parameter constrains its items.
PARAMETERS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("get", "/api/v1/jobs", "id"): {"pattern": JOB_ID},
    ("get", "/api/v1/jobs", "state"): {"pattern": STATE},
    ("get", "/api/v1/jobs", "cursor"): {"pattern": CURSOR},
    ("get", "/api/v1/jobads", "id"): {"pattern": JOB_ID},
    ("get", "/api/v1/jobs/{job_id}/events", "job_id"): {"pattern": ONE_JOB},
    ("get", "/api/v1/jobs/{job_id}/output", "job_id"): {"pattern": ONE_JOB},
    ("get", "/api/v1/jobs/{job_id}/analysis", "job_id"): {"pattern": ONE_JOB},
    ("get", "/api/v1/jobs/{job_id}/tail", "job_id"): {"pattern": ONE_JOB},
    ("post", "/api/v1/jobs/{job_id}/attrs", "job_id"): {"pattern": JOB_ID},
    ("get", "/api/v1/sessions", "job"): {"pattern": JOB_ID},
    ("put", "/api/v1/userprio/{name}", "name"): {"pattern": SUBMITTER},
    ("delete", "/api/v1/vo/members", "fqan"): {"pattern": FQAN.pattern},
    ("delete", "/api/v1/vo/members", "identity"): IDENTITY,
    ("get", "/api/v1/vo/members", "identity"): IDENTITY,
}

#: Bodies that are not JSON, by content type.
RAW_BODIES: dict[tuple[str, str], str] = {
    ("post", "/api/v1/sandboxes"): "application/x-tar",
    ("put", "/pilot/v1/claims/{claim_id}/output"): "application/x-tar",
    ("put", "/pilot/v1/claims/{claim_id}/stdout"): "application/octet-stream",
}

#: Answers that are tar streams.
RAW_ANSWERS: dict[tuple[str, str], str] = {
    ("get", "/api/v1/jobs/{job_id}/output"): "application/x-tar",
    ("get", "/pilot/v1/claims/{claim_id}/input"): "application/x-tar",
}

#: What the server checks beyond the schema, by operation.
CHECKS: dict[tuple[str, str], str] = {
    ("post", "/api/v1/sandboxes"): "the body is an uncompressed tar with safe members",
    ("put", "/pilot/v1/claims/{claim_id}/output"): "the body is an uncompressed tar",
    ("post", "/api/v1/clusters/{cluster_id}/jobs"): (
        "ClassAd expressions (requirements, rank, attrs, policy), sandbox paths, "
        "uploaded input sandboxes, the owner's stored credential"
    ),
    ("get", "/api/v1/jobads"): "constraint is a ClassAd expression",
    ("post", "/api/v1/jobs/{job_id}/attrs"): "value is a ClassAd expression",
    ("post", "/pilot/v1/pilots"): "attrs and start are ClassAd expressions; GPUs agree",
    ("post", "/api/v1/tokens"): "subject and groups are printable characters",
    ("post", "/api/v1/tokens/revocations"): "token is a token of this pool",
    ("post", "/api/v1/vo/members"): "identity is printable characters",
    ("delete", "/api/v1/vo/members"): "identity is printable characters",
    ("post", "/api/v1/login/x509"): "chain_pem is a trusted chain; signature signs the nonce",
    ("put", "/api/v1/delegations/{delegation_id}"): "chain_pem is a proxy for the key",
    ("post", "/pilot/v1/claims/{claim_id}/credential"): "csr_pem is a CSR; key is the claim's",
    ("put", "/api/v1/entries/{name}"): "ad.EntryName, if given, is the entry of the path",
    ("put", "/api/v1/requests/{frontend}/{entry}"): "pilot_token is a pilot token of entry",
}


def install(app: FastAPI) -> None:
    """Serve the completed document as ``app``'s ``/openapi.json`` (made once)."""
    generate = app.openapi  # FastAPI's own, which keeps what it made

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with every refusal, constraint and raw body of the tables above."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR
    # FastAPI's own validation-error shape is never answered (api/refusals.py).
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            key = (method, path)
            _raw(op, key)
            for param in op.get("parameters", []):
                _constrain(param, PARAMETERS.get((*key, param["name"])))
                _no_nul(param["schema"], schemas, set())
            for media in op.get("requestBody", {}).get("content", {}).values():
                if "format" not in media["schema"]:
                    _no_nul(media["schema"], schemas, set())
            if key in CHECKS:
                op["x-pilotage-checks"] = CHECKS[key]
            for status in _statuses(op, key):
                op["responses"][str(status)] = _refusal(status)
    return doc


def unmatched(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    """The entries of this module's tables that name no operation or parameter of
    ``doc``: a route renamed or removed and its entry left behind (the contract's test
    asserts there is none)."""
    seen: set[tuple[str, ...]] = set()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            seen.add((method, path))
            seen.update((method, path, p["name"]) for p in op.get("parameters", []))
    tables: list[dict[Any, Any]] = [EXTRA, CHECKS, RAW_BODIES, RAW_ANSWERS, PARAMETERS]
    return [key for table in tables for key in table if key not in seen]


def _statuses(op: dict[str, Any], key: tuple[str, str]) -> list[int]:
    """The refusals of one operation: from its shape, then :data:`EXTRA`."""
    path = key[1]
    if not path.startswith(("/api/", "/pilot/")):
        return []
    found = set(EXTRA.get(key, ()))
    params = op.get("parameters", [])
    body = op.get("requestBody", {}).get("content", {})
    if key not in PUBLIC or path.endswith("/login/x509"):
        found |= {401, 403}
    if key not in NO_DATABASE:
        found.add(503)
    if "application/json" in body:
        found |= {400, 422}
    if params:
        found.add(422)
    if any(p["in"] == "path" for p in params):
        found.add(404)
    return sorted(found)


def _refusal(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": REASONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status == 503:
        answer["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before trying again",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return answer


def _constrain(param: dict[str, Any], extra: dict[str, Any] | None) -> None:
    """Add ``extra`` to a parameter's schema (of its items, for a list; of its string
    branch, for an optional one)."""
    if extra is None:
        return
    schema = param["schema"]
    if schema.get("type") == "array":
        schema = schema["items"]
    if "anyOf" in schema:
        schema = next(s for s in schema["anyOf"] if s.get("type") == "string")
    schema.update(extra)


def _no_nul(schema: dict[str, Any], schemas: dict[str, Any], seen: set[str]) -> None:
    """Give :data:`NO_NUL` to every free string of ``schema``, through references."""
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            _no_nul(schemas[name], schemas, seen)
        return
    if schema.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(schema):
        schema["pattern"] = NO_NUL
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _no_nul(schema[key], schemas, seen)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in schema.get(key, []):
            _no_nul(sub, schemas, seen)
    for sub in schema.get("properties", {}).values():
        _no_nul(sub, schemas, seen)
    if isinstance(schema.get("additionalProperties"), dict):
        schema.setdefault("propertyNames", {}).setdefault("pattern", NO_NUL)


def _raw(op: dict[str, Any], key: tuple[str, str]) -> None:
    binary = {"schema": {"type": "string", "format": "binary"}}
    if key in RAW_BODIES:
        op["requestBody"] = {"required": True, "content": {RAW_BODIES[key]: binary}}
    if key in RAW_ANSWERS:
        ok = next(s for s in op["responses"] if s.startswith("2"))
        op["responses"][ok]["content"] = {RAW_ANSWERS[key]: binary}
