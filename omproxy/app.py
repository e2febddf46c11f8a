"""build_app(config, mode): the chain of responders for each mode — read top to bottom, this is
the architecture. A responder takes a Request and returns a Response, or None for "not mine, ask
the next". Only this module, `proxy`, `admin` and `cli` import aiohttp.

    simulate     Simulating
    passthrough  upstream                      (a Forwarder, or the simulator for `builtin`)
    record       Recorder(upstream)
    replay       Replayer, then Fallback (the seeded simulator) or Misser (an explained 404)
    auto         Replayer, then Recorder(upstream)
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from omproxy import accesslog, admin, cassette, gms
from omproxy.config import Config, Mode
from omproxy.errors import UpstreamError
from omproxy.journal import Journal
from omproxy.model import Request, Responder, Response
from omproxy.proxy import Forwarder, error_middleware, origin_form_only, to_request, to_web
from omproxy.record import CassetteWriter, Recorder
from omproxy.redaction import Redactor
from omproxy.replay import Fallback, Misser, Playback, Replayer
from omproxy.simulator import Simulator

log = logging.getLogger("omproxy.access")


@dataclass
class Runtime:
    """What one running omproxy is: its config, its chain, and what the admin API can see."""

    config: Config
    mode: Mode
    redactor: Redactor
    journal: Journal = field(default_factory=Journal)
    responders: list[Responder] = field(default_factory=list)
    playback: Playback | None = None  # replay and auto
    forwarder: Forwarder | None = None  # a real upstream, opened and closed with the app
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def answer(self, req: Request) -> Response:
        for responder in self.responders:
            resp = await responder(req)
            if resp is not None:
                return resp
        return Response.json(404, gms.failure(gms.NO_MATCH, f"nothing in {self.mode.value} mode answers "
                                              f"{req.method} {req.target}"), "omproxy",
                             **{"X-Omproxy-Error": "no-match"})


RUNTIME = web.AppKey("runtime", Runtime)


def build_app(config: Config, mode: Mode, *, simulator: Simulator | None = None) -> web.Application:
    rt = Runtime(config, mode, Redactor(config.redact))
    simulator = simulator or Simulator(config.sections)
    if mode is Mode.SIMULATE:
        rt.responders = [Counting(Simulating(simulator), rt.journal, "simulated")]
    elif mode is Mode.PASSTHROUGH:
        rt.responders = [upstream(rt, simulator)]
    elif mode is Mode.RECORD:
        rt.responders = [recorder(rt, upstream(rt, simulator))]
    elif mode is Mode.REPLAY:  # never an upstream: replay opens no connection, ever
        rt.playback = playback(rt, must_exist=True, repeat=config.repeat)
        miss = Fallback if config.fallback == "simulator" else Misser
        rt.responders = [Replayer(rt.playback, rt.journal), miss(rt.playback, rt.journal)]
    elif mode is Mode.AUTO:  # a request whose recordings are used up is a new episode: forward, record
        rt.playback = playback(rt, must_exist=False, repeat="miss")
        rt.responders = [Replayer(rt.playback, rt.journal), recorder(rt, upstream(rt, simulator))]

    app = web.Application(middlewares=[error_middleware, origin_form_only], client_max_size=config.max_body)
    app[RUNTIME] = rt
    app.cleanup_ctx.append(lifecycle)
    admin.install(app, rt)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def upstream(rt: Runtime, simulator: Simulator) -> Responder:
    """The upstream GMS, counted: the built-in simulator, or a Forwarder to a real one."""
    if rt.config.upstream == "builtin":
        return Counting(Simulating(simulator), rt.journal, "forwarded")
    rt.forwarder = Forwarder(rt.config.upstream, rt.config.upstream_timeout)
    return Counting(rt.forwarder, rt.journal, "forwarded")


def recorder(rt: Runtime, inner: Responder) -> Recorder:
    writer = CassetteWriter(rt.config.cassette)
    rt.closers.append(writer.drain)
    return Recorder(inner, writer, rt.redactor, rt.journal)


def playback(rt: Runtime, *, must_exist: bool, repeat: str) -> Playback:
    cassettes = cassette.load_spec(rt.config.cassette, must_exist=must_exist)
    for c in cassettes:
        if c.dropped:
            log.warning("%s", c.dropped)
    pb = Playback.of(cassettes, rt.config, rt.redactor.form_keys, repeat)
    log.info("loaded %d interactions from %d cassette(s)", len(pb.index.all), len(cassettes))
    return pb


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    if rt.forwarder is not None:
        await rt.forwarder.start()
    yield
    if rt.forwarder is not None:
        await rt.forwarder.close()
    for close in rt.closers:
        await close()
    if rt.playback is not None:
        stale = rt.playback.stale()
        rt.journal.counts["never played"] = len(stale)
        if stale:
            log.warning("recorded but never played (a stale cassette?): %s%s", ", ".join(stale[:10]),
                        f" and {len(stale) - 10} more" if len(stale) > 10 else "")


class Simulating:
    """The simulator as a responder (simulate mode, and the `builtin` upstream)."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    async def __call__(self, req: Request) -> Response:
        return self.simulator.handle(req)


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
    """Every request outside /_omproxy/: read it once, log its findings, ask the chain, log the answer."""
    rt = request.app[RUNTIME]
    started = time.perf_counter()
    req = await to_request(request, rt.config.max_body)
    secrets = rt.redactor.secrets_in(req.form.fields, req.body, req.headers.get("Content-Type"))
    target = rt.redactor.target(req.path, req.query)
    for finding in accesslog.findings_of(req):
        shown = {k: rt.redactor.scrub(v, secrets) for k, v in finding.as_dict().items()}
        log.warning("%s %s: %s: %s%s", req.method, target, shown["kind"], shown["message"],
                    f" [{shown['fragment']}]" if shown["fragment"] else "",
                    extra={"entry": {"finding": shown, "method": req.method, "path": target}})
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
