"""The aiohttp edge: turn an aiohttp request into a `Request` (refusing what omproxy must not
handle), forward a `Request` to the upstream GMS, and turn a `Response` back into an aiohttp one.
The client itself is `upstream.Client` (aiohttp's ClientSession; its errors are omproxy's)."""

from __future__ import annotations

import base64
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from omproxy.errors import BodyTooLarge, NotAnOpenProxy, RequestRefused, UnsupportedEncoding
from omproxy.exchange import Exchange
from omproxy.model import SESSION_HEADER, Request, Response, Source, headers_of, session_of
from omproxy.upstream import Client

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
    "TE", "Trailer", "Trailers", "Transfer-Encoding", "Upgrade"))
DECODABLE = ("gzip", "deflate", "identity")


def text_header(value: str) -> str:
    """A header value as lossless text: bytes that are not UTF-8 (which aiohttp keeps as surrogate
    escapes) become their latin-1 characters, one per byte, as HTTP/1.1 defines header octets."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")


def end_to_end(headers: Iterable[tuple[str, str]], also: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers, those a Connection header names, any Proxy-* header, and those named in
    `also` (lower case); the values as lossless text. One pass, and a second only when a Connection
    header names more."""
    pairs = []
    named: set[str] | None = None
    for k, v in headers:
        lower = k.lower()
        if lower in HOP_BY_HOP or lower in also or lower.startswith("proxy-"):
            if lower == "connection":
                named = (named or set()) | {t.strip().lower() for t in v.split(",")}
            continue
        pairs.append((k, v if v.isascii() else text_header(v)))
    return [(k, v) for k, v in pairs if k.lower() not in named] if named else pairs


async def to_request(request: web.BaseRequest, max_body: int) -> Request:
    """Read the aiohttp request once, refusing bodies over max_body. A gzip or deflate body is
    decompressed here (aiohttp's own decompression is off: it lets a corrupt stream through as an
    empty body), within max_body, and then forwarded and recorded plain, without its Content-Encoding."""
    if request.method == "CONNECT":  # its "body" is a tunnel, read until the client closes: never read
        raise NotAnOpenProxy(f"omproxy is a reverse proxy for one GMS, not an open proxy: refused CONNECT "
                             f"{request.raw_path}")
    length = request.content_length
    if length is not None and length > max_body:
        raise too_large(max_body)
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > max_body:
            raise too_large(max_body)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return assemble(request.method, request.raw_path, request.headers, bytes(body), max_body,
                    peer[0] if isinstance(peer, tuple) else "")


def assemble(method: str, target: str, headers: Mapping[str, str], body: bytes, max_body: int,
             peer: str) -> Request:
    """A request as read off the wire (by either server front) as omproxy handles it: header values as
    lossless text, a gzip or deflate body decompressed (then forwarded and recorded plain, without
    its Content-Encoding), the raw target split, the session named by its header or its path."""
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        body = decompress(body, encoding, max_body)
    if encoding == "identity" and isinstance(headers, CIMultiDictProxy) and all(v.isascii() for v in headers.values()):
        kept = headers  # as read: nothing to change (the parser's own, read-only)
    else:
        kept = headers_of((k, text_header(v)) for k, v in headers.items()
                          if encoding == "identity" or k.lower() != "content-encoding")
    path, _, query = target.partition("?")
    session, path = session_of(path, headers.get(SESSION_HEADER, ""))
    return Request(method, path, query, kept, body, session, peer)


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedEncoding(f"Content-Encoding '{encoding}' is not supported; send the form body plain, "
                                  "or gzip or deflate")
    attempts = (47,) if encoding != "deflate" else (15, -15)  # gzip (any header); zlib, then raw deflate
    for wbits in attempts:
        stream = zlib.decompressobj(wbits)
        try:
            out = stream.decompress(data, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise too_large(limit)
        if stream.eof and not stream.unused_data:
            return out
    raise RequestRefused(f"the request body is not valid {encoding} data, as its Content-Encoding says; "
                         "send it whole, or plain")


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body is larger than max_body ({limit} bytes); raise max_body in "
                        "config.yaml if GMS really takes it (Jetty's default form limit is 200000 bytes)")


def to_web(resp: Response) -> web.Response:
    headers = CIMultiDict(resp.headers)
    for name in ("Content-Length", "Content-Encoding", "Transfer-Encoding"):
        headers.popall(name, None)
    headers["X-Omproxy-Source"] = resp.source.value
    return web.Response(status=resp.status, reason=resp.reason, body=resp.body, headers=headers)


_REPLACED = frozenset({"host", "content-length", SESSION_HEADER.lower(), "x-forwarded-for", "x-forwarded-proto",
                       "x-forwarded-host", "accept-encoding"})  # in what is forwarded: set by the Forwarder
_DERIVED = frozenset({"content-length", "content-encoding"})  # of the body as the upstream sent it


class Forwarder:
    """Sends a Request to the upstream GMS exactly as the client sent it (raw path, query and body).
    Credentials in the upstream URL are sent as Basic auth when the client sent no Authorization of
    its own; a client's Authorization is forwarded unchanged, as a transparent proxy does."""

    def __init__(self, upstream: str, timeout: float, max_response_body: int) -> None:
        url = URL(upstream.rstrip("/"))
        credentials = f"{url.user}:{url.password or ''}".encode()
        self.auth = "Basic " + base64.b64encode(credentials).decode("ascii") if url.user else None
        self.base = url.with_user(None)  # credentials never reach a URL, a log or an answer
        self.prefix = self.base.raw_path.rstrip("/")  # an upstream mounted below its root: /gms/genesys/...
        self.timeout = timeout
        self.max_response_body = max_response_body
        self._client: Client | None = None

    async def start(self) -> None:
        self._client = Client(self.base.scheme, self.base.raw_host or "", self.base.port or 80, self.timeout,
                              self.max_response_body, str(self.base))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _headers(self, req: Request) -> list[tuple[str, str]]:
        kept = end_to_end(req.headers.items())  # what is the client's to forward (a Connection header's names dropped)
        first: dict[str, str] = {}
        for k, v in kept:
            first.setdefault(k.lower(), v)
        headers = [(k, v) for k, v in kept if k.lower() not in _REPLACED]
        port = self.base.explicit_port
        headers.append(("Host", f"{self.base.raw_host}:{port}" if port else str(self.base.raw_host)))
        if req.client:
            prior = first.get("x-forwarded-for")
            headers.append(("X-Forwarded-For", f"{prior}, {req.client}" if prior else req.client))
        headers.append(("X-Forwarded-Proto", "http"))
        if original_host := first.get("host"):
            headers.append(("X-Forwarded-Host", original_host))
        if self.auth is not None and "authorization" not in first:
            headers.append(("Authorization", self.auth))
        if "accept-encoding" in first:  # only what can be decoded for the cassette
            accepted = [e.strip() for e in first["accept-encoding"].split(",")]
            kept_encodings = [e for e in accepted if e.split(";")[0].strip().lower() in DECODABLE]
            headers.append(("Accept-Encoding", ", ".join(kept_encodings) or "identity"))
        return headers

    async def __call__(self, ex: Exchange) -> Response:
        assert self._client is not None, "Forwarder.start() was not awaited"
        req = ex.request
        up = await self._client.send(req.method, self.prefix + req.target, self._headers(req), req.body)
        encoding = up.headers.get("Content-Encoding")
        return Response(up.status, up.body, headers_of(end_to_end(up.headers.items(), _DERIVED)), Source.UPSTREAM,
                        up.reason, encoding if encoding and encoding.lower() != "identity" else None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
