"""HAR: what browsers (Chrome, Firefox, Firebug), Charles, Fiddler, Insomnia and mitmproxy save.
Export writes HAR 1.2 that its JSON schema accepts; import reads HAR 1.1 and 1.2 as real tools write
them (nulls where strings belong, empty addresses, base64 content, `postData` as `text` or `params`
only, entries that never got an answer), naming the entry and field it cannot read. Pure."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from omproxy import __version__
from omproxy.cassette.interchange.common import Imported, answer_of, kept_headers, where
from omproxy.errors import UsageError
from omproxy.gms import formcodec
from omproxy.model import Recorded, Request, Response, Source, headers_of


def body_text(body: bytes) -> tuple[str, str | None]:
    """A body as HAR/VCR text: UTF-8 text as is, anything else base64 (and say so)."""
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def phrase(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""


def url_of(base: str, req: Request) -> str:
    return base.rstrip("/") + req.target


# ---- export --------------------------------------------------------------------------------------

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
    """One entry of `to_har`: HAR 1.2 as its schema says; bodies that are not UTF-8 in base64
    (`encoding`, which HAR 1.2 has for content and tools honour for postData too)."""
    req, resp = rec.request, rec.response
    request: dict[str, Any] = {
        "method": req.method, "url": url_of(base_url, req), "httpVersion": "HTTP/1.1", "cookies": [],
        "headers": [{"name": str(k), "value": v} for k, v in req.headers.items()],
        "queryString": [{"name": k, "value": v} for k, v in req.query_form.fields],
        "headersSize": -1, "bodySize": len(req.body)}
    if req.body:
        text, encoding = body_text(req.body)
        post: dict[str, Any] = {"mimeType": req.headers.get("Content-Type", ""), "text": text}
        if encoding:
            post["encoding"] = encoding
        if not req.form.not_form:
            post["params"] = [{"name": k, "value": v} for k, v in req.form.fields]
        request["postData"] = post
    text, encoding = body_text(resp.body)
    content: dict[str, Any] = {"size": len(resp.body), "mimeType": resp.headers.get("Content-Type", ""),
                               "text": text}
    if encoding:
        content["encoding"] = encoding
    headers = [{"name": str(k), "value": v} for k, v in resp.headers.items()]
    if resp.content_encoding:  # as it came on the wire; HAR's content is the decoded body
        headers.append({"name": "Content-Encoding", "value": resp.content_encoding})
    return {
        "startedDateTime": rec.recorded_at or datetime.now(UTC).isoformat(), "time": max(rec.duration_ms, 0),
        "request": request,
        "response": {"status": resp.status, "statusText": resp.reason or phrase(resp.status),
                     "httpVersion": "HTTP/1.1", "cookies": [], "headers": headers,
                     "content": content, "redirectURL": "", "headersSize": -1, "bodySize": len(resp.body)},
        "cache": {}, "timings": {"send": 0, "wait": max(rec.duration_ms, 0), "receive": 0}}


# ---- import --------------------------------------------------------------------------------------

def from_har(data: Any, name: str, *, everything: bool = False) -> Imported:
    """The entries of a HAR under /genesys/ (all with `everything`), in the order captured."""
    log = data.get("log") if isinstance(data, dict) else None
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(entries, list):
        raise UsageError(f"{name}: not a HAR file (no log.entries list)")
    out = Imported()
    left_out = 0
    for i, entry in enumerate(entries):
        at = where(name, i)
        if not isinstance(entry, dict):
            raise UsageError(f"{at}: not an object")
        rq, rs = _object(entry, "request", at), _object(entry, "response", at)
        url = _string(rq, "url", at, "request")
        target = urlsplit(url)
        if not everything and not target.path.startswith("/genesys/"):
            left_out += 1
            continue
        status = rs.get("status")
        if status in (0, None, "0"):  # Chrome's blocked or aborted requests: never answered
            out.notes.append(f"{at}: skipped: response.status {status!r} (the request got no answer: aborted, "
                             "blocked or failed)")
            continue
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise UsageError(f"{at}: response.status {status!r} is not an HTTP status (100-599)")
        headers = _headers(rq, at, "request")
        body, rebuilt = _post_body(rq.get("postData"), rq.get("bodySize"), at)
        response_headers = _headers(rs, at, "response")
        content: dict[str, Any] = rs["content"] if isinstance(rs.get("content"), dict) else {}
        answer, kept, encoding = answer_of(_content(content, at), response_headers, at, out, decoded_already=True)
        request = Request(_string(rq, "method", at, "request").upper(), target.path or "/", target.query,
                          headers_of(kept_headers(headers)), body)
        response = Response(status, answer, headers_of(kept), Source.CASSETTE, content_encoding=encoding)
        if rebuilt is not None:
            out.notes.append(f"{at}: {rebuilt}")
        time = entry.get("time")
        out.recorded.append(Recorded(name, len(out.recorded), 0, request, response,
                                     str(entry.get("startedDateTime") or ""),
                                     float(time) if isinstance(time, int | float) and time >= 0 else 0.0,
                                     note=rebuilt or ""))
    if left_out:
        out.notes.append(f"{name}: {left_out} entr{'y' if left_out == 1 else 'ies'} not under /genesys/ left out "
                         "(--all takes them)")
    return out


def _object(data: dict[str, Any], key: str, at: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise UsageError(f"{at}: no {key} object")
    return value


def _string(data: dict[str, Any], key: str, at: str, part: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"{at}: {part}.{key} is missing or not a string")
    return value


def _headers(part: dict[str, Any], at: str, name: str) -> list[tuple[str, str]]:
    headers = part.get("headers") or []
    if not isinstance(headers, list):
        raise UsageError(f"{at}: {name}.headers is not a list")
    out = []
    for n, h in enumerate(headers):
        if not isinstance(h, dict) or not isinstance(h.get("name"), str):
            raise UsageError(f"{at}: {name}.headers[{n}] has no name")
        out.append((h["name"], "" if h.get("value") is None else str(h["value"])))
    return out


def _content(content: dict[str, Any], at: str) -> bytes:
    text = content.get("text")
    if text is None:
        return b""
    if content.get("encoding") == "base64":
        try:
            return base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{at}: response.content.text is not valid base64") from None
    return str(text).encode("utf-8")


def _post_body(post: Any, body_size: Any, at: str) -> tuple[bytes, str | None]:
    """The request body, and a note when it had to be rebuilt from `params` (no `text`)."""
    if not isinstance(post, dict):
        return b"", None
    if post.get("text") is not None:
        text = str(post["text"])
        if post.get("encoding") == "base64":
            try:
                return base64.b64decode(text, validate=True), None
            except (binascii.Error, ValueError):
                raise UsageError(f"{at}: request.postData.text is not valid base64") from None
        return text.encode("utf-8"), None
    params = post.get("params") or []
    if not isinstance(params, list) or not params:
        return b"", None
    fields = [(str(p.get("name", "")), "" if p.get("value") is None else str(p["value"])) for p in params
              if isinstance(p, dict)]
    body = formcodec.encode(fields)
    note = "request body rebuilt from postData.params, form-encoded (the HAR holds no postData.text)"
    if isinstance(body_size, int) and body_size > 0 and body_size != len(body):
        note += f"; its bodySize says {body_size} bytes, not {len(body)}: the client may have sent it unencoded"
    return body, note
