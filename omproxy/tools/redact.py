"""`omproxy cassette redact`: today's redaction rules applied to cassettes recorded before them — the
raw body, the form view, the query, headers, JSON answers and GMS's echoes — and what changed, by key
(never the value). Pure: the command line reads and writes the files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omproxy.cassette import entry as cassette
from omproxy.cassette import storage, yamlformat
from omproxy.errors import CassetteError
from omproxy.model import Recorded
from omproxy.redaction import MASK, Redactor


@dataclass(frozen=True)
class Change:
    index: int
    line: int
    place: str  # request header, query, form, response header, answer
    key: str
    became: str  # masked, pseudonymised

    def text(self, name: str) -> str:
        return f"{name}:{self.line}: #{self.index} {self.place} {self.key}: {self.became}"


def redacted(data: Any, rec: Recorded, redactor: Redactor) -> tuple[Any, list[Change]]:
    """An entry (as parsed) with `redactor`'s rules applied, and what changed; the entry itself when
    nothing did. Its other keys (when, from where, how long) are kept as they are."""
    req, resp = redactor.request(rec.request), redactor.response(rec.response)
    changes = [Change(rec.index, rec.line, place, key, _became(new))
               for place, key, new in _differences(rec, req, resp)]
    if not changes:
        return data, []
    out = dict(data)
    if req is not rec.request:
        out["request"] = _part(data["request"], cassette.request_part(req))
    if resp is not rec.response:
        out["response"] = _part(data["response"], cassette.response_part(resp))
    return out, changes


def _part(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The new part, with keys only the old one had (written by hand) kept, but its bodies and views."""
    kept = {k: v for k, v in old.items() if k not in ("body", "body_base64", "form", "json") and k not in new}
    return {**new, **kept}


def _became(value: str) -> str:
    return "masked" if value == MASK else "pseudonymised"


def _differences(rec: Recorded, req: Any, resp: Any) -> Iterator[tuple[str, str, str]]:
    """(place, key, the new value) for each value that changed."""
    before, after = rec.request, req
    yield from _pairs("request header", before.headers.items(), after.headers.items())
    if before.query:
        yield from _pairs("query", before.query_form.fields, after.query_form.fields)
    if before.body and not before.form.not_form:
        yield from _pairs("form", before.form.fields, after.form.fields)
    yield from _pairs("response header", rec.response.headers.items(), resp.headers.items())
    if rec.response.reply is not None and resp.reply is not None:
        yield from _json("", rec.response.reply, resp.reply)


def _pairs(place: str, old: Any, new: Any) -> Iterator[tuple[str, str, str]]:
    seen = set()
    for (key, was), (_, now) in zip(list(old), list(new), strict=False):
        if was != now and key not in seen:
            seen.add(key)
            yield place, str(key), now


def _json(path: str, old: Any, new: Any) -> Iterator[tuple[str, str, str]]:
    if isinstance(old, dict) and isinstance(new, dict):
        if isinstance(old.get("key"), str) and old.get("value") != new.get("value"):  # a user-data echo
            yield "answer", f"{path}[{old['key']}]", str(new.get("value"))
            return
        for k, v in old.items():
            yield from _json(f"{path}.{k}" if path else str(k), v, new.get(k))
    elif isinstance(old, list) and isinstance(new, list):
        for a, b in zip(old, new, strict=False):
            yield from _json(path, a, b)
    elif old != new:
        yield "answer", path, str(new)


def rewritten(raw: bytes, name: str, redactor: Redactor) -> tuple[bytes | None, list[Change]]:
    """A cassette's bytes with the rules applied (None when nothing changes), and what changed. A file
    laid out as omproxy writes it keeps every unchanged entry byte for byte, and its provenance lines."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CassetteError(f"{name}: not UTF-8 text (byte {e.start})") from None
    document = yamlformat.parse(text, name)
    entries = document.get("interactions") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise CassetteError(f"{name}: not a cassette: no `interactions:` list")
    starts = yamlformat.entry_starts(raw)
    layout = storage.in_layout(raw, starts) and len(starts) == len(entries)
    lines = yamlformat.entry_lines(raw, starts) if layout else [0] * len(entries)
    changes: list[Change] = []
    parts: list[bytes] = [raw[:starts[0]]] if layout else []
    out = []
    for i, data in enumerate(entries):
        rec = cassette.from_entry(data, name, i, lines[i])
        new, found = redacted(data, rec, redactor)
        changes += found
        if layout:
            parts.append(yamlformat.dump_entry(new) if found else raw[starts[i]:starts[i + 1] if i + 1 < len(starts)
                                                                        else len(raw)])
        else:  # hand-written: every entry written anew, its views for people made again
            out.append(new if found else {**data, "request": _part(data["request"], cassette.request_part(
                rec.request)), "response": _part(data["response"], cassette.response_part(rec.response))})
    if not changes:
        return None, []
    if not layout:
        parts = [yamlformat.comments(raw), yamlformat.dump({**document, "interactions": out})]
    return b"".join(parts), changes
