"""What a cassette entry is: the plain-data shape of one recorded exchange, and its conversion to and
from the model (`Recorded`). No file, no YAML, no redaction: values arrive here already redacted
(`redaction`), are encoded by a format (`yamlformat`) and stored by `storage`.

    version: 1
    interactions:
    - recorded_at: '2026-11-28T10:15:02.114Z'
      recorded_from: http://gms.example:8080   # the upstream that answered, or builtin (the simulator)
      note: ...                  # what an import mended (optional)
      request:  {method, path, query, headers, body | body_base64, form}
      response: {status, headers, body | body_base64, content_encoding?, json?}
      duration_ms: 12.4          # written last: an entry without it was cut short while being written
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from omproxy.errors import CassetteError
from omproxy.gms import formcodec
from omproxy.model import SESSION_HEADER, Recorded, Request, Response, Source, end_to_end, headers_of

VERSION = 1
_NOT_KEPT = re.compile("[\x00-\x08\x0b-\x1f]")  # YAML would not keep these exactly (CR among them)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


@dataclass(frozen=True)
class Cassette:
    path: str
    interactions: tuple[Recorded, ...]
    dropped: str | None = None  # the torn-tail report, when one was dropped


def now_stamp(now: datetime | None = None) -> str:
    """When an entry was recorded, UTC to the millisecond: 2026-11-28T10:15:02.123Z."""
    if now is not None:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    when = time.time()
    second = int(when)
    if second != _SECOND[0]:  # the date and time are formatted once a second
        _SECOND[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_SECOND[1]}.{int((when - second) * 1000):03d}Z"


_SECOND: list[Any] = [-1, ""]


# ---- model -> entry -------------------------------------------------------------------------

def _headers(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        key = str(key)  # aiohttp's header names are istr, which YAML cannot represent
        if key in out:
            out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [value]
        else:
            out[key] = value
    return out


def _body(target: dict[str, Any], body: bytes) -> None:
    """Exact text when the bytes are UTF-8 text; otherwise base64 (a documented lossless form)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        target["body_base64"] = base64.b64encode(body).decode("ascii")
        return
    if _NOT_KEPT.search(text):
        target["body_base64"] = base64.b64encode(body).decode("ascii")  # YAML would not keep it exact
    else:
        target["body"] = text


# Not part of an exchange worth keeping: derived from the body, omproxy's own, or hop-by-hop.
_NOT_RECORDED = frozenset({"content-length", SESSION_HEADER.lower(), "connection", "keep-alive"})


def to_entry(req: Request, resp: Response, duration_ms: float, recorded_at: str | None = None,
             recorded_from: str | None = None, note: str | None = None) -> dict[str, Any]:
    """The entry for an exchange. Redact the request and response before: this stores what it gets."""
    entry: dict[str, Any] = {"recorded_at": recorded_at or now_stamp()}
    if recorded_from:
        entry["recorded_from"] = recorded_from
    if note:
        entry["note"] = note
    entry.update(request=request_part(req), response=response_part(resp), duration_ms=round(duration_ms, 1))
    return entry


def request_part(req: Request) -> dict[str, Any]:
    """An entry's `request`, from the request as it is stored (redacted)."""
    # the connection's own headers (hop-by-hop, and those its Connection header names) are not the
    # exchange's: never forwarded, so never recorded, so never re-sent by verify
    kept = end_to_end((k, v) for k, v in req.headers.items() if k.lower() not in _NOT_RECORDED)
    request: dict[str, Any] = {"method": req.method, "path": req.path, "query": req.query,
                               "headers": _headers(kept)}
    _body(request, req.body)
    if req.form.fields and not req.form.not_form:
        request["form"] = formcodec.bracket_view(req.form.fields)
    return request


def response_part(resp: Response) -> dict[str, Any]:
    """An entry's `response`, from the answer as it is stored (redacted)."""
    response: dict[str, Any] = {"status": resp.status, "headers": _headers(resp.headers.items())}
    if resp.content_encoding:
        response["content_encoding"] = resp.content_encoding
    _body(response, resp.body)
    if resp.reply is not None:
        response["json"] = resp.reply
    return response


# ---- entry -> model -------------------------------------------------------------------------

Where = tuple[str, int, int]  # cassette, line, index: made into words only for a problem


def _problem(where: Where | str, message: str) -> CassetteError:
    if isinstance(where, tuple):
        where = f"{where[0]}:{where[1]}: interaction #{where[2]}"
    return CassetteError(f"{where}: {message}")


def _read_body(where: Where, part: dict[str, Any]) -> bytes:
    if "body_base64" in part:
        try:
            return base64.b64decode(str(part["body_base64"]), validate=True)
        except ValueError:
            raise _problem(where, "body_base64 is not valid base64") from None
    body = part.get("body", "")
    if not isinstance(body, str):
        raise _problem(where, f"body must be a string (quote it), not {type(body).__name__}")
    return body.encode("utf-8")


_NO_HEADERS = headers_of()  # read-only: one for every entry that has none


