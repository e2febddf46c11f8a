"""The pipeline as pure logic: responders decide, observers read the typed exchange, and no failure
escapes as a traceback or reaches the client with omproxy's internals."""

from __future__ import annotations

import json
import logging

from omproxy.config.options import Redaction
from omproxy.exchange import Exchange, Outcome
from omproxy.model import Request, Response, Source, headers_of
from omproxy.modes import Counted
from omproxy.redaction import Redactor
from omproxy.serve.pipeline import Pipeline
from tests.support import loop_turn

REDACTOR = Redactor(Redaction(form_keys=("token",)))


async def broken(ex: Exchange) -> Response | None:
    raise KeyError("secret-internal-detail")


async def test_a_bug_is_a_gms_shaped_500_without_its_internals(caplog) -> None:
    seen: list[Exchange] = []
    pipeline = Pipeline([broken], REDACTOR, [seen.append])
    ex = await pipeline.serve(Request("POST", "/genesys/2/openmedia/s", "token=abc"))
    pipeline.flush()  # observers see it at the end of the loop's turn, or now
    assert ex.response is not None and ex.response.status == 500
    body = ex.response.body.decode()
    assert json.loads(body)["statusCode"] == 2
    assert "KeyError" not in body and "secret-internal-detail" not in body
    assert "secret-internal-detail" in caplog.text  # the traceback is in the log
    assert "token=abc" not in caplog.text and "token=REDACTED" in caplog.text
    assert seen == [ex]  # observers still see it


async def test_responders_decide_in_order_and_outcomes_are_typed() -> None:
    async def no(ex: Exchange) -> Response | None:
        return None

    async def yes(ex: Exchange) -> Response | None:
        return Response(200, b"{}", source=Source.UPSTREAM)

    pipeline = Pipeline([no, Counted(yes, Outcome.FORWARDED)], REDACTOR)
    ex = await pipeline.serve(Request("POST", "/x"))
    assert ex.outcome is Outcome.FORWARDED and ex.counts() == [Outcome.FORWARDED]
    assert ex.duration_ms >= 0 and ex.response is not None and ex.response.source is Source.UPSTREAM


async def test_nothing_answering_is_an_explained_404() -> None:
    ex = await Pipeline([], REDACTOR).serve(Request("POST", "/x"))
    assert ex.response is not None and ex.response.status == 404
    assert ex.response.headers["X-Omproxy-Error"] == "no-match"


async def test_an_observer_that_fails_does_not_change_the_answer(caplog) -> None:
    def bad(ex: Exchange) -> None:
        raise RuntimeError("observer bug")

    async def yes(ex: Exchange) -> Response | None:
        return Response(200, b"{}")

    caplog.set_level(logging.ERROR)
    pipeline = Pipeline([yes], REDACTOR, [bad])
    ex = await pipeline.serve(Request("POST", "/x"))
    pipeline.flush()
    assert ex.response is not None and ex.response.status == 200
    assert "observer bug" in caplog.text


async def test_metrics_without_prometheus_client_say_what_to_install() -> None:
    from omproxy.config.options import Config, Mode
    from omproxy.serve.runtime import build_runtime

    rt = build_runtime(Config(), Mode.SIMULATE)
    rt.metrics = None  # as when the optional extra is not installed
    ex = await rt.pipeline.serve(Request("GET", "/_omproxy/metrics"))
    assert ex.response is not None and ex.response.status == 404
    assert "pip install 'omproxy[metrics]'" in ex.response.body.decode()


async def test_access_lines_are_written_in_batches_in_the_text_format() -> None:
    import io
    import re
    import time

    from omproxy.cli.logs import BatchingHandler

    stream = io.StringIO()
    handler = BatchingHandler(stream)
    handler.access(logging.INFO, time.time(), "replay POST /x get@s -> 200 [cassette a.yaml #1] ", 0.04, "")
    assert stream.getvalue() == ""  # inside a running loop: waiting for its batch
    for _ in range(handler.BATCH - 1):  # a full batch is written at once
        handler.access(logging.WARNING, time.time(), "replay POST /y - -> 404 [omproxy] ", 12.345,
                       " request_headers={}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == handler.BATCH
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO replay POST /x get@s -> 200 "
                        r"\[cassette a.yaml #1\] 0.0ms", lines[0])
    assert lines[1].endswith(" WARNING replay POST /y - -> 404 [omproxy] 12.3ms request_headers={}")
    handler.access(logging.INFO, time.time(), "last ", 1.0, "")
    handler.flush()  # as logging.shutdown does at a clean stop
    assert stream.getvalue().splitlines()[-1].endswith(" INFO last 1.0ms")


