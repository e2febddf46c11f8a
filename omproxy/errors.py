"""The one error tree of omproxy. Lower libraries' errors are translated into it in one place each
(the upstream client's in `upstream`, YAML errors in `yamlformat`/`config`); `pipeline`
turns every one that reaches a client into a GMS-shaped answer.

    OmproxyError                       base; `.status` the HTTP status, `.code` the X-Omproxy-Error value
    ├── UsageError                     the user's fault at start-up: exit status 2, one line on stderr
    │   ├── ConfigError                config.yaml or a flag is wrong ("config.yaml: match.on: ...")
    │   └── CassetteError              a cassette cannot be loaded or written ("file:line: problem")
    ├── RequestRefused                 a client request omproxy will not handle             -> 400
    │   ├── NotAnOpenProxy             an absolute-form target or CONNECT                   -> 400
    │   ├── BodyTooLarge               a body over max_body                                 -> 413
    │   ├── UnsupportedEncoding        a Content-Encoding other than gzip or deflate        -> 415
    │   ├── AdminRefused               an admin call without the token, or one a browser form could send
    │   └── Overloaded                 more open connections than max_connections           -> 503
    ├── NoRecording                    replay with --fallback none found nothing (GMS code 910) -> 404
    ├── StateUnavailable               the shared state (Redis) does not answer; statusCode 1 -> 503
    ├── CassetteChanged                an answer left on disk changed since it was loaded     -> 503
    └── UpstreamError                  the upstream GMS failed; answered with GMS statusCode 1
        ├── UpstreamUnreachable        connection refused / DNS / reset / an invalid answer -> 502
        ├── UpstreamTooLarge           an answer over max_response_body                     -> 502
        └── UpstreamTimeout            no answer within upstream_timeout                    -> 504
"""

from __future__ import annotations

from typing import Any


class OmproxyError(Exception):
    status = 500
    code = "internal"  # the X-Omproxy-Error header value
    gms_code: int | None = None  # the GMS error code of the answer, when omproxy has one
    retry = False  # answered with GMS's statusCode 1: "may succeed if retried"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra  # more fields of the GMS-shaped answer (e.g. nearMisses)


class UsageError(OmproxyError):
    code = "usage"


class ConfigError(UsageError):
    code = "config"


class CassetteError(UsageError):
    code = "cassette"


class RequestRefused(OmproxyError):
    status = 400
    code = "refused"


class NotAnOpenProxy(RequestRefused):
    code = "not-an-open-proxy"


class BodyTooLarge(RequestRefused):
    status = 413
    code = "body-too-large"


class UnsupportedEncoding(RequestRefused):
    status = 415
    code = "unsupported-encoding"


class AdminRefused(RequestRefused):
    status = 401
    code = "admin-refused"

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class Overloaded(RequestRefused):
    status = 503
    code = "overloaded"


class NoRecording(OmproxyError):
    status = 404
    code = "no-match"
    gms_code = 910  # gms.NO_MATCH


class BackPressure(OmproxyError):
    """An entry refused at once: more is waiting to be written than record.queue allows."""

    code = "back-pressure"


class StateUnavailable(OmproxyError):
    status = 503
    code = "state-unavailable"
    retry = True


class CassetteChanged(OmproxyError):
    """A replayed answer read from its cassette when first played is no longer what was loaded (the
    file was edited, replaced or removed while omproxy runs): said, never served."""

    status = 503
    code = "cassette-changed"


class UpstreamError(OmproxyError):
    status = 502
    code = "upstream"
    retry = True


class UpstreamUnreachable(UpstreamError):
    code = "upstream-unreachable"


class UpstreamTooLarge(UpstreamError):
    code = "upstream-too-large"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream-timeout"
