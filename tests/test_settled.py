"""Settled answers over real sockets (the server front): a repeated request whose answer can no longer
change is answered from bytes without being decided again — and exactly as if it had been: the same
bytes, counted, journaled and logged, in request order; and never once its answer may have changed
(a reset, the simulator taking the interaction over, another session)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from pathlib import Path

import pytest

from omproxy import cassette, server, yamlformat
from omproxy.app import build_runtime
from omproxy.config import Config, Mode
from omproxy.exchange import Outcome
from omproxy.model import Request, Response, headers_of
from tests.support import BASE, loop_turn
from tests.test_server import read_answer

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
    """A connection on which the `get` was answered three times: Queued, Processing (settled), Processing
    (settled again: kept, so the next one is answered as settled, if it still is)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(get() + get() + get())
    assert [state_of((await read_answer(reader))[2]) for _ in range(3)] == ["Queued", "Processing", "Processing"]
    assert listener.front.settled.known
    return reader, writer


def get(extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST " + GET.encode() + b" HTTP/" + version + b"\r\nHost: x\r\nContent-Type: " + FORM.encode() +
            b"\r\nContent-Length: 0\r\n" + extra + b"\r\n")


def state_of(body: bytes) -> str:
    return json.loads(body)["interactionProperties"]["interactionState"]


async def test_a_settled_answer_is_the_same_bytes_counted_journaled_and_logged(replaying) -> None:
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
    assert journal.counts[Outcome.FROM_CASSETTE] == 5
    # settled from the second, kept when it settled again (the third): the last two were answered as
    # settled, not decided again, but journaled like any other
    assert [e.again is not None for e in journal.entries] == [False, False, False, True, True]
    assert [e.matched.index for e in journal.entries] == [0, 1, 1, 1, 1]  # type: ignore[union-attr]
    lines = replaying.lines
    assert len(lines) == 5 and lines[3][2] == lines[1][2] and lines[4][4] == lines[1][4]
    assert "#1]" in lines[4][2] and "get@customer-support" in lines[4][2]
    # each request came as one read of exactly its bytes: the fifth was known by those bytes, unparsed
    assert list(listener.front.settled.raw) == [(get(), "127.0.0.1")]


async def one_by_one(listener: server.Listener, times: int = 5) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection on which the `get` was sent `times` times, each in a write of its own, after the
    answer to the one before: from the fifth on, answered as settled from its bytes, before parsing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    states = []
    for _ in range(times):
        writer.write(get())
        states.append(state_of((await read_answer(reader))[2]))
    assert states == ["Queued"] + ["Processing"] * (times - 1)
    return reader, writer


async def test_a_reset_unsettles_an_answer_known_by_its_bytes(replaying) -> None:
    listener = await replaying()
    reader, writer = await one_by_one(listener)
    assert listener.front.settled.raw
    writer.write(b"POST /_omproxy/reset HTTP/1.1\r\nHost: x\r\nX-Omproxy-Admin: 1\r\nContent-Length: 0\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    writer.write(get())
    assert state_of((await read_answer(reader))[2]) == "Queued"  # played from the start again
    writer.close()
    assert listener.front.rt.journal.counts[Outcome.FROM_CASSETTE] == 6


async def test_a_settled_requests_bytes_that_end_another_request_are_that_request(replaying) -> None:
    """The same bytes after part of a request are its continuation, never the settled request."""
    listener = await replaying()
    reader, writer = await one_by_one(listener)
    # a settled get and part of the next request's head; then the settled get's bytes once more:
    # read alone or not, they are the rest of that head (an X-Partial value, then its other lines)
    writer.write(get() + b"POST " + GET.encode() + b" HTTP/1.1\r\nX-Partial: ")
    assert state_of((await read_answer(reader))[2]) == "Processing"
    writer.write(get())
    status, _, body = await read_answer(reader)
    writer.close()
    assert status == 200 and state_of(body) == "Processing"
    last = listener.front.rt.journal.entries[-1]  # the cut request (settled: the X-Partial line decides nothing)
    assert last.request.headers["X-Partial"].startswith("POST ")


async def test_after_a_request_whose_body_came_alone_requests_are_known_by_their_bytes_again(replaying) -> None:
    listener = await replaying()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    # a head, then (once told to continue) its body: two reads, the parser between them mid-request
    writer.write(get(b"Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: 3"))
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"a=1")
    assert (await read_answer(reader))[0] == 200
    for _ in range(5):  # then the get, a read at a time: settled, kept, known by its bytes
        writer.write(get())
        assert (await read_answer(reader))[0] == 200
    writer.close()
    assert list(listener.front.settled.raw) == [(get(), "127.0.0.1")]


