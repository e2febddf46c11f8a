"""The server front over real sockets: idle and slow clients are closed, connections are bounded with
a 503, and what aiohttp cannot parse is answered as GMS-shaped JSON."""

from __future__ import annotations

import asyncio
import json

import pytest

from omproxy import server
from omproxy.app import build_app
from omproxy.config import Config, Mode
from tests.support import BASE, send_raw


@pytest.fixture
async def listening():
    listeners = []

    async def make(**overrides) -> server.Listener:
        config = Config(port=0, **overrides)
        listener = await server.start(build_app(config, Mode.SIMULATE), config)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        await listener.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (its EOF, awaited; no polling)."""
    try:
        while await asyncio.wait_for(reader.read(65536), seconds):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


async def test_a_silent_connection_is_closed_after_idle_timeout(listening) -> None:
    listener = await listening(idle_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    assert await closed_within(reader, 5)
    writer.close()


async def test_a_keep_alive_connection_is_closed_after_idle_timeout(listening) -> None:
    listener = await listening(idle_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /_omproxy/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    assert await closed_within(reader, 5)
    writer.close()


async def test_a_slowloris_head_is_cut_while_others_are_served(listening) -> None:
    listener = await listening(header_timeout=1.0, idle_timeout=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"POST /genesys/2/openmedia/s HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:  # one header byte every 0.2 s, for ever
        while not writer.is_closing():
            writer.write(b"X")
            await asyncio.sleep(0.2)

    sender = asyncio.create_task(trickle())
    status, _ = await send_raw(listener.port, b"GET /_omproxy/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200  # others are served meanwhile
    assert await closed_within(reader, 10)
    sender.cancel()
    writer.close()
    assert listener.guards.closed_slow == 1


async def test_connections_beyond_the_limit_get_a_503_not_a_hang(listening) -> None:
    listener = await listening(max_connections=2, idle_timeout=60)
    held = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(2)]
    status, body = await send_raw(listener.port, b"GET /_omproxy/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 503 and json.loads(body)["statusCode"] == 1
    for reader, writer in held:
        writer.close()
        await closed_within(reader, 5)
    status, _ = await send_raw(listener.port, b"GET /_omproxy/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200


@pytest.mark.parametrize("raw", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET /a\nb HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    b"POST " + BASE.encode() + b"/s HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
], ids=["garbage", "newline-in-target", "oversize-header", "bad-length"])
async def test_what_aiohttp_cannot_parse_is_answered_as_gms_json(listening, raw: bytes) -> None:
    listener = await listening()
    status, body = await send_raw(listener.port, raw)
    assert 400 <= status < 500
    assert json.loads(body)["statusCode"] == 2


async def test_a_request_in_flight_is_not_cut_by_the_header_timeout(aiohttp_server) -> None:
    from aiohttp import web

    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"statusCode": 0})

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", slow)
    upstream = await aiohttp_server(upstream_app)
    config = Config(port=0, header_timeout=0.5, idle_timeout=0.5, upstream=str(upstream.make_url("")).rstrip("/"))
    listener = await server.start(build_app(config, Mode.PASSTHROUGH), config)
    try:
        pending = asyncio.create_task(send_raw(listener.port, b"POST /slow HTTP/1.1\r\nHost: x\r\n"
                                              b"Content-Length: 0\r\nConnection: close\r\n\r\n"))
        done, _ = await asyncio.wait({pending}, timeout=1.5)  # well past both timeouts: still in flight
        assert not done
        release.set()
        assert (await pending)[0] == 200
    finally:
        await listener.close()
