"""What changes while omproxy runs, behind two small async interfaces, with the in-memory backend:

    InteractionStore   the simulator's live interactions of one session: get, put, delete,
                       find by external id, next sequence number, clear
    State              per session: an InteractionStore and replay's playback positions (an atomic
                       "take the next position"), the consistency rule's ownership sets; across
                       sessions: which recordings were ever played; reset of one session or all

Everything that decides (simulator, replay) reads and writes state only through these, so a shared
backend (Redis) is a second class, not a rewrite. Sessions are named by `X-Omproxy-Session` ("" is
the default one); idle sessions expire and their number is bounded. Pure: no I/O.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from omproxy.gms import Target

OWNED = -1  # what `State.take` answers when the simulator owns the interaction it was asked about


@dataclass
class Interaction:
    """One live GMS interaction of the simulator."""

    id: str
    service: str
    properties: dict[str, Any]  # every field of interactionProperties but the id and the user data
    user_data: dict[str, str] = field(default_factory=dict)


class InteractionStore(Protocol):
    async def get(self, interaction_id: str) -> Interaction | None: ...
    async def put(self, interaction: Interaction) -> None: ...
    async def delete(self, interaction_id: str) -> None: ...
    async def find_by_external_id(self, external_id: str) -> Interaction | None: ...
    async def next_seq(self) -> int: ...
    async def clear(self) -> None: ...


class State(Protocol):
    def interactions(self, session: str) -> InteractionStore: ...
    async def take(self, session: str, key: Hashable, count: int, unless: Target | None = None,
                   store: InteractionStore | None = None) -> int | None:
        """The next unplayed position of `key` (0..count-1) for this session, advanced atomically;
        None when all `count` were taken. With `unless`: OWNED, nothing taken, when the simulator owns
        that interaction (the consistency rule: `owns` and the take in one step, one round trip on a
        shared backend) — and else, with `store` (the session's, from `interactions`), the
        interaction `unless` names by id may be read into it in that same step, for the simulator to
        apply the recording to without a round trip of its own."""
    async def mark_played(self, cassette: str, index: int) -> None: ...
    async def played(self) -> set[tuple[str, int]]: ...
    async def diverge(self, session: str, interaction_id: str, external_id: str | None) -> None:
        """The simulator changed this interaction: from now on it answers for it (consistency rule)."""
    async def owns(self, session: str, target: Target) -> bool: ...
    async def reset(self, session: str | None = None) -> None:
        """Rewind playback and empty the simulator: of one session, or (None) of all."""

    def local(self, session: str) -> dict[Any, Any]:
        """This process's scratch memory for a session, dropped with it (reset, expiry); a shared
        backend gives a new empty one each time, so nothing is ever assumed from it."""

    def stamp(self, session: str) -> int | None:
        """The session's version, marking it used now: it changes whenever what replay decided from
        may have changed (reset, divergence, expiry). None when this process cannot know (a shared
        backend): then no answer is ever taken as settled (see `pipeline.Pipeline.again`)."""


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
    local: dict[Any, Any] = field(default_factory=dict)
    used: float = 0.0
    version: int = 0


class MemoryState:
    """The embedded default: everything in this process. `max_sessions` bounds the number of named
    sessions (the least recently used goes first) and `session_idle` (seconds) expires idle ones;
    the default session "" is never expired."""

    def __init__(self, *, max_sessions: int = 1000, session_idle: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions, self.session_idle, self.clock = max_sessions, session_idle, clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._played: set[tuple[str, int]] = set()
        self._versions = itertools.count(1)  # never repeats: a session made again is a new version

    def _session(self, name: str) -> _Session:
        now = self.clock()
        found = self._sessions.get(name)
        if found is None:
            found = self._sessions[name] = _Session(used=now, version=next(self._versions))
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

    def local(self, session: str) -> dict[Any, Any]:
        return self._session(session).local

    def stamp(self, session: str) -> int:
        return self._session(session).version

    async def take(self, session: str, key: Hashable, count: int, unless: Target | None = None,
                   store: InteractionStore | None = None) -> int | None:
        if unless is not None and await self.owns(session, unless):
            return OWNED
        positions = self._session(session).positions
        position = positions[key]
        if position >= count:
            return None
        positions[key] = position + 1
        return position

    async def mark_played(self, cassette: str, index: int) -> None:
        self._played.add((cassette, index))

    async def played(self) -> set[tuple[str, int]]:
        return set(self._played)

    async def diverge(self, session: str, interaction_id: str, external_id: str | None) -> None:
        s = self._session(session)
        s.version = next(self._versions)
        s.diverged.add(interaction_id)
        if external_id is not None:
            s.diverged_external.add(external_id)

    async def owns(self, session: str, target: Target) -> bool:
        s = self._session(session)
        return target.id in (s.diverged_external if target.external else s.diverged)

    async def reset(self, session: str | None = None) -> None:
        if session is None:
            self._sessions.clear()
            self._played.clear()
        else:
            self._sessions.pop(session, None)
