"""The cassette-backed chains, one function per mode. Read with `app.build_app`:
record  = Recorder(upstream)
replay  = Replayer, then Fallback (seeded simulator) or Misser (explained 404) — never an upstream
auto    = Replayer, then Recorder(upstream)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from omproxy import cassette, matching
from omproxy.config import Mode
from omproxy.errors import CassetteError
from omproxy.record import CassetteWriter, Recorder
from omproxy.replay import Fallback, Misser, Playback, Replayer, all_recorded
from omproxy.simulator import Simulator

if TYPE_CHECKING:
    from omproxy.app import Runtime
    from omproxy.proxy import Forwarder

log = logging.getLogger(__name__)


def assemble(rt: Runtime, simulator: Simulator | None) -> Forwarder | None:
    """Fill `rt.responders` for the mode; returns the Forwarder to start and close, if any."""
    if rt.mode is Mode.REPLAY:
        playback = _playback(rt, must_exist=True, repeat=rt.config.repeat)
        miss = Fallback if rt.config.fallback == "simulator" else Misser
        rt.responders = [Replayer(playback, rt.journal), miss(playback, rt.journal)]
        return None

    from omproxy.app import Counting, upstream_of

    upstream, forwarder = upstream_of(rt.config, simulator)
    writer = CassetteWriter(rt.config.cassette)
    rt.admin["closers"] = [writer.drain]
    recorder = Recorder(Counting(upstream, rt.journal, "forwarded"), writer, rt.redactor, rt.journal)
    if rt.mode is Mode.RECORD:
        rt.responders = [recorder]
    elif rt.mode is Mode.AUTO:
        # A request whose recordings are used up is a new episode: forward and record it.
        playback = _playback(rt, must_exist=False, repeat="miss")
        rt.responders = [Replayer(playback, rt.journal), recorder]
    return forwarder


def _playback(rt: Runtime, *, must_exist: bool, repeat: str) -> Playback:
    cassettes = load(rt.config.cassette, must_exist=must_exist)
    recorded = all_recorded(cassettes)
    rules = matching.Rules.of(rt.config.match, matching.redacted_keys(recorded) | rt.redactor.form_keys)
    sections = rt.config.sections
    playback = Playback(cassettes, matching.Index(recorded, rules), repeat, lambda: Simulator(sections))
    rt.admin["reset"] = playback.reset
    rt.admin["cassettes"] = playback.report

    async def count_never_played() -> None:
        rt.journal.counts["never played"] = playback.never_played()

    rt.admin.setdefault("closers", []).append(count_never_played)
    log.info("loaded %d interactions from %d cassette(s)", len(recorded), len(cassettes))
    return playback


def load(spec: str, *, must_exist: bool) -> list[cassette.Cassette]:
    """The cassettes named by --cassette: a file, a folder, or a {service} template (its folder)."""
    path = Path(spec).parent if "{service}" in spec else Path(spec)
    if not path.exists():
        if must_exist:
            raise CassetteError(f"{path}: cassette not found")
        return []
    found = cassette.load_all(path)
    if must_exist and not found:
        raise CassetteError(f"{path}: no cassettes (*.yaml) in this folder")
    for c in found:
        if c.dropped:
            log.warning("%s", c.dropped)
    return found
