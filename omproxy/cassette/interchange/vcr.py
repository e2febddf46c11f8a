"""VCR.py cassettes, out and in, and Betamax's (and Ruby VCR's) in. Export writes what VCR.py replays
with its default matchers: bodies that are not UTF-8, and compressed answers, as bytes (YAML's
`!!binary`), as VCR.py itself records them. Import reads every dialect VCR.py's stubs write: requests
and httpx (old `status_code`/`content` and new), aiohttp (a request body stored as the `data=` dict
or list of pairs it was given), string or list header values, YAML or JSON. Pure."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from omproxy import yamlsafe
from omproxy.cassette.interchange.common import DROPPED, Imported, answer_of, kept_headers, where
from omproxy.cassette.interchange.har import phrase, url_of
from omproxy.errors import UsageError
from omproxy.gms import formcodec
from omproxy.model import Recorded, Response, Source, headers_of
from omproxy.model import Request as HttpRequest

# ---- export ----------------------------------------------------------------------------------------

def to_vcr(recorded: Iterable[Recorded], base_url: str) -> dict[str, Any]:
    """A VCR.py cassette (its version 1) that VCR.py replays with its default matchers."""
    return {"interactions": [vcr_interaction(rec, base_url) for rec in recorded], "version": 1}


def vcr_text(recorded: Iterable[Recorded], base_url: str) -> Iterator[str]:
    """`to_vcr` as YAML, an interaction at a time (a capture of any size is never held whole)."""
    yield "interactions:\n"
    for rec in recorded:
        yield yamlsafe.dump([vcr_interaction(rec, base_url)])  # `- request: ...`: an item of the list above
    yield "version: 1\n"


def _grouped(pairs: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        if k.lower() not in DROPPED:
            out.setdefault(str(k), []).append(v)
    return out


def _str_or_bytes(body: bytes) -> str | bytes:
    """Text when it is UTF-8 that YAML keeps exactly, else the bytes (`!!binary`)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body
    return body if _NOT_KEPT.search(text) else text


_NOT_KEPT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff]")  # YAML would not keep these


def vcr_interaction(rec: Recorded, base_url: str) -> dict[str, Any]:
    """One interaction of `to_vcr`. A compressed answer is compressed again, with its Content-Encoding,
    as VCR.py records one (gzip and deflate; another encoding is written decoded)."""
    req, resp = rec.request, rec.response
    response_headers = _grouped(resp.headers.items())
    body: bytes | str = _str_or_bytes(resp.body)
    if resp.content_encoding in ("gzip", "deflate"):
        body = gzip.compress(resp.body, mtime=0) if resp.content_encoding == "gzip" else zlib.compress(resp.body)
        response_headers["Content-Encoding"] = [resp.content_encoding]
    return {
        "request": {"body": _str_or_bytes(req.body) if req.body else None, "headers": _grouped(req.headers.items()),
                    "method": req.method, "uri": url_of(base_url, req)},
        "response": {"body": {"string": body}, "headers": response_headers,
                     "status": {"code": resp.status, "message": resp.reason or phrase(resp.status)}}}


# ---- import ----------------------------------------------------------------------------------------

def from_vcr(data: Any, name: str) -> Imported:
    if not isinstance(data, dict) or not isinstance(data.get("interactions"), list):
        raise UsageError(f"{name}: not a VCR.py cassette (no 'interactions' list)")
    out = Imported()
    for i, item in enumerate(data["interactions"]):
        at = where(name, i, "interaction")
        rq, rs = _part(item, "request", at), _part(item, "response", at)
        body, note = _request_body(rq.get("body"), rq.get("headers"), at)
        if "status_code" in rs:  # httpx's stub before VCR.py 5: status_code and content
            status, raw = rs["status_code"], rs.get("content")
        else:
            status = rs["status"].get("code") if isinstance(rs.get("status"), dict) else rs.get("status")
            raw = rs.get("body")
            raw = raw.get("string") if isinstance(raw, dict) else raw
        request = _request(rq, body, at)
        response = _response(status, _bytes(raw, at, "response.body"), rs.get("headers"), at, out)
        if note:
            out.notes.append(f"{at}: {note}")
        out.recorded.append(Recorded(name, len(out.recorded), 0, request, response, note=note or ""))
    return out


