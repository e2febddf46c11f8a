"""Forwarding to the one upstream GMS: the request as the client sent it (raw path, query and body),
with the headers a reverse proxy sends (`Host`, `X-Forwarded-*`, credentials from the upstream URL
when the client sent none), through `upstream.Client`; the answer's headers end to end."""

from __future__ import annotations

import asyncio
import base64

from yarl import URL

from omproxy.errors import UpstreamUnreachable
from omproxy.exchange import Exchange
from omproxy.model import SESSION_HEADER, Request, Response, Source, end_to_end, headers_of
from omproxy.serve.http.convert import DECODABLE
from omproxy.serve.http.upstream import Client

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

    async def reachable(self) -> str | None:
        """None when a connection to the upstream opens (within 2 s); else what is wrong."""
        host, port = self.base.raw_host or "", self.base.port or 80
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        except (OSError, TimeoutError) as e:
            return f"the upstream {self.base} is not reachable ({getattr(e, 'strerror', None) or type(e).__name__})"
        writer.close()
        return None

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
        codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
        if len(codings) > 1 or (codings and codings[0] not in DECODABLE):  # gzip, gzip; compress; br
            raise UpstreamUnreachable(f"GMS at {self.base} answered with Content-Encoding '{encoding}', which omproxy "
                                      "asked not for and does not decode (it asks for gzip, deflate or none); "
                                      "the answer is not passed on undecoded and unlabelled")
        return Response(up.status, up.body, headers_of(end_to_end(up.headers.items(), _DERIVED)), Source.UPSTREAM,
                        up.reason, encoding if encoding and encoding.lower() != "identity" else None)
