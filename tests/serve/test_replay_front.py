"""Replay through the server front over real sockets: a repeated request gets the same bytes, counted,
journaled and logged, in request order, however the requests are cut into reads; and another answer
once its answer may have changed (a reset, the simulator taking the interaction over, another
session, the cassette edited on disk)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path

import pytest

from omproxy.cassette import entry as cassette
from omproxy.cassette import yamlformat
from omproxy.config.options import Config, Mode
from omproxy.exchange import Outcome
from omproxy.model import Request, Response, headers_of
from omproxy.serve.http import front as server
from omproxy.serve.runtime import build_runtime
from tests.serve.test_server import read_answer
from tests.support import BASE, loop_turn

IID = "01QG0Q2S5S50G000"
GET = f"{BASE}/customer-support/{IID}/get"
FORM = "application/x-www-form-urlencoded"


def answer(state: str) -> bytes:
    return json.dumps({"statusCode": 0, "interactionProperties": {
        "interactionId": IID, "interactionState": state, "interactionQueue": "Inbound",
        "interactionUserData": [{"key": "ExternalId", "type": "str", "value": "x1"}]}}).encode()


@pytest.fixture
def two_gets(tmp_path: Path) -> Path:
    """A cassette with the same `get` recorded twice: Queued, then Processing."""
    path = tmp_path / "gets.yaml"
    req = Request("POST", GET, "", headers_of({"Content-Type": FORM}), b"")
    with path.open("wb") as f:
        f.write(yamlformat.HEADER.encode())
        for state in ("Queued", "Processing"):
            resp = Response(200, answer(state), headers_of({"Content-Type": "application/json;charset=utf-8"}))
            f.write(yamlformat.dump_entry(cassette.to_entry(req, resp, 1.0)))
    return path


@pytest.fixture
async def replaying(two_gets: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="omproxy")  # the access lines are written at INFO
    listeners: list[server.Listener] = []
    lines: list[tuple[int, float, str, float, str]] = []

    async def make(**overrides) -> server.Listener:
        config = Config(port=0, cassette=str(two_gets), **overrides)
        rt = build_runtime(config, Mode.REPLAY, access=lambda *line: lines.append(line))
        listener = await server.start(rt, config)
        listeners.append(listener)
        return listener

    make.lines = lines  # type: ignore[attr-defined]
    yield make
    for listener in listeners:
        await listener.close()


async def kept(listener: server.Listener) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection on which the `get` was answered three times: Queued, Processing, Processing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(get() + get() + get())
    assert [state_of((await read_answer(reader))[2]) for _ in range(3)] == ["Queued", "Processing", "Processing"]
    return reader, writer


def get(extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST " + GET.encode() + b" HTTP/" + version + b"\r\nHost: x\r\nContent-Type: " + FORM.encode() +
            b"\r\nContent-Length: 0\r\n" + extra + b"\r\n")


def state_of(body: bytes) -> str:
    return json.loads(body)["interactionProperties"]["interactionState"]


async def test_a_repeated_answer_is_the_same_bytes_counted_journaled_and_logged(replaying) -> None:
    listener = await replaying()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    heads, bodies = [], []
    for _ in range(5):
        writer.write(get())
        status, headers, body = await read_answer(reader)
        headers.pop("date")
        heads.append((status, headers))
        bodies.append(body)
    writer.close()
    assert [state_of(b) for b in bodies] == ["Queued", "Processing", "Processing", "Processing", "Processing"]
    assert heads[1] == heads[2] == heads[3] == heads[4] and bodies[1] == bodies[2] == bodies[3] == bodies[4]
    assert heads[4][1]["x-omproxy-source"] == "cassette"
    journal = listener.front.rt.journal
    listener.front.rt.pipeline.flush()
    assert journal.counts[Outcome.FROM_CASSETTE] == 5
    assert [e.matched.index for e in journal.entries] == [0, 1, 1, 1, 1]  # type: ignore[union-attr]
    lines = replaying.lines
    assert len(lines) == 5 and lines[3][2] == lines[2][2] != lines[1][2] and lines[4][4] == lines[1][4]
    assert "#1 (repeat)]" in lines[4][2] and "get@customer-support" in lines[4][2]


async def test_pipelined_answers_keep_request_order(replaying) -> None:
    listener = await replaying()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(get() + get() + get())
    assert [state_of((await read_answer(reader))[2]) for _ in range(3)] == ["Queued", "Processing", "Processing"]
    writer.write(get() + b"GET /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + get() + get())
    answers = [await read_answer(reader) for _ in range(4)]
    assert [a[2] for a in answers][0] == answers[2][2] == answers[3][2]
    assert json.loads(answers[1][2])["status"] == "ok"  # the health check in its place, between them
    writer.close()


HEALTH = b"GET /_omproxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
KINDS = {  # what a client may send once the get was answered twice, and what it must be answered
    "the get": (get(), "Processing"),
    "with a request id": (get(b"X-Request-Id: 7\r\n"), "Processing"),
    "its body chunked": (get(b"Transfer-Encoding: chunked\r\n").replace(b"Content-Length: 0\r\n", b"") + b"0\r\n\r\n",
                         "Processing"),
    "a health check": (HEALTH, "ok"),
    "a body that is the get's bytes": (HEALTH.replace(b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n"
                                                              % len(get())) + get(), "ok"),
    "a head that ends with the get's bytes": (b"GET /_omproxy/health HTTP/1.1\r\nX-Partial: " + get(), "ok"),
}


@pytest.mark.parametrize("seed", range(30))
async def test_a_stream_of_requests_cut_anywhere_is_answered_request_by_request(replaying, seed) -> None:
    """Requests one after another on a connection, written in pieces cut between them and at random
    places (the server reads them in those pieces or fewer): each is answered as itself, in order."""
    rnd = random.Random(seed)
    listener = await replaying()
    reader, writer = await kept(listener)
    sent = [rnd.choice(list(KINDS)) for _ in range(20)]
    stream = b"".join(KINDS[kind][0] for kind in sent)
    cuts = sorted(rnd.sample(range(1, len(stream)), 12))
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        writer.write(stream[start:end])
        await writer.drain()
        await loop_turn()  # the server reads it before the next piece comes
    got = []
    for _ in sent:
        status, _, body = await read_answer(reader)
        got.append((status, json.loads(body).get("status") or state_of(body)))
    writer.close()
    assert got == [(200, KINDS[kind][1]) for kind in sent], sent


async def test_a_reset_rewinds_the_answer(replaying) -> None:
    listener = await replaying()
    reader, writer = await kept(listener)
    writer.write(b"POST /_omproxy/reset HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Omproxy-Admin: 1\r\nContent-Length: 0\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    writer.write(get())
    assert state_of((await read_answer(reader))[2]) == "Queued"  # from the first recording again
    writer.close()


async def test_the_simulator_taking_the_interaction_over_answers_for_it(replaying) -> None:
    listener = await replaying()
    reader, writer = await kept(listener)
    update = b"change%5BOrderNumber%5D=ABC1"  # never recorded: the simulator performs it, and owns the id
    writer.write(b"POST " + GET.replace("/get", "/update").encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " +
                 FORM.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(update) + update)
    assert json.loads((await read_answer(reader))[2])["statusCode"] == 0
    writer.write(get())
    _, headers, body = await read_answer(reader)
    assert headers["x-omproxy-source"] == "simulator"
    assert {"key": "OrderNumber", "type": "str", "value": "ABC1"} in \
        json.loads(body)["interactionProperties"]["interactionUserData"]
    writer.close()


async def test_another_session_and_other_framings_are_served_as_themselves(replaying) -> None:
    listener = await replaying()
    reader, writer = await kept(listener)
    writer.write(get(b"X-Omproxy-Session: other\r\n"))  # its own positions: the first recording
    assert state_of((await read_answer(reader))[2]) == "Queued"
    head = get().replace(b"POST", b"HEAD", 1)
    writer.write(head + get())  # HEAD: decided (GMS takes POST), the head alone; then the next answer whole
    status, headers = await read_head(reader)
    assert status == 405 and int(headers["content-length"]) > 0
    assert state_of((await read_answer(reader))[2]) == "Processing"
    writer.write(get(b"Connection: close\r\n"))
    _, headers, body = await read_answer(reader)
    assert headers["connection"] == "close" and state_of(body) == "Processing"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # and closed
    writer.close()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:]
                                                                           if line)}


async def test_an_answer_changed_on_disk_while_replaying_is_a_503_that_says_so(replaying, two_gets) -> None:
    listener = await replaying()
    two_gets.write_bytes(two_gets.read_bytes().replace(b"Queued", b"Stopped"))  # edited while replaying
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(get())
    status, headers, body = await read_answer(reader)
    writer.close()
    assert status == 503 and headers["x-omproxy-error"] == "cassette-changed"
    assert "gets.yaml:" in body.decode() and "restart omproxy" in body.decode()
    assert b"Stopped" not in body  # never served
