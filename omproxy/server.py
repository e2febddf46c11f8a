"""The one server front, for the command line and the pytest plugin alike: aiohttp's documented
low-level server (`web.Server`, a protocol factory) with a thin guard protocol around each of its
connections, handing each request to `Pipeline.serve` through `handle`. `app.build_app` is the same
`handle` in an aiohttp `Application`, for tests that drive it with aiohttp's test client.

aiohttp does HTTP/1.1: keep-alive, pipelining (answers in request order, at most 32 queued before it
stops reading), chunked bodies, HTTP/1.0, HEAD. The guard adds what aiohttp lacks: a new connection,
or one in the middle of a request head, must send a whole head within `header_timeout`; one idle
between requests is closed after `idle_timeout`; beyond `max_connections` a 503 at once, never a
starved `accept()`. Then the ready line, a clean stop (requests in flight finished, cassettes
flushed) and the summary line.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from omproxy import gms
from omproxy.accesslog import Write
from omproxy.app import Runtime, build_runtime, handle
from omproxy.config import Config, Mode
from omproxy.errors import UsageError
from omproxy.exchange import Outcome

log = logging.getLogger("omproxy")
SWEEP = 0.5  # seconds between two looks at the open connections
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
        self.streaming = False
        self.last = time.monotonic()
        self.head_started: float | None = self.last  # a new connection owes a request head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)  # uvloop's are not its subclasses
        front = self.front
        if len(front.open) >= front.config.max_connections or front.stopping:
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

    def end(self) -> None:
        self.busy -= 1
        self.last = time.monotonic()

    def check(self, now: float) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.busy or transport.get_write_buffer_size():
            return
        config = self.front.config
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
            response = await handle(self.rt, request, self.streams)
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
    await rt.start()
    loop = asyncio.get_running_loop()
    try:
        front.server = await loop.create_server(lambda: Guard(front), config.host, config.port,
                                                reuse_address=True, reuse_port=reuse_port or None,
                                                family=socket.AF_UNSPEC)
    except OSError as e:
        await rt.close()
        raise UsageError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    front.port = front.server.sockets[0].getsockname()[1]
    front.sweeper = asyncio.create_task(front.sweep())
    return Listener(front)


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


def run(config: Config, mode: Mode, startup: str, summary: Callable[[dict[Outcome, int], Mode], str],
        access: Write | None = None, *, worker: bool = False) -> int:
    """Serve until a signal. A worker (of `supervisor`) shares its port and, instead of the summary line,
    ends with its counts as one JSON line on stdout for the supervisor to add up."""
    rt = build_runtime(config, mode, access=access)
    started = time.monotonic()
    try:
        import uvloop  # the `fast` extra: a faster event loop, used when installed
    except ImportError:
        asyncio.run(serve(rt, config, mode, startup, worker))
    else:
        log.debug("event loop: uvloop")
        uvloop.run(serve(rt, config, mode, startup, worker))
    if worker:
        print(json.dumps({"counts": {o.value: n for o, n in rt.journal.counts.items()}}), flush=True)
    else:
        log.info("%s (%.0f s)", summary(rt.journal.counts, mode), time.monotonic() - started)
    return 0


async def serve(rt: Runtime, config: Config, mode: Mode, startup: str, worker: bool = False) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietAccept())
    raise_file_limit(config)
    listener = await start(rt, config, reuse_port=worker)
    # What start-up loaded (a big capture: millions of objects) lives as long as omproxy: kept out of
    # the cyclic GC's full collections, which would otherwise walk it all, pausing every request.
    gc.freeze()
    if not worker:
        log.info("%s", startup)
    host = f"[{config.host}]" if ":" in config.host else config.host
    if beyond_loopback(config.host) and not worker:
        log.warning("listening on %s: anyone who can reach this address can send traffic%s", config.host,
                    " and use /_omproxy/ (set admin.token)" if config.admin_token is None else "")
    print(f"omproxy {mode.value} listening on http://{host}:{listener.port}", flush=True)
    if not worker:
        log.info("inspector on http://%s:%d/_omproxy/ui", host, listener.port)
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

    if worker:  # Ctrl-C reaches the whole process group: a worker waits for its supervisor's SIGTERM
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        def supervisor_gone() -> None:  # its end of our stdin closed: it died; never outlive it
            if not os.read(0, 4096):
                loop.remove_reader(0)
                stop.set()

        loop.add_reader(0, supervisor_gone)
    for sig in (signal.SIGTERM,) if worker else (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    log.info("stopping: finishing requests in flight")
    await listener.close()

