"""Replay: the responders that answer from cassettes (Replayer), from the seeded simulator on a miss
(Fallback) or with an explained 404 (Misser). Per-session playback positions and simulator state
live in a Session, so parallel test runs sharing one omproxy cannot take each other's answers.
Pure: no aiohttp, no sockets — replay never opens a connection to anything.

Consistency rule: every interaction served from a cassette is applied to the session's simulator
as it is served; once the simulator has itself changed an interaction (an unrecorded update or
stop that succeeded), every later request for that interaction — by id, or a get by its external
id — is answered by the simulator, so answers never contradict each other.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from omproxy import gms, matching
from omproxy.cassette import Cassette
from omproxy.config import Config
from omproxy.journal import Journal
from omproxy.model import Request, Response
from omproxy.simulator import Simulator

log = logging.getLogger(__name__)


@dataclass
class Session:
    simulator: Simulator
    positions: Counter[Hashable] = field(default_factory=Counter)
    diverged: set[str] = field(default_factory=set)  # interaction ids the simulator owns now
    diverged_external: set[str] = field(default_factory=set)  # and their external ids

    def owns(self, req: Request) -> bool:
        """Whether the simulator answers for the interaction this request addresses (consistency rule)."""
        op = req.operation
        if op is None or op.id is None:
            return False
        if req.interaction_id is None:  # get with searchByExternalId=true
            return op.id in self.diverged_external
        return op.id in self.diverged


class Playback:
    """What replay knows: the index, the sessions, and which recordings were ever played."""

    def __init__(self, cassettes: list[Cassette], index: matching.Index, repeat: str,
                 new_simulator: Callable[[], Simulator]) -> None:
        self.cassettes = cassettes
        self.index = index
        self.repeat = repeat
        self.new_simulator = new_simulator
        self.sessions: dict[str, Session] = {}
        self.played: set[tuple[str, int]] = set()

    @classmethod
    def of(cls, cassettes: list[Cassette], config: Config, also_ignore: set[str], repeat: str) -> Playback:
        """Index the cassettes; keys redacted at record time (and `also_ignore`) are left out of matching."""
        recorded = [r for c in cassettes for r in c.interactions]
        rules = matching.Rules.of(config.match, matching.redacted_keys(recorded) | also_ignore)
        sections = config.sections
        return cls(cassettes, matching.Index(recorded, rules), repeat, lambda: Simulator(sections))

    def session(self, name: str) -> Session:
        if name not in self.sessions:
            self.sessions[name] = Session(self.new_simulator())
        return self.sessions[name]

    def reset(self, name: str | None = None) -> None:
        """Rewind playback and empty the simulator: of one session, or of all."""
        if name is None:
            self.sessions.clear()
            self.played.clear()
        else:
            self.sessions.pop(name, None)

    def report(self) -> list[dict[str, object]]:
        out = []
        for c in self.cassettes:
            never = [r.index for r in c.interactions if (c.path, r.index) not in self.played]
            out.append({"cassette": c.path, "interactions": len(c.interactions),
                        "played": len(c.interactions) - len(never), "never_played": never[:1000]})
        return out

    def stale(self) -> list[str]:
        """Every recording no session ever played, as `cassette #index`."""
        return [r.where for c in self.cassettes for r in c.interactions if (c.path, r.index) not in self.played]


class Replayer:
    """Answers from the cassettes, in recorded order per identical request, per session."""

    def __init__(self, playback: Playback, journal: Journal) -> None:
        self.playback, self.journal = playback, journal

    async def __call__(self, req: Request) -> Response | None:
        pb = self.playback
        session = pb.session(req.session)
        if session.owns(req):
            return None
        k = matching.key(req, pb.index.rules)
        found = pb.index.by_key.get(k)
        if not found:
            return None
        position = session.positions[k]
        if position < len(found):
            session.positions[k] += 1
            rec = found[position]
        elif pb.repeat == "last":
            rec = found[-1]
        else:
            return None
        session.simulator.observe(req, rec.response)
        pb.played.add((rec.cassette, rec.index))
        self.journal.count("from cassette")
        return Response(rec.response.status, rec.response.body, rec.response.headers, "cassette",
                        note=rec.where, details={"cassette": rec.cassette, "index": rec.index})


class Fallback:
    """On a miss, the session's simulator answers; an update or stop it performs makes it the owner
    of that interaction from then on."""

    def __init__(self, playback: Playback, journal: Journal) -> None:
        self.playback, self.journal = playback, journal

    async def __call__(self, req: Request) -> Response:
        session = self.playback.session(req.session)
        owned = session.owns(req)
        op = req.operation
        target = op.id if op is not None and op.kind in ("update", "stop") else None
        before = session.simulator.interactions.get(target) if target else None  # a stop forgets it
        resp = session.simulator.handle(req)
        if target and (resp.reply or {}).get("statusCode") == 0:
            session.diverged.add(target)
            if before is not None and "ExternalId" in before.user_data:
                session.diverged_external.add(before.user_data["ExternalId"])
        self.journal.count("simulated")
        if owned:
            note = "consistency rule: the simulator changed this interaction, so it answers for it"
        else:
            misses = self.playback.index.near_misses(req, 1, scan=200)  # a hint for the log: keep it cheap
            nearest = f"; nearest {misses[0].recorded.where}: {'; '.join(misses[0].differences)}" if (
                misses and misses[0].differences) else ""
            note = "no recording matched" + nearest
        return Response(resp.status, resp.body, resp.headers, "simulator", note=note, details={"miss": note})


class Misser:
    """--fallback none: a 404 whose advice names the nearest recordings and what differs."""

    def __init__(self, playback: Playback, journal: Journal) -> None:
        self.playback, self.journal = playback, journal

    async def __call__(self, req: Request) -> Response:
        misses = self.playback.index.near_misses(req)
        report = matching.miss_report(req, misses)
        log.warning("%s %s: %s", req.method, req.path, report)
        self.journal.count("missed")
        body = gms.reply(2, errors=[{"code": gms.NO_MATCH, "advice": report}],
                         nearMisses=[m.as_dict() for m in misses])
        resp = Response.json(404, body, "omproxy", **{"X-Omproxy-Error": "no-match"})
        return Response(resp.status, resp.body, resp.headers, "omproxy", note=report,
                        details={"miss": report, "nearMisses": [m.as_dict() for m in misses]})

