"""What omproxy's own Python costs a forwarded request, without sockets: a profiler's harness, not a
benchmark of record (`run.py` is). 32 client connections on the command line's front
(`server.Connection`) and the upstream client's connections (`upstream._Connection`) are fed the
`get` workload's bytes through in-memory transports; the upstream's answer is a recorded aiohttp
answer, given back on the loop's next turn. What is left is omproxy's work alone: parsing, the
pipeline, the observers, composing bytes — no kernel, no other process on the core.

    python benchmarks/inprocess.py                   # passthrough and record, each with and without observers
    python benchmarks/inprocess.py --profile out.prof  # cProfile of passthrough, for pstats/snakeviz
    py-spy record --nonblocking -- python benchmarks/inprocess.py   # sampled (blocking mode biases
                                                                     # samples towards system calls)

In the real process each microsecond here costs about 1.5-2 (its cache shared with the kernel's
networking and the upstream on the same core), so a step found here is confirmed with `run.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omproxy import app, cli, server, upstream  # noqa: E402
from omproxy.config import Config, Mode  # noqa: E402

CONNECTIONS = 32
BODY = (b'{"statusCode":0,"interactionId":"01QG0Q2S5S50G000","state":"queued","userData":{'
        + b",".join(b'"Key%02d":"value %02d"' % (n, n) for n in range(40)) + b"}}")
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
          b"Date: Sun, 29 Nov 2026 01:00:00 GMT\r\nServer: Python/3.11 aiohttp/3.14\r\n\r\n" % len(BODY)) + BODY
REQUEST = (b"POST /genesys/2/openmedia/customer-support/01QG0Q2S5S50G000/get HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n")


class Memory(asyncio.Transport):
    """A transport whose writes go to a function (no socket, no flow control)."""

    def __init__(self, on_write: Any) -> None:
        super().__init__()
        self.on_write, self.closing = on_write, False

    def write(self, data: Any) -> None:
        self.on_write(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0


async def measure(mode: Mode, requests: int, observers: bool, folder: Path, profile: str | None,
                  log: Any = None) -> float:
    """CPU (this process, all threads) per request, in µs."""
    loop = asyncio.get_running_loop()
    config = Config(upstream="http://127.0.0.1:9", cassette=str(folder / "{service}.yaml"))
    access = cli.setup_logging(config)  # the command line's log handler, as omproxy runs; into /dev/null
    logging.getLogger("omproxy").handlers[0].setStream(log)  # type: ignore[attr-defined]
    rt = app.build_runtime(config, mode, access=access)
    await rt.start()
    if not observers:
        rt.pipeline.observers = []
    client: Any = None
    for responder in rt.pipeline.responders:  # Counted(Forwarder) or Recorder(Counted(Forwarder))
        inner: Any = responder
        while client is None and inner is not None:
            client = getattr(inner, "_client", None)
            inner = getattr(inner, "inner", None) or getattr(inner, "upstream", None)

    async def connect(within: float) -> upstream._Connection:
        conn = upstream._Connection(loop)
        conn.connection_made(Memory(lambda data: loop.call_soon(conn.data_received, ANSWER)))
        return conn

    client._connect = connect
    front = server.Front(rt, config)
    answered = 0
    done: asyncio.Future[None] = loop.create_future()

    def answer(conn: server.Connection) -> None:
        nonlocal answered
        answered += 1
        if answered == requests and not done.done():
            done.set_result(None)
        elif answered < requests:
            loop.call_soon(conn.data_received, REQUEST)

    connections = []
    for _ in range(CONNECTIONS):
        conn = front.connection()
        conn.connection_made(Memory(lambda data, conn=conn: answer(conn)))
        connections.append(conn)
    started = time.process_time()
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    for conn in connections:
        conn.data_received(REQUEST)
    await done
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    spent = time.process_time() - started
    front.clock.stop()
    await rt.close()
    return spent / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of passthrough (with observers)")
    args = parser.parse_args()
    try:
        import uvloop
        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    with tempfile.TemporaryDirectory() as folder, open(os.devnull, "w") as log:
        if args.profile:
            run(measure(Mode.PASSTHROUGH, args.requests, True, Path(folder), args.profile, log))
            print(f"wrote {args.profile}")
            return
        print(f"{'mode':12} {'µs a request':>13} {'without observers':>18} {'observers':>10}")
        for mode in (Mode.PASSTHROUGH, Mode.RECORD):
            run(measure(mode, 2_000, True, Path(folder), None, log))  # warm: imports, first connections
            full = run(measure(mode, args.requests, True, Path(folder), None, log))
            bare = run(measure(mode, args.requests, False, Path(folder), None, log))
            print(f"{mode.value:12} {full:13.1f} {bare:18.1f} {full / bare:9.2f}x")


if __name__ == "__main__":
    main()
