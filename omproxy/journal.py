"""What omproxy has done: counters for the shutdown summary and a bounded journal of recent
requests for `GET /_omproxy/journal`. Pure."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any


class Journal:
    def __init__(self, size: int = 200) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        self.counts: Counter[str] = Counter()

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def clear(self, session: str | None = None) -> None:
        if session is None:
            self.entries.clear()
        else:
            kept = [e for e in self.entries if e.get("session") != session]
            self.entries.clear()
            self.entries.extend(kept)
