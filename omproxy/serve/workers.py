"""`--workers N`: N omproxy processes on one port (SO_REUSEPORT: the kernel spreads connections), started,
watched and stopped by this parent. A worker that dies is started again; Ctrl-C or SIGTERM stops them
all (each finishes its requests in flight) and the parent prints one summary, their counts added up
(but "never played", which every worker reads from the one shared state: the last worker's count).
Workers are the same command line re-run with `--workers 1 --worker`, so they read the same config."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable

from omproxy.cassette import storage
from omproxy.config.options import Config, Mode
from omproxy.errors import UsageError
from omproxy.exchange import Outcome
from omproxy.serve.runtime import warn_stale

log = logging.getLogger("omproxy")
SHARED = (Mode.REPLAY, Mode.AUTO, Mode.SIMULATE)  # their state must be one for all workers


def check(config: Config, mode: Mode) -> None:
    if config.workers > 1 and config.max_interactions is not None:
        raise UsageError(f"--max-interactions counts one process's recordings; with --workers {config.workers}, "
                         "bound the capture with --exit-after")
    if config.workers > 1 and config.state == "memory" and (mode in SHARED or config.upstream == "builtin"):
        what = f"{mode.value}" if mode in SHARED else f"{mode.value} with the builtin upstream"
        raise UsageError(f"--workers {config.workers} in {what} needs --state redis://...: playback positions, "
                         "sessions and simulated interactions must be the same for every worker")


class Supervisor:
    def __init__(self, argv: list[str], config: Config, mode: Mode) -> None:
        self.argv, self.config, self.mode = argv, config, mode
        # --rewrite: the workers write one partial file per cassette, renamed here once all are done
        self.run_name = secrets.token_hex(4) if config.rewrite and mode in (Mode.RECORD, Mode.AUTO) else ""
        self.counts: Counter[str] = Counter()
        # Never played, as the last worker to stop saw it (what all workers played, in the shared state):
        # a count each worker reads, not one to add up.
        self.never: tuple[int, list[str]] | None = None
        self.stopping = False
        self.restarts = 0
        self.procs: set[asyncio.subprocess.Process] = set()

    def reserve(self) -> tuple[socket.socket, int]:
        """The port every worker binds (bound here, not listening, so it stays ours while they start)."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        if self.config.port:  # first without SO_REUSEPORT: a port another omproxy --workers serves is refused,
            with socket.socket(family, socket.SOCK_STREAM) as probe:  # not shared with it by the kernel
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.config.host, self.config.port))
                except OSError as e:
                    raise UsageError(f"cannot listen on {self.config.host}:{self.config.port}: "
                                     f"{e.strerror or e} (another omproxy, or another program, serves it)") from None
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError as e:
            sock.close()
            raise UsageError(f"cannot listen on {self.config.host}:{self.config.port}: {e.strerror or e}") from None
        return sock, sock.getsockname()[1]

    async def worker(self, port: int, ready: asyncio.Future[None] | None) -> None:
        """One worker, for as long as the supervisor runs: started again when it dies."""
        while True:
            began = time.monotonic()
            proc = await asyncio.create_subprocess_exec(  # -P: this omproxy, never a package in the cwd
                sys.executable, "-P", "-m", "omproxy", *self.argv, "--port", str(port), "--workers", "1",
                "--worker", *(("--rewrite-run", self.run_name) if self.run_name else ()),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
            assert proc.stdout is not None
            self.procs.add(proc)
            log.info("worker %d started", proc.pid)
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").strip()
                if " listening on " in line and ready is not None and not ready.done():
                    ready.set_result(None)
                elif line.startswith("{"):
                    report = json.loads(line)
                    counts = report.get("counts", {})
                    never = counts.pop(Outcome.NEVER_PLAYED.value, None)
                    self.counts.update(counts)
                    if never is not None and (self.never is None or never <= self.never[0]):
                        self.never = (never, report.get("stale", []))
            code = await proc.wait()
            self.procs.discard(proc)
            if ready is not None and not ready.done():
                ready.set_exception(UsageError(f"a worker could not start (exit status {code}); its error is above"))
                return
            if self.stopping:
                return
            self.restarts += 1
            log.warning("worker %d ended (exit status %d): starting another", proc.pid, code)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))  # at most one start a second
            if self.stopping:
                return

    async def run(self) -> None:
        sock, port = self.reserve()
        try:
            loop = asyncio.get_running_loop()
            readies = [loop.create_future() for _ in range(self.config.workers)]
            workers = [asyncio.create_task(self.worker(port, r)) for r in readies]
            await asyncio.gather(*readies)
            host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
            scheme = "https" if self.config.tls_cert else "http"
            print(f"omproxy {self.mode.value} listening on {scheme}://{host}:{port} ({self.config.workers} workers)",
                  flush=True)
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)

            def reload() -> None:  # each worker reads the config file again
                for proc in list(self.procs):
                    proc.send_signal(signal.SIGHUP)

            loop.add_signal_handler(signal.SIGHUP, reload)
            if self.config.exit_after is not None:  # the workers leave the time to their supervisor
                loop.call_later(self.config.exit_after, stop.set)
            await stop.wait()
            log.info("stopping: the workers finish their requests in flight")
            self.stopping = True
            for proc in list(self.procs):
                proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*workers)
            if self.run_name:
                storage.finish_rewrite([storage.Template(self.config.cassette).folder], self.run_name)
        finally:
            sock.close()


def run(argv: list[str], config: Config, mode: Mode, startup: str,
        summary: Callable[[dict[Outcome, int], Mode], str]) -> int:
    check(config, mode)
    supervisor = Supervisor(argv, config, mode)
    log.info("%s; %d workers", startup, config.workers)
    started = time.monotonic()
    asyncio.run(supervisor.run())
    counts = {o: supervisor.counts.get(o.value, 0) for o in Outcome if supervisor.counts.get(o.value)}
    if supervisor.never is not None:
        counts[Outcome.NEVER_PLAYED] = supervisor.never[0]
        warn_stale(supervisor.never[1], supervisor.never[0])
    log.info("%s (%.0f s, %d workers, %d restarted)", summary(counts, mode), time.monotonic() - started,
             config.workers, supervisor.restarts)
    return 0
