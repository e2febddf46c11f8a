"""The one request pipeline, for every mode and every server front: `serve(request) -> Exchange`.
Responders decide (the first to return a Response answers); observers record (journal, access log,
findings) after the answer is decided: every exchange, in the order their answers were decided, in
one batch at the end of the event loop's turn. The rule that comes with it: whoever reads what the
observers keep (the admin API, the pytest plugin, a stop) calls `flush` first.
Fault rules (`modes.faults`) are asked before any responder, and may answer instead, or hold the answer.
Every failure becomes a GMS-shaped answer here, with the redacted target in the log: `serve` never
raises and never answers with internals. Pure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from omproxy.errors import NoRecording, NotAnOpenProxy, OmproxyError, UpstreamError
from omproxy.exchange import Exchange, Outcome
from omproxy.model import Request, Response
from omproxy.modes import Responder, error_response, escape
from omproxy.modes.faults import Faults
from omproxy.redaction import Redactor

log = logging.getLogger("omproxy.access")


Observer = Callable[[Exchange], None]


ADMIN_PREFIX = "/_omproxy/"
Admin = Callable[[Request], Awaitable[Response]]


class Pipeline:
    def __init__(self, responders: list[Responder], redactor: Redactor,
                 observers: list[Observer] | None = None, admin: Admin | None = None,
                 faults: Faults | None = None) -> None:
        self.responders = responders
        self.faults = faults
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
        faults = self.faults
        decision = await faults.decide(ex) if faults is not None else None
        resp = faults.answer(decision, ex.request) if faults is not None and decision is not None else None
        if resp is not None:
            ex.outcome = Outcome.FAULTED  # instead of asking anyone: never forwarded, never recorded
        else:
            resp = await self._ask(ex)
        if faults is not None and decision is not None:
            ex.delay_ms = faults.delay_ms(decision, ex)
            if ex.delay_ms:
                await asyncio.sleep(ex.delay_ms / 1000)
        return resp

    async def _ask(self, ex: Exchange) -> Response:
        for responder in self.responders:
            resp = await responder(ex)
            if resp is not None:
                return resp
        raise NoRecording(f"nothing answers {ex.request.method} {ex.request.path}")
