"""The aiohttp edge: turn an aiohttp request into a `Request` (refusing what omproxy must not
handle) and a `Response` back into an aiohttp one; the header rules a reverse proxy follows."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from omproxy.errors import BodyTooLarge, NotAnOpenProxy, RequestRefused, UnsupportedEncoding
from omproxy.model import SESSION_HEADER, Request, Response, headers_of, session_of, text_header

DECODABLE = ("gzip", "deflate", "identity")


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
    """A request as read off the wire, as omproxy handles it: header values as
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


def web_headers(resp: Response) -> CIMultiDict[str]:
    """An answer's headers as sent: its own (but the framing aiohttp sets), where it came from, and a
    Server header (else aiohttp names itself and its version)."""
    headers = CIMultiDict(resp.headers)
    for name in ("Content-Length", "Content-Encoding", "Transfer-Encoding"):
        headers.popall(name, None)
    headers["X-Omproxy-Source"] = resp.source.value
    headers.setdefault("Server", "omproxy")
    return headers


def to_web(resp: Response) -> web.Response:
    return web.Response(status=resp.status, reason=resp.reason, body=resp.body, headers=web_headers(resp))


