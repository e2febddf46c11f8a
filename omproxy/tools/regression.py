"""`omproxy verify` and `omproxy diff` at the edge: load the cassettes, build the sender (a Forwarder
to a live GMS, or the simulator for `builtin`), run, print the report, choose the exit status."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from omproxy.cassette import storage
from omproxy.config.options import Config
from omproxy.errors import UsageError
from omproxy.exchange import Exchange
from omproxy.model import Request, Response
from omproxy.redaction import Redactor
from omproxy.tools import compare, reports
from omproxy.tools.compare import Noise
from omproxy.tools.verify import Result, Send, Verdict, Verifier, pair, shape


def run(args: argparse.Namespace, config: Config) -> int:
    noise = Noise().plus(config.verify_ignore)
    started = time.monotonic()
    if args.command == "diff":
        # both read in recorded order: the first as it is compared, the second kept as what its requests
        # are paired by, each recording read again when it pairs
        results, only_second = pair(storage.timeline([args.first])[1], storage.revisits([args.second], shape),
                                    noise)
        results += only_second
        learned = None
    else:
        paths = storage.files_of(storage.Template(config.cassette), must_exist=True)
        results, learned = asyncio.run(_verify(args, config, paths, noise))
    seconds = time.monotonic() - started
    what = "diff" if args.command == "diff" else "verify"
    print(reports.as_json(results, learned) if args.json else reports.text(results, seconds, what))
    if learned and not args.json:
        print(f"learned noise (ignored): {', '.join(learned)}")
    elif learned is not None and not args.json:
        print("learned noise: none (each get asked twice answered the same both times)")
    if config.verify_ignore:
        read = [args.first] if args.command == "diff" else storage.files_of(storage.Template(config.cassette),
                                                                           must_exist=True)
        replies = (rec.response.reply for path in read for rec in storage.stream(Path(path)))
        for typo in compare.unmatched(config.verify_ignore, replies):
            print(f"warning: verify.ignore path {typo!r} matches no field of any recorded answer (a typo?)",
                  file=sys.stderr)
    if args.report is not None:
        try:
            Path(args.report).write_bytes(reports.junit(results, seconds, f"omproxy {what}"))
        except OSError as e:
            raise UsageError(f"{args.report}: cannot write the report: {e.strerror or e}") from None
    return 1 if any(r.verdict in (Verdict.DIFFERS, Verdict.ERROR) for r in results) else 0


async def _verify(args: argparse.Namespace, config: Config, paths: list[Path],
                  noise: Noise) -> tuple[list[Result], list[str] | None]:
    """The capture read in recorded order as it is verified (`storage.timeline`): what is held at once
    is where each recording is, and the results."""
    send, close = await _sender(config)
    progress = _progress if sys.stderr.isatty() and not args.json else None
    try:
        verifier = Verifier(send, noise, concurrency=args.concurrency, speed=args.speed, progress=progress,
                            redactor=Redactor(config.redact))
        learned = None
        if args.learn_noise:
            learned = await verifier.learn_noise(storage.timeline(paths)[1])
            verifier.noise = noise.plus(learned)
        total, recorded = storage.timeline(paths)
        results = await verifier.run(recorded, total)
    finally:
        await close()
        if progress is not None:
            print(file=sys.stderr)
    return results, learned


async def _sender(config: Config) -> tuple[Send, Callable[[], Awaitable[None]]]:
    if config.upstream == "builtin":
        from omproxy.gms.simulator import Simulator
        from omproxy.serve.runtime import SimulatorResponder
        from omproxy.state.memory import MemoryState

        simulating = SimulatorResponder(Simulator(config.sections), MemoryState())

        async def to_simulator(req: Request) -> Response:
            return await simulating(Exchange(req))

        async def nothing() -> None:
            return None

        return to_simulator, nothing
    from omproxy.serve.http.forward import Forwarder

    forwarder = Forwarder(config.upstream, config.upstream_timeout, config.max_response_body)
    await forwarder.start()

    async def to_upstream(req: Request) -> Response:
        return await forwarder(Exchange(req))

    return to_upstream, forwarder.close


def _progress(results: list[Result], total: int) -> None:
    differing = sum(r.verdict is not Verdict.SAME for r in results)
    print(f"\rverify: {len(results)}/{total} done, {differing} not the same", end="", file=sys.stderr, flush=True)