def _read_headers(where: Where, value: Any) -> Any:
    if value is None:
        return _NO_HEADERS
    if not isinstance(value, dict):
        raise _problem(where, "headers must be a mapping of name: value")
    try:  # a header set seen before was checked then: one lookup
        return _HEADERS[tuple(value.items())]
    except (KeyError, TypeError):  # TypeError: a list value (repeated header), not hashable as such
        pass
    pairs = []
    for k, v in value.items():
        if not _TOKEN.match(str(k)):
            raise _problem(where, f"header name {str(k)!r} is not a valid HTTP header name")
        for item in v if isinstance(v, list) else [v]:
            text = str(item)
            if "\r" in text or "\n" in text or "\0" in text:
                raise _problem(where, f"header {k} holds a CR, LF or NUL, which HTTP cannot carry")
            pairs.append((str(k), text))
    key = tuple(pairs)
    shared = _HEADERS.get(key)
    if shared is None:
        if len(_HEADERS) >= 65536:
            _HEADERS.clear()
        shared = _HEADERS[key] = headers_of(pairs)
    return shared


# Header sets repeat from one recorded interaction to the next (same client, same GMS): one read-only
# CIMultiDictProxy for each distinct set keeps a big capture's memory near its size.
_HEADERS: dict[tuple[tuple[str, str], ...], Any] = {}


def whole(data: Any) -> bool:
    """Whether an entry omproxy wrote was written to its end (it writes `duration_ms` last);
    hand-written entries (no `recorded_at`) need not carry it."""
    return not isinstance(data, dict) or "recorded_at" not in data or "duration_ms" in data


def from_entry(data: Any, cassette: str, index: int, line: int,
               later: Callable[[], Response] | None = None) -> Recorded:
    """The recording of an entry, checked. With `later`, the answer is checked but not built: `later`
    reads it when it is first asked for."""
    where = (cassette, line, index)
    if not isinstance(data, dict):
        raise _problem(where, "expected a mapping with request and response")
    rq, rs = data.get("request"), data.get("response")
    if not isinstance(rq, dict) or not isinstance(rs, dict):
        raise _problem(where, f"missing {'request' if not isinstance(rq, dict) else 'response'}")
    if not whole(data):
        raise _problem(where, "cut short while being written (no duration_ms, which omproxy writes last)")
    method, path = rq.get("method"), rq.get("path")
    if not isinstance(method, str) or not isinstance(path, str):
        raise _problem(where, f"missing request.{'method' if not isinstance(method, str) else 'path'}")
    status = rs.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        raise _problem(where, "missing response.status (a number)")
    if not 100 <= status <= 599:
        raise _problem(where, f"response.status {status} is not an HTTP status (100-599)")
    request = Request(method.upper(), path, str(rq.get("query") or ""), _read_headers(where, rq.get("headers")),
                      _read_body(where, rq))
    duration = data.get("duration_ms")
    duration = float(duration) if isinstance(duration, int | float) else 0.0
    if later is not None:
        _read_headers(where, rs.get("headers"))
        if "body_base64" in rs:
            _read_body(where, rs)
        elif not isinstance(rs.get("body", ""), str):
            raise _problem(where, f"body must be a string (quote it), not {type(rs.get('body')).__name__}")
        return Recorded(cassette, index, line, request, later, str(data.get("recorded_at") or ""), duration,
                        str(data.get("recorded_from") or ""), str(data.get("note") or ""))
    body = _read_body(where, rs)
    headers = _read_headers(where, rs.get("headers"))
    if "Content-Type" not in headers and ("json" in rs or body.lstrip()[:1] in (b"{", b"[")):
        headers = headers_of([*headers.items(), ("Content-Type", "application/json")])  # hand-written entries
    encoding = rs.get("content_encoding")
    response = Response(status, body, headers, Source.CASSETTE,
                        content_encoding=str(encoding) if encoding else None)
    return Recorded(cassette, index, line, request, response, str(data.get("recorded_at") or ""), duration,
                    str(data.get("recorded_from") or ""), str(data.get("note") or ""))


def entries_of(data: Any, name: str) -> list[Any]:
    """The entries of a whole cassette document, its version checked."""
    if not isinstance(data, dict):
        raise _problem(name, "not a cassette: expected 'version' and 'interactions'")
    if "version" not in data and "interactions" not in data:
        raise _problem(name, f"not a cassette: it has neither 'version' nor 'interactions' (its keys: "
                       f"{', '.join(map(str, list(data)[:5])) or 'none'}); is it another YAML file, a config?")
    if data.get("version") != VERSION:
        raise _problem(name, f"unknown cassette version {data.get('version')!r}; this omproxy reads version "
                       f"{VERSION}")
    entries = data.get("interactions")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _problem(name, "interactions must be a list")
    return entries


def document(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": VERSION, "interactions": entries}


def row(rec: Recorded) -> dict[str, Any]:
    """What one recording says, as a row: `inspect`'s and the inspector's cassette list."""
    req, resp = rec.request, rec.response
    op = req.operation
    reply = resp.reply or {}
    user_data = {parts[1]: v for k, v in req.form.fields if (parts := formcodec.split_key(k)) and parts[0] in (
        "userData", "change")}
    if req.form.get("externalId"):
        user_data = {"ExternalId": req.form.get("externalId") or "", **user_data}
    answered = reply.get("interactionId") or (reply.get("interactionProperties") or {}).get("interactionId")
    return {"index": rec.index, "recorded_at": rec.recorded_at, "operation": op.kind if op else req.method,
            "service": op.service if op else req.service, "interactionId": answered or req.interaction_id,
            "userData": user_data, "status": resp.status, "statusCode": reply.get("statusCode"),
            "duration_ms": rec.duration_ms}
