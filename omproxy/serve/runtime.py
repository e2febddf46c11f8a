"""build_runtime(config, mode): each mode's chain of responders, read top to bottom — this is the
architecture. Responders decide (the first to return a Response answers); observers record.

    simulate     SimulatorResponder
    passthrough  upstream                          (a Forwarder, or the simulator for `builtin`)
    record       Recorder(upstream)
    replay       Replayer, then SimulatorFallback (the seeded simulator) or MissReport (an explained 404)
    auto         Replayer, then Recorder(upstream)

    observers    Journal (counts, recent exchanges), FindingsLog, AccessLog
    /_omproxy/   Admin, asked first

`Runtime.pipeline.serve` is the whole request path; `serve.http.front` serves it over HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from omproxy.cassette import indexcache, storage, yamlformat
from omproxy.config.options import Config, Durability, Fallback, Mode, Repeat
from omproxy.errors import OmproxyError, UsageError
from omproxy.exchange import Exchange, Outcome
from omproxy.gms.simulator import Simulator
from omproxy.model import Response
from omproxy.modes import Counted, Responder
from omproxy.modes.faults import Faults
from omproxy.modes.record import Choice, Recorder, failure_of, not_recorded
from omproxy.modes.replay import MissReport, Playback, Replayer, SimulatorFallback
from omproxy.redaction import Redactor
from omproxy.serve.admin import Admin
from omproxy.serve.http.forward import Forwarder
from omproxy.serve.observers import metrics
from omproxy.serve.observers.accesslog import AccessLog, FindingsLog, Write
from omproxy.serve.observers.inspector import Live
from omproxy.serve.observers.journal import Journal
from omproxy.serve.pipeline import Pipeline
from omproxy.state import State
from omproxy.state.memory import MemoryState

log = logging.getLogger("omproxy.access")
# what SIGHUP takes from the config file; any other change needs a restart
RELOADED = frozenset({"redact", "faults", "faults_seed", "latency_scale", "record_only", "record_skip",
                      "sample_rate", "sample_by", "sample_seed"})
BIG = 10_000  # interactions loaded beyond which the memory parsing freed is given back at once


class SimulatorResponder:
    """The simulator as a responder, on the requesting session's interactions."""

    def __init__(self, simulator: Simulator, state: State) -> None:
        self.simulator, self.state = simulator, state

    async def __call__(self, ex: Exchange) -> Response:
        ex.outcome = ex.outcome or Outcome.SIMULATED
        return await self.simulator.handle(ex.request, self.state.interactions(ex.request.session))


@dataclass
class Runtime:
    """What one running omproxy is: its config, its pipeline, its state, and what the admin API sees."""

    config: Config
    mode: Mode
    redactor: Redactor
    state: State
    pipeline: Pipeline
    journal: Journal = field(default_factory=Journal)
    playback: Playback | None = None  # replay and auto
    metrics: Any = None  # the Prometheus observer, when prometheus-client is installed
    live: Any = None  # the web inspector's observer (inspector.Live)
    starters: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # what GET /_omproxy/ready asks: each says None (fine) or what keeps omproxy from serving
    readiness: list[Callable[[], Awaitable[str | None]]] = field(default_factory=list)
    later: list[Callable[[], Iterator[None]]] = field(default_factory=list)  # once serving, step by step
    choice: Any = None  # which forwarded exchanges are recorded (modes.record.Choice)
    warn_stale: bool = True  # log the recordings never played at close (else its caller reports `stale`)
    stale: list[str] = field(default_factory=list)  # at close: the recordings no session ever played
    _later: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ping = getattr(self.state, "ping", None)
        if ping is not None:
            try:
                await ping()
            except OmproxyError as e:
                raise UsageError(f"cannot start: {e.message}") from None
        for start in self.starters:
            await start()
        if self.later:
            work, self.later = self.later, []
            self._later = asyncio.create_task(self._run_later(work))

    @staticmethod
    async def _run_later(work: list[Callable[[], Iterator[None]]]) -> None:
        """What can wait until serving (the index a next start reads, what explains a miss): a step at
        a time, requests served between steps, on the event loop (a thread would hold the GIL as long,
        and keep its memory in an arena of its own)."""
        while work:
            for _ in work.pop(0)():  # and let go of what it held
                await asyncio.sleep(0)
        storage.give_back_memory()

    def reload(self, new: Config) -> list[str]:
        """Take redaction, filters, sampling and fault rules from `new` (SIGHUP), without a pause; say
        what else differs, which needs a restart."""
        self.redactor.use(new.redact)
        faults = self.pipeline.faults
        if faults is not None:
            faults.configured, faults.seed, faults.scale = new.faults, new.faults_seed, new.latency_scale
        choice = self.choice
        if choice is not None:
            choice.only, choice.skip, choice.rate, choice.by = new.record_only, new.record_skip, new.sample_rate, \
                new.sample_by
            choice.seed = new.sample_seed if new.sample_seed is not None else new.state_namespace
        kept = {f.name for f in dataclasses.fields(Config)} - RELOADED - {"source", "given", "rewrite_run"}
        differs = sorted(name for name in kept if getattr(new, name) != getattr(self.config, name))
        self.config = dataclasses.replace(self.config, **{name: getattr(new, name) for name in RELOADED})
        return differs

    async def close(self) -> None:
        """After the last request: flush cassettes, close the upstream, report what was never played."""
        self.pipeline.flush()  # the last answers' observers (they would run at the loop's next turn)
        if self._later is not None:
            await self._later  # what was left to write for a next start is written whole
        for close in self.closers:
            await close()
        if self.playback is not None:
            try:
                played = await self.state.played()
            except OmproxyError as e:  # a shared state gone at shutdown: say so, stop anyway
                log.warning("cannot tell which recordings were never played: %s", e.message)
                played = None
            self.stale = self.playback.never_played(played) if played is not None else []
            self.journal.count(Outcome.NEVER_PLAYED, len(self.stale))
            if self.warn_stale:
                warn_stale(self.stale)
        closing = getattr(self.state, "close", None)
        if closing is not None:  # last: asking a closed Redis client opens a connection never closed
            await closing()


