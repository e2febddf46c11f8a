"""The values every part of omproxy shares: a Request in, a Response out, where an answer came from
(Source), and a Recorded interaction of a loaded cassette. Pure; built by the edge (`proxy`) from
aiohttp objects and by `cassette` from entries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any, Generic, TypeVar, overload

from multidict import CIMultiDict, CIMultiDictProxy

from omproxy.gms import formcodec
from omproxy.gms import vocabulary as gms

T = TypeVar("T")


class cached_property(Generic[T]):  # noqa: N801 — functools' name, functools' behaviour
    """functools.cached_property without its lock (Python 3.12 dropped it too): computed once per
    instance and stored in its __dict__, where the next lookup finds it. Before 3.12 every first
    computation takes one lock shared by all instances: a cost on every request omproxy reads."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_property[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | cached_property[T]:
        if instance is None:
            return self
        value = self.compute(instance)
        instance.__dict__[self.name] = value  # a frozen dataclass too: its __setattr__ is not involved
        return value


SESSION_HEADER = "X-Omproxy-Session"  # omproxy's own: never forwarded, never recorded
SESSION_PREFIX = "/_omproxy/session/"  # or a path prefix, for clients that cannot add a header


def session_of(path: str, header: str) -> tuple[str, str]:
    """The session a request belongs to, and its path: `/_omproxy/session/NAME/genesys/...` names
    session NAME for `/genesys/...` (a base URL a test can be given); else the header's session."""
    if path.startswith(SESSION_PREFIX):
        name, slash, rest = path[len(SESSION_PREFIX):].partition("/")
        if name and slash:
            return name, "/" + rest
    return header, path


def headers_of(pairs: object = ()) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))  # type: ignore[arg-type]


class Source(Enum):
    """Who answered: the `X-Omproxy-Source` header's value."""

    CASSETTE = "cassette"
    SIMULATOR = "simulator"
    UPSTREAM = "upstream"
    OMPROXY = "omproxy"
    FAULT = "fault"  # injected by a fault rule



# Headers of one connection, never of the exchange: not forwarded, recorded or re-sent (RFC 9110 7.6.1;
# HTTP2-Settings, RFC 7540 3.2.1, is named by the Connection header that carries it, and listed here too).
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
    "TE", "Trailer", "Trailers", "Transfer-Encoding", "Upgrade", "HTTP2-Settings"))


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
        return formcodec.decoded(self.body, self.headers.get("Content-Type"))

    @cached_property
    def query_form(self) -> formcodec.DecodedForm:
        """The query string decoded as a form (its bytes as sent: latin-1 round-trips them)."""
        if not self.query:
            return formcodec.EMPTY
        return formcodec.decoded(self.query.encode("latin-1", "replace"), None)

    @cached_property
    def operation(self) -> gms.Operation | None:
        return gms.parse_path(self.path)

    @cached_property
    def findings(self) -> tuple[formcodec.Finding, ...]:
        """Every encoding finding: the generic ones and, when the path names an Open Media operation,
        the GMS parameter ones (judged on the parameters the client meant)."""
        if not self.body:  # a polled `get`: they depend on the path and the content type only
            return _bodiless_findings(self.path, self.headers.get("Content-Type"))
        return self.form.findings + gms.findings(self.operation, self.form)

    @cached_property
    def target_of(self) -> gms.Target | None:
        """The interaction this request addresses: by id, by external id, or None (create, not GMS)."""
        return gms.target_of(self.operation, self.form)

    @property
    def interaction_id(self) -> str | None:
        target = self.target_of
        return target.id if target is not None and not target.external else None

    @property
    def service(self) -> str | None:
        return gms.service_of(self.path)


@lru_cache(maxsize=1024)
def _bodiless_findings(path: str, content_type: str | None) -> tuple[formcodec.Finding, ...]:
    form = formcodec.decoded(b"", content_type)
    return form.findings + gms.findings(gms.parse_path(path), form)


@dataclass(frozen=True)
class Response:
    """An answer: status, headers, the body (decoded when the upstream compressed it) and its source."""

    status: int
    body: bytes = b""
    headers: CIMultiDictProxy[str] = field(default_factory=headers_of)
    source: Source = Source.OMPROXY
    reason: str | None = None
    content_encoding: str | None = None  # the upstream's original encoding; body is decoded
    stream: AsyncIterator[bytes] | None = field(default=None, compare=False, repr=False)  # SSE: sent as it comes
    action: str | None = None  # a fault done to the connection: reset, timeout, truncate (the edge does it)

    @classmethod
    def json(cls, status: int, body: bytes, source: Source, **extra: str) -> Response:
        headers = {"Content-Type": "application/json;charset=utf-8", **extra}
        return cls(status, body, headers_of(headers), source)

    @cached_property
    def reply(self) -> dict[str, Any] | None:
        """The GMS JSON reply when the body is one."""
        return gms.parse_reply(self.body)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One interaction of a loaded cassette, with where it came from. Its answer may be read from its
    file when first asked for (`storage.load(lazy=True)`, for replay: a big capture's answers stay on
    disk until played): `answer` is then the function that reads it."""

    cassette: str
    index: int  # 0-based position in its cassette
    line: int
    request: Request
    answer: Response | Callable[[], Response]
    recorded_at: str = ""
    duration_ms: float = 0.0
    recorded_from: str = ""  # the upstream that answered (a URL, or builtin), when the entry says
    note: str = ""  # what an import mended (a body rebuilt from a HAR's params), when the entry says

    @property
    def response(self) -> Response:
        answer = self.answer
        if isinstance(answer, Response):
            return answer
        loaded = answer()
        object.__setattr__(self, "answer", loaded)  # read once
        return loaded

    def read(self) -> Response:
        """The answer, without keeping it: one left on disk is read again each time (`verify` and
        `diff` use each answer once or twice, and a capture's answers need not be in memory at once)."""
        answer = self.answer
        return answer if isinstance(answer, Response) else answer()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recorded):
            return NotImplemented
        return (self.cassette, self.index, self.line, self.request, self.response, self.recorded_at,
                self.duration_ms, self.recorded_from, self.note) == (
            other.cassette, other.index, other.line, other.request, other.response, other.recorded_at,
            other.duration_ms, other.recorded_from, other.note)

    def __hash__(self) -> int:
        return hash((self.cassette, self.index))

    @property
    def where(self) -> str:
        return f"{self.cassette} #{self.index}"