def from_betamax(data: Any, name: str) -> Imported:
    """Betamax's JSON (and Ruby VCR's YAML): `http_interactions`, bodies as `string` or `base64_string`."""
    items = data.get("http_interactions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UsageError(f"{name}: not a Betamax cassette (no 'http_interactions' list)")
    out = Imported()
    for i, item in enumerate(items):
        at = where(name, i, "interaction")
        rq, rs = _part(item, "request", at), _part(item, "response", at)
        status = rs["status"].get("code") if isinstance(rs.get("status"), dict) else rs.get("status")
        request = _request(rq, _betamax_body(rq.get("body"), at, "request"), at)
        response = _response(status, _betamax_body(rs.get("body"), at, "response"), rs.get("headers"), at, out)
        out.recorded.append(Recorded(name, len(out.recorded), 0, request, response,
                                     str(item.get("recorded_at") or "")))
    return out


def _part(item: Any, key: str, at: str) -> dict[str, Any]:
    part = item.get(key) if isinstance(item, dict) else None
    if not isinstance(part, dict):
        raise UsageError(f"{at}: no {key} mapping")
    return part


def _request(rq: dict[str, Any], body: bytes, at: str) -> HttpRequest:
    method, uri = rq.get("method"), rq.get("uri")
    if not isinstance(method, str) or not isinstance(uri, str):
        raise UsageError(f"{at}: request.{'method' if not isinstance(method, str) else 'uri'} is missing")
    target = urlsplit(uri)
    return HttpRequest(method.upper(), target.path or "/", target.query, headers_of(kept_headers(_pairs(
        rq.get("headers"), at, "request"))), body)


def _response(status: Any, raw: bytes, headers: Any, at: str, out: Imported) -> Response:
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise UsageError(f"{at}: response.status {status!r} is not an HTTP status (100-599)")
    body, kept, encoding = answer_of(raw, _pairs(headers, at, "response"), at, out, decoded_already=False)
    return Response(status, body, headers_of(kept), Source.CASSETTE, content_encoding=encoding)


def _pairs(headers: Any, at: str, part: str) -> list[tuple[str, str]]:
    """Headers as VCR.py writes them: a mapping of name to a list of values, or to one value."""
    if headers is None:
        return []
    if not isinstance(headers, dict):
        raise UsageError(f"{at}: {part}.headers is not a mapping")
    return [(str(k), "" if v is None else str(v)) for k, vs in headers.items()
            for v in (vs if isinstance(vs, list) else [vs])]


def _bytes(value: Any, at: str, what: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise UsageError(f"{at}: {what} is a {type(value).__name__}, not text or bytes")


def _request_body(body: Any, headers: Any, at: str) -> tuple[bytes, str | None]:
    """The request body; with a note when VCR.py stored not the bytes but what the client was given:
    aiohttp's stub keeps `data=` (a dict, or a list of pairs) as it was, never a repr."""
    if body is None or isinstance(body, str | bytes):
        return _bytes(body, at, "request.body"), None
    if isinstance(body, dict) and set(body) <= {"string", "encoding"}:  # a body written as VCR writes answers
        return _bytes(body.get("string"), at, "request.body"), None
    pairs_given = isinstance(body, list) and all(isinstance(f, list | tuple) and len(f) == 2 for f in body)
    if not (isinstance(body, dict) or pairs_given):
        raise UsageError(f"{at}: request.body is a {type(body).__name__} omproxy cannot turn into bytes")
    content_type = next((v for k, v in _pairs(headers, at, "request") if k.lower() == "content-type"), "")
    if "json" in content_type.lower():  # json=: the JSON it was, values and all
        return json.dumps(body).encode(), "request body rebuilt as JSON from what VCR.py's aiohttp stub stored (json=)"
    fields = body.items() if isinstance(body, dict) else body
    pairs = [(str(k), "" if v is None else str(v)) for k, v in fields]
    return formcodec.encode(pairs), ("request body rebuilt, form-encoded, from the fields VCR.py's aiohttp "
                                     "stub stored (data=)")


def _betamax_body(body: Any, at: str, part: str) -> bytes:
    if body is None or isinstance(body, str):
        return _bytes(body, at, f"{part}.body")
    if not isinstance(body, dict):
        raise UsageError(f"{at}: {part}.body is not a mapping with string or base64_string")
    if body.get("base64_string"):
        try:
            return base64.b64decode(str(body["base64_string"]), validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{at}: {part}.body.base64_string is not valid base64") from None
    value = body.get("string")
    if isinstance(value, str) and body.get("encoding") not in (None, "", "utf-8", "UTF-8"):
        try:
            return value.encode(str(body["encoding"]))
        except (LookupError, UnicodeEncodeError):
            return value.encode("utf-8")
    return _bytes(value, at, f"{part}.body.string")