def test_an_access_line_shows_its_own_answer_and_never_a_secret() -> None:
    from omproxy.serve.observers.accesslog import AccessLog

    lines: list[tuple[int, float, str, float, str]] = []
    log = AccessLog("passthrough", REDACTOR, write=lambda *line: lines.append(line))
    logging.getLogger("omproxy.access").setLevel(logging.INFO)

    def forwarded(body: bytes, answer: bytes) -> Exchange:
        ex = Exchange(Request("POST", "/genesys/2/openmedia/s/01QG/get", "", body=body,
                              headers=headers_of({"Content-Type": "application/x-www-form-urlencoded"})),
                      response=Response(200, answer, source=Source.UPSTREAM), outcome=Outcome.FORWARDED)
        log(ex)
        return ex

    forwarded(b"token=abc", b'{"statusCode":0}')
    forwarded(b"token=abc", b'{"statusCode":0}')  # the same exchange: the same line
    forwarded(b"token=abc", b'{"statusCode":2}')  # another answer
    forwarded(b"token=xyz&a=1", b'{"statusCode":0}')  # another request
    assert lines[0][2] == lines[1][2]
    assert "statusCode=2" in lines[2][2] and "statusCode=0" in lines[3][2] and '"a":"1"' in lines[3][2]
    assert not any("abc" in line[2] or "xyz" in line[2] for line in lines)  # redacted, remembered or not


def test_durations_are_counted_in_the_buckets_prometheus_reads() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from omproxy.serve.observers.metrics import Timings, TimingsCollector

    timings = Timings("omproxy_upstream_seconds", "Time to the upstream GMS's answer")
    for seconds in (0.001, 0.005, 0.0051, 0.3, 20.0):  # a bound belongs to its bucket (le: <=)
        timings.observe(seconds)
    registry = CollectorRegistry()
    registry.register(TimingsCollector([timings]))
    text = generate_latest(registry).decode()
    assert 'omproxy_upstream_seconds_bucket{le="0.005"} 2.0' in text
    assert 'omproxy_upstream_seconds_bucket{le="0.01"} 3.0' in text
    assert 'omproxy_upstream_seconds_bucket{le="0.5"} 4.0' in text and 'le="10.0"} 4.0' in text
    assert 'omproxy_upstream_seconds_bucket{le="+Inf"} 5.0' in text and "omproxy_upstream_seconds_count 5.0" in text
    assert "omproxy_upstream_seconds_sum 20.3111" in text


async def test_observers_see_every_exchange_in_order_at_the_end_of_the_loops_turn() -> None:
    seen: list[str] = []

    async def yes(ex: Exchange) -> Response | None:
        return Response(200, b"{}")

    async def admin(req: Request) -> Response:
        return Response(200, json.dumps(seen).encode())

    pipeline = Pipeline([yes], REDACTOR, [lambda ex: seen.append(ex.request.path)], admin)
    await pipeline.serve(Request("POST", "/a"))
    await pipeline.serve(Request("POST", "/b"))
    assert seen == []  # not yet: in one batch, once this turn of the loop is over
    await loop_turn()
    assert seen == ["/a", "/b"]
    await pipeline.serve(Request("POST", "/c"))
    shown = await pipeline.serve(Request("GET", "/_omproxy/journal"))  # the admin API sees what came before it
    assert shown.response is not None and json.loads(shown.response.body) == ["/a", "/b", "/c"]


def test_the_redactor_copies_only_what_it_masks() -> None:
    """Nothing to mask: the request and the answer themselves (recording one costs no copy)."""
    clean = Request("POST", "/a", "x=1", headers_of({"Content-Type": "application/x-www-form-urlencoded"}), b"a=1")
    assert REDACTOR.request(clean) is clean
    answer = Response(200, b'{"statusCode":0}', headers_of({"Content-Type": "application/json"}))
    assert REDACTOR.response(answer) is answer
    for secret in (Request("POST", "/a", "token=s", clean.headers, b"a=1"),
                   Request("POST", "/a", "", clean.headers, b"a=1&token=s"),
                   Request("POST", "/a", "", headers_of({**clean.headers, "Authorization": "Bearer abcdefgh"}), b"")):
        shown = REDACTOR.request(secret)
        assert shown is not secret and "token=s" not in shown.query + shown.body.decode()
        assert shown.headers.get("Authorization", "REDACTED") == "REDACTED"
    leaky = Response(200, b"{}", headers_of({"Set-Cookie": "sid=1"}))
    assert REDACTOR.response(leaky).headers["Set-Cookie"] != "sid=1"