def warn_stale(stale: list[str], total: int | None = None) -> None:
    """One warning naming the first 10 recordings never played; `total`: how many there are, when more
    than `stale` lists."""
    total = len(stale) if total is None else total
    if total:
        log.warning("recorded but never played (a stale cassette?): %s%s", ", ".join(stale[:10]),
                    f" and {total - 10} more" if total > 10 else "")


def build_runtime(config: Config, mode: Mode, *, simulator: Simulator | None = None,
                  state: State | None = None, access: Write | None = None) -> Runtime:
    redactor = Redactor(config.redact)
    if state is None and config.state != "memory":
        from omproxy.state.redis import RedisState, digest

        # One namespace per cassette set: instances replaying the same captures share positions.
        state = RedisState(config.state, digest((config.state_namespace, mode.value, _cassette_set(config, mode))),
                           config.session_idle, config.state_namespace)
    state = state or MemoryState(max_sessions=config.max_sessions, session_idle=config.session_idle)
    simulator = simulator or Simulator(config.sections)
    rt = Runtime(config, mode, redactor, state, Pipeline([], redactor))

    def upstream() -> Responder:
        if config.upstream == "builtin":
            return Counted(SimulatorResponder(simulator, state), Outcome.FORWARDED)
        forwarder = Forwarder(config.upstream, config.upstream_timeout, config.max_response_body)
        rt.starters.append(forwarder.start)
        rt.readiness.append(forwarder.reachable)
        rt.closers.append(forwarder.close)
        return Counted(forwarder, Outcome.FORWARDED)

    choice = rt.choice = Choice(config.record_only, config.record_skip, config.sample_rate, config.sample_by,
                                config.sample_seed if config.sample_seed is not None else config.state_namespace)

    def recorder(inner: Responder) -> Recorder:
        if not isinstance(state, MemoryState):  # a shared state: every instance records into its stream
            from omproxy.state.redis import RedisState, StreamWriter

            assert isinstance(state, RedisState)
            return Recorder(inner, StreamWriter(state), redactor, origin(config.upstream), choice)
        template = storage.Template(config.cassette)
        if config.pending:  # for review: `omproxy cassette accept` moves them into the cassette
            template = template.pending
            log.info("recording into pending cassettes (%s), for review: omproxy cassette accept %s",
                     template, config.cassette)
        storage.check_writable(template)
        if config.rewrite and (config.rotate_size or template.timed):
            raise UsageError("rewrite replaces one cassette; a rotated one (rotate.size, strftime fields in "
                             "--cassette) is many: record into a new folder instead")
        def lost(e: OSError, n: int) -> None:  # durability interval: answered already, then not written
            log.error("%s: %d entries answered but not written: %s", not_recorded(failure_of(e)), n,
                      e.strerror or e)
            rt.journal.count(failure_of(e), n)

        writer = storage.CassetteWriter(template, rewrite=config.rewrite, run=config.rewrite_run,
                                        rotate_size=config.rotate_size, max_pending=config.record_queue,
                                        interval=config.durability is Durability.INTERVAL, lost=lost,
                                        banner=provenance(config))
        rt.closers.append(writer.close)
        holding = [p for p in (template.files() if template.per_service else [Path(template.spec)])
                   if p.is_file() and p.stat().st_size > len(yamlformat.HEADER)]
        if config.rewrite:
            log.info("rewriting: this run's recordings go to <cassette>.partial, renamed over the cassette "
                     "when omproxy stops cleanly")
        elif holding and mode is Mode.RECORD:
            log.warning("recording appends to %s, which already holds recordings; to replace them instead, "
                        "record with --rewrite", ", ".join(str(p) for p in holding[:3]) +
                        (f" and {len(holding) - 3} more" if len(holding) > 3 else ""))
        return Recorder(inner, writer, redactor, origin(config.upstream), choice)

    def playback(*, must_exist: bool) -> Playback:
        # A big capture's index is written once serving. What is loaded and indexed lives as long as
        # omproxy: a big one is put out of the cyclic GC's reach (each collection would walk all of it).
        with indexcache.deferred() as writes, storage.no_gc():
            template = storage.Template(config.cassette)
            cassettes = storage.load_spec(template, must_exist=must_exist, lazy=True)
            waiting = storage.files_of(template.pending, must_exist=False)
            if mode is Mode.AUTO and config.pending:  # replayed here (recorded once), never by replay
                cassettes += storage.load_spec(template.pending, must_exist=False, lazy=True)
            elif waiting:
                log.warning("%s hold recordings waiting for review, not replayed: see them with omproxy inspect, "
                            "move them in with omproxy cassette accept %s", ", ".join(map(str, waiting[:3])),
                            config.cassette)
            rt.playback = Playback.of(cassettes, config, redactor.form_keys, redactor)
            if len(rt.playback.index.all) >= BIG:
                gc.freeze()
        rt.later += writes
        for c in cassettes:
            if c.dropped:
                log.warning("%s", c.dropped)
        rt.later.insert(0, rt.playback.index.build_routes)  # what explains a miss, built once serving
        if sum(len(c.interactions) for c in cassettes) >= BIG:
            storage.give_back_memory()  # what parsing left free
        log.info("loaded %d interactions from %d cassette(s)", len(rt.playback.index.all), len(cassettes))
        return rt.playback

    responders: list[Responder]
    if mode is Mode.SIMULATE:
        responders = [SimulatorResponder(simulator, state)]
    elif mode is Mode.PASSTHROUGH:
        responders = [upstream()]
    elif mode is Mode.RECORD:
        responders = [recorder(upstream())]
    elif mode is Mode.REPLAY:  # never an upstream: replay opens no connection, ever
        pb = playback(must_exist=True)
        if config.fallback is Fallback.SIMULATOR:
            responders = [Replayer(pb, state, simulator), SimulatorFallback(pb, state, simulator)]
        else:
            responders = [Replayer(pb, state, None), MissReport(pb)]
    else:  # auto: a request whose recordings are used up is a new episode: forward, record
        pb = playback(must_exist=False)
        responders = [Replayer(Playback(pb.cassettes, pb.index, Repeat.MISS), state, None),
                      recorder(upstream())]
    rt.pipeline.responders = responders
    rt.pipeline.faults = Faults(config.faults, state, config.faults_seed, config.latency_scale)
    rt.pipeline.observers = [rt.journal, FindingsLog(redactor), AccessLog(mode.value, redactor, config.verbose, access)]
    if not isinstance(state, MemoryState):
        from omproxy.state.redis import RedisState, SharedCounts

        assert isinstance(state, RedisState)
        counts = SharedCounts(state)
        rt.pipeline.observers.append(counts)
        rt.closers.append(counts.drain)
    rt.metrics = metrics.make(mode.value)
    if rt.metrics is not None:
        rt.pipeline.observers.append(rt.metrics)
    rt.live = Live(redactor, mode.value)
    rt.pipeline.observers.append(rt.live)
    rt.pipeline.admin = Admin(rt)
    ping = getattr(state, "ping", None)
    if ping is not None:
        async def shared() -> str | None:
            try:
                await ping()
            except OmproxyError as e:
                return e.message
            return None

        rt.readiness.append(shared)
    return rt


def provenance(config: Config) -> str:
    """The comment line each new cassette file starts with: what wrote it, from where, how (readers
    ignore it). The config is named by a digest (its admin token left out), never shown."""
    from omproxy import __version__

    shown = dataclasses.replace(config, admin_token=None, source="", given=frozenset())
    digest = hashlib.sha256(repr(shown).encode()).hexdigest()[:12]
    sampling = f"sample {config.sample_rate:g} by {config.sample_by.value}" if config.sample_rate < 1 else "sample all"
    return (f"# omproxy {__version__}; upstream {origin(config.upstream)}; host {socket.gethostname()}; "
            f"config {digest}; {sampling}; recorder started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")


def origin(upstream: str) -> str:
    """The upstream as an entry's `recorded_from` says it: builtin, or its URL without credentials."""
    parts = urlsplit(upstream)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else upstream


def _cassette_set(config: Config, mode: Mode) -> list[tuple[str, int]]:
    """What identifies the recordings omproxy serves: each file's name and size."""
    if mode not in (Mode.REPLAY, Mode.AUTO):
        return []
    return [(p.name, p.stat().st_size) for p in storage.Template(config.cassette).files()]


