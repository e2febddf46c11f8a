"""build_app(config, mode): the chain of responders for a mode, read top to bottom as the
architecture. A responder takes a Request and returns a Response, or None for "not mine, ask the
next". Only this module, `proxy`, `admin` and `cli` import aiohttp."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from omproxy import accesslog, admin, gms
from omproxy.config import Config, Mode
from omproxy.errors import UpstreamError
from omproxy.journal import Journal
from omproxy.model import Request, Response
from omproxy.proxy import Forwarder, error_middleware, origin_form_only, to_request, to_web
from omproxy.redaction import Redactor
from omproxy.simulator import Simulator

log = logging.getLogger("omproxy.access")


class Responder(Protocol):
    async def __call__(self, req: Request) -> Response | None: ...


class Simulating:
    """The simulator as a responder (simulate mode, and the `builtin` upstream)."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    async def __call__(self, req: Request) -> Response:
        return self.simulator.handle(req)


@dataclass
class Runtime:
    config: Config
    mode: Mode
    redactor: Redactor
    journal: Journal = field(default_factory=Journal)
    responders: list[Responder] = field(default_factory=list)
    admin: dict[str, Any] = field(default_factory=dict)  # what the admin API can see, per mode

    async def answer(self, req: Request) -> Response:
        for responder in self.responders:
            resp = await responder(req)
            if resp is not None:
                return resp
        return Response.json(404, gms.failure(gms.NO_MATCH, f"nothing in {self.mode.value} mode answers "
                                              f"{req.method} {req.target}"), "omproxy",
                             **{"X-Omproxy-Error": "no-match"})


RUNTIME = web.AppKey("runtime", Runtime)


def upstream_of(config: Config, simulator: Simulator | None = None) -> tuple[Responder, Forwarder | None]:
    """The upstream GMS: the built-in simulator, or a Forwarder to a real one."""
    if config.upstream == "builtin":
        return Simulating(simulator or Simulator(config.sections)), None
    forwarder = Forwarder(config.upstream, config.upstream_timeout)
    return forwarder, forwarder


def build_app(config: Config, mode: Mode, *, simulator: Simulator | None = None) -> web.Application:
    rt = Runtime(config, mode, Redactor(config.redact))
    forwarder: Forwarder | None = None
    if mode is Mode.SIMULATE:
        rt.responders = [Counting(Simulating(simulator or Simulator(config.sections)), rt.journal, "simulated")]
    elif mode is Mode.PASSTHROUGH:
        upstream, forwarder = upstream_of(config, simulator)
        rt.responders = [Counting(upstream, rt.journal, "forwarded")]
    else:
        from omproxy import modes  # record / replay / auto: the cassette-backed chains

        forwarder = modes.assemble(rt, simulator)

    app = web.Application(middlewares=[error_middleware, origin_form_only], client_max_size=config.max_body)
    app[RUNTIME] = rt

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if forwarder is not None:
            await forwarder.start()
        yield
        if forwarder is not None:
            await forwarder.close()
        for close in rt.admin.get("closers", []):
            await close()

    app.cleanup_ctx.append(lifecycle)
    admin.install(app, rt)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class Counting:
    """Counts what the wrapped responder answered (for the summary line)."""

    def __init__(self, inner: Responder, journal: Journal, what: str) -> None:
        self.inner, self.journal, self.what = inner, journal, what

    async def __call__(self, req: Request) -> Response | None:
        resp = await self.inner(req)
        if resp is not None:
            self.journal.count(self.what)
        return resp


async def handle(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    started = time.perf_counter()
    req = await to_request(request, rt.config.max_body)
    for finding in accesslog.findings_of(req):
        log.warning("%s %s: %s: %s%s", req.method, req.target, finding.kind, finding.message,
                    f" [{finding.fragment}]" if finding.fragment else "",
                    extra={"entry": {"finding": finding.as_dict(), "method": req.method, "path": req.target}})
    try:
        resp = await rt.answer(req)
    except UpstreamError:
        rt.journal.count("failed upstream")
        raise
    entry = accesslog.record(rt.mode.value, req, resp, (time.perf_counter() - started) * 1000,
                             rt.redactor, rt.config.verbose)
    rt.journal.add(entry)
    log.info("%s", accesslog.text(entry), extra={"entry": entry})
    return to_web(resp)

