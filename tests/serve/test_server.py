"""The server front over real sockets: idle and slow clients are closed, connections are bounded with
a 503, and what aiohttp cannot parse is answered as GMS-shaped JSON."""

from __future__ import annotations

import asyncio
import json

import pytest

from omproxy.config.options import Config, Mode
from omproxy.serve.http import front as server
from omproxy.serve.runtime import build_runtime
from tests.support import BASE, send_raw

HEALTH_CLOSE = b"GET /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.fixture
async def listening():
    listeners = []

    async def make(**overrides) -> server.Listener:
        config = Config(port=0, **overrides)
        listener = await server.start(build_runtime(config, Mode.SIMULATE), config)
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


async def test_a_silent_connection_is_closed_after_header_timeout(listening) -> None:
    listener = await listening(header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    assert await closed_within(reader, 5)
    writer.close()


async def test_a_keep_alive_connection_is_closed_after_idle_timeout(listening) -> None:
    listener = await listening(idle_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
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
    status, _ = await send_raw(listener.port, HEALTH_CLOSE)
    assert status == 200  # others are served meanwhile
    assert await closed_within(reader, 10)
    sender.cancel()
    writer.close()
    assert listener.front.closed_slow == 1


async def test_connections_beyond_the_limit_get_a_503_not_a_hang(listening) -> None:
    listener = await listening(max_connections=2, idle_timeout=60)
    held = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(2)]
    status, body = await send_raw(listener.port, b"GET /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 503 and json.loads(body)["statusCode"] == 1
    for reader, writer in held:
        writer.close()
        await closed_within(reader, 5)
    status, _ = await send_raw(listener.port, HEALTH_CLOSE)
    assert status == 200


@pytest.mark.parametrize("raw", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET /a\nb HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    b"POST " + BASE.encode() + b"/s HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
], ids=["garbage", "newline-in-target", "oversize-header", "bad-length"])
async def test_what_aiohttp_cannot_parse_is_a_400_and_the_connection_closed(listening, raw: bytes) -> None:
    """aiohttp answers what is not HTTP itself (its own text: no GMS client sends it), then closes."""
    listener = await listening()
    status, body = await send_raw(listener.port, raw)  # read to the end: closed
    assert 400 <= status < 500
    status, _ = await send_raw(listener.port, HEALTH_CLOSE)
    assert status == 200  # and the next client is served


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
    listener = await server.start(build_runtime(config, Mode.PASSTHROUGH), config)
    try:
        pending = asyncio.create_task(send_raw(listener.port, b"POST /slow HTTP/1.1\r\nHost: x\r\n"
                                              b"Content-Length: 0\r\nConnection: close\r\n\r\n"))
        done, _ = await asyncio.wait({pending}, timeout=1.5)  # well past both timeouts: still in flight
        assert not done
        release.set()
        assert (await pending)[0] == 200
    finally:
        await listener.close()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer off a keep-alive connection (Content-Length framed)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return int(lines[0].split()[1]), headers, body


CREATE = b"externalId=x1"


def post(path: str, body: bytes = b"", extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


async def test_keep_alive_and_pipelining_answer_in_request_order(listening) -> None:
    listener = await listening()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(post(f"{BASE}/s", CREATE))
    status, headers, body = await read_answer(reader)
    iid = json.loads(body)["interactionId"]
    assert status == 200 and headers["x-omproxy-source"] == "simulator" and "date" in headers
    # three requests in one write: the answers come back in that order, on the same connection
    writer.write(post(f"{BASE}/s/{iid}/update", b"change%5BA%5D=1") + post(f"{BASE}/s/{iid}/get")
                 + post(f"{BASE}/s/{iid}/stop"))
    answers = [await read_answer(reader) for _ in range(3)]
    assert [json.loads(b)["statusCode"] for _, _, b in answers] == [0, 0, 0]
    assert {"key": "A", "type": "str", "value": "1"} in \
        json.loads(answers[1][2])["interactionProperties"]["interactionUserData"]
    writer.close()


async def test_the_journal_pipelined_behind_an_exchange_shows_it(listening) -> None:
    listener = await listening()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(post(f"{BASE}/s", CREATE) + b"GET /_omproxy/journal HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    status, _, body = await read_answer(reader)
    writer.close()
    assert status == 200 and [e["operation"] for e in json.loads(body)["entries"]] == ["create"]


async def test_a_chunked_body_and_expect_100_continue(listening) -> None:
    listener = await listening()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(f"POST {BASE}/s HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode())
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"5\r\nexter\r\n8\r\nnalId=x1\r\n0\r\n\r\n")
    status, _, body = await read_answer(reader)
    assert status == 200 and json.loads(body)["statusCode"] == 0
    writer.close()


async def test_bodies_beyond_the_read_limits_pass_both_ways_and_the_connection_goes_on(aiohttp_server) -> None:
    """Megabytes each way make aiohttp's parsers pause reading (on the client's connection and on the
    upstream's) until the body is read: each must resume, and the keep-alive connection then serve on."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/octet-stream")

    upstream_app = web.Application(client_max_size=8 << 20)
    upstream_app.router.add_route("*", "/{tail:.*}", echo)
    upstream = await aiohttp_server(upstream_app)
    config = Config(port=0, max_body=8 << 20, max_response_body=8 << 20,
                    upstream=str(upstream.make_url("")).rstrip("/"))
    listener = await server.start(build_runtime(config, Mode.PASSTHROUGH), config)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        body = bytes(range(256)) * (12 << 10)  # 3 MiB
        writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 1 << 16):
            chunk = body[start:start + (1 << 16)]
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        status, _, echoed = await read_answer(reader)
        assert status == 200 and echoed == body
        writer.write(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        status, _, echoed = await read_answer(reader)
        assert status == 200 and echoed == b"ok"
        writer.close()
    finally:
        await listener.close()


async def test_http_1_0_closes_unless_asked_to_keep_alive(listening) -> None:
    listener = await listening()
    status, body = await send_raw(listener.port, b"GET /_omproxy/health HTTP/1.0\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"  # read to EOF: the server closed
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /_omproxy/health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = await read_answer(reader)
    assert status == 200 and headers["connection"].lower() == "keep-alive"
    writer.write(b"GET /_omproxy/health HTTP/1.0\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    writer.close()


async def test_413_400_and_not_an_open_proxy_close_the_connection(listening) -> None:
    listener = await listening(max_body=100)
    status, body = await send_raw(listener.port, post(f"{BASE}/s", b"a=" + b"x" * 200))
    assert status == 413 and json.loads(body)["statusCode"] == 2
    status, _ = await send_raw(listener.port, b"GET http://elsewhere.example/x HTTP/1.1\r\nHost: x\r\n"
                                              b"Connection: close\r\n\r\n")
    assert status == 400
    status, _ = await send_raw(listener.port, b"CONNECT elsewhere.example:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400
    status, _ = await send_raw(listener.port, post(f"{BASE}/s", b"\x1f\x8b\x08\x00junk",
                                                   b"Content-Encoding: gzip\r\nConnection: close\r\n"))
    assert status == 400


async def test_head_gets_the_head_only(listening) -> None:
    listener = await listening()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"HEAD /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head
    writer.write(b"GET /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await read_answer(reader))[0] == 200  # no body was sent for HEAD: the next answer is whole
    writer.close()


async def test_a_stop_finishes_the_request_in_flight_then_closes(aiohttp_server) -> None:
    from aiohttp import web

    release, arrived = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"statusCode": 0})

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", slow)
    upstream = await aiohttp_server(upstream_app)
    config = Config(port=0, upstream=str(upstream.make_url("")).rstrip("/"))
    listener = await server.start(build_runtime(config, Mode.PASSTHROUGH), config)
    pending = asyncio.create_task(send_raw(listener.port, post("/slow")))
    await asyncio.wait_for(arrived.wait(), 10)
    stopping = asyncio.create_task(listener.close())
    done, _ = await asyncio.wait({stopping}, timeout=0.3)
    assert not done  # waiting for the request in flight
    release.set()
    assert (await pending)[0] == 200
    await asyncio.wait_for(stopping, 10)


async def test_omproxys_answers_name_no_library_or_version(listening) -> None:
    listener = await listening()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    _, headers, _ = await read_answer(reader)
    writer.close()
    assert headers["server"] == "omproxy"  # aiohttp would send "Python/3.11 aiohttp/3.14.x"


async def test_the_date_header_is_now(listening) -> None:
    from email.utils import parsedate_to_datetime

    listener = await listening()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    _, headers, _ = await read_answer(reader)
    writer.close()
    import time

    assert abs(parsedate_to_datetime(headers["date"]).timestamp() - time.time()) < 2


async def test_7_a_body_that_never_comes_frees_its_slot(listening) -> None:
    """Reliability finding 7: a connection reading its body was never timed out; 100 of them (a head with
    Content-Length, then a byte now and then; or Expect: 100-continue and no body) took every slot."""
    async def hold(port: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        held = []
        for n in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            expect = b"Expect: 100-continue\r\n" if n == 0 else b""
            writer.write(b"POST /genesys/2/openmedia/s HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-"
                         b"form-urlencoded\r\n" + expect + b"Content-Length: 100000\r\n\r\n"
                         + (b"" if n == 0 else b"e"))
            await writer.drain()
            held.append((reader, writer))
        return held

    waiting = await listening(max_connections=3, body_timeout=30)
    held = await hold(waiting.port)
    status, _ = await send_raw(waiting.port, HEALTH_CLOSE)
    assert status == 503  # every slot held by a body that does not come
    for _, writer in held:
        writer.close()
    listener = await listening(max_connections=3, body_timeout=1)
    for reader, writer in await hold(listener.port):  # each closed by the server at body_timeout (EOF)
        rest = await asyncio.wait_for(reader.read(), 10)
        assert b"200 OK" not in rest
        writer.close()
    status, _ = await send_raw(listener.port, HEALTH_CLOSE)
    assert status == 200
    assert listener.front.closed_slow == 3


async def test_7_inspector_streams_hold_no_slot_and_are_bounded(listening) -> None:
    listener = await listening(max_connections=2)
    streams = []
    for _ in range(server.MAX_STREAMS):
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"GET /_omproxy/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
        streams.append(writer)
    status, _ = await send_raw(listener.port, HEALTH_CLOSE)
    assert status == 200  # 16 pages open, max_connections 2: requests are still served
    status, body = await send_raw(listener.port, b"GET /_omproxy/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                 b"Connection: close\r\n\r\n")
    assert status == 503 and b"inspector pages are open" in body
    for writer in streams:
        writer.close()


async def test_17_a_request_pipelined_behind_an_upgrade_is_never_left_waiting(listening) -> None:
    """Reliability finding 17: the request behind an Upgrade one was never answered, the client waited
    for idle_timeout. omproxy upgrades nothing: it answers the first and closes, so the client resends."""
    listener = await listening(idle_timeout=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /genesys/2/openmedia/s/ID/get HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                 b"Upgrade: websocket\r\n\r\nPOST /genesys/2/openmedia/s HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 12\r\n\r\nexternalId=a")
    await writer.drain()
    answered = await asyncio.wait_for(reader.read(), 10)  # to EOF: closed after the first answer
    assert answered.startswith(b"HTTP/1.1 ") and b"Connection: close" in answered
    writer.close()
