"""Fault rules over real sockets: GMS's "try again", its errors, HTTP statuses, a reset, a hold and a cut
body, delays measured (never slept on), per session through the admin API, and never recorded."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from omproxy.cassette import storage
from omproxy.cli import main
from omproxy.config.faults import rules
from omproxy.config.options import Config, Mode
from omproxy.errors import ConfigError
from omproxy.serve.http import front
from omproxy.serve.http.front import build_app
from omproxy.serve.runtime import build_runtime
from tests.support import BASE, FORM

SVC = f"{BASE}/customer-support"
STORY = Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" / "reference-story.yaml"
JSON = {"Content-Type": "application/json"}


def config(faults: list, **more) -> Config:
    return Config(faults=rules("faults", faults), **more)


async def create_until_done(client, limit: int = 5) -> tuple[int, list[int]]:
    """A client that retries a create while GMS says statusCode 1: the attempts it took, and the codes."""
    codes = []
    for attempt in range(1, limit + 1):
        reply = await (await client.post(SVC, data=b"externalId=r1", headers=FORM)).json()
        codes.append(reply["statusCode"])
        if reply["statusCode"] != 1:
            return attempt, codes
    return limit, codes


async def test_a_retrying_client_succeeds_on_its_third_try_and_record_keeps_only_the_real_answer(
        aiohttp_client, gms, tmp_path) -> None:
    cassette = tmp_path / "c.yaml"
    rule = [{"match": {"service": "customer-support", "operation": "create"}, "times": 2, "answer": "retry"}]
    client = await aiohttp_client(build_app(config(rule, upstream=gms.url, cassette=str(cassette)), Mode.RECORD))
    assert await create_until_done(client) == (3, [1, 1, 0])
    first = await client.post(SVC, data=b"externalId=r1", headers=FORM)  # a fourth: past `times`, answered by GMS
    assert first.headers["X-Omproxy-Source"] == "upstream"
    await client.close()
    assert len(gms.received) == 2  # the two faults never reached GMS ...
    kept = storage.load(cassette).interactions
    assert [json.loads(r.response.body)["statusCode"] for r in kept] == [0, 0]  # ... nor the cassette


async def test_the_answers_are_gms_shaped_and_say_which_rule(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(config([
        {"name": "media down", "match": {"operation": "update"}, "answer": {"gms_error": 249}},
        {"match": {"operation": "stop"}, "answer": {"gms_error": 248}},
        {"match": {"operation": "get", "header": {"X-Test": "own-*"}}, "answer": {"gms_error": 240,
                                                                                 "advice": "Some own text"}},
        {"match": {"service": "billing"}, "answer": {"http": 503, "body": "down for maintenance"}},
    ]), Mode.SIMULATE))
    resp = await client.post(f"{SVC}/ABC/update", data=b"change%5BA%5D=1", headers=FORM)
    assert (resp.status, resp.headers["X-Omproxy-Source"], resp.headers["X-Omproxy-Fault"]) == (200, "fault",
                                                                                               "media down")
    assert await resp.json() == {"statusCode": 2, "errors": [
        {"code": 249, "advice": "Media server was not able to execute request. referenceId[1]"}]}
    stopped = await (await client.post(f"{SVC}/01QG0Q2S5S50G000/stop")).json()
    assert stopped["errors"] == [{"code": 248, "advice": "Specified interaction Id[01QG0Q2S5S50G000] was not found"}]
    own = await (await client.post(f"{SVC}/X/get", headers={"X-Test": "own-1"})).json()
    assert own["errors"] == [{"code": 240, "advice": "Some own text"}]
    assert (await client.post(f"{SVC}/X/get", headers={"X-Test": "other"})).headers["X-Omproxy-Source"] == "simulator"
    billing = await client.post(f"{BASE}/billing", data=b"externalId=b", headers=FORM)
    assert (billing.status, await billing.text()) == (503, "down for maintenance")
    listed = (await (await client.get("/_omproxy/faults")).json())["faults"]
    assert [(r["name"], r["fired"]) for r in listed] == [("media down", 1), ("faults[1]", 1), ("faults[2]", 1),
                                                         ("faults[3]", 1)]
    journal = (await (await client.get("/_omproxy/journal")).json())
    assert journal["entries"][0]["fault"] == "media down" and journal["counts"]["faulted"] == 4


async def test_two_sessions_get_different_faults_at_the_same_time(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(Config(cassette=str(STORY)), Mode.REPLAY))
    for session, answer in (("a", "retry"), ("b", {"gms_error": 249})):
        resp = await client.post("/_omproxy/faults", json={"match": {"operation": "get"}, "answer": answer},
                                 headers={"X-Omproxy-Session": session})
        assert resp.status == 200

    async def get(session: str) -> dict:
        return await (await client.post(f"{SVC}/01QG0Q2S5S50G000/get", headers={"X-Omproxy-Session": session})).json()

    a, b, c = await asyncio.gather(get("a"), get("b"), get("c"))
    assert (a["statusCode"], b["errors"][0]["code"], c["statusCode"]) == (1, 249, 0)
    listed = (await (await client.get("/_omproxy/faults", headers={"X-Omproxy-Session": "a"})).json())["faults"]
    assert [(r["name"], r["scope"], r["fired"]) for r in listed] == [("session a[0]", "session a", 1)]
    assert (await client.delete("/_omproxy/faults", headers={"X-Omproxy-Session": "a", **JSON})).status == 200
    assert (await get("a"))["statusCode"] == 0 and (await get("b"))["statusCode"] == 2


async def test_a_bad_rule_is_a_400_from_the_admin_api_and_exit_2_from_the_file(aiohttp_client, tmp_path,
                                                                                capsys) -> None:
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    resp = await client.post("/_omproxy/faults", json=[{"match": {"operation": "get"}, "answer": {"gms_error": 777}}])
    assert resp.status == 400
    assert "faults[0].answer.advice: GMS error 777 is not one omproxy knows" in (await resp.json())["errors"][0][
        "advice"]
    assert (await client.post("/_omproxy/faults", data=b"{}", headers=FORM)).status == 403  # a form cannot
    (tmp_path / "c.yaml").write_text("faults:\n  - match: {operation: get}\n    answer: retry\n"
                                     "  - match: {operation: gett}\n    answer: retry\n")
    assert main(["simulate", "--config", str(tmp_path / "c.yaml")]) == 2
    assert "c.yaml: faults[1].match.operation: expected one of create, get, update, stop, not 'gett'" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("rule,message", [
    ({"match": {}}, "faults[0]: a rule needs an answer: or a delay:"),
    ({"answer": "explode"}, "faults[0].answer: expected one of retry, reset, timeout, truncate"),
    ({"answer": "retry", "times": 2, "nth": [1]}, "give at most one of times, probability, nth"),
    ({"answer": "retry", "probability": 1.5}, "faults[0].probability: expected a number from 0 to 1"),
    ({"delay": "soon"}, "faults[0].delay: expected a duration like 1500ms"),
    ({"delay": {"p50": "900ms", "p99": "80ms"}}, "expected 0 < p50 <= p99"),
    ({"answer": {"http": 700}}, "faults[0].answer.http: expected an HTTP status"),
    ({"answer": "retry", "match": {"sesion": "a"}}, "faults[0].match.sesion: unknown key — did you mean 'session'?"),
])
def test_each_mistake_in_a_rule_names_its_index_and_key(rule, message) -> None:
    with pytest.raises(ConfigError) as e:
        rules("faults", [rule])
    assert message in e.value.message


async def test_probability_with_a_seed_gives_the_same_faults_on_every_run(aiohttp_client) -> None:
    rule = [{"match": {"operation": "get"}, "probability": 0.5, "answer": "retry"}]

    async def run(seed: int) -> list[int]:
        client = await aiohttp_client(build_app(config(rule, faults_seed=seed), Mode.SIMULATE))
        codes = [(await (await client.post(f"{SVC}/X/get")).json())["statusCode"] for _ in range(24)]
        await client.close()
        return codes

    first, again, other = await run(7), await run(7), await run(8)
    assert first == again and 1 in first and 2 in first  # the same sequence; both outcomes drawn
    assert other != first


async def test_nth_fires_on_those_requests_only(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(config([{"match": {"operation": "get"}, "nth": [2, 4],
                                                     "answer": "retry"}]), Mode.SIMULATE))
    codes = [(await (await client.post(f"{SVC}/X/get")).json())["statusCode"] for _ in range(5)]
    assert codes == [2, 1, 2, 1, 2]  # (2: the simulator's "not found" for X)
    await client.post("/_omproxy/reset", json={})
    assert (await (await client.post(f"{SVC}/X/get")).json())["statusCode"] == 2  # counted afresh after a reset
    assert (await (await client.post(f"{SVC}/X/get")).json())["statusCode"] == 1


async def test_a_delay_holds_the_answer_measured_with_a_tolerance(aiohttp_client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await aiohttp_client(build_app(config([{"match": {"operation": "get"}, "delay": "300ms"}]),
                                            Mode.SIMULATE))
    started = time.monotonic()
    resp = await client.post(f"{SVC}/X/get")
    took = time.monotonic() - started
    assert resp.headers["X-Omproxy-Source"] == "simulator"  # delayed, then answered as usual
    assert 0.3 <= took < 0.3 + 5.0
    assert any("rule faults[0]: delayed, held 300 ms" in r.getMessage() for r in caplog.records)


async def test_a_recorded_delay_replays_each_recordings_own_duration_scaled(aiohttp_client, tmp_path) -> None:
    from omproxy.cassette import entry as cassette

    path = tmp_path / "slow.yaml"
    (rec,) = storage.load(STORY).interactions[1:2]  # a get
    storage.save(path, [cassette.to_entry(rec.request, rec.response, 4000.0)])  # GMS took 4 s
    client = await aiohttp_client(build_app(config([{"match": {"operation": "get"}, "delay": {"recorded": True}}],
                                                   cassette=str(path), latency_scale=0.1), Mode.REPLAY))
    started = time.monotonic()
    assert (await client.post(f"{SVC}/01QG0Q2S5S50G000/get")).status == 200
    assert 0.4 <= time.monotonic() - started < 0.4 + 5.0  # 4 s x 0.1
    entry = (await (await client.get("/_omproxy/journal")).json())["entries"][0]
    assert entry["delay_ms"] == 400.0 and entry["source"] == "cassette"


def test_a_log_normal_delay_has_its_median_and_99th_percentile() -> None:
    from omproxy.exchange import Exchange
    from omproxy.model import Request, headers_of
    from omproxy.modes.faults import Decision, Faults
    from omproxy.state.memory import MemoryState

    (rule,) = rules("faults", [{"match": {}, "delay": {"p50": "80ms", "p99": "900ms"}}])
    faults = Faults((rule,), MemoryState())
    ex = Exchange(Request("POST", f"{SVC}/X/get", "", headers_of(), b""))
    draws = sorted(faults.delay_ms(Decision(rule, n), ex) for n in range(1, 4001))
    assert 70 < draws[2000] < 90 and 700 < draws[3960] < 1150


@pytest.fixture
async def listening():
    listeners: list[front.Listener] = []

    async def make(faults: list, **more) -> front.Listener:
        settings = config(faults, port=0, **more)
        listener = await front.start(build_runtime(settings, Mode.SIMULATE), settings)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        if not listener.front.stopping:
            await listener.close()


async def exchange(port: int, body: bytes = b"") -> bytes:
    """One request over a raw socket, and every byte that came back before the connection closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {SVC}/X/get HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return got


