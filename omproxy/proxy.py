"""The aiohttp edge: turn an aiohttp request into a `Request` (refusing what omproxy must not
handle), forward to the upstream GMS, and turn a `Response` back into an aiohttp one. aiohttp client
errors become omproxy errors here, and only here; omproxy errors become HTTP answers in
`error_middleware`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from omproxy import gms
from omproxy.errors import OmproxyError, RequestRefused, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from omproxy.model import SESSION_HEADER, Request, Response, headers_of

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
    "TE", "Trailer", "Trailers", "Transfer-Encoding", "Upgrade"))
DECODABLE = ("gzip", "deflate", "identity")


def end_to_end(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Drop hop-by-hop headers, those a Connection header names, and any Proxy-* header."""
    pairs = list(headers.items())
    named = {t.strip().lower() for k, v in pairs if k.lower() == "connection" for t in v.split(",")}
    return CIMultiDict((k, v) for k, v in pairs
                       if k.lower() not in HOP_BY_HOP and k.lower() not in named and not k.lower().startswith("proxy-"))


async def to_request(request: web.Request, max_body: int) -> Request:
    """Read the aiohttp request once, refusing bodies over max_body."""
    target = request.raw_path
    length = request.content_length
    if length is not None and length > max_body:
        raise _too_large(max_body)
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > max_body:
            raise _too_large(max_body)
    path, _, query = target.partition("?")
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return Request(request.method, path, query, headers_of(request.headers), bytes(body),
                   request.headers.get(SESSION_HEADER, ""), peer[0] if peer else "")


def _too_large(limit: int) -> RequestRefused:
    return RequestRefused(f"request body is larger than max_body ({limit} bytes); raise max_body in "
                          "config.yaml if GMS really takes it (Jetty's default form limit is 200000 bytes)",
                          413, "body-too-large")


def to_web(resp: Response) -> web.Response:
    headers = CIMultiDict(resp.headers)
    for name in ("Content-Length", "Content-Encoding", "Transfer-Encoding"):
        headers.popall(name, None)
    headers["X-Omproxy-Source"] = resp.source
    return web.Response(status=resp.status, reason=resp.reason, body=resp.body, headers=headers)


def error_response(error: OmproxyError) -> Response:
    """An omproxy error as the client sees it: GMS-shaped JSON, statusCode 1 when a retry may help."""
    body = gms.retry(error.message) if isinstance(error, UpstreamError) else gms.reply(
        2, errors=[{"advice": error.message}])
    return Response.json(error.status, body, "omproxy", **{"X-Omproxy-Error": error.code})


class Forwarder:
    """Sends a Request to the upstream GMS exactly as the client sent it (raw path and body)."""

    def __init__(self, upstream: str, timeout: float) -> None:
        self.base = URL(upstream.rstrip("/"))
        self.shown = self.base.with_user(None)  # for messages: credentials in the URL never reach a log
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout), auto_decompress=True,
            connector=aiohttp.TCPConnector(limit=100, force_close=False))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, req: Request) -> tuple[CIMultiDict[str], set[str]]:
        headers = end_to_end(req.headers)
        original_host = headers.popone("Host", "")
        headers.popall("Content-Length", None)
        headers.popall(SESSION_HEADER, None)
        port = self.base.explicit_port
        headers["Host"] = f"{self.base.raw_host}:{port}" if port else str(self.base.raw_host)
        if req.client:
            prior = headers.popone("X-Forwarded-For", "")
            headers["X-Forwarded-For"] = f"{prior}, {req.client}" if prior else req.client
        headers["X-Forwarded-Proto"] = "http"
        if original_host:
            headers["X-Forwarded-Host"] = original_host
        skip = {"User-Agent", "Content-Type", "Accept-Encoding", "Accept"} - set(headers)
        if "Accept-Encoding" in headers:  # only what can be decoded for the cassette
            accepted = [e.strip() for e in headers["Accept-Encoding"].split(",")]
            kept = [e for e in accepted if e.split(";")[0].strip().lower() in DECODABLE]
            headers["Accept-Encoding"] = ", ".join(kept) or "identity"
        return headers, skip

    async def __call__(self, req: Request) -> Response:
        assert self._session is not None, "Forwarder.start() was not awaited"
        headers, skip = self._headers(req)
        url = URL(str(self.base) + req.target, encoded=True)
        try:
            async with self._session.request(req.method, url, headers=headers, data=req.body or None,
                                             skip_auto_headers=skip, allow_redirects=False) as up:
                body = await up.read()
                encoding = up.headers.get("Content-Encoding")
                out = end_to_end(up.headers)
                for name in ("Content-Length", "Content-Encoding"):
                    out.popall(name, None)
                return Response(up.status, body, headers_of(out), "upstream", up.reason,
                                encoding if encoding and encoding.lower() != "identity" else None)
        except TimeoutError:
            raise UpstreamTimeout(f"GMS at {self.shown} did not answer within {self.timeout:g} s; "
                                  "try again") from None
        except aiohttp.ClientConnectorError as e:
            raise UpstreamUnreachable(f"GMS at {self.shown} is unreachable ({e.os_error.strerror or e}); "
                                      "try again") from None
        except aiohttp.ClientError as e:
            raise UpstreamUnreachable(f"GMS at {self.shown} failed: {type(e).__name__}: {e}; try again") from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def origin_form_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Not an open proxy: aiohttp accepts absolute-form targets (`GET http://other/x`) and shows only
    their path in `request.path`; the raw target tells. CONNECT is refused the same way."""
    if request.method == "CONNECT" or not request.raw_path.startswith("/"):
        raise RequestRefused(f"omproxy is a reverse proxy for one GMS, not an open proxy: refused "
                             f"{request.method} {request.raw_path}", 400, "not-an-open-proxy")
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OmproxyError as e:
        # The path only: a query string may hold what redaction masks, and the Redactor is not here.
        log.warning("%s %s -> %s: %s", request.method, request.raw_path.split("?")[0], e.status, e.message)
        return to_web(error_response(e))
    except web.HTTPException:
        raise
    except Exception as e:  # a bug in omproxy: still a GMS-shaped answer, and the traceback in the log
        log.exception("internal error on %s %s", request.method, request.raw_path.split("?")[0])
        return to_web(error_response(OmproxyError(f"omproxy internal error: {type(e).__name__}: {e}")))
