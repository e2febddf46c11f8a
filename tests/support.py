"""Shared constants and helpers of the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omproxy.gms.simulator import Simulator

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BASE = "/genesys/2/openmedia"


async def loop_turn() -> None:
    """Return once every callback the event loop had ready when this was called has run (the loop
    runs them in the order they were scheduled): one turn, no waiting on time."""
    import asyncio

    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


def fixed_clock() -> datetime:
    return datetime(2026, 11, 28, 10, 15, 2, tzinfo=UTC)


def deterministic_simulator(sections: dict[str, dict[str, Any]] | None = None,
                            prefix: str = "01QG0Q2S5S50G") -> Simulator:
    n = itertools.count(0)
    return Simulator(sections, clock=fixed_clock, new_id=lambda: f"{prefix}{next(n):03d}")


class FakeGms:
    """A real aiohttp app standing in for GMS: it records what reached it, and answers per path."""

    def __init__(self) -> None:
        import asyncio

        from aiohttp import web

        self.received: list[dict[str, Any]] = []
        self.connections = 0
        self.never = asyncio.Event()  # a slow upstream waits on this; nobody sets it
        self.holding = asyncio.Event()  # set when a /hold request has arrived
        self.release = asyncio.Event()  # set by a test to let /hold answer
        self.simulator = deterministic_simulator(prefix="FAKEGMS000000")
        self.url = ""  # its base URL, once served (the `gms` fixture)
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: Any) -> Any:
        import gzip
        import zlib

        from aiohttp import web

        from omproxy.model import Request, headers_of

        body = await request.read()
        self.received.append({"method": request.method, "raw_path": request.raw_path,
                              "headers": list(request.headers.items()), "body": body})
        path = request.path
        if path == "/slow":
            await self.never.wait()
        if path == "/hold":
            self.holding.set()
            await self.release.wait()
        if path == "/gzip":
            return web.Response(body=gzip.compress(b'{"statusCode":0,"zipped":true}'),
                                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        if path == "/deflate":
            return web.Response(body=zlib.compress(b'{"statusCode":0,"deflated":true}'),
                                headers={"Content-Encoding": "deflate", "Content-Type": "application/json"})
        if path == "/cookies":
            resp = web.Response(text="{}", content_type="application/json")
            resp.headers.add("Set-Cookie", "a=1; Path=/")
            resp.headers.add("Set-Cookie", "b=2; Path=/")
            return resp
        if path == "/chunked":
            streamed = web.StreamResponse(headers={"Content-Type": "application/json"})
            streamed.enable_chunked_encoding()
            await streamed.prepare(request)
            for part in (b'{"statusCode":', b"0,", b'"chunked":true}'):
                await streamed.write(part)
            await streamed.write_eof()
            return streamed
        if path.startswith("/genesys/2/openmedia/"):
            answer = await self.simulator.handle(Request(request.method, request.raw_path.split("?")[0], "",
                                                   headers_of(request.headers), body))
            return web.Response(status=answer.status, body=answer.body, headers={
                "Content-Type": "application/json", "X-Gms-Node": "gms1"})
        return web.json_response({"statusCode": 0, "echo": True})


class RawUpstream:
    """A GMS stand-in on a raw socket, for answers aiohttp would never send: bytes that are not UTF-8
    in a header, a corrupt gzip body, a body far over any limit. `answers` maps a path's last segment
    to the raw response bytes; `heads` keeps each request head it received."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.heads: list[bytes] = []

    async def start(self) -> str:
        import asyncio

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                path = head.split(b" ")[1].decode("latin-1").split("?")[0]
                writer.write(self.answers[path.rstrip("/").rsplit("/", 1)[-1]])
                await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def raw_answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    head = [b"HTTP/1.1 " + status, b"Content-Length: %d" % len(body), b"Connection: close", *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def send_raw(port: int, raw: bytes) -> tuple[int, bytes]:
    """Send raw bytes to 127.0.0.1:port (no HTTP client normalising them); the status and body back."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class ThreadedApp:
    """A real aiohttp app on its own thread and event loop, for tests whose own thread blocks (a
    subprocess, a sync client)."""

    def __init__(self, app: Any) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", 0).start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Redis:
    """A real redis-server (Debian's package) on a unix socket of its own, started and stopped by a test."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.proc: Any = None  # a subprocess.Popen

    def start(self) -> None:
        import shutil
        import subprocess
        import threading

        server = shutil.which("redis-server")
        assert server is not None
        self.proc = subprocess.Popen([server, "--port", "0", "--unixsocket", str(self.socket), "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        watchdog = threading.Timer(30, self.proc.kill)  # a server that never says it is ready is stopped
        watchdog.start()
        try:
            for line in self.proc.stdout:  # its own "ready" line, not a guess at how long it takes
                if "ready to accept connections" in line.lower():
                    return
        finally:
            watchdog.cancel()
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)  # it removes its socket file on the way out
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None


HAR_SCHEMA = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "field" / "har" / "har-schema"


def har_problems(document: Any) -> list[str]:
    """What the HAR 1.2 JSON schema (ahmadnassri/har-schema, draft-06, formats checked) says is
    wrong with a HAR document: nothing, for every HAR omproxy writes."""
    import json

    from jsonschema import Draft6Validator, FormatChecker
    from referencing import Registry, Resource

    schemas = [json.loads(p.read_text()) for p in sorted(HAR_SCHEMA.glob("*.json"))]
    registry: Any = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    root = next(s for s in schemas if s["$id"] == "har.json#")
    validator = Draft6Validator(root, registry=registry, format_checker=FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
