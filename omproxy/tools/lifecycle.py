"""A cassette's life after recording: `accept` (pending recordings, reviewed, moved into the cassette),
`prune` (recordings no test played, dropped), `dedup` (a capture reduced to a few stories per class).
Each reads cassettes and says what to write; `omproxy cassette ...` writes it, atomically."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omproxy.cassette import storage
from omproxy.errors import UsageError
from omproxy.gms import formcodec
from omproxy.model import Recorded

# ---- accept ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """One pending file reviewed: the cassette it goes into, what moves in, what stays pending."""

    pending: Path
    cassette: Path
    taken: tuple[Recorded, ...]
    left: tuple[Recorded, ...]


def accepting(spec: str, only: set[int] | None = None) -> list[Accepted]:
    """What `cassette accept` moves: every pending recording of the cassettes `spec` names (or, with
    `only`, those of these indexes, when one pending file is named)."""
    template = storage.Template(spec)
    waiting = storage.files_of(template.pending, must_exist=False)
    if not waiting:
        raise UsageError(f"{spec}: no pending recordings (record with --pending to make some)")
    if only is not None and len(waiting) > 1:
        raise UsageError(f"--only picks indexes of one pending file; {spec} names {len(waiting)}: "
                         f"{', '.join(map(str, waiting[:3]))}; name one cassette")
    out = []
    for pending in waiting:
        recorded = storage.load(pending).interactions
        absent = only - {r.index for r in recorded} if only is not None else set()
        if absent:
            raise UsageError(f"{pending}: holds #0 to #{len(recorded) - 1}; no #{min(absent)}")
        taken = tuple(r for r in recorded if only is None or r.index in only)
        left = tuple(r for r in recorded if only is not None and r.index not in only)
        name = pending.name.replace(storage.PENDING + pending.suffix, pending.suffix)
        out.append(Accepted(pending, pending.with_name(name), taken, left))
    return out


def into(accepted: Accepted) -> Iterator[Recorded]:
    """The cassette with the accepted recordings after its own (read as written out: never held whole)."""
    if accepted.cassette.exists():
        yield from storage.stream(accepted.cassette)
    yield from accepted.taken


# ---- prune ----------------------------------------------------------------------------------


def never_played(paths: Iterable[Path], played: set[tuple[str, int]]) -> dict[Path, list[Recorded]]:
    """Per cassette file, the recordings `played` (a run's report) does not name."""
    return {p: [r for r in storage.stream(p) if (str(p.resolve()), r.index) not in played] for p in paths}


def report_played(report: Any) -> set[tuple[str, int]]:
    """What a run's cassette report (`GET /_omproxy/cassettes`, or pytest's `--omproxy-report`) says was
    played, as (resolved path, index); refused when it is not one (a journal of recent exchanges lists
    the last 200 only)."""
    cassettes = report.get("cassettes") if isinstance(report, dict) else None
    if not isinstance(cassettes, list):
        raise UsageError("expected a cassette report: the JSON of GET /_omproxy/cassettes or of pytest "
                         "--omproxy-report FILE (a journal of recent exchanges is not the whole run)")
    played: set[tuple[str, int]] = set()
    for c in cassettes:
        if not (isinstance(c, dict) and isinstance(c.get("interactions"), int) and isinstance(
                c.get("never_played"), list)):
            raise UsageError("a cassette report's rows have cassette, interactions and never_played")
        never = set(c["never_played"])
        where = str(Path(str(c.get("cassette"))).resolve())
        played |= {(where, i) for i in range(c["interactions"]) if i not in never}
    return played


# ---- dedup ----------------------------------------------------------------------------------

Story = tuple[str, str]  # cassette file, and the interaction id (or a recording's own place)


@dataclass
class _Told:
    """One story as read so far: its service, its operations, the user-data keys it sent, its codes."""

    service: str = ""
    operations: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    codes: list[str] = field(default_factory=list)

    def kind(self) -> tuple[str, str, str, str]:
        return (self.service, " ".join(self.operations), ",".join(sorted(self.keys)) or "-", " ".join(self.codes))


def _story_of(rec: Recorded, path: Path) -> Story:
    req = rec.request
    reply = rec.response.reply or {}
    answered = reply.get("interactionId") if isinstance(reply, dict) else None
    iid = req.interaction_id or (answered if isinstance(answered, str) else None)
    return (str(path), iid or f"#{rec.index}")


def classes(paths: list[Path]) -> tuple[dict[tuple[str, str, str, str], list[Story]], dict[Story, _Told]]:
    """Every story of the capture (the recordings of one interaction), grouped by its class: service x
    operation sequence x user-data key set x status codes (HTTP status/GMS statusCode, each request)."""
    told: dict[Story, _Told] = {}
    for path in paths:
        for rec in storage.stream(path):
            one = told.setdefault(_story_of(rec, path), _Told())
            req, resp = rec.request, rec.response
            op = req.operation
            one.service = one.service or (op.service if op else req.service or "") or ""
            one.operations.append(op.kind if op else req.method)
            one.keys |= {parts[1] for k, _ in req.form.fields if (parts := formcodec.split_key(k))}
            reply = resp.reply if isinstance(resp.reply, dict) else {}
            one.codes.append(f"{resp.status}/{reply.get('statusCode', '-')}")
    grouped: dict[tuple[str, str, str, str], list[Story]] = {}
    for story, said in told.items():
        grouped.setdefault(said.kind(), []).append(story)
    return grouped, told


def dedup(paths: list[Path], keep: int) -> tuple[list[dict[str, Any]], set[Story], Iterator[Recorded]]:
    """The classes (with how many stories each had), the stories kept (the first `keep` of each class),
    and the kept recordings, in the capture's order (read again as written: never held whole)."""
    grouped, _ = classes(paths)
    kept = {s for stories in grouped.values() for s in stories[:keep]}
    report = [{"service": k[0], "operations": k[1], "keys": k[2], "codes": k[3], "stories": len(v),
               "kept": min(keep, len(v))} for k, v in sorted(grouped.items(), key=lambda kv: -len(kv[1]))]

    def recorded() -> Iterator[Recorded]:
        for path in paths:
            for rec in storage.stream(path):
                if _story_of(rec, path) in kept:
                    yield rec

    return report, kept, recorded()

