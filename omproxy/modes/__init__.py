"""What answers a request, one responder per kind of answer: replay (`replay`, with `matching`),
record (`record`); this module holds the seam they share (`Responder`), `Counted`, and the one way an
omproxy error becomes a GMS-shaped answer (`error_response`). Pure."""

from __future__ import annotations

import re
import time
from typing import Protocol

from omproxy.errors import OmproxyError
from omproxy.exchange import Exchange, Outcome
from omproxy.gms import vocabulary as gms
from omproxy.model import Response, Source


class Responder(Protocol):
    """The seam: given an exchange, an answer, or None for "not mine, ask the next"."""

    async def __call__(self, ex: Exchange) -> Response | None: ...


class Counted:
    """A responder whose answers are counted as `outcome` (the upstream: forwarded)."""

    def __init__(self, inner: Responder, outcome: Outcome) -> None:
        self.inner, self.outcome = inner, outcome

    async def __call__(self, ex: Exchange) -> Response | None:
        started = time.perf_counter()
        resp = await self.inner(ex)
        if resp is not None:
            ex.outcome = self.outcome
            ex.upstream_ms = (time.perf_counter() - started) * 1000
        return resp


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def escape(value: str) -> str:
    """Control characters (ESC, CR, LF, ...) from a request never reach a terminal or a log raw."""
    return value.encode("unicode_escape").decode("ascii") if _CONTROL.search(value) else value


def error_response(error: OmproxyError) -> Response:
    """An omproxy error as the client sees it: GMS-shaped JSON, statusCode 1 when a retry may help."""
    if error.retry:
        body = gms.retry(error.message)
    else:
        body = gms.reply(2, errors=[{"code": error.gms_code, "advice": error.message} if error.gms_code
                                    else {"advice": error.message}], **error.extra)
    return Response.json(error.status, body, Source.OMPROXY, **{"X-Omproxy-Error": error.code})
