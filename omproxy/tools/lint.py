"""`omproxy lint`: what is wrong with a cassette before it becomes a regression suite — the decoder's
findings and the Open Media checks on every recorded request, ids that break GMS's 16-character
pattern, answers recorded while GMS was failing, secrets redaction missed (the key named, never the
value: headers, form and query keys named like secrets, card numbers, credentials, random-looking
values, in requests and answers: `redaction.leaks`), entries written twice, a torn last entry (a
recorder killed mid-write), and (given a journal) interactions no replay ever played. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omproxy.gms import jetty
from omproxy.gms import vocabulary as gms
from omproxy.model import Recorded
from omproxy.redaction import MASK, leaks

GMS_ID = re.compile(r"[0-9A-Z]{16}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+?[0-9][0-9 ().-]{7,}[0-9]")
SECRET = "unredacted-secret"  # the kind `lint --fail-on secret` fails on


@dataclass(frozen=True)
class Problem:
    recorded: Recorded
    kind: str
    message: str

    def line(self) -> str:
        r = self.recorded
        return f"{r.cassette}:{r.line}: #{r.index} {self.kind}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        r = self.recorded
        return {"cassette": r.cassette, "line": r.line, "index": r.index, "kind": self.kind, "message": self.message}


def lint(recorded: Iterable[Recorded], played: set[tuple[str, int]] | None = None) -> Iterator[Problem]:
    """Every problem of every recording, in order; `played` (from a journal) adds the never played."""
    seen: dict[tuple[Any, ...], int] = {}
    for rec in recorded:
        yield from _request(rec)
        yield from _response(rec)
        for leak in leaks(rec.request, rec.response):
            yield Problem(rec, SECRET, f"{leak.where}: {leak.why}, in clear; add it to {leak.option}")
        same = (rec.recorded_at, rec.request.method, rec.request.target, rec.request.body, rec.response.status,
                rec.response.body)
        if rec.recorded_at and same in seen:
            yield Problem(rec, "duplicate", f"the same exchange as #{seen[same]}, recorded at the same moment")
        seen.setdefault(same, rec.index)
        if played is not None and (rec.cassette, rec.index) not in played:
            yield Problem(rec, "never-played", "no replay in the journal played this recording")


def torn_tail(cassette: str, report: str) -> tuple[str, dict[str, Any]]:
    """A torn last entry read past (a recorder killed mid-write; `storage.load`'s report, which names
    file and line): as a line, and as JSON."""
    message = f"{report}; re-record it, or let the next `omproxy record` into this file cut it"
    return message, {"cassette": cassette, "kind": "torn-tail", "message": message}


def _request(rec: Recorded) -> Iterator[Problem]:
    req = rec.request
    for finding in (*req.findings, *gms.path_findings(req.path)):
        yield Problem(rec, finding.kind, finding.message)
    if req.body and req.findings and not req.form.not_form:  # a clean body is read alike: not asked
        fixed = gms.repair(req.operation, req.form)
        for line in jetty.compared(req.body, req.headers.get("Content-Type"), req.form, fixed)[1]:
            yield Problem(rec, "gms-reads-otherwise", line)
    target = req.target_of
    if target is not None and not target.external and not GMS_ID.fullmatch(target.id):
        yield Problem(rec, "id-pattern", f"the interaction id '{target.id}' is not 16 of [0-9A-Z], as GMS makes them")
    for key, value in req.form.fields:
        phone = (_PHONE.fullmatch(value) and sum(c.isdigit() for c in value) >= 9
                 and (value.startswith("+") or any(c in value for c in " ().-")))  # a bare number is an id
        if value != MASK and (_EMAIL.fullmatch(value) or phone):
            yield Problem(rec, "personal-data", f"{key} holds an e-mail address or a phone number in clear; "
                          "redact it if the cassette is shared")


def _response(rec: Recorded) -> Iterator[Problem]:
    resp = rec.response
    op = rec.request.operation
    if resp.status >= 500:
        yield Problem(rec, "server-error", f"HTTP {resp.status} was recorded: GMS (or a proxy) was failing")
    reply = resp.reply
    if reply is not None and reply.get("statusCode") == 1:
        yield Problem(rec, "gms-retry", "statusCode 1 was recorded (GMS: may succeed if retried); re-record it")
    for found in gms.ids_in_reply(op, reply):
        if not GMS_ID.fullmatch(found):
            yield Problem(rec, "id-pattern", f"the answer's interaction id '{found}' is not 16 of [0-9A-Z]")


def here(played: set[tuple[str, int]], paths: list[Path]) -> set[tuple[str, int]]:
    """What a journal says was played, named by the paths given here: a server names its cassettes as
    it was given them (relative to where it ran), so a journal's name is a file here when it is the
    same file, or when the file's whole path ends with that name's parts."""
    out: set[tuple[str, int]] = set()
    names = {name for name, _ in played}
    for path in paths:
        whole = path.resolve().parts
        for name in names:
            parts = tuple(p for p in Path(name).parts if p not in (".", ""))
            if Path(name).is_absolute():
                same = Path(name).resolve().parts == whole
            else:
                same = len(parts) <= len(whole) and whole[len(whole) - len(parts):] == parts
            if same:
                out |= {(str(path), i) for n, i in played if n == name}
    return out


def played_in(journal: Any) -> set[tuple[str, int]]:
    """The recordings a journal (`GET /_omproxy/journal`) or a cassette report (`GET /_omproxy/cassettes`)
    says were played."""
    played: set[tuple[str, int]] = set()
    if isinstance(journal, dict):
        entries = journal.get("entries")
        for e in entries if isinstance(entries, list) else []:
            if isinstance(e, dict) and isinstance(e.get("index"), int):
                played.add((str(e.get("cassette")), e["index"]))
        cassettes = journal.get("cassettes")
        for c in cassettes if isinstance(cassettes, list) else []:
            if isinstance(c, dict) and isinstance(c.get("interactions"), int) and isinstance(c.get("cassette"), str):
                listed = c.get("never_played")
                never = {i for i in listed if isinstance(i, int)} if isinstance(listed, list) else set()
                played |= {(c["cassette"], i) for i in range(min(c["interactions"], 10_000_000)) if i not in never}
    return played
