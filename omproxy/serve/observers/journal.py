"""What omproxy has done: counts by Outcome for the shutdown summary and the admin API, a bounded
journal of recent exchanges for `GET /_omproxy/journal` (rendered, redacted, only when asked), and per
session what it played and missed (the pytest plugin's `omproxy` fixture). An observer of the
pipeline. Pure."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from omproxy.exchange import Exchange, Outcome, summary

MISS_REPORTS = 5  # a session's first miss reports kept whole (the rest are counted)
SESSIONS = 10_000  # sessions whose plays and misses are kept, at most (the oldest forgotten first)


@dataclass
class Played:
    """One session's playback: the recordings it played, and its misses (the first reports kept whole)."""

    recordings: set[tuple[str, int]] = field(default_factory=set)
    misses: int = 0
    reports: list[str] = field(default_factory=list)
    too_old: dict[str, str] = field(default_factory=dict)  # recordings older than replay.max_age: what was said


class Journal:
    def __init__(self, size: int = 200) -> None:
        self.entries: deque[Exchange] = deque(maxlen=size)
        self.counts: Counter[Outcome] = Counter()
        self.fired: Counter[str] = Counter()  # per fault rule, how often it fired
        # per session, however many requests came after (the recent exchanges above are a ring): what
        # the pytest plugin fails a test with, and what its `omproxy` fixture says was played
        self.sessions: dict[str, Played] = {}

    def __call__(self, ex: Exchange) -> None:
        self.entries.append(summary(ex))
        for outcome in ex.counts():
            self.counts[outcome] += 1
        if ex.fault is not None:
            self.fired[ex.fault] += 1
        if ex.matched is None and ex.outcome is not Outcome.MISSED:
            return
        session = self.sessions.get(ex.request.session)
        if session is None:
            session = self.sessions[ex.request.session] = Played()
            if len(self.sessions) > SESSIONS:
                del self.sessions[next(iter(self.sessions))]
        if ex.matched is not None:
            session.recordings.add((ex.matched.cassette, ex.matched.index))
            if ex.too_old and len(session.too_old) < MISS_REPORTS:
                session.too_old[ex.matched.where] = ex.too_old
        else:
            session.misses += 1
            if len(session.reports) < MISS_REPORTS:
                session.reports.append(ex.miss or "no recording matched")

    def session(self, name: str) -> Played:
        """What this session played and missed (since its reset): a copy."""
        found = self.sessions.get(name, Played())
        return Played(set(found.recordings), found.misses, list(found.reports), dict(found.too_old))

    def count(self, outcome: Outcome, n: int = 1) -> None:
        self.counts[outcome] += n

    def of_session(self, session: str) -> list[Exchange]:
        return [e for e in self.entries if e.request.session == session]

    def clear(self, session: str | None = None) -> None:
        """Forget the kept exchanges (of one session); the counts are for the whole run and stay."""
        if session is None:
            self.entries.clear()
            self.sessions.clear()
        else:
            self.sessions.pop(session, None)
            kept = [e for e in self.entries if e.request.session != session]
            self.entries.clear()
            self.entries.extend(kept)
