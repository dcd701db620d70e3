"""The one exception tree of pilotage, split by who must act.

::

    PilotageError                     base; never raised itself
    ├── UserError                     the caller must fix their input or request
    │   ├── BadInput                  malformed submit file, API body, tar stream, config value
    │   │   └── MalformedBody         an API body that is not JSON at all (HTTP 400)
    │   ├── NotFound                  unknown job, cluster, claim, pilot
    │   ├── Unauthenticated           no, wrong, expired or forged credential (HTTP 401)
    │   ├── Denied                    authenticated but not allowed (HTTP 403)
    │   └── Conflict                  the object is not in a state that allows this (HTTP 409)
    ├── OperatorError                 the pool operator must fix configuration or set-up
    │   └── ConfigInvalid             a reload read a file that does not load (HTTP 422)
    ├── Transient                     nobody yet: retry later (carries ``retry_after_s``)
    │   └── Unreachable               the server could not be reached at all
    └── InternalError                 a bug in pilotage: report it

Each class carries the HTTP status the API answers with and the exit code the CLI ends
with, so the mapping lives here once. Messages are one sentence that names what is
wrong and, where the caller can act, what to do.
"""

from __future__ import annotations


class PilotageError(Exception):
    """Base of every error pilotage raises on purpose."""

    http_status = 500
    exit_code = 70

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(PilotageError):
    """The caller must change the input or the request."""

    http_status = 400
    exit_code = 2


class BadInput(UserError):
    """Input from outside (submit file, API body, tar stream, config) is malformed."""

    http_status = 422
    exit_code = 2


class MalformedBody(BadInput):
    """An API request's body cannot be read at all: not JSON, or not UTF-8 (HTTP 400).

    A body that is JSON but not what the route takes is :class:`BadInput` (422).
    """

    http_status = 400


class NotFound(UserError):
    """The named object does not exist (or is not visible to the caller)."""

    http_status = 404
    exit_code = 3


class Unauthenticated(UserError):
    """The caller presented no credential, or one that is wrong, expired or forged."""

    http_status = 401
    exit_code = 4


class Denied(UserError):
    """The caller is known but not allowed to do this."""

    http_status = 403
    exit_code = 4


class Conflict(UserError):
    """The object's current state forbids the action (a late report, an illegal transition)."""

    http_status = 409
    exit_code = 6


class OperatorError(PilotageError):
    """Configuration or installation is wrong; the pool operator must act."""

    http_status = 500
    exit_code = 78


class ConfigInvalid(OperatorError):
    """A reload of the running server read a configuration that does not load or does
    not pass its checks: refused (HTTP 422), the running configuration stays."""

    http_status = 422


class Transient(PilotageError):
    """A temporary failure: the same request may succeed later."""

    http_status = 503
    exit_code = 75

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unreachable(Transient):
    """The server did not answer at all (connection refused, DNS, TLS handshake)."""

    exit_code = 5


class InternalError(PilotageError):
    """A bug in pilotage itself."""

    http_status = 500
    exit_code = 70


#: HTTP status → error class, for clients that turn an API answer back into an exception.
BY_HTTP_STATUS: dict[int, type[PilotageError]] = {
    400: UserError,
    401: Unauthenticated,
    403: Denied,
    404: NotFound,
    409: Conflict,
    413: BadInput,
    422: BadInput,
    503: Transient,
}

#: Error class name → class, for the answers whose status alone does not say which
#: (a 422 ``ConfigInvalid`` is the operator's to fix, exit 78, not the caller's input).
BY_NAME: dict[str, type[PilotageError]] = {"ConfigInvalid": ConfigInvalid}
