"""Replay: the responders that answer from cassettes (Replayer), from the seeded simulator on a miss
(SimulatorFallback) or with an explained 404 (MissReport). The cassettes and their index never
change (Playback); playback positions, played marks, ownership and the simulator's interactions
live in `state`, per session. Pure: replay never opens a connection to anything.

Consistency rule: every interaction served from a cassette is applied to the session's simulator
as it is served; once the simulator has itself changed an interaction (an unrecorded update or
stop that succeeded), every later request for that interaction — by id, or a get by its external
id — is answered by the simulator, so answers never contradict each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from omproxy.cassette.entry import Cassette
from omproxy.config.options import Config, Repeat
from omproxy.errors import NoRecording
from omproxy.exchange import Exchange, Outcome
from omproxy.gms.simulator import Simulator
from omproxy.model import Response
from omproxy.modes import error_response, matching
from omproxy.redaction import Redactor
from omproxy.state import Prefetched, State

FALLBACK_HINT_SCAN = 200  # candidates looked at for the simulator fallback's one-line hint


@dataclass(frozen=True)
class Playback:
    """What replay knows, fixed at start: the cassettes, their index, the repeat rule and whether a
    create played again starts its session over (`replay.restart`)."""

    cassettes: tuple[Cassette, ...]
    index: matching.Index
    repeat: Repeat
    restart: bool = False
    max_age: float | None = None  # seconds: an older recording is flagged (`Exchange.too_old`)

    @classmethod
    def of(cls, cassettes: Iterable[Cassette], config: Config, also_ignore: Iterable[str] = (),
           redactor: Redactor | None = None) -> Playback:
        """Index the cassettes; keys redacted at record time (and `also_ignore`, and what `redactor`
        masks, in any encoding) are left out of matching; its pseudonymised keys are matched by their
        pseudonyms (a request's value made one first)."""
        cassettes = tuple(cassettes)
        recorded = [r for c in cassettes for r in c.interactions]
        rules = matching.Rules.of(config.match, matching.redacted_keys(recorded) | set(also_ignore), redactor)
        return cls(cassettes, matching.Index(recorded, rules), config.repeat, config.restart, config.max_age)

    def report(self, played: set[tuple[str, int]]) -> list[dict[str, object]]:
        out = []
        for c in self.cassettes:
            never = [r.index for r in c.interactions if (c.path, r.index) not in played]
            out.append({"cassette": c.path, "interactions": len(c.interactions),
                        "played": len(c.interactions) - len(never), "never_played": never[:1000]})
        return out

    def never_played(self, played: set[tuple[str, int]]) -> list[str]:
        """Every recording no session ever played, as `cassette #index`."""
        return [r.where for c in self.cassettes for r in c.interactions if (c.path, r.index) not in played]


class Replayer:
    """Answers from the cassettes, in recorded order per identical request, per session. With a
    simulator, every answer served is applied to the session's simulator (the fallback's memory)."""

    def __init__(self, playback: Playback, state: State, simulator: Simulator | None) -> None:
        self.playback, self.state, self.simulator = playback, state, simulator

    async def __call__(self, ex: Exchange) -> Response | None:
        req, state = ex.request, self.state
        k = self.playback.index.key_of(req)
        found = self.playback.index.by_key.get(k)
        if not found:
            return None
        # an interaction the simulator owns is its to answer (the consistency rule): asked with the take,
        # which also reads that interaction for the simulator (a shared state: one round trip, not two)
        target = req.target_of if self.simulator is not None else None
        taken = await state.take(req.session, k, len(found), target,
                                 read=target is not None and not target.external)
        if taken.owned:
            return None
        position = taken.position
        if position is None and self.playback.restart and req.operation is not None and (
                req.operation.kind == "create"):  # the story again: the session starts over (replay.restart)
            await state.reset(req.session)
            taken = await state.take(req.session, k, len(found))
            position, ex.restart = taken.position, True
        if position is None:
            if self.playback.repeat is not Repeat.LAST:
                return None
            position = len(found) - 1
            ex.repeat = True  # its recordings are used up: the last one again (replay.repeat: last)
        rec = found[position]
        if self.simulator is not None:
            store = state.interactions(req.session)
            if taken.read and target is not None:  # read by id, with the take
                store = Prefetched(store, target.id, taken.interaction)
            await self.simulator.observe(req, rec.response, store, rec.recorded_at)
        await state.mark_played(rec.cassette, rec.index)
        ex.matched, ex.outcome = rec, Outcome.FROM_CASSETTE
        if self.playback.max_age is not None:
            ex.too_old = too_old(rec.recorded_at, self.playback.max_age)
        return rec.response


def too_old(recorded_at: str, max_age: float, now: float | None = None) -> str | None:
    """What to say of a recording older than `max_age` seconds (None when it is not, or has no date)."""
    try:
        when = datetime.fromisoformat(recorded_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    age = (time.time() if now is None else now) - when.timestamp()
    if age <= max_age:
        return None
    return f"recorded {age / 86400:.0f} days ago ({recorded_at}), older than replay.max_age ({max_age / 86400:g}d)"


class SimulatorFallback:
    """On a miss, the session's simulator answers; an update or stop it performs makes it the owner
    of that interaction from then on."""

    def __init__(self, playback: Playback, state: State, simulator: Simulator) -> None:
        self.playback, self.state, self.simulator = playback, state, simulator

    async def __call__(self, ex: Exchange) -> Response:
        req, state = ex.request, self.state
        store = state.interactions(req.session)
        target = req.target_of
        ex.owned = target is not None and await state.owns(req.session, target)
        op = req.operation
        changed = op.id if op is not None and op.kind in ("update", "stop") else None
        before = await store.get(changed) if changed else None  # a stop forgets it
        resp = await self.simulator.handle(req, store)
        if changed and (resp.reply or {}).get("statusCode") == 0:
            await state.diverge(req.session, changed, before.user_data.get("ExternalId") if before else None)
        ex.outcome = Outcome.SIMULATED
        if not ex.owned:
            misses = self.playback.index.near_misses(req, 1, scan=FALLBACK_HINT_SCAN)
            nearest = f"; nearest {misses[0].recorded.where}: {'; '.join(misses[0].differences)}" if (
                misses and misses[0].differences) else ""
            ex.miss = "no recording matched" + nearest
        return resp


class MissReport:
    """--fallback none: a 404 whose advice names the nearest recordings and what differs."""

    def __init__(self, playback: Playback) -> None:
        self.playback = playback

    async def __call__(self, ex: Exchange) -> Response:
        misses = self.playback.index.near_misses(ex.request)
        ex.outcome, ex.near_misses = Outcome.MISSED, tuple(misses)
        ex.miss = matching.miss_report(ex.request, misses)
        return error_response(NoRecording(ex.miss, nearMisses=[m.as_dict() for m in misses]))