async def test_reset_closes_the_connection_without_an_answer(listening) -> None:
    listener = await listening([{"match": {"operation": "get"}, "times": 1, "answer": "reset"}])
    assert await exchange(listener.port) == b""
    assert (await exchange(listener.port)).startswith(b"HTTP/1.1 200 OK")  # only the first


async def test_truncate_sends_half_the_body_it_announces(listening) -> None:
    listener = await listening([{"match": {"operation": "get"}, "answer": "truncate"}])
    got = await exchange(listener.port)
    head, _, body = got.partition(b"\r\n\r\n")
    announced = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
    assert head.startswith(b"HTTP/1.1 200") and b"X-Omproxy-Fault: faults[0]" in head
    assert 0 < len(body) < announced


async def test_timeout_holds_until_the_client_gives_up(listening) -> None:
    listener = await listening([{"match": {"operation": "get"}, "answer": "timeout"}], upstream_timeout=60)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(asyncio.TimeoutError):
            await http.post(f"http://127.0.0.1:{listener.port}{SVC}/X/get", timeout=aiohttp.ClientTimeout(total=0.5))
    assert 0.5 <= time.monotonic() - started < 0.5 + 5.0
    journal = listener.front.rt.journal
    listener.front.rt.pipeline.flush()
    assert [e.fault for e in journal.entries] == ["faults[0]"]
    started = time.monotonic()
    await listener.close()  # waits for the requests in flight: the held one ended with its connection
    assert time.monotonic() - started < 5.0


def test_faults_count_in_the_summary(tmp_path, capsys) -> None:
    from omproxy.cli import summary
    from omproxy.exchange import Outcome

    assert "faulted 2" in summary({Outcome.SIMULATED: 1, Outcome.FAULTED: 2}, Mode.SIMULATE)


@pytest.mark.parametrize("rule", [
    {"match": {"operation": "get", "header": {"X-A": "b*"}}, "nth": [3, 1], "answer": {"gms_error": 240,
                                                                                      "advice": "x"}},
    {"name": "slow", "match": {"path": "/genesys/*"}, "delay": {"p50": "80ms", "p99": "1s"}, "probability": 0.2},
    {"match": {"service": "billing", "method": "post"}, "times": 3, "answer": {"http": 503, "body": "down"},
     "delay": {"recorded": True}},
    {"match": {"session": "s"}, "answer": "truncate", "delay": "1.5s"},
])
def test_a_rule_as_shown_reads_back_as_the_same_rule(rule) -> None:
    from omproxy.config.faults import written

    (read,) = rules("faults", [rule])
    assert rules("faults", [written(read)]) == (read,)