@pytest.mark.parametrize("verbose", [0, 1])
async def test_requests_that_differ_by_a_request_id_are_settled_and_shown_as_themselves(replaying, verbose) -> None:
    listener = await replaying(verbose=verbose)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    states = []
    for n in range(6):  # a request id: another header line, which decides nothing
        writer.write(get(f"X-Request-Id: {n}\r\n".encode()))
        states.append(state_of((await read_answer(reader))[2]))
    writer.close()
    assert states == ["Queued"] + ["Processing"] * 5
    entries = listener.front.rt.journal.entries
    assert [e.again is not None for e in entries] == [False, False, False, True, True, True]
    assert [e.request.headers["X-Request-Id"] for e in entries] == [str(n) for n in range(6)]
    assert not listener.front.settled.raw  # never the same bytes twice: never known by them
    lines = replaying.lines
    assert len(lines) == 6 and all(line[2] == lines[1][2] for line in lines[1:])
    if verbose:  # a verbose line shows the request's headers: each its own
        assert [f'"x-request-id": "{n}"' in line[4].lower() for n, line in enumerate(lines)] == [True] * 6


async def test_another_client_sending_its_headers_in_another_order_is_repeated_as_itself(replaying) -> None:
    """Two load generators (or two runs of one) that order their header lines differently: the second
    is answered as settled, shown with its own lines, and soon known by its own bytes."""
    listener = await replaying()
    _, first = await one_by_one(listener)  # settled and known by its bytes
    first.close()
    other = (b"POST " + GET.encode() + b" HTTP/1.1\r\nContent-Type: " + FORM.encode() +
             b"\r\nContent-Length: 0\r\nHost: x\r\n\r\n")  # the same lines, Host last
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    for _ in range(3):
        writer.write(other)
        assert state_of((await read_answer(reader))[2]) == "Processing"
    writer.close()
    entries = list(listener.front.rt.journal.entries)[-3:]
    assert all(e.again is not None for e in entries)
    assert [list(e.request.headers)[-1] for e in entries] == ["Host"] * 3  # each shown as it came
    assert (other, "127.0.0.1") in listener.front.settled.raw


async def test_a_header_that_decides_the_answer_is_never_answered_by_anothers_settled_one(replaying) -> None:
    listener = await replaying()
    reader, writer = await kept(listener)
    writer.write(get().replace(FORM.encode(), b"application/json"))  # its body would read otherwise
    _, headers, _ = await read_answer(reader)
    writer.close()
    # decided again (and, its body being empty, matched to the same recording all the same)
    assert headers["x-omproxy-source"] == "cassette" and listener.front.rt.journal.entries[-1].again is None


async def test_pipelined_settled_answers_keep_request_order(replaying) -> None:
    listener = await replaying()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(get() + get() + get())  # Queued, then Processing: settled, then kept
    assert [state_of((await read_answer(reader))[2]) for _ in range(3)] == ["Queued", "Processing", "Processing"]
    writer.write(get() + b"GET /_omproxy/health HTTP/1.1\r\nHost: x\r\n\r\n" + get() + get())
    answers = [await read_answer(reader) for _ in range(4)]
    assert [a[2] for a in answers][0] == answers[2][2] == answers[3][2]
    assert json.loads(answers[1][2])["status"] == "ok"  # the health check in its place, between them
    writer.close()


