"""The HTTP client omproxy forwards with, to its one upstream GMS: aiohttp's `ClientSession`, set up
as a reverse proxy's client must be: a pool of keep-alive connections, no cookies, no redirects, no
headers of its own, one deadline per request (for a pooled connection, connecting, sending and
reading), the answer's body decoded (gzip, deflate) and read within a size limit. Its failures are
omproxy's (`UpstreamTimeout`, `UpstreamUnreachable`, `UpstreamTooLarge`), mapped by one table
(`FAILURES`), with messages that name the upstream but never a request's target, query or
credentials."""

from __future__ import annotations

import io
import os
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from omproxy.errors import UpstreamError, UpstreamTimeout, UpstreamTooLarge, UpstreamUnreachable

IDLE = 15.0  # seconds a pooled connection may wait for its next request (Jetty closes after 30 s)
LIMIT = 100  # connections open to the upstream at most; more requests wait for one
STREAMED = 64 * 1024  # request bodies longer than this are sent in parts
# aiohttp adds these unless told not to; a reverse proxy sends only what its client sent
NOT_OURS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@dataclass
class Answer:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes


def _unreachable(name: str, reason: str) -> UpstreamError:
    return UpstreamUnreachable(f"GMS at {name} is unreachable ({reason}); try again")


def _failed(name: str, e: BaseException) -> UpstreamError:  # its message may quote the answer: not shown
    return UpstreamUnreachable(f"GMS at {name} failed ({type(e).__name__}: the connection closed or the "
                               "answer was not valid HTTP); try again")


def _connect_reason(e: BaseException) -> str:
    os_error = getattr(e, "os_error", e)
    if isinstance(os_error, socket.gaierror):
        return str(os_error.strerror)
    if isinstance(os_error, OSError) and os_error.errno:
        return os.strerror(os_error.errno)
    return str(getattr(os_error, "strerror", None) or os_error or "connection failed")


def _tls_reason(e: BaseException) -> str:
    cert = getattr(e, "certificate_error", None)
    return f"TLS: {getattr(cert, 'verify_message', None) or getattr(cert, 'reason', None) or cert or e}"


# aiohttp's client errors as omproxy's, the first that fits (subclasses before their bases): the one place
# that knows them. `tests/test_upstream.py` holds every public aiohttp client error to a row.
FAILURES: tuple[tuple[type[BaseException], Callable[[str, float, BaseException], UpstreamError]], ...] = (
    (aiohttp.ServerTimeoutError, lambda name, t, e: UpstreamTimeout(
        f"GMS at {name} did not answer within {t:g} s; try again")),
    (TimeoutError, lambda name, t, e: UpstreamTimeout(f"GMS at {name} did not answer within {t:g} s; try again")),
    (aiohttp.ClientConnectorCertificateError, lambda name, t, e: _unreachable(name, _tls_reason(e))),
    (aiohttp.ClientSSLError, lambda name, t, e: _unreachable(name, _tls_reason(e))),
    (aiohttp.ClientConnectorError, lambda name, t, e: _unreachable(name, _connect_reason(e))),
    (aiohttp.InvalidURL, lambda name, t, e: _unreachable(name, "not a valid URL")),
    (aiohttp.ClientError, lambda name, t, e: _failed(name, e)),  # disconnected, cut short, not HTTP
    (ssl.SSLError, lambda name, t, e: _unreachable(name, _tls_reason(e))),
    (OSError, lambda name, t, e: _unreachable(name, _connect_reason(e))),
)


def failure(e: BaseException, name: str, timeout: float) -> UpstreamError | None:
    """The omproxy error for what sending to the upstream raised; None for anything else (a bug)."""
    for kind, make in FAILURES:
        if isinstance(e, kind):
            return make(name, timeout, e)
    return None


class Client:
    """Requests to one upstream (`scheme://host:port`), over pooled keep-alive connections."""

    def __init__(self, scheme: str, host: str, port: int, timeout: float, max_body: int, name: str) -> None:
        self.origin = f"{scheme}://{host}:{port}"
        self.timeout, self.max_body = timeout, max_body
        self.name = name  # how messages name the upstream: its URL without credentials
        self.tls = ssl.create_default_context() if scheme == "https" else None
        self.session: aiohttp.ClientSession | None = None  # made on the first request, in its loop

    def _session(self) -> aiohttp.ClientSession:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=LIMIT, keepalive_timeout=IDLE, ssl=self.tls or True),
            cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=NOT_OURS, auto_decompress=True)
        return self.session

    async def send(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> Answer:
        """One request; its answer, read whole. Raises UpstreamTimeout, UpstreamUnreachable, UpstreamTooLarge."""
        session = self.session or self._session()
        url = URL(self.origin + target, encoded=True)  # the target exactly as the client sent it
        try:
            # a big body as a file-like object, which aiohttp sends in parts, with its Content-Length
            data = (io.BytesIO(body) if len(body) > STREAMED else body) if body else None
            async with session.request(method, url, headers=CIMultiDict(headers), data=data, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                if not 200 <= resp.status <= 599:  # 1xx are skipped; 600-999 are not HTTP statuses
                    resp.close()  # and that connection is not reused
                    raise UpstreamUnreachable(f"GMS at {self.name} answered with status {resp.status}, which "
                                              "is not an HTTP status (100-599); try again")
                parts = bytearray()
                async for chunk in resp.content.iter_any():
                    parts += chunk
                    if len(parts) > self.max_body:
                        resp.close()
                        raise UpstreamTooLarge(f"GMS at {self.name} answered more than max_response_body "
                                               f"({self.max_body} bytes, decompressed); raise it in config.yaml "
                                               "if that answer is real")
                return Answer(resp.status, resp.reason or "", resp.headers, bytes(parts))
        except UpstreamError:
            raise
        except Exception as e:
            mapped = failure(e, self.name, self.timeout)
            if mapped is None:
                raise
            raise mapped from None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
