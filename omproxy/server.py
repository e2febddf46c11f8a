"""Serving one mode until a signal: aiohttp's runner on the configured address, the ready line,
a clean stop (requests in flight finished, cassettes flushed) and the summary line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

from aiohttp import web

from omproxy.app import RUNTIME, build_app
from omproxy.config import Config, Mode
from omproxy.errors import UsageError
from omproxy.exchange import Outcome

log = logging.getLogger("omproxy")


def run(config: Config, mode: Mode, startup: str, summary: Callable[[dict[Outcome, int], Mode], str]) -> int:
    app = build_app(config, mode)
    log.info("%s", startup)
    started = time.monotonic()
    asyncio.run(serve(app, config, mode))
    log.info("%s (%.0f s)", summary(app[RUNTIME].journal.counts, mode), time.monotonic() - started)
    return 0


async def serve(app: web.Application, config: Config, mode: Mode) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    port = runner.addresses[0][1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"omproxy {mode.value} listening on http://{host}:{port}", flush=True)
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

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    log.info("stopping: finishing requests in flight")
    await runner.cleanup()  # waits for in-flight handlers, then runs cleanup_ctx (flushes cassettes)
