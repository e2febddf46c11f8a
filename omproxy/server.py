"""Serving one mode until a signal: aiohttp's runner behind omproxy's own listening socket, so that
every connection is guarded — a new connection, or one in the middle of a request head, must send a
whole head within `header_timeout`; a keep-alive connection idle between requests is closed after
`idle_timeout`; connections beyond `max_connections` get a 503 at once rather than starving
`accept()`; aiohttp's own answers to bytes that are not HTTP are GMS-shaped JSON. Then the ready
line, a clean stop (requests in flight finished, cassettes flushed) and the summary line."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from omproxy import gms
from omproxy.app import RUNTIME, build_app
from omproxy.config import Config, Mode
from omproxy.errors import UsageError
from omproxy.exchange import Outcome
from omproxy.pipeline import escape

log = logging.getLogger("omproxy")
SWEEP = 0.5  # seconds between two looks at the open connections


class GmsRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse (a bad request line, a header
    too long, `%0A` in the path) as omproxy answers everything: GMS-shaped JSON."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        reason = escape((message or (str(exc) if exc else "") or HTTPStatus(status).phrase)[:200])
        if status >= 500:
            log.error("could not serve a request from %s: %s", request.remote, reason)
            reason = "omproxy internal error; the omproxy log has the details"
        else:
            log.warning("refused a request from %s that is not valid HTTP: %s", request.remote, reason)
        body = gms.reply(2, errors=[{"advice": f"{status} {HTTPStatus(status).phrase}: {reason}"}])
        resp = web.Response(status=status, body=body, content_type="application/json",
                            headers={"X-Omproxy-Error": "bad-http", "X-Omproxy-Source": "omproxy"})
        resp.force_close()
        return resp


OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
              b"X-Omproxy-Error: overloaded\r\nX-Omproxy-Source: omproxy\r\nRetry-After: 1\r\n")


def _overloaded(limit: int) -> bytes:
    body = gms.retry(f"omproxy has max_connections ({limit}) open connections; try again")
    return OVERLOADED + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


class Guard(asyncio.Protocol):
    """One client connection: aiohttp's handler inside, the clock outside."""

    def __init__(self, inner: GmsRequestHandler, guards: Guards) -> None:
        self.inner, self.guards = inner, guards
        self.transport: asyncio.Transport | None = None
        self.last = time.monotonic()
        self.head_started: float | None = None  # first byte of a request head not yet being served
        self.head_count = 0  # requests served on this connection when that head started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        if len(self.guards.open) >= self.guards.config.max_connections:
            transport.write(_overloaded(self.guards.config.max_connections))
            transport.close()
            self.guards.refused += 1
            return
        self.transport = transport
        self.head_started = time.monotonic()  # a new connection owes a request head within header_timeout
        self.guards.open.add(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.head_started is None and not self.busy:
            self.head_started, self.head_count = now, self.served
        self.last = now
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.guards.open.discard(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    @property
    def busy(self) -> bool:
        """A request of this connection is being served (its head was read)."""
        return getattr(self.inner, "_request_in_progress", False) is True

    @property
    def served(self) -> int:
        return int(getattr(self.inner, "_request_count", 0))

    def check(self, now: float) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.busy or (self.head_started is not None and self.served != self.head_count):
            self.head_started, self.last = None, now  # the head was read: the handler's time, not ours
            return
        config = self.guards.config
        if self.head_started is not None and now - self.head_started > config.header_timeout:
            self.guards.closed_slow += 1
            self.transport.abort()
        elif now - self.last > config.idle_timeout:
            self.guards.closed_idle += 1
            self.transport.abort()


class Guards:
    """Every open connection, swept twice a second."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.open: set[Guard] = set()
        self.refused = self.closed_idle = self.closed_slow = 0

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            now = time.monotonic()
            for guard in list(self.open):
                guard.check(now)


class Listener:
    """omproxy listening: its port, and how to stop."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, guards: Guards, sweeper: asyncio.Task[None]):
        self.runner, self.server, self.guards, self.sweeper = runner, server, guards, sweeper
        self.port: int = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        self.sweeper.cancel()
        await self.runner.cleanup()  # waits for in-flight handlers, then runs cleanup_ctx (flushes cassettes)


async def start(app: web.Application, config: Config) -> Listener:
    """Listen on config.host:port (0 picks a free port) with every connection guarded."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=30)
    await runner.setup()
    loop = asyncio.get_running_loop()
    guards = Guards(config)
    manager = runner.server
    assert manager is not None

    def connection() -> Guard:
        handler = GmsRequestHandler(manager, loop=loop, keepalive_timeout=config.idle_timeout, auto_decompress=False,
                                    access_log=None)  # type: ignore[arg-type]  # None: no access logger
        return Guard(handler, guards)

    try:
        server = await loop.create_server(connection, config.host, config.port, reuse_address=True,
                                          family=socket.AF_UNSPEC)
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    return Listener(runner, server, guards, asyncio.create_task(guards.sweep()))


def beyond_loopback(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def raise_file_limit(config: Config) -> None:
    """Use the hard limit of open files, and keep max_connections below it (a connection is a file;
    cassettes, the upstream and the log need some too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and config.max_connections > soft - 64:
        log.warning("max_connections %d is near the open-file limit %d; raise it (ulimit -n) or lower "
                    "max_connections", config.max_connections, soft)


class QuietAccept:
    """The loop's exception handler: an `accept()` that fails (out of files) is logged once per
    10 s with a count, never as a flood of tracebacks."""

    def __init__(self) -> None:
        self.last, self.suppressed = 0.0, 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < 10:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        log.error("accepting connections fails: %s%s", context.get("exception") or context.get("message"), more)
        self.last, self.suppressed = now, 0


def run(config: Config, mode: Mode, startup: str, summary: Callable[[dict[Outcome, int], Mode], str]) -> int:
    app = build_app(config, mode)
    log.info("%s", startup)
    started = time.monotonic()
    try:
        import uvloop  # the `fast` extra: a faster event loop, used when installed
    except ImportError:
        asyncio.run(serve(app, config, mode))
    else:
        log.debug("event loop: uvloop")
        uvloop.run(serve(app, config, mode))
    log.info("%s (%.0f s)", summary(app[RUNTIME].journal.counts, mode), time.monotonic() - started)
    return 0


async def serve(app: web.Application, config: Config, mode: Mode) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietAccept())
    raise_file_limit(config)
    listener = await start(app, config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    if beyond_loopback(config.host):
        log.warning("listening on %s: anyone who can reach this address can send traffic%s", config.host,
                    " and use /_omproxy/ (set admin.token)" if config.admin_token is None else "")
    print(f"omproxy {mode.value} listening on http://{host}:{listener.port}", flush=True)
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            return
        # A second signal while finishing: the user wants out now. Every answered request is on disk
        # already; requests still in flight were answered to no one and are recorded nowhere.
        log.warning("second signal: stopping now, without waiting for requests in flight")
        logging.shutdown()
        os._exit(1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    log.info("stopping: finishing requests in flight")
    await listener.close()
