"""The server front of the command line: a connection protocol on aiohttp's own HTTP parser (its C
parser, llhttp, when built), handing each request to `Pipeline.serve` and writing the answer as bytes
— no web application, router or response object per request, and a recorded answer's head is
composed once. The same pipeline serves `app.build_app`'s aiohttp front, used in process (tests).

HTTP/1.1 as clients use it: keep-alive, pipelining (answers in request order), chunked request
bodies, `Expect: 100-continue`, HTTP/1.0, 413 over `max_body`, GMS-shaped 400 for what is not HTTP.
Every connection is watched: a new one, or one in the middle of a request head, must send a whole head
within `header_timeout`; one idle between requests is closed after `idle_timeout`; beyond
`max_connections` a 503 at once, never a starved `accept()`. Then the ready line, a clean stop
(requests in flight finished, cassettes flushed) and the summary line.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import os
import resource
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Hashable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestPayloadError

from omproxy import gms
from omproxy.accesslog import Write
from omproxy.app import Runtime, build_runtime
from omproxy.config import Config, Mode
from omproxy.errors import OmproxyError, RequestRefused, UsageError
from omproxy.exchange import Exchange, Outcome
from omproxy.model import SESSION_HEADER, Request, Response, Source
from omproxy.pipeline import error_response, escape
from omproxy.proxy import assemble, too_large
from omproxy.upstream import Reading

log = logging.getLogger("omproxy")
SWEEP = 0.5  # seconds between two looks at the open connections
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DROPPED = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive",
                      "date", "x-omproxy-source"})
_NO_BODY = frozenset({204, 304})


class Clock:
    """The Date header, formatted once a second by a timer (not looked up on every answer)."""

    def __init__(self) -> None:
        self.text = b""
        self.handle: asyncio.TimerHandle | None = None
        self.tick()

    def tick(self) -> None:
        now = time.time()
        self.text = formatdate(now, usegmt=True).encode("ascii")
        self.handle = asyncio.get_running_loop().call_later(1.0 - now % 1.0, self.tick)  # the next second

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class Heads:
    """Each answer's status line and headers as bytes, composed once for a recorded answer (which is
    served again and again) and each time for the others."""

    def __init__(self) -> None:
        self.cached: dict[int, tuple[Response, bytes]] = {}
        # an upstream's answers share their headers (`proxy.Forwarder`): their heads, by those
        self.shared: dict[tuple[int, int, str | None], tuple[Any, bytes]] = {}

    def of(self, resp: Response) -> bytes:
        if resp.source is Source.CASSETTE:
            found = self.cached.get(id(resp))
            if found is not None and found[0] is resp:
                return found[1]
        elif resp.source is Source.UPSTREAM:
            seen = self.shared.get((id(resp.headers), resp.status, resp.reason))
            if seen is not None and seen[0] is resp.headers:
                return seen[1]
        reason = resp.reason or (HTTPStatus(resp.status).phrase if resp.status in HTTPStatus._value2member_map_
                                 else "Unknown")
        lines = [f"HTTP/1.1 {resp.status} {reason}"]
        lines += [f"{k}: {v}" for k, v in resp.headers.items() if k.lower() not in _DROPPED]
        lines.append(f"X-Omproxy-Source: {resp.source.value}")
        head = ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
        if resp.source is Source.CASSETTE:
            self.cached[id(resp)] = (resp, head)
        elif resp.source is Source.UPSTREAM:
            if len(self.shared) >= 256:
                self.shared.clear()
            self.shared[id(resp.headers), resp.status, resp.reason] = (resp.headers, head)
        return head


class Settled:
    """Answers that no longer change, by what of the request decides them: a repeated request (method,
    target, body, peer and the headers omproxy reads the same: `Front.deciding`) is answered by
    `Pipeline.again` — as long as the pipeline says it is still settled — from bytes composed once,
    without matching (and, when its header lines are the first one's too, without a `Request`: a
    request id makes one, so the journal and the inspector show each request's own headers). An
    answer is kept the second time its request settles. A kept request that then arrives as one read of
    exactly its bytes, on a connection whose parser holds nothing, is known by those bytes the next
    time: answered before it is parsed (most of what is left of a repeat's cost is the parser's).
    Bounded: when full, it starts again empty."""

    LIMIT = 1024

    def __init__(self) -> None:
        self.known: dict[Hashable, tuple[Exchange, bytes, bytes, Any]] = {}  # and its raw header lines
        self.once: set[Hashable] = set()  # settled once: kept if it settles again
        # A settled request that arrives as one read of exactly its bytes (keep-alive clients send a
        # request at a time): those bytes and the peer, to its key above and the exchange that was
        # that request — looked up before parsing.
        self.raw: dict[tuple[bytes, str], tuple[Hashable, Exchange]] = {}

    def keep(self, key: Hashable, ex: Exchange, before_date: bytes, after_date: bytes, raw_headers: Any) -> None:
        if key not in self.once:
            if len(self.once) >= 4 * self.LIMIT:
                self.once.clear()
            self.once.add(key)
            return
        if len(self.known) >= self.LIMIT:
            self.known.clear()
            self.raw.clear()
        self.known[key] = (ex, before_date, after_date, raw_headers)

    def alias(self, data: bytes, peer: str, key: Hashable, ex: Exchange) -> None:
        """`data`, read whole, is the request of `ex`, whose answer is settled under `key`."""
        if len(self.raw) >= self.LIMIT:
            self.raw.clear()
        self.raw[data, peer] = (key, ex)

    def adopt(self, key: Hashable, ex: Exchange, raw_headers: Any) -> None:
        """The answer settled under `key` is the answer of `ex` too, whose request's header lines are
        `raw_headers`: the next request with those lines repeats it (not the one kept before)."""
        found = self.known.get(key)
        if found is not None:
            self.known[key] = (ex, found[1], found[2], raw_headers)

    def forget(self, key: Hashable) -> None:
        self.known.pop(key, None)


class Front:
    """Everything the connections share: the runtime, the limits, the open connections."""

    def __init__(self, rt: Runtime, config: Config) -> None:
        self.rt, self.config = rt, config
        self.loop = asyncio.get_running_loop()
        self.open: set[Connection] = set()
        self.clock, self.heads, self.settled = Clock(), Heads(), Settled()
        # the request headers that decide an answer: how the body reads, the session, those matched
        self.deciding = ("Content-Type", "Content-Encoding", SESSION_HEADER, *config.match.headers)
        self.stopping = False
        self.refused = self.closed_idle = self.closed_slow = 0
        self.server: asyncio.Server | None = None
        self.sweeper: asyncio.Task[None] | None = None
        self.port = 0

    def connection(self) -> Connection:
        return Connection(self)

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            now = time.monotonic()
            for conn in list(self.open):
                conn.check(now)

    async def close(self) -> None:
        """Stop accepting, let each connection finish the request it serves, then flush and close."""
        self.stopping = True
        if self.server is not None:
            self.server.close()
        if self.sweeper is not None:
            self.sweeper.cancel()
        self.clock.stop()
        for conn in list(self.open):
            if not conn.busy:
                conn.close()
            elif conn.streaming and conn.task is not None:  # an open inspector page: it reconnects later
                conn.task.cancel()
        busy = [c.task for c in self.open if c.task is not None and not c.streaming]
        if busy:
            await asyncio.wait(busy, timeout=30)
        for conn in list(self.open):
            conn.close()
        await self.rt.close()


class Connection(Reading):
    """One client connection: parse, serve in order, write; watched by the Front's sweep."""

    def __init__(self, front: Front) -> None:
        super().__init__(front.loop)
        self.front = front
        self.parser = HttpRequestParser(self, front.loop, 2**16, max_line_size=8190, max_field_size=8190,
                                        payload_exception=RequestPayloadError, auto_decompress=False)
        self._parser = self.parser  # aiohttp's flow control pauses the parser through this
        self.queue: deque[tuple[Any, Any]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.streaming = False
        self.last = time.monotonic()
        self.head_started: float | None = self.last  # a new connection owes a request head
        self.peer = ""
        self.boundary = Boundary()  # whether the parser is between two requests

    # ---- asyncio -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        front = self.front
        if len(front.open) >= front.config.max_connections or front.stopping:
            body = gms.retry(f"omproxy has max_connections ({front.config.max_connections}) open connections; "
                             "try again")
            self._write_answer(Response.json(503, body, Source.OMPROXY, **{"X-Omproxy-Error": "overloaded",
                                                                             "Retry-After": "1"}), False, False)
            self.close()
            front.refused += 1
            return
        front.open.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if data:
            self.last = time.monotonic()
            if self.head_started is None and not self.busy and not self.queue:
                self.head_started = self.last
        idle = not self.queue and self.task is None  # nothing before this read is waiting
        if idle and self.boundary.between:
            hit = self.front.settled.raw.get((data, self.peer))
            if hit is not None and self.answer_settled(*hit) is not None:
                return  # the parser would have made of `data` exactly that request, and be between again
        try:
            messages, _, _ = self.parser.feed_data(data)
        except HttpProcessingError as exc:  # answered in turn, after what came before it
            self.queue.append((exc, None))
            self.boundary.lose()
        else:
            self.boundary.fed(data, messages)
            for message, payload in messages:
                body: Any = payload
                if not self.queue and self.task is None:  # in turn: nothing before it is waiting
                    body = self.whole(message, payload)
                    if self.again(message, body, data if self.boundary.between else None):
                        continue
                self.queue.append((message, body))
        if self.queue and self.task is None:
            self.task = self.front.loop.create_task(self.run())

    def eof_received(self) -> None:
        return None  # the transport closes; a request being served still finishes

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.front.open.discard(self)
        with contextlib.suppress(HttpProcessingError):
            self.parser.feed_eof()

    # ---- the watch ----------------------------------------------------------------------------
    def check(self, now: float) -> None:
        if self.transport is None or self.transport.is_closing() or self.busy or self.queue:
            return
        config = self.front.config
        if self.head_started is not None and now - self.head_started > config.header_timeout:
            self.front.closed_slow += 1
            self.transport.abort()
        elif self.head_started is None and now - self.last > config.idle_timeout:
            self.front.closed_idle += 1
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # ---- serving -------------------------------------------------------------------------------
    @staticmethod
    def whole(message: Any, payload: Any) -> Any:
        """The request's body as bytes when it has come whole (none, or all of it in what was read),
        else its stream, to be read by `read`."""
        if payload is EMPTY_PAYLOAD:
            return b""
        if payload.is_eof() and payload.exception() is None and "Expect" not in message.headers:
            return payload.read_nowait(-1)
        return payload

    def settles(self, message: Any) -> bool:
        """Whether this request's answer may be kept as settled bytes: HTTP/1.1, kept alive, not HEAD."""
        return message.version == (1, 1) and not message.should_close and message.method != "HEAD" and (
            not self.front.stopping)

    def key(self, message: Any, body: bytes) -> Hashable:
        headers = message.headers
        return (message.method, message.path, body, self.peer, *(tuple(headers.getall(name, ()))
                                                                 for name in self.front.deciding))

    def again(self, message: Any, body: Any, data: bytes | None) -> bool:
        """Answer at once a request whose answer is settled (see `Settled`); False, with nothing
        written, when it must be served. `data`: the read that was exactly this request, if it was."""
        if not self.front.settled.known or not isinstance(body, bytes) or not self.settles(message):
            return False  # (nothing settled: forwarding, or replay yet to settle an answer)
        key = self.key(message, body)
        found = self.front.settled.known.get(key)
        if found is None:
            return False
        if found[3] == message.raw_headers:
            ex = self.answer_settled(key, found[0])
            if ex is not None and data is not None:
                self.front.settled.alias(data, self.peer, key, found[0])
            return ex is not None
        try:  # another header line (a request id, another order): a request of its own, for what the
            own = assemble(message.method, message.path, message.headers, body, self.front.config.max_body,
                           self.peer)  # journal and the inspector show of it
        except OmproxyError:
            return False  # served as any other, which says what is wrong with it
        ex = self.answer_settled(key, found[0], own)
        if ex is not None:  # the next request with these very lines repeats this one
            self.front.settled.adopt(key, ex, message.raw_headers)
        return ex is not None

    def answer_settled(self, key: Hashable, first: Exchange, request: Request | None = None) -> Exchange | None:
        """Write the answer settled under `key` for a request that repeats `first`'s (or is `request`,
        which differs from it only by header lines that decide nothing); its exchange, or None."""
        front = self.front
        found = front.settled.known.get(key)
        if found is None or self.writing_paused or front.stopping:
            return None
        ex = front.rt.pipeline.again(first, request)
        if ex is None:
            front.settled.forget(key)
            return None
        assert self.transport is not None
        self.transport.write(found[1] + front.clock.text + found[2])
        self.head_started = None
        return ex

    async def run(self) -> None:
        try:
            while self.queue and self.transport is not None and not self.transport.is_closing():
                message, payload = self.queue.popleft()
                self.busy, self.head_started = True, None
                try:
                    keep = await self.serve(message, payload)
                finally:
                    self.busy, self.last = False, time.monotonic()
                if not keep:
                    self.close()
                    return
                if self.writing_paused:
                    await self._drain_helper()
        except (ConnectionError, asyncio.CancelledError):
            self.close()
        finally:
            self.task = None

    async def serve(self, message: Any, payload: Any) -> bool:
        """One request; whether the connection stays open for the next."""
        if isinstance(message, HttpProcessingError):
            reason = escape(str(message.message or message)[:200])
            log.warning("refused a request from %s that is not valid HTTP: %s", self.peer, reason)
            body = gms.reply(2, errors=[{"advice": f"{message.code} {HTTPStatus(message.code).phrase}: {reason}"}])
            self._write_answer(Response.json(message.code, body, Source.OMPROXY, **{"X-Omproxy-Error": "bad-http"}),
                               False, False)
            return False
        keep = not message.should_close and not self.front.stopping
        head_only = message.method == "HEAD"
        max_body = self.front.config.max_body
        try:
            body = await self.read(message, payload)
            req = assemble(message.method, message.path, message.headers, body, max_body, self.peer)
        except OmproxyError as e:
            log.warning("%s %s -> %s: %s", message.method, escape(message.path.split("?")[0]), e.status, e.message)
            self._write_answer(error_response(e), False, head_only, message.version)
            return False
        ex = await self.front.rt.pipeline.serve(req)
        resp = ex.response
        assert resp is not None
        if resp.stream is not None:
            await self._stream(resp)
            return False
        before, after = self._write_answer(resp, keep, head_only, message.version)
        if ex.settled is not None and self.settles(message):
            self.front.settled.keep(self.key(message, body), ex, before, after, message.raw_headers)
        return keep

    async def read(self, message: Any, payload: Any) -> bytes:
        """The request's body (`payload` may be it already, as bytes), refused over max_body."""
        max_body = self.front.config.max_body
        headers = message.headers
        if message.method == "CONNECT":
            raise RequestRefused(f"omproxy is a reverse proxy for one GMS, not an open proxy: refused CONNECT "
                                 f"{message.path}")
        length = headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_body:
            raise too_large(max_body)
        if isinstance(payload, bytes):
            if len(payload) > max_body:
                raise too_large(max_body)
            return payload
        body = b""
        if payload is not EMPTY_PAYLOAD:
            expect = headers.get("Expect", "")
            if expect.lower() == "100-continue" and message.version >= (1, 1) and self.transport is not None:
                self.transport.write(CONTINUE)
            parts, size = [], 0
            try:
                while chunk := await payload.readany():
                    size += len(chunk)
                    if size > max_body:
                        raise too_large(max_body)
                    parts.append(chunk)
            except RequestPayloadError as e:
                raise RequestRefused(f"the request body could not be read ({e}); send it whole") from None
            body = b"".join(parts)
        return body

    async def _stream(self, resp: Response) -> None:
        """An answer sent as it is produced (Server-Sent Events), delimited by closing the connection."""
        assert resp.stream is not None
        if self.transport is None:
            return
        self.transport.write(self.front.heads.of(resp) + b"Date: " + self.front.clock.text +
                             b"\r\nConnection: close\r\n\r\n")
        stream = resp.stream
        self.streaming = True
        try:
            async for chunk in stream:
                if self.transport is None or self.transport.is_closing():
                    break
                self.transport.write(chunk)
                if self.writing_paused:
                    await self._drain_helper()
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    def _write_answer(self, resp: Response, keep: bool, head_only: bool,
                      version: Any = (1, 1)) -> tuple[bytes, bytes]:
        """Write an answer (unless the connection is closing); its bytes: what comes before the Date
        header's value, and after."""
        body = b"" if resp.status in _NO_BODY else resp.body
        tail = [b"\r\n"]
        if resp.status not in _NO_BODY:
            tail += [b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
        if not keep:
            tail.append(b"Connection: close\r\n")
        elif version < (1, 1):
            tail.append(b"Connection: keep-alive\r\n")
        before, after = self.front.heads.of(resp) + b"Date: ", b"".join([*tail, b"\r\n", b"" if head_only else body])
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(before + self.front.clock.text + after)
        return before, after


class Boundary:
    """Whether a connection's parser is between two requests, holding nothing of the next one (then a
    read that is exactly a settled request's bytes is that request): when what it was fed since it
    last was (one read; or a head and then its body, sent in a write of its own) is exactly the one
    request it made of it. If that request was followed by more, the parser holds part of the next.
    Not known again after two requests at once, or one not framed by its Content-Length."""

    LIMIT = 2**16  # bytes of a request kept while it comes: beyond, not known again

    def __init__(self) -> None:
        self.between = True
        self.since: list[bytes] | None = []  # what was fed since it last was (None: never known again)
        self.first: Any = None  # the request made of that, once there is one

    def lose(self) -> None:
        self.between, self.since = False, None

    def fed(self, data: bytes, messages: list[Any]) -> None:
        """`data` was fed to the parser, which made `messages` of it (message, payload pairs)."""
        if self.since is None:
            return
        fed = data if self.between else b"".join([*self.since, data])
        if self.between or self.first is None:
            self.first = messages[0][0] if messages else None
        elif messages:  # a second request before the first was known whole
            self.lose()
            return
        length = request_length(fed, self.first) if self.first is not None and len(messages) <= 1 else None
        if self.first is not None and length is None:
            self.lose()
        elif length is None or length > len(fed):  # part of a request: its head, or its body so far
            self.between, self.since = False, [fed] if len(fed) <= self.LIMIT else None
        elif length == len(fed):
            self.between, self.since, self.first = True, [], None
        else:  # the request, then part of the next
            self.between, self.since, self.first = False, [fed[length:]], None


def request_length(data: bytes, message: Any) -> int | None:
    """How many bytes of `data`, which starts with the request the parser made into `message`, that
    request is (more than `data` holds when its body is still to come): its head, up to the first empty
    line, then Content-Length bytes of body. None when it is not framed so (chunked, an upgrade)."""
    end = data.find(b"\r\n\r\n")
    length = message.headers.get("Content-Length", "0")
    if end < 0 or message.chunked or message.upgrade or not length.isdigit():
        return None
    return end + 4 + int(length)


# ---- listening -----------------------------------------------------------------------------------

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
    try:
        front.server = await front.loop.create_server(front.connection, config.host, config.port,
                                                      reuse_address=True, reuse_port=reuse_port or None,
                                                      family=socket.AF_UNSPEC)
    except OSError as e:
        front.clock.stop()
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

