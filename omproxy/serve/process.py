"""Process life of `omproxy <mode>`: serving until a signal (a second one stops at once), uvloop when
installed, the open-file limit raised, failing accepts logged quietly, the ready and summary lines; a
worker of `serve.workers` ends with its counts as one JSON line instead."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from omproxy.config.options import Config, Mode
from omproxy.errors import OmproxyError
from omproxy.exchange import Exchange, Outcome
from omproxy.serve.http.front import start
from omproxy.serve.observers.accesslog import Write
from omproxy.serve.runtime import Runtime, build_runtime

log = logging.getLogger("omproxy")


def beyond_loopback(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def raise_file_limit(config: Config) -> None:
    """Use the hard limit of open files, and keep max_connections below it (a connection is a file;
    cassettes, the upstream and the log need some too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and config.max_connections > soft - 64:
        log.warning("max_connections %d is near the open-file limit %d; raise it (ulimit -n) or lower "
                    "max_connections", config.max_connections, soft)


class QuietAccept:
    """The loop's exception handler: an `accept()` that fails (out of files) is logged once per
    10 s with a count, never as a flood of tracebacks."""

    def __init__(self) -> None:
        self.last, self.suppressed = 0.0, 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < 10:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        log.error("accepting connections fails: %s%s", context.get("exception") or context.get("message"), more)
        self.last, self.suppressed = now, 0


def run(config: Config, mode: Mode, startup: str, summary: Callable[[dict[Outcome, int], Mode], str],
        access: Write | None = None, *, worker: bool = False, reread: Callable[[], Config] | None = None) -> int:
    """Serve until a signal. A worker (of `supervisor`) shares its port and, instead of the summary line,
    ends with its counts as one JSON line on stdout for the supervisor to add up."""
    rt = build_runtime(config, mode, access=access)
    rt.warn_stale = not worker  # the supervisor warns once for all
    started = time.monotonic()
    try:
        import uvloop  # the `fast` extra: a faster event loop, used when installed
    except ImportError:
        asyncio.run(serve(rt, config, mode, startup, worker, reread))
    else:
        log.debug("event loop: uvloop")
        uvloop.run(serve(rt, config, mode, startup, worker, reread))
    if worker:
        print(json.dumps({"counts": {o.value: n for o, n in rt.journal.counts.items()}, "stale": rt.stale[:10]}),
              flush=True)
    else:
        log.info("%s (%.0f s)", summary(rt.journal.counts, mode), time.monotonic() - started)
    return 0


def bounded(rt: Runtime, config: Config, stop: asyncio.Event, worker: bool) -> None:
    """--exit-after and --max-interactions: a clean stop once the time is up or enough is recorded (with
    --workers, the supervisor keeps the time)."""
    if config.exit_after is not None and not worker:
        def time_up() -> None:
            log.info("--exit-after %g s reached: stopping", config.exit_after)
            stop.set()

        asyncio.get_running_loop().call_later(config.exit_after, time_up)
    limit = config.max_interactions
    if limit is not None:
        def count(ex: Exchange) -> None:
            if ex.recorded_to is not None and rt.journal.counts[Outcome.RECORDED] >= limit and not stop.is_set():
                log.info("--max-interactions %d recorded: stopping", limit)
                stop.set()

        rt.pipeline.observers.append(count)


def reloader(rt: Runtime, reread: Callable[[], Config]) -> Callable[[], None]:
    """SIGHUP: the config file read again; redaction, filters, sampling and fault rules taken from it,
    connections kept. A file that does not read keeps the old rules, and says why."""
    def reload() -> None:
        try:
            new = reread()
            differs = rt.reload(new)  # a pseudonym key that does not read: refused before anything changes
        except OmproxyError as e:
            log.error("SIGHUP: kept the running settings: %s", e.message)
            return
        log.info("SIGHUP: reloaded redaction, record filters, sampling and fault rules from %s%s", new.source,
                 f"; restart omproxy for: {', '.join(differs)}" if differs else "")
    return reload


async def serve(rt: Runtime, config: Config, mode: Mode, startup: str, worker: bool = False,
                reread: Callable[[], Config] | None = None) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietAccept())
    raise_file_limit(config)
    listener = await start(rt, config, reuse_port=worker)
    # What start-up loaded (a big capture: millions of objects) lives as long as omproxy: kept out of
    # the cyclic GC's full collections, which would otherwise walk it all, pausing every request.
    gc.freeze()
    if not worker:
        log.info("%s", startup)
    host = f"[{config.host}]" if ":" in config.host else config.host
    if beyond_loopback(config.host) and not worker:
        log.warning("listening on %s: anyone who can reach this address can send traffic%s", config.host,
                    " and use /_omproxy/ (set admin.token)" if config.admin_token is None else "")
    scheme = "https" if config.tls_cert else "http"
    print(f"omproxy {mode.value} listening on {scheme}://{host}:{listener.port}", flush=True)
    if not worker:
        log.info("inspector on http://%s:%d/_omproxy/ui", host, listener.port)
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            return
        # A second signal while finishing: the user wants out now. Every answered request is on disk
        # already; requests still in flight were answered to no one and are recorded nowhere.
        log.warning("second signal: stopping now, without waiting for requests in flight")
        logging.shutdown()
        os._exit(1)

    if worker:  # Ctrl-C reaches the whole process group: a worker waits for its supervisor's SIGTERM
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        def supervisor_gone() -> None:  # its end of our stdin closed: it died; never outlive it
            if not os.read(0, 4096):
                loop.remove_reader(0)
                stop.set()

        loop.add_reader(0, supervisor_gone)
    for sig in (signal.SIGTERM,) if worker else (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if reread is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader(rt, reread))
    bounded(rt, config, stop, worker)
    await stop.wait()
    log.info("stopping: finishing requests in flight")
    await listener.close()

