"""The one request pipeline, for every mode and every server front: `serve(request) -> Exchange`.
Responders decide (the first to return a Response answers); observers record (journal, access log,
findings) after the answer is decided: every exchange, in the order their answers were decided, in
one batch at the end of the event loop's turn. The rule that comes with it: whoever reads what the
observers keep (the admin API, the pytest plugin, a stop) calls `flush` first.
Every failure becomes a GMS-shaped answer here, with the redacted target in the log: `serve` never
raises and never answers with internals. Pure."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from omproxy import gms
from omproxy.errors import NoRecording, NotAnOpenProxy, OmproxyError, UpstreamError
from omproxy.exchange import Exchange, Outcome
from omproxy.model import Request, Response, Source
from omproxy.redaction import Redactor

log = logging.getLogger("omproxy.access")


class Responder(Protocol):
    """The seam: given an exchange, an answer, or None for "not mine, ask the next"."""

    async def __call__(self, ex: Exchange) -> Response | None: ...


Observer = Callable[[Exchange], None]


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


ADMIN_PREFIX = "/_omproxy/"
Admin = Callable[[Request], Awaitable[Response]]


class Pipeline:
    def __init__(self, responders: list[Responder], redactor: Redactor,
                 observers: list[Observer] | None = None, admin: Admin | None = None) -> None:
        self.responders = responders
        self.redactor = redactor
        self.observers: list[Observer] = observers or []
        self.admin = admin  # /_omproxy/...: answered first, never journaled, logged or recorded
        self.unobserved: list[Exchange] = []  # answered in this turn of the loop, observed at its end

    async def serve(self, req: Request) -> Exchange:
        ex = Exchange(req)
        if self.admin is not None and req.path.startswith(ADMIN_PREFIX):
            self.flush()  # what the admin API shows includes every exchange answered before it
            try:
                ex.response = await self.admin(req)
            except OmproxyError as e:
                log.warning("%s %s -> %s: %s", req.method, escape(req.path), e.status, e.message)
                ex.response = error_response(e)
            return ex
        started = time.perf_counter()
        try:
            if req.method == "CONNECT" or not req.path.startswith("/"):
                # Not an open proxy: an absolute-form target (`GET http://other/x`) or CONNECT.
                raise NotAnOpenProxy(f"omproxy is a reverse proxy for one GMS, not an open proxy: refused "
                                     f"{req.method} {req.path}")
            ex.response = await self._answer(ex)
        except OmproxyError as e:
            if isinstance(e, UpstreamError):
                ex.outcome = Outcome.FAILED_UPSTREAM
            ex.error = e.message
            ex.response = error_response(e)
            log.warning("%s %s -> %s: %s", req.method, escape(self.redactor.target(req.path, req.query)),
                        e.status, e.message)
        except Exception:  # a bug in omproxy: a GMS-shaped 500; the traceback in the log, not the answer
            log.exception("internal error on %s %s", req.method, escape(self.redactor.target(req.path, req.query)))
            ex.error = "omproxy internal error; the omproxy log has the details"
            ex.response = error_response(OmproxyError(ex.error))
        ex.duration_ms = (time.perf_counter() - started) * 1000
        self._observe_soon(ex)
        return ex

    def _observe_soon(self, ex: Exchange) -> None:
        if not self.unobserved:
            asyncio.get_running_loop().call_soon(self.flush)
        self.unobserved.append(ex)

    def flush(self) -> None:
        """Let the observers see what was answered and not yet observed, in order."""
        batch, self.unobserved = self.unobserved, []
        for observe in self.observers:
            for ex in batch:
                try:
                    observe(ex)
                except Exception:
                    log.exception("an observer failed on %s %s", ex.request.method, escape(ex.request.path))

    async def _answer(self, ex: Exchange) -> Response:
        for responder in self.responders:
            resp = await responder(ex)
            if resp is not None:
                return resp
        raise NoRecording(f"nothing answers {ex.request.method} {ex.request.path}")
