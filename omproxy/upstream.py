"""The HTTP/1.1 client omproxy forwards with, to its one upstream GMS: a pool of keep-alive connections,
each an asyncio protocol on aiohttp's own response parser (its C parser, llhttp, when built). A request
is written as one buffer of bytes; the answer is read with its body decoded (gzip, deflate), within
a size limit, under one deadline for connecting, sending and reading. It does what a reverse proxy's
client must and nothing else: no cookies, redirects, retries of a request that was sent, or headers
of its own. Failures are `UpstreamTimeout`, `UpstreamUnreachable` and `UpstreamTooLarge`, with
messages that name the upstream but never a request's target, query or credentials.

A pooled connection the upstream has closed is never used: it is dropped when seen closed, and one
idle for IDLE seconds or more is closed rather than used (servers close idle connections too: Jetty
after 30 s), so a request is not sent into a connection being closed at the other end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpResponseParser
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDictProxy

from omproxy.errors import UpstreamTimeout, UpstreamTooLarge, UpstreamUnreachable

IDLE = 15.0  # seconds a pooled connection may wait for its next request
LIMIT = 100  # connections open to the upstream at most; more requests wait for one


class PayloadError(Exception):
    """The answer's body could not be read (cut short, or its encoding is corrupt)."""


@dataclass
class Answer:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()  # the header lines as they came


class Reading(BaseProtocol):
    """aiohttp's protocol base for a connection read by its HTTP parser, which asks it to resume
    reading each time a body is read from its stream — and then feeds the parser an empty read and
    resumes the transport, whether or not either was paused. Only when reading was paused (a body
    beyond the stream's limit) is there anything to resume: ~4 µs of a forwarded request saved."""

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._reading_paused:
            super().resume_reading(resume_parser)


