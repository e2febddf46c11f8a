"""Cassettes to and from what other tools hold: VCR.py cassettes (`vcr`) and HAR 1.2 (`har`, what
browsers, mitmproxy and Charles save). Siblings of `yamlformat`: each converts recorded exchanges to
its documents and back to `Recorded` values; the command line redacts and saves. Pure.

Import is strict where a file is wrong (one line naming the entry) and lenient where tools differ:
HAR `postData` with `text` or only `params`, base64 content, HTTP/2 pseudo-headers left out."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from omproxy import __version__, yamlsafe
from omproxy.errors import UsageError
from omproxy.gms import formcodec
from omproxy.model import Recorded, Request, Response, Source, headers_of

_DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"})


def _text(body: bytes) -> tuple[str, str | None]:
    """A body as HAR/VCR text: UTF-8 text as is, anything else base64 (and say so)."""
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def _url(base: str, req: Request) -> str:
    return base.rstrip("/") + req.target


# ---- VCR.py --------------------------------------------------------------------------------------

def to_vcr(recorded: Iterable[Recorded], base_url: str) -> dict[str, Any]:
    """A VCR.py cassette (its version 1) that VCR.py replays with its default matchers."""
    return {"interactions": [vcr_interaction(rec, base_url) for rec in recorded], "version": 1}


def vcr_text(recorded: Iterable[Recorded], base_url: str) -> Iterator[str]:
    """`to_vcr` as YAML, an interaction at a time (a capture of any size is never held whole)."""
    yield "interactions:\n"
    for rec in recorded:
        yield yamlsafe.dump([vcr_interaction(rec, base_url)])  # `- request: ...`: an item of the list above
    yield "version: 1\n"


def vcr_interaction(rec: Recorded, base_url: str) -> dict[str, Any]:
    """One interaction of `to_vcr`."""
    req, resp = rec.request, rec.response
    headers: dict[str, list[str]] = {}
    for k, v in req.headers.items():
        if k.lower() not in _DROPPED and k.lower() != "host":
            headers.setdefault(str(k), []).append(v)
    response_headers: dict[str, list[str]] = {}
    for k, v in resp.headers.items():
        if k.lower() not in _DROPPED:
            response_headers.setdefault(str(k), []).append(v)
    body, encoding = _text(resp.body)
    return {
        "request": {"body": req.body.decode("utf-8", "replace") if req.body else None, "headers": headers,
                    "method": req.method, "uri": _url(base_url, req)},
        "response": {"body": {"string": body if encoding is None else resp.body},  # bytes: YAML's !!binary
                     "headers": response_headers,
                     "status": {"code": resp.status, "message": resp.reason or _phrase(resp.status)}}}


def from_vcr(data: Any, name: str) -> list[Recorded]:
    if not isinstance(data, dict) or not isinstance(data.get("interactions"), list):
        raise UsageError(f"{name}: not a VCR.py cassette (no 'interactions' list)")
    out = []
    for i, item in enumerate(data["interactions"]):
        where = f"{name}: interaction #{i}"
        try:
            rq, rs = item["request"], item["response"]
            target = urlsplit(str(rq["uri"]))
            body = rq.get("body")
            request = Request(str(rq["method"]).upper(), target.path or "/", target.query,
                              headers_of(_pairs(rq.get("headers"))), _bytes(body))
            raw = rs.get("body") or {}
            status = rs["status"]["code"] if isinstance(rs.get("status"), dict) else rs.get("status")
            response = Response(int(status), _bytes(raw.get("string") if isinstance(raw, dict) else raw),
                                headers_of(_pairs(rs.get("headers"))), Source.CASSETTE)
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{where}: not the shape VCR.py writes ({type(e).__name__}: {e})") from None
        out.append(Recorded(name, i, 0, request, response))
    return out


def _pairs(headers: Any) -> list[tuple[str, str]]:
    if not isinstance(headers, dict):
        return []
    return [(str(k), str(v)) for k, vs in headers.items() for v in (vs if isinstance(vs, list) else [vs])
            if str(k).lower() not in _DROPPED]


def _bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _phrase(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""


# ---- HAR 1.2 --------------------------------------------------------------------------------------

def to_har(recorded: Iterable[Recorded], base_url: str) -> dict[str, Any]:
    return har_log([har_entry(rec, base_url) for rec in recorded])


def har_text(recorded: Iterable[Recorded], base_url: str) -> Iterator[str]:
    """`to_har` as JSON, an entry at a time (a capture of any size is never held whole)."""
    before, after = json.dumps(har_log([]), indent=1).rsplit("[]", 1)  # `entries` comes last
    yield before + "["
    for n, rec in enumerate(recorded):
        yield ("," if n else "") + "\n" + json.dumps(har_entry(rec, base_url), ensure_ascii=False, indent=1)
    yield "\n]" + after + "\n"


def har_log(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A HAR document around `entries`."""
    return {"log": {"version": "1.2", "creator": {"name": "omproxy", "version": __version__}, "entries": entries}}


