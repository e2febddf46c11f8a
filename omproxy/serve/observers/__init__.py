"""Observers: what sees every exchange once its answer is decided, one module each: the journal
(counts, recent exchanges, misses), the access log and findings log, Prometheus metrics, the web
inspector. Each reads the `Exchange`, never changes it. Here: `entry`, an exchange as one JSON-able
row, which the access log, the journal's admin view and the inspector all show."""

from __future__ import annotations

from typing import Any

from omproxy.exchange import Exchange
from omproxy.gms import formcodec
from omproxy.redaction import Redactor

SHOWN = 80  # characters of a value a line shows
FIELDS_SHOWN = 200  # fields of a form a line, the journal and the inspector's row show, at most


def short(value: str) -> str:
    """A value as a log line shows it: whole when short, else its start and how long it was."""
    return value if len(value) <= SHOWN else f"{value[:SHOWN - 3]}... ({len(value)} characters)"


def entry(ex: Exchange, redactor: Redactor, verbose: int = 0) -> dict[str, Any]:
    req, resp = ex.request, ex.response
    assert resp is not None, "an exchange is rendered once answered"
    redactor = redactor.also(ex.leaked)
    op = req.operation
    reply = resp.reply or {}
    out: dict[str, Any] = {
        "time": ex.started,
        "method": req.method,
        "path": redactor.target(req.path, req.query),
        "operation": op.kind if op else None,
        "service": op.service if op else req.service,
        "form": {} if req.form.not_form else formcodec.bracket_view(
            [(k, short(v)) for k, v in redactor.fields(req.form.fields[:FIELDS_SHOWN])]),
        "status": resp.status,
        "statusCode": reply.get("statusCode"),
        "interactionId": reply.get("interactionId") or req.interaction_id,
        "source": resp.source.value,
        "duration_ms": round(ex.duration_ms, 1),
    }
    if len(req.form.fields) > FIELDS_SHOWN and not req.form.not_form:
        out["fields_not_shown"] = len(req.form.fields) - FIELDS_SHOWN  # a 45,000-key form: its first ones
    if ex.outcome is not None:
        out["outcome"] = ex.outcome.value
    if req.session:
        out["session"] = req.session
    if ex.note:
        out["note"] = ex.note
    if ex.matched is not None:
        out["cassette"], out["index"] = ex.matched.cassette, ex.matched.index
        if ex.repeat:
            out["repeat"] = True
        if ex.restart:
            out["restart"] = True
    if ex.fault is not None:
        out["fault"] = ex.fault
        if ex.delay_ms:
            out["delay_ms"] = round(ex.delay_ms, 1)
    if ex.miss is not None:
        out["miss"] = ex.miss
    if ex.near_misses:
        out["nearMisses"] = [m.as_dict() for m in ex.near_misses]
    if ex.cut:
        out["bytes_not_kept"] = ex.cut  # of big bodies, kept only in part
    if verbose:
        out["request_headers"] = dict(redactor.headers(req.headers.items()))
        out["response_headers"] = dict(redactor.headers(resp.headers.items()))
    return out