class _Connection(Reading):
    """One connection to the upstream, carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.loop = loop
        self.parser: Any = None
        self._parser = None  # aiohttp's flow control pauses the parser through this
        self.answer: asyncio.Future[tuple[Any, Any]] | None = None
        self.payload: Any = None
        self.lost = False
        self.closed: asyncio.Future[None] = loop.create_future()  # done once the connection is gone
        self.idle_since = 0.0

    def request(self, data: bytes, head: bool) -> asyncio.Future[tuple[Any, Any]]:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the upstream closed the connection")
        self.parser = self._parser = HttpResponseParser(
            self, self.loop, 2**16, response_with_body=not head, read_until_eof=True, auto_decompress=True,
            payload_exception=PayloadError)
        self.answer, self.payload = self.loop.create_future(), None
        self.transport.write(data)
        return self.answer

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # nothing was asked: an upstream talking out of turn is not reused
            self.close()
            return
        try:
            messages, _, _ = self.parser.feed_data(data)
        except HttpProcessingError as e:
            self._fail(e)
            self.close()
            return
        for message, payload in messages:
            if 100 <= message.code < 200:  # 100 Continue and the like: the answer is still to come
                continue
            if self.answer is not None and not self.answer.done():
                self.payload = payload
                self.answer.set_result((message, payload))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        super().connection_lost(exc)
        if self.parser is not None:
            with contextlib.suppress(Exception):  # a body cut short: said by the payload, below
                self.parser.feed_eof()  # ends an answer delimited by the connection's close
        if self.payload is not None and self.payload is not EMPTY_PAYLOAD and not self.payload.is_eof():
            self.payload.set_exception(PayloadError("the connection closed before the whole answer"))
        self._fail(exc or ConnectionResetError("the upstream closed the connection"))

    def expire(self) -> None:
        """The request's deadline passed: it fails with TimeoutError, and the connection is not reused."""
        self._fail(TimeoutError())
        if self.payload is not None and self.payload is not EMPTY_PAYLOAD and not self.payload.is_eof():
            self.payload.set_exception(TimeoutError())
        self.lost = True
        self.close()

    def _fail(self, exc: BaseException) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)

    def reusable(self, message: Any, payload: Any) -> bool:
        return (not self.lost and self.transport is not None and not self.transport.is_closing()
                and not message.should_close and (payload is EMPTY_PAYLOAD or payload.is_eof()))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]], length: int) -> bytes:
    """A request's head as sent: its line, its headers, and Content-Length for a body of `length`
    bytes (left out for a bodiless GET, HEAD, DELETE or OPTIONS)."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
    if length or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


class Deadlines:
    """When each request in flight must be answered, watched by one timer for them all — armed at the
    earliest deadline, it expires what is due and re-arms at the next. A timer per request (armed and
    cancelled: uvloop's cost ~2 µs) was a tenth of what a forwarded request costs omproxy."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[_Connection, float] = {}  # a connection carrying a request, and its deadline
        self.timer: asyncio.TimerHandle | None = None
        self.armed = float("inf")  # when the timer fires

    def watch(self, conn: _Connection, deadline: float) -> None:
        self.due[conn] = deadline
        if deadline < self.armed:  # the first in flight (or one that waited for a slot or to connect)
            if self.timer is not None:
                self.timer.cancel()
            self.timer, self.armed = self.loop.call_at(deadline, self.fire), deadline

    def done(self, conn: _Connection) -> None:
        self.due.pop(conn, None)

    def fire(self) -> None:
        self.timer, self.armed = None, float("inf")
        now = self.loop.time()
        for conn, deadline in list(self.due.items()):
            if deadline <= now:
                del self.due[conn]
                conn.expire()
        if self.due:
            nearest = min(self.due.values())
            self.timer, self.armed = self.loop.call_at(nearest, self.fire), nearest

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.armed = None, float("inf")


class Client:
    """Requests to one upstream (`scheme://host:port`), over pooled keep-alive connections."""

    def __init__(self, scheme: str, host: str, port: int, timeout: float, max_body: int, name: str) -> None:
        self.host, self.port, self.timeout, self.max_body = host, port, timeout, max_body
        self.name = name  # how messages name the upstream: its URL without credentials
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if scheme == "https" else None
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(LIMIT)
        self.deadlines: Deadlines | None = None  # made on the first request, in its loop

    async def send(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> Answer:
        """One request; its answer, read whole. Raises UpstreamTimeout, UpstreamUnreachable, UpstreamTooLarge."""
        return await self.send_head(method, request_head(method, target, headers, len(body)), body)

    async def send_head(self, method: str, head: bytes, body: bytes) -> Answer:
        """`send`, the request's head already made (by `request_head`)."""
        data = head + body
        conn: _Connection | None = None
        deadlines = self.deadlines or self._deadlines()
        loop = deadlines.loop
        deadline = loop.time() + self.timeout  # for the whole request: a slot, connecting, sending, reading
        acquired = False
        try:
            if self.slots.locked():
                await asyncio.wait_for(self.slots.acquire(), self.timeout)
            else:
                await self.slots.acquire()
            acquired = True
            conn = self._idle() or await self._connect(deadline - loop.time())
            deadlines.watch(conn, deadline)
            try:
                message, payload = await conn.request(data, method == "HEAD")
                if not 200 <= message.code <= 599:  # 1xx are skipped; 600-999 are not HTTP statuses
                    raise UpstreamUnreachable(f"GMS at {self.name} answered with status {message.code}, which is "
                                              "not an HTTP status (100-599); try again")
                out = await self._read(payload)
            finally:
                deadlines.done(conn)
            if conn.reusable(message, payload):
                conn.idle_since, conn.parser, conn._parser, conn.answer = time.monotonic(), None, None, None
                self.idle.append(conn)
                conn = None
            return Answer(message.code, message.reason, message.headers, out, message.raw_headers)
        except TimeoutError:
            raise UpstreamTimeout(f"GMS at {self.name} did not answer within {self.timeout:g} s; try again") from None
        except OSError as e:
            if isinstance(e, ConnectionError) and conn is not None:  # connected, then cut
                raise self._failed(e) from None
            if isinstance(e, ssl.SSLError):  # its errno is OpenSSL's, not the system's
                reason = f"TLS: {getattr(e, 'verify_message', None) or e.reason or e}"
            else:
                reason = str(e.strerror if isinstance(e, socket.gaierror) else os.strerror(e.errno) if e.errno
                             else e.strerror or str(e) or "connection failed")
            raise UpstreamUnreachable(f"GMS at {self.name} is unreachable ({reason}); try again") from None
        except (HttpProcessingError, PayloadError) as e:
            raise self._failed(e) from None
        finally:
            if conn is not None:
                conn.close()
            if acquired:
                self.slots.release()

    def _failed(self, e: BaseException) -> UpstreamUnreachable:  # its message may quote the answer: not shown
        return UpstreamUnreachable(f"GMS at {self.name} failed ({type(e).__name__}: the connection closed or the "
                                   "answer was not valid HTTP); try again")

    def _deadlines(self) -> Deadlines:  # on the first request, in its loop (asking for it costs a getpid)
        self.deadlines = Deadlines(asyncio.get_running_loop())
        return self.deadlines

    def _idle(self) -> _Connection | None:
        """A pooled connection still fit to carry a request, if there is one."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost and now - conn.idle_since < IDLE and conn.transport is not None and (
                    not conn.transport.is_closing()):
                return conn
            conn.close()
        return None

    async def _connect(self, within: float) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(
            lambda: _Connection(loop), self.host, self.port, ssl=self.ssl,
            server_hostname=self.host if self.ssl else None), max(within, 0.001))
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def _read(self, payload: Any) -> bytes:
        if payload is EMPTY_PAYLOAD:
            return b""
        if payload.is_eof() and payload.exception() is None:  # all of it came with the head: no waiting
            body: bytes = payload.read_nowait(-1)
        else:
            parts = bytearray()
            while chunk := await payload.readany():
                parts += chunk
                if len(parts) > self.max_body:
                    break
            body = bytes(parts)
        if len(body) > self.max_body:
            raise UpstreamTooLarge(f"GMS at {self.name} answered more than max_response_body ({self.max_body} "
                                   "bytes, decompressed); raise it in config.yaml if that answer is real")
        return body

    async def close(self) -> None:
        if self.deadlines is not None:
            self.deadlines.close()
        for conn in self.idle:
            conn.close()
        self.idle.clear()
