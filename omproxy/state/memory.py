"""The embedded default state: everything in this process. Sessions are bounded in number (the least
recently used goes first) and expire when idle; the default session "" never expires."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from omproxy.gms.vocabulary import Target
from omproxy.state import Interaction, Take


class MemoryInteractions:
    SEQ_START = 1_000_000

    def __init__(self) -> None:
        self.by_id: dict[str, Interaction] = {}
        self.seq = self.SEQ_START

    async def get(self, interaction_id: str) -> Interaction | None:
        return self.by_id.get(interaction_id)

    async def put(self, interaction: Interaction) -> None:
        self.by_id[interaction.id] = interaction

    async def delete(self, interaction_id: str) -> None:
        self.by_id.pop(interaction_id, None)

    async def find_by_external_id(self, external_id: str) -> Interaction | None:
        """The most recent live interaction with that ExternalId [ours]."""
        found = [i for i in self.by_id.values() if i.user_data.get("ExternalId") == external_id]
        return found[-1] if found else None

    async def next_seq(self) -> int:
        self.seq += 2  # GMS hands out interactionSubmitSeq and interactionPlaceInQueueSeq in pairs
        return self.seq

    async def clear(self) -> None:
        self.by_id.clear()
        self.seq = self.SEQ_START


@dataclass
class _Session:
    interactions: MemoryInteractions = field(default_factory=MemoryInteractions)
    positions: Counter[Hashable] = field(default_factory=Counter)
    diverged: set[str] = field(default_factory=set)
    diverged_external: set[str] = field(default_factory=set)
    tallies: Counter[str] = field(default_factory=Counter)
    used: float = 0.0


class MemoryState:
    """The embedded default: everything in this process. `max_sessions` bounds the number of named
    sessions (the least recently used goes first) and `session_idle` (seconds) expires idle ones;
    the default session "" is never expired."""

    def __init__(self, *, max_sessions: int = 1000, session_idle: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions, self.session_idle, self.clock = max_sessions, session_idle, clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._played: set[tuple[str, int]] = set()
        self._faults: dict[str | None, str] = {}  # run-time fault rules: of every session (None), of one

    def _session(self, name: str) -> _Session:
        now = self.clock()
        found = self._sessions.get(name)
        if found is None:
            found = self._sessions[name] = _Session(used=now)
            self._expire(now)
        else:
            self._sessions.move_to_end(name)
            found.used = now
        return found

    def _expire(self, now: float) -> None:
        named = [n for n in self._sessions if n]
        while len(named) > self.max_sessions:
            del self._sessions[named.pop(0)]
        for name in named:  # oldest first: stop at the first one still in use
            if now - self._sessions[name].used <= self.session_idle:
                break
            del self._sessions[name]

    @property
    def sessions(self) -> list[str]:
        return list(self._sessions)

    def interactions(self, session: str) -> MemoryInteractions:
        return self._session(session).interactions

    async def take(self, session: str, key: Hashable, count: int, about: Target | None = None,
                   read: bool = False) -> Take:
        if about is not None and await self.owns(session, about):
            return Take(None, owned=True)
        s = self._session(session)
        interaction = s.interactions.by_id.get(about.id) if read and about is not None and not about.external else None
        position = s.positions[key]
        if position >= count:
            return Take(None, read=read, interaction=interaction)
        s.positions[key] = position + 1
        return Take(position, read=read, interaction=interaction)

    async def mark_played(self, cassette: str, index: int) -> None:
        self._played.add((cassette, index))

    async def played(self) -> set[tuple[str, int]]:
        return set(self._played)

    async def diverge(self, session: str, interaction_id: str, external_id: str | None) -> None:
        s = self._session(session)
        s.diverged.add(interaction_id)
        if external_id is not None:
            s.diverged_external.add(external_id)

    async def owns(self, session: str, target: Target) -> bool:
        s = self._session(session)
        return target.id in (s.diverged_external if target.external else s.diverged)

    async def tally(self, session: str, key: str) -> int:
        tallies = self._session(session).tallies
        tallies[key] += 1
        return tallies[key]

    async def fault_rules(self, session: str) -> tuple[str, str]:
        faults = self._faults
        return (faults.get(None, ""), faults.get(session, "")) if faults else ("", "")

    async def set_fault_rules(self, session: str | None, text: str) -> None:
        if text:
            self._faults[session] = text
        else:
            self._faults.pop(session, None)

    async def reset(self, session: str | None = None) -> None:
        if session is None:  # which recordings were played is the run's, and stays
            self._sessions.clear()
        else:
            self._sessions.pop(session, None)
