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

import copy
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from omproxy.gms.vocabulary import Target


@dataclass
class Interaction:
    """One live GMS interaction of the simulator."""

    id: str
    service: str
    properties: dict[str, Any]  # every field of interactionProperties but the id and the user data
    user_data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Take:
    """What `State.take` found: the position taken (None: all were taken, or none because `owned`),
    whether the simulator owns the interaction asked about, and that interaction as the session's
    simulator holds it, when the take was asked to read it (`read`)."""

    position: int | None
    owned: bool = False
    read: bool = False
    interaction: Interaction | None = None


class InteractionStore(Protocol):
    async def get(self, interaction_id: str) -> Interaction | None: ...
    async def put(self, interaction: Interaction) -> None: ...
    async def delete(self, interaction_id: str) -> None: ...
    async def find_by_external_id(self, external_id: str) -> Interaction | None: ...
    async def next_seq(self) -> int: ...
    async def clear(self) -> None: ...


class State(Protocol):
    def interactions(self, session: str) -> InteractionStore: ...
    async def take(self, session: str, key: Hashable, count: int, about: Target | None = None,
                   read: bool = False) -> Take:
        """The next unplayed position of `key` (0..count-1) for this session, advanced atomically. With
        `about`: nothing taken when the simulator owns that interaction (the consistency rule: `owns`
        and the take in one step); with `read` too, that interaction (by id) is read in the same step,
        for the simulator to apply the recording to (a shared backend: one round trip, not two)."""
    async def mark_played(self, cassette: str, index: int) -> None: ...
    async def played(self) -> set[tuple[str, int]]: ...
    async def diverge(self, session: str, interaction_id: str, external_id: str | None) -> None:
        """The simulator changed this interaction: from now on it answers for it (consistency rule)."""
    async def owns(self, session: str, target: Target) -> bool: ...
    async def reset(self, session: str | None = None) -> None:
        """Rewind playback and empty the simulator: of one session, or (None) of all. Which recordings
        were ever played, and what was counted, are the run's: a reset keeps them (and fault rules)."""
    async def tally(self, session: str, key: str) -> int:
        """Count `key` once more in this session: how many times it has been, this one included (a
        reset of the session starts again from 0). What a fault rule's `times` and `nth` count."""
    async def fault_rules(self, session: str) -> tuple[str, str]:
        """The JSON text of the fault rules added at run time for every session, and for this one ("" for none)."""
    async def set_fault_rules(self, session: str | None, text: str) -> None:
        """Replace the run-time fault rules of one session, or (None) of every session ("" clears them)."""


class Prefetched:
    """A session's store with one interaction already read (by `State.take`): asked for it once, it
    answers from what was read, and putting it back unchanged writes nothing (a recorded `get` served
    again); everything else goes to the store."""

    def __init__(self, store: InteractionStore, interaction_id: str, interaction: Interaction | None) -> None:
        self.store, self.id, self.interaction = store, interaction_id, interaction
        self.fresh = True
        self.as_read = copy.deepcopy(interaction)

    async def get(self, interaction_id: str) -> Interaction | None:
        if interaction_id == self.id and self.fresh:
            self.fresh = False
            return self.interaction
        return await self.store.get(interaction_id)

    async def put(self, interaction: Interaction) -> None:
        if interaction.id == self.id:
            if interaction == self.as_read:
                return
            self.fresh, self.as_read = False, None
        await self.store.put(interaction)

    async def delete(self, interaction_id: str) -> None:
        if interaction_id == self.id:
            self.fresh, self.as_read = False, None
        await self.store.delete(interaction_id)

    async def find_by_external_id(self, external_id: str) -> Interaction | None:
        return await self.store.find_by_external_id(external_id)

    async def next_seq(self) -> int:
        return await self.store.next_seq()

    async def clear(self) -> None:
        self.fresh, self.as_read = False, None
        await self.store.clear()
