"""The values that flow between responders: a Request in, a Response out. Pure; built by the edge
(`proxy`) from aiohttp objects, and from cassette entries by `cassette`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from omproxy import formcodec, gms

SESSION_HEADER = "X-Omproxy-Session"  # omproxy's own: never forwarded, never recorded


def headers_of(pairs: object = ()) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Request:
    """A client request. `path` and `query` are raw, exactly as the client encoded them."""

    method: str
    path: str
    query: str = ""
    headers: CIMultiDictProxy[str] = field(default_factory=headers_of)
    body: bytes = b""
    session: str = ""  # X-Omproxy-Session
    client: str = ""  # peer address, for X-Forwarded-For

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    @cached_property
    def form(self) -> formcodec.DecodedForm:
        """The body decoded once; every consumer shares it."""
        return formcodec.decode(self.body, self.headers.get("Content-Type"))

    @cached_property
    def operation(self) -> gms.Operation | None:
        return gms.parse_path(self.path)

    @property
    def interaction_id(self) -> str | None:
        return gms.interaction_id_of(self.operation, self.form)

    @property
    def service(self) -> str | None:
        return gms.service_of(self.path)


@dataclass(frozen=True)
class Response:
    """An answer and where it came from: cassette, simulator, upstream or omproxy itself."""

    status: int
    body: bytes = b""
    headers: CIMultiDictProxy[str] = field(default_factory=headers_of)
    source: str = "omproxy"
    reason: str | None = None
    content_encoding: str | None = None  # the upstream's original encoding; body is decoded
    note: str = ""  # one human line for the log, e.g. "prod.yaml #3"
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # structured, for the journal

    @classmethod
    def json(cls, status: int, body: bytes, source: str, **extra: str) -> Response:
        headers = {"Content-Type": "application/json;charset=utf-8", **extra}
        return cls(status, body, headers_of(headers), source)

    @cached_property
    def reply(self) -> dict | None:
        """The GMS JSON reply when the body is one."""
        return gms.parse_reply(self.body)


class Responder(Protocol):
    """The seam: given a request, an answer, or None for "not mine, ask the next"."""

    async def __call__(self, req: Request) -> Response | None: ...