HEALTH = b"GET /_omproxy/health HTTP/1.1\r\nHost: x\r\n\r\n"
KINDS = {  # what a client may send once the get is settled, and what it must be answered
    "the settled get": (get(), "Processing"),
    "with a request id": (get(b"X-Request-Id: 7\r\n"), "Processing"),
    "its body chunked": (get(b"Transfer-Encoding: chunked\r\n").replace(b"Content-Length: 0\r\n", b"") + b"0\r\n\r\n",
                         "Processing"),
    "a health check": (HEALTH, "ok"),
    "a body that is the settled get's bytes": (HEALTH.replace(b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n"
                                                              % len(get())) + get(), "ok"),
    "a head that ends with the settled get's bytes": (b"GET /_omproxy/health HTTP/1.1\r\nX-Partial: " + get(), "ok"),
}


@pytest.mark.parametrize("seed", range(30))
async def test_a_stream_of_requests_cut_anywhere_is_answered_request_by_request(replaying, seed) -> None:
    """Requests, settled and not, one after another on a connection, written in pieces cut between
    them and at random places (the server reads them in those pieces or fewer): each is answered as
    itself, in order."""
    rnd = random.Random(seed)
    listener = await replaying()
    reader, writer = await one_by_one(listener)
    kinds = [k for k in KINDS if seed % 2 or k != "its body chunked"]  # chunked: not known by bytes again
    sent = [rnd.choice(kinds) for _ in range(20)]
    stream = b"".join(KINDS[kind][0] for kind in sent)
    starts = list(itertools.accumulate((len(KINDS[kind][0]) for kind in sent), initial=0))
    inner = [start + KINDS[kind][0].find(get(), 1) for start, kind in zip(starts, sent, strict=False)
             if KINDS[kind][0].find(get(), 1) > 0]  # where a request's last bytes are the settled get's
    # mostly a request a read (after two in one, the server no longer knows requests by their bytes on
    # that connection; one seed in three sends more together), some cut before their last bytes are the
    # settled get's, some anywhere
    apart = 0.95 if seed % 3 else 0.6
    cuts = sorted({*(cut for cut in starts[1:-1] if rnd.random() < apart),
                   *(cut for cut in inner if rnd.random() < 0.5), *rnd.sample(range(1, len(stream)), 3)})
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


async def test_a_reset_unsettles_the_answer(replaying) -> None:
    listener = await replaying()
    reader, writer = await kept(listener)
    writer.write(b"POST /_omproxy/reset HTTP/1.1\r\nHost: x\r\nX-Omproxy-Admin: 1\r\nContent-Length: 0\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    writer.write(get())
    assert state_of((await read_answer(reader))[2]) == "Queued"  # from the first recording again
    writer.close()


async def test_the_simulator_taking_the_interaction_over_unsettles_the_answer(replaying) -> None:
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


class Message:  # what Boundary reads of a parsed request: its framing
    def __init__(self, length: int | None = 0, chunked: bool = False) -> None:
        self.headers = {"Content-Length": str(length)} if length is not None else {}
        self.chunked, self.upgrade = chunked, False


def test_the_boundary_between_requests_is_followed_through_every_way_a_request_comes() -> None:
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
    b = server.Boundary()
    b.fed(head + b"abc", [(Message(3), None)])
    assert b.between  # one read, one request
    b.fed(head, [(Message(3), None)])
    assert not b.between  # its body is still to come ...
    b.fed(b"abc", [])
    assert b.between  # ... and came alone
    b.fed(head + b"abc" + b"POST /y", [(Message(3), None)])
    assert not b.between and b.since == [b"POST /y"]  # a request and part of the next
    b.fed(b" HTTP/1.1\r\nContent-Length: 0\r\n\r\n", [(Message(0), None)])
    assert b.between  # the next, whole
    b.fed(head[:10], [])
    b.fed(head[10:] + b"abc", [(Message(3), None)])
    assert b.between  # a head cut anywhere
    b.fed(head + b"abc" + head + b"abc", [(Message(3), None), (Message(3), None)])
    assert not b.between and b.since is None  # two at once: not followed from here on
    b.fed(head + b"abc", [(Message(3), None)])
    assert not b.between


def test_a_request_not_framed_by_its_length_loses_the_boundary() -> None:
    b = server.Boundary()
    b.fed(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [(Message(None, chunked=True), None)])
    assert not b.between and b.since is None
