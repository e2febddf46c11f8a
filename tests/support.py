"""Shared constants and helpers of the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from omproxy.simulator import Simulator

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BASE = "/genesys/2/openmedia"


def fixed_clock() -> datetime:
    return datetime(2026, 11, 28, 10, 15, 2, tzinfo=UTC)


def deterministic_simulator(sections=None, prefix: str = "01QG0Q2S5S50G") -> Simulator:
    n = itertools.count(0)
    return Simulator(sections, clock=fixed_clock, new_id=lambda: f"{prefix}{next(n):03d}")


class FakeGms:
    """A real aiohttp app standing in for GMS: it records what reached it, and answers per path."""

    def __init__(self) -> None:
        import asyncio

        from aiohttp import web

        self.received: list[dict] = []
        self.connections = 0
        self.never = asyncio.Event()  # a slow upstream waits on this; nobody sets it
        self.holding = asyncio.Event()  # set when a /hold request has arrived
        self.release = asyncio.Event()  # set by a test to let /hold answer
        self.simulator = deterministic_simulator(prefix="FAKEGMS000000")
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request):
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
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for part in (b'{"statusCode":', b"0,", b'"chunked":true}'):
                await resp.write(part)
            await resp.write_eof()
            return resp
        if path.startswith("/genesys/2/openmedia/"):
            answer = await self.simulator.handle(Request(request.method, request.raw_path.split("?")[0], "",
                                                   headers_of(request.headers), body))
            return web.Response(status=answer.status, body=answer.body, headers={
                "Content-Type": "application/json", "X-Gms-Node": "gms1"})
        return web.json_response({"statusCode": 0, "echo": True})
