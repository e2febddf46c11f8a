"""What omproxy has done: counts by Outcome for the shutdown summary and the admin API, and a bounded
journal of recent exchanges for `GET /_omproxy/journal` (rendered, redacted, only when asked).
An observer of the pipeline. Pure."""

from __future__ import annotations

from collections import Counter, deque

from omproxy.exchange import Exchange, Outcome, summary

MISS_REPORTS = 5  # a session's first miss reports kept whole (the rest are counted)
MISSING_SESSIONS = 10_000  # sessions whose misses are kept, at most (the oldest forgotten first)


class Journal:
    def __init__(self, size: int = 200) -> None:
        self.entries: deque[Exchange] = deque(maxlen=size)
        self.counts: Counter[Outcome] = Counter()
        # per session, every miss counted and the first reports kept: what the pytest plugin fails a
        # test with, however many requests came after (the recent exchanges above are a ring)
        self.misses: dict[str, tuple[int, list[str]]] = {}

    def __call__(self, ex: Exchange) -> None:
        self.entries.append(summary(ex))
        for outcome in ex.counts():
            self.counts[outcome] += 1
        if ex.outcome is Outcome.MISSED:
            count, reports = self.misses.get(ex.request.session, (0, []))
            if len(reports) < MISS_REPORTS:
                reports.append(ex.miss or "no recording matched")
            self.misses[ex.request.session] = (count + 1, reports)
            if len(self.misses) > MISSING_SESSIONS:
                del self.misses[next(iter(self.misses))]

    def misses_of(self, session: str) -> tuple[int, list[str]]:
        """How many of this session's requests matched no recording (since its reset), and the first reports."""
        count, reports = self.misses.get(session, (0, []))
        return count, list(reports)

    def count(self, outcome: Outcome, n: int = 1) -> None:
        self.counts[outcome] += n

    def of_session(self, session: str) -> list[Exchange]:
        return [e for e in self.entries if e.request.session == session]

    def clear(self, session: str | None = None) -> None:
        """Forget the kept exchanges (of one session); the counts are for the whole run and stay."""
        if session is None:
            self.entries.clear()
            self.misses.clear()
        else:
            self.misses.pop(session, None)
            kept = [e for e in self.entries if e.request.session != session]
            self.entries.clear()
            self.entries.extend(kept)