def har_entry(rec: Recorded, base_url: str) -> dict[str, Any]:
    """One entry of `to_har`."""
    req, resp = rec.request, rec.response
    request: dict[str, Any] = {
        "method": req.method, "url": _url(base_url, req), "httpVersion": "HTTP/1.1", "cookies": [],
        "headers": [{"name": str(k), "value": v} for k, v in req.headers.items()],
        "queryString": [{"name": k, "value": v} for k, v in req.query_form.fields],
        "headersSize": -1, "bodySize": len(req.body)}
    if req.body:
        text, encoding = _text(req.body)
        post: dict[str, Any] = {"mimeType": req.headers.get("Content-Type", ""), "text": text}
        if encoding:
            post["encoding"] = encoding  # not in HAR 1.2's postData; tools that know it honour it
        if not req.form.not_form:
            post["params"] = [{"name": k, "value": v} for k, v in req.form.fields]
        request["postData"] = post
    text, encoding = _text(resp.body)
    content: dict[str, Any] = {"size": len(resp.body), "mimeType": resp.headers.get("Content-Type", ""),
                               "text": text}
    if encoding:
        content["encoding"] = encoding
    return {
        "startedDateTime": rec.recorded_at or datetime.now(UTC).isoformat(), "time": rec.duration_ms,
        "request": request,
        "response": {"status": resp.status, "statusText": resp.reason or _phrase(resp.status),
                     "httpVersion": "HTTP/1.1", "cookies": [],
                     "headers": [{"name": str(k), "value": v} for k, v in resp.headers.items()],
                     "content": content, "redirectURL": "", "headersSize": -1, "bodySize": len(resp.body)},
        "cache": {}, "timings": {"send": 0, "wait": rec.duration_ms, "receive": 0}}


def from_har(data: Any, name: str, *, everything: bool = False) -> list[Recorded]:
    """The entries of a HAR under /genesys/ (all with `everything`), in the order captured."""
    entries = data.get("log", {}).get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UsageError(f"{name}: not a HAR file (no log.entries list)")
    out: list[Recorded] = []
    for i, entry in enumerate(entries):
        where = f"{name}: entry #{i}"
        try:
            rq, rs = entry["request"], entry["response"]
            target = urlsplit(str(rq["url"]))
            if not everything and not target.path.startswith("/genesys/"):
                continue
            headers = [(h["name"], str(h["value"])) for h in rq.get("headers", [])
                       if not str(h["name"]).startswith(":") and str(h["name"]).lower() not in _DROPPED]
            body = _har_body(rq.get("postData"))
            content = rs.get("content") or {}
            raw = str(content.get("text") or "")
            answer = base64.b64decode(raw, validate=True) if content.get("encoding") == "base64" else raw.encode()
            response_headers = [(h["name"], str(h["value"])) for h in rs.get("headers", [])
                                if not str(h["name"]).startswith(":") and str(h["name"]).lower() not in _DROPPED]
            encoding = next((str(h["value"]) for h in rs.get("headers", [])
                             if str(h["name"]).lower() == "content-encoding"), None)
            request = Request(str(rq["method"]).upper(), target.path or "/", target.query, headers_of(headers), body)
            response = Response(int(rs["status"]), answer, headers_of(response_headers), Source.CASSETTE,
                                content_encoding=encoding)  # the HAR holds it decoded; the original is noted
            duration = float(entry.get("time") or 0)
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise UsageError(f"{where}: not a HAR 1.2 entry ({type(e).__name__}: {e})") from None
        out.append(Recorded(name, len(out), 0, request, response, str(entry.get("startedDateTime") or ""), duration))
    return out


def _har_body(post: Any) -> bytes:
    if not isinstance(post, dict):
        return b""
    if post.get("text") is not None:
        text = str(post["text"])
        return base64.b64decode(text, validate=True) if post.get("encoding") == "base64" else text.encode("utf-8")
    params = post.get("params") or []
    return formcodec.encode([(str(p["name"]), str(p.get("value", ""))) for p in params])
