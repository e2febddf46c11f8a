"""One log line per request: what was asked (operation, service, decoded form with secrets
masked), what was answered (status, GMS statusCode, interactionId, source) and how long it took.
Pure: builds the record and its text or JSON form; `cli` configures where it goes."""

from __future__ import annotations

import json
from typing import Any

from omproxy import formcodec, gms
from omproxy.model import Request, Response
from omproxy.redaction import Redactor


def findings_of(req: Request) -> list[formcodec.Finding]:
    """Every encoding finding on a request: the generic ones and, when the path names an Open Media
    operation, the GMS parameter ones."""
    found = list(req.form.findings)
    if req.operation is None:
        return found
    meant = formcodec.intended(req.form)  # judge the parameters the client meant
    suffix = " (in the body decoded once more)" if meant is not req.form else ""
    return found + [formcodec.Finding(f.kind, f.message + suffix, f.fragment)
                    for f in gms.parameter_findings(req.operation, meant)]


def record(mode: str, req: Request, resp: Response, duration_ms: float, redactor: Redactor,
           verbose: int = 0) -> dict[str, Any]:
    op = req.operation
    reply = resp.reply or {}
    entry: dict[str, Any] = {
        "mode": mode,
        "method": req.method,
        "path": redactor.target(req.path, req.query),
        "operation": op.kind if op else None,
        "service": op.service if op else req.service,
        "form": formcodec.bracket_view(redactor.fields(req.form.fields)),
        "status": resp.status,
        "statusCode": reply.get("statusCode"),
        "interactionId": reply.get("interactionId") or req.interaction_id,
        "source": resp.source,
        "duration_ms": round(duration_ms, 1),
    }
    if req.session:
        entry["session"] = req.session
    if resp.note:
        entry["note"] = resp.note
    entry.update(resp.details)
    if verbose:
        entry["request_headers"] = dict(redactor.headers(req.headers.items()))
        entry["response_headers"] = dict(redactor.headers(resp.headers.items()))
    return entry


def text(entry: dict[str, Any]) -> str:
    op = f"{entry['operation']}@{entry['service']}" if entry.get("operation") else "-"
    parts = [entry["mode"], entry["method"], entry["path"], op]
    if entry["form"]:
        parts.append(json.dumps(entry["form"], ensure_ascii=False, separators=(",", ":")))
    parts.append(f"-> {entry['status']}")
    if entry.get("statusCode") is not None:
        parts.append(f"statusCode={entry['statusCode']}")
    if entry.get("interactionId"):
        parts.append(f"id={entry['interactionId']}")
    parts.append(f"[{entry['source']}{' ' + entry['note'] if entry.get('note') else ''}]")
    if entry.get("session"):
        parts.append(f"session={entry['session']}")
    parts.append(f"{entry['duration_ms']}ms")
    for key in ("request_headers", "response_headers"):
        if key in entry:
            parts.append(f"{key}={json.dumps(entry[key], ensure_ascii=False)}")
    return " ".join(str(p) for p in parts)
