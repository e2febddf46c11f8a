"""The one server front, for the command line and the pytest plugin alike: aiohttp's documented
low-level server (`web.Server`, a protocol factory) with a thin guard protocol around each of its
connections, handing each request to `Pipeline.serve` through `handle`, the one request handler.
`build_app` is the same `handle` in an aiohttp `Application`, for tests that drive it with aiohttp's
test client.

aiohttp does HTTP/1.1: keep-alive, pipelining (answers in request order, at most 32 queued before it
stops reading), chunked bodies, HTTP/1.0, HEAD. The guard adds what aiohttp lacks: a new connection,
or one in the middle of a request head, must send a whole head within `header_timeout`; one idle
between requests is closed after `idle_timeout`; beyond `max_connections` a 503 at once, never a
starved `accept()`. A stop closes idle connections at once and lets requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from omproxy.config.options import Config, Mode
from omproxy.errors import OmproxyError, Overloaded, UsageError
from omproxy.gms import vocabulary as gms
from omproxy.gms.simulator import Simulator
from omproxy.model import Request, Response
from omproxy.modes import error_response, escape
from omproxy.modes.record import OFF_LOOP  # bodies above it are worked on a thread, here as in record
from omproxy.serve.http.convert import to_request, to_web, web_headers
from omproxy.serve.runtime import Runtime, build_runtime
from omproxy.state import State

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("omproxy")
SWEEP = 0.5  # seconds between two looks at the open connections
MAX_STREAMS = 16  # inspector pages' event streams at once (each costs every request a row: a bound)
_OVERLOADED = gms.retry("omproxy has too many open connections (max_connections); try again")
OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json;charset=utf-8\r\n"
              b"X-Omproxy-Error: overloaded\r\nX-Omproxy-Source: omproxy\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: " + str(len(_OVERLOADED)).encode() + b"\r\n\r\n" + _OVERLOADED)


class Guard(asyncio.Protocol):
    """One client connection: aiohttp's protocol inside, watched from outside (asyncio's documented
    protocol calls only): when its request head began, when it was last active, whether a request
    is being served."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.busy = 0  # requests being served
        self.streaming = False  # an inspector page's event stream: counted apart from max_connections
        self.body_started: float | None = None  # a request's head is in, its body is being read
        self.last = time.monotonic()
        self.head_started: float | None = self.last  # a new connection owes a request head
        self.gone = asyncio.Event()  # set when the connection is lost (what a held fault waits for)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)  # uvloop's are not its subclasses
        front = self.front
        if len(front.open) - front.stream_count >= front.config.max_connections or front.stopping:
            stream.write(OVERLOADED)
            stream.close()
            front.refused += 1
            return
        front.open[transport] = self
        self.inner = front.web()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        self.last = time.monotonic()
        if self.head_started is None and not self.busy:
            self.head_started = self.last
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()
        if self.transport is not None:
            self.front.open.pop(self.transport, None)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def begin(self) -> None:
        self.busy += 1
        self.head_started = None
        self.body_started = time.monotonic()

    def body_read(self) -> None:
        self.body_started = None

    def stream(self, on: bool) -> None:
        """An event stream began (or ended) on this connection: it holds no slot of max_connections."""
        if on != self.streaming:
            self.streaming = on
            self.front.stream_count += 1 if on else -1

    def end(self) -> None:
        self.busy -= 1
        self.body_started = None
        self.last = time.monotonic()
        self.stream(False)

    def check(self, now: float) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        config = self.front.config
        if self.busy and self.body_started is not None and now - self.body_started > config.body_timeout:
            self.front.closed_slow += 1  # a body that does not come (slow, or Expect: 100-continue and nothing)
            transport.abort()
            return
        if self.busy or transport.get_write_buffer_size():
            return
        if self.head_started is not None and now - self.head_started > config.header_timeout:
            self.front.closed_slow += 1
            transport.abort()
        elif self.head_started is None and now - self.last > config.idle_timeout:
            self.front.closed_idle += 1
            transport.abort()


