"""What omproxy has done: counts by Outcome for the shutdown summary and the admin API, and a bounded
journal of recent exchanges for `GET /_omproxy/journal` (rendered, redacted, only when asked).
An observer of the pipeline. Pure."""

from __future__ import annotations

from collections import Counter, deque

from omproxy.exchange import Exchange, Outcome


class Journal:
    def __init__(self, size: int = 200) -> None:
        self.entries: deque[Exchange] = deque(maxlen=size)
        self.counts: Counter[Outcome] = Counter()

    def __call__(self, ex: Exchange) -> None:
        self.entries.append(ex)
        for outcome in ex.counts():
            self.counts[outcome] += 1

    def count(self, outcome: Outcome, n: int = 1) -> None:
        self.counts[outcome] += n

    def of_session(self, session: str) -> list[Exchange]:
        return [e for e in self.entries if e.request.session == session]

    def clear(self, session: str | None = None) -> None:
        """Forget the kept exchanges (of one session); the counts are for the whole run and stay."""
        if session is None:
            self.entries.clear()
        else:
            kept = [e for e in self.entries if e.request.session != session]
            self.entries.clear()
            self.entries.extend(kept)
