"""The one error tree of omproxy. Lower libraries' errors are translated into it in one place each
(aiohttp client errors in `proxy.Forwarder`, YAML errors in `cassette`/`config`).

    OmproxyError                       base; `.status` is the HTTP status when it reaches a client
    ├── UsageError                     the user's fault at start-up: exit status 2, one line on stderr
    │   ├── ConfigError                config.yaml or a flag is wrong ("config.yaml: match.on: ...")
    │   └── CassetteError              a cassette cannot be loaded ("file:line: problem")
    ├── RequestRefused                 a client request omproxy will not handle (400, 405, 413)
    └── UpstreamError                  the upstream GMS failed; answered with GMS statusCode 1
        ├── UpstreamUnreachable        connection refused / DNS / reset        -> 502
        └── UpstreamTimeout            no answer within upstream_timeout       -> 504
"""

from __future__ import annotations


class OmproxyError(Exception):
    status = 500
    code = "internal"  # the X-Omproxy-Error header value

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(OmproxyError):
    code = "usage"


class ConfigError(UsageError):
    code = "config"


class CassetteError(UsageError):
    code = "cassette"


class RequestRefused(OmproxyError):
    code = "refused"

    def __init__(self, message: str, status: int = 400, code: str = "refused") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class UpstreamError(OmproxyError):
    status = 502
    code = "upstream"


class UpstreamUnreachable(UpstreamError):
    status = 502
    code = "upstream-unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream-timeout"