class Front:
    """Everything the connections share: the runtime, aiohttp's server, the limits, the open connections."""

    def __init__(self, rt: Runtime, config: Config) -> None:
        self.rt, self.config = rt, config
        # aiohttp's idle timeout is the guard's, later: the guard closes first, and counts it
        self.web = web.Server(self.serve, access_log=None, auto_decompress=False,
                              keepalive_timeout=config.idle_timeout + 60)
        self.open: dict[asyncio.BaseTransport, Guard] = {}
        self.stopping = False
        self.refused = self.closed_idle = self.closed_slow = 0
        self.stream_count = 0  # connections carrying an inspector page's event stream
        self.server: asyncio.Server | None = None
        self.sweeper: asyncio.Task[None] | None = None
        self.streams: set[asyncio.Task[Any]] = set()  # handlers sending Server-Sent Events
        self.port = 0

    async def serve(self, request: web.BaseRequest) -> web.StreamResponse:
        guard = self.open.get(request.transport) if request.transport is not None else None
        if guard is not None:
            guard.begin()
        try:
            if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue" and (
                    request.transport is not None and request.can_read_body):
                request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # what aiohttp's router would send
            response = await handle(self.rt, request, self.streams, guard.gone if guard is not None else None, guard)
            if self.stopping:
                response.force_close()
            return response
        finally:
            if guard is not None:
                guard.end()

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            now = time.monotonic()
            for guard in list(self.open.values()):
                guard.check(now)

    async def close(self) -> None:
        """Stop accepting, let each connection finish the request it serves, then flush and close."""
        self.stopping = True
        if self.server is not None:
            self.server.close()
        if self.sweeper is not None:
            self.sweeper.cancel()
        for task in list(self.streams):  # an open inspector page: it reconnects later
            task.cancel()
        for guard in list(self.open.values()):  # between two requests: closed now, not waited for
            if not guard.busy and guard.transport is not None:
                guard.transport.close()
        await self.web.shutdown(30)  # the requests in flight are answered, then their connections closed
        for guard in list(self.open.values()):
            if guard.transport is not None:
                guard.transport.close()
        await self.rt.close()


class Listener:
    """omproxy listening: its port, its front, and how to stop."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.port = front.port

    async def close(self) -> None:
        await self.front.close()


async def start(rt: Runtime, config: Config, *, reuse_port: bool = False) -> Listener:
    """Start the runtime and listen on config.host:port (0 picks a free port); with `reuse_port`, beside
    the other workers of a supervisor on the same port."""
    front = Front(rt, config)
    tls = tls_context(config)
    await rt.start()
    loop = asyncio.get_running_loop()
    try:
        front.server = await loop.create_server(lambda: Guard(front), config.host, config.port,
                                                reuse_address=True, reuse_port=reuse_port or None,
                                                family=socket.AF_UNSPEC, ssl=tls)
    except OSError as e:
        rt.warn_stale = False  # nothing was served, so nothing was "never played" (D24)
        await rt.close()
        raise UsageError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    front.port = front.server.sockets[0].getsockname()[1]
    front.sweeper = asyncio.create_task(front.sweep())
    return Listener(front)


def tls_context(config: Config) -> ssl.SSLContext | None:
    """HTTPS on the listening side (tls.cert and tls.key), or None for plain HTTP."""
    if config.tls_cert is None and config.tls_key is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise UsageError("TLS needs both tls.cert and tls.key (--tls-cert, --tls-key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot load the TLS certificate {config.tls_cert} and key {config.tls_key}: "
                         f"{getattr(e, 'strerror', None) or e}") from None
    return context


RUNTIME = web.AppKey("runtime", Runtime)


async def handle(rt: Runtime, request: web.BaseRequest, streams: set[asyncio.Task[Any]] | None = None,
                 gone: asyncio.Event | None = None, guard: Guard | None = None) -> web.StreamResponse:
    """Every request, whatever its target (CONNECT and absolute-form included): read it once, serve it,
    write the answer. The one request handler, of `Front` and of `build_app`. `streams`
    holds the tasks sending Server-Sent Events, for a stop to cancel; `gone` is set when the client's
    connection is lost (a held fault stops waiting then); `guard` watches the connection (its body's
    deadline, whether it carries an event stream)."""
    try:
        req = await to_request(request, rt.config.max_body)
        if guard is not None:
            guard.body_read()
        if len(req.body) > OFF_LOOP:  # a big form decoded on a thread: other clients are served meanwhile
            await asyncio.to_thread(_decoded, req)
    except OmproxyError as e:  # refused while reading (413, 400, 415): the path in the log
        log.warning("%s %s -> %s: %s", request.method, escape(request.raw_path.split("?")[0]), e.status, e.message)
        refused = to_web(error_response(e))
        refused.force_close()  # the rest of its body is not read
        return refused
    ex = await rt.pipeline.serve(req)
    assert ex.response is not None
    if ex.response.action is not None:
        return await fault(ex.response, request, gone, rt.config.upstream_timeout)
    if ex.response.stream is None:
        answer = to_web(ex.response)
        if "upgrade" in request.headers.get("Connection", "").lower():
            # omproxy upgrades nothing, and aiohttp reads no request pipelined behind an Upgrade one:
            # closing after the answer tells such a client to send it again, rather than wait for ever
            answer.force_close()
        return answer
    # Server-Sent Events: sent as they come, delimited by closing the connection
    if streams is not None and len(streams) >= MAX_STREAMS:
        await ex.response.stream.aclose()  # type: ignore[attr-defined]
        busy = to_web(error_response(Overloaded(f"{MAX_STREAMS} inspector pages are open already; close one")))
        busy.force_close()
        return busy
    if guard is not None:
        guard.stream(True)
    streamed = web.StreamResponse(status=ex.response.status, headers=web_headers(ex.response))
    streamed.force_close()
    await streamed.prepare(request)
    task = asyncio.current_task()
    if streams is not None and task is not None:
        streams.add(task)
    try:
        async for chunk in ex.response.stream:
            await streamed.write(chunk)
    except ConnectionError:  # the page was closed
        pass
    finally:
        if streams is not None and task is not None:
            streams.discard(task)
        await ex.response.stream.aclose()  # type: ignore[attr-defined]
    return streamed


def _decoded(req: Request) -> None:
    """What a request's form and findings decode to, computed once (each is remembered on the request)."""
    req.form  # noqa: B018 — the property decodes and keeps
    req.findings  # noqa: B018


async def fault(resp: Response, request: web.BaseRequest, gone: asyncio.Event | None,
                hold: float) -> web.StreamResponse:
    """A fault done to the connection: `reset` closes it with no answer; `timeout` holds it with no
    answer until the client gives up (at most `hold` seconds, then closes it); `truncate` sends the head
    and half the body it announces, then closes it."""
    transport = request.transport
    if resp.action == "timeout" and transport is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait() if gone is not None else asyncio.Event().wait(), hold)
    if resp.action == "truncate" and transport is not None and not transport.is_closing():
        cut = web.StreamResponse(status=resp.status, headers=web_headers(resp))
        cut.content_length = len(resp.body)
        await cut.prepare(request)
        await cut.write(resp.body[:len(resp.body) // 2])
        transport.close()  # what was written is sent first
        return cut
    if transport is not None:
        transport.abort()
    dropped = web.Response(status=resp.status)
    dropped.force_close()
    return dropped


def build_app(config: Config, mode: Mode, *, simulator: Simulator | None = None,
              state: State | None = None) -> web.Application:
    """`handle` as an aiohttp web application, for tests driven by aiohttp's test client: no
    behaviour of its own (the command line and the pytest plugin serve through `start`)."""
    rt = build_runtime(config, mode, simulator=simulator, state=state)

    @web.middleware
    async def every(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handle(rt, request)

    app = web.Application(middlewares=[every], client_max_size=config.max_body,
                          handler_args={"auto_decompress": False})  # to_request checks and decompresses
    app[RUNTIME] = rt
    app.cleanup_ctx.append(lifecycle)
    return app


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    await rt.start()
    yield
    await rt.close()
