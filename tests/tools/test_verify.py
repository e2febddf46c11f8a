"""omproxy verify and diff over real sockets: a story recorded through `omproxy record`, verified
against fresh `omproxy simulate` processes (one as recorded, one with another queue, one down)."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from omproxy.cli import main
from tests.support import BASE, ThreadedApp

SECTIONS = "simulator:\n  sections:\n    openmedia:\n      queue: {queue}\n"


def start(*args: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "omproxy", *args, "--port", "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, "no ready line within 30 s"
    return proc, proc.stdout.readline().rsplit(" ", 1)[1].strip()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


def post(url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def story(url: str, external: str = "xy932", extra: bytes = b"") -> None:
    iid = post(f"{url}{BASE}/customer-support", b"externalId=" + external.encode() + extra)["interactionId"]
    post(f"{url}{BASE}/customer-support/{iid}/update", b"change%5BOrderNumber%5D=ABC1")
    post(f"{url}{BASE}/customer-support/{iid}/get")
    post(f"{url}{BASE}/customer-support/{external}/get", b"searchByExternalId=true")
    post(f"{url}{BASE}/customer-support/{iid}/stop", b"reasonSystemName=Cancel")
    post(f"{url}{BASE}/customer-support/{iid}/get")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """Two stories, interleaved, recorded through the built-in simulator; one request with a card number
    that redaction masks."""
    folder = tmp_path_factory.mktemp("recorded")
    (folder / "config.yaml").write_text(SECTIONS.format(queue="Inbound") +
                                        "redact:\n  form_keys: ['userData[CreditCard]']\n"
                                        "  json_fields: [interactionProperties.interactionSubmittedBy]\n")
    return record_stories(folder, folder / "story.yaml")


def record_stories(folder: Path, cassette: Path) -> Path:
    proc, url = start("record", "--cassette", str(cassette), cwd=folder)
    try:
        story(url, "first")
        story(url, "second")
        post(f"{url}{BASE}/billing", b"externalId=card&userData%5BCreditCard%5D=4111111111111111")
    finally:
        stop(proc)
    return cassette


@pytest.fixture
def gms(tmp_path):
    procs = []

    def make(queue: str = "Inbound") -> str:
        (tmp_path / f"{queue}.yaml").write_text(SECTIONS.format(queue=queue))
        proc, url = start("simulate", "--config", str(tmp_path / f"{queue}.yaml"), cwd=tmp_path)
        procs.append(proc)
        return url

    yield make
    for proc in procs:
        stop(proc)


def verify(recorded: Path, *args: str) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["verify", "--cassette", str(recorded), "--config", str(recorded.parent / "config.yaml"),
                     *args])
    return code, out.getvalue()


def test_a_gms_that_behaves_as_recorded_passes_with_ids_translated(recorded, gms, tmp_path) -> None:
    code, out = verify(recorded, "--upstream", gms(), "--report", str(tmp_path / "junit.xml"))
    assert code == 0, out
    assert "12 same, 0 differs, 1 not verifiable, 0 errors" in out
    assert "not verifiable (redacted userData[CreditCard])" in out
    assert "GMS-DC-API" not in out  # a live value redaction masks is masked before it is compared or shown
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.get("tests") == "13" and suite.get("failures") == "0" and suite.get("skipped") == "1"


def test_a_changed_option_section_is_reported_at_exactly_that_field(recorded, gms, tmp_path) -> None:
    code, out = verify(recorded, "--upstream", gms("ATS Inbound Queue"), "--report", str(tmp_path / "j.xml"))
    assert code == 1
    differences = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    assert set(differences) == {"interactionProperties.interactionQueue: recorded 'Inbound', live 'ATS Inbound Queue'"}
    assert len(differences) == 4  # the get by id and the get by external id, in both stories
    failures = ET.parse(tmp_path / "j.xml").getroot().findall("testcase/failure")
    assert len(failures) == 4 and "interactionQueue" in failures[0].get("message", "")


def test_concurrent_interactions_keep_each_ones_order(recorded, gms) -> None:
    code, out = verify(recorded, "--upstream", gms(), "--concurrency", "4", "--json")
    data = json.loads(out)
    assert code == 0 and data["totals"]["same"] == 12


def test_an_upstream_that_is_down_is_one_line_per_interaction(recorded, refused_port) -> None:
    code, out = verify(recorded, "--upstream", f"http://127.0.0.1:{refused_port}")
    assert code == 1 and "Traceback" not in out
    assert out.count(": error") == 2 and "is unreachable" in out  # the two creates; the rest depend on them


def test_the_builtin_simulator_as_the_live_side(recorded) -> None:
    code, out = verify(recorded, "--upstream", "builtin")
    assert code == 0 and "12 same" in out, out


@pytest.fixture
def noisy_gms():
    """A GMS (a real aiohttp app, on its own thread and loop) whose gets carry a field that changes on
    every answer, as a real deployment's node name or load-balancer cookie would."""
    import itertools

    from aiohttp import web

    from omproxy.gms.simulator import Simulator
    from omproxy.model import Request, headers_of

    simulator, counter = Simulator({"openmedia": {"queue": "Inbound"}}), itertools.count()

    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        resp = await simulator.handle(Request(request.method, request.raw_path.split("?")[0], "",
                                              headers_of(request.headers), body))
        data = json.loads(resp.body)
        if "interactionProperties" in data:
            data["interactionProperties"]["servedBy"] = f"node-{next(counter)}"
        return web.json_response(data, status=resp.status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = ThreadedApp(app)
    yield server.url
    server.stop()


def test_learn_noise_ignores_what_differs_between_two_fresh_interactions(recorded, noisy_gms) -> None:
    code, out = verify(recorded, "--upstream", noisy_gms)
    assert code == 1 and "interactionProperties.servedBy: recorded absent, live 'node-" in out
    code, out = verify(recorded, "--upstream", noisy_gms, "--learn-noise")
    assert code == 0, out
    assert "learned noise (ignored): interactionProperties.servedBy" in out


def test_diff_of_two_recordings_of_the_same_story(recorded, tmp_path) -> None:
    import contextlib
    import io

    (tmp_path / "config.yaml").write_text(SECTIONS.format(queue="Elsewhere"))
    again = record_stories(tmp_path, tmp_path / "again.yaml")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["diff", str(recorded), str(recorded)]) == 0
        assert main(["diff", str(recorded), str(again)]) == 1
    text = out.getvalue()
    # D21: neither side is live; and two requests whose bodies differ pair, saying what differs
    assert "interactionProperties.interactionQueue: first 'Inbound', second 'Elsewhere'" in text
    assert "live" not in text and "only in the" not in text
    assert "request userData[CreditCard]: first 'REDACTED', second '4111111111111111'" in text


async def test_speed_keeps_the_recorded_gaps_divided_by_x() -> None:
    """Pure: the Verifier with a sender that is a function (no socket needed to keep time)."""
    import time as clock

    from omproxy.model import Recorded, Request, Response
    from omproxy.tools.compare import Noise
    from omproxy.tools.verify import Verifier

    answer = Response(200, b'{"statusCode":0}')
    recorded = [Recorded("c.yaml", i, 0, Request("POST", f"{BASE}/s/ID{i:014d}/get"), answer,
                         f"2026-11-28T10:00:0{i}.000Z") for i in range(3)]  # one second apart
    sent: list[float] = []

    async def send(req: Request) -> Response:
        sent.append(clock.monotonic())
        return answer

    results = await Verifier(send, Noise(), speed=10, concurrency=3).run(recorded)
    assert [r.verdict.value for r in results] == ["same"] * 3
    assert sent[2] - sent[0] >= 0.2 - 0.01  # 2 s of recorded time at 10x: at least 0.2 s


async def test_verify_and_diff_read_each_answer_from_disk_and_keep_none(recorded) -> None:
    """A capture's answers stay on disk while it is verified or diffed (a day of traffic need not fit
    in memory twice over): each is read when compared, and not kept."""
    from omproxy.cassette import storage
    from omproxy.exchange import Exchange
    from omproxy.gms.simulator import Simulator
    from omproxy.model import Request, Response
    from omproxy.serve.runtime import SimulatorResponder
    from omproxy.state.memory import MemoryState
    from omproxy.tools.compare import Noise
    from omproxy.tools.verify import Verifier, diff

    simulating = SimulatorResponder(Simulator(), MemoryState())

    async def send(req: Request) -> Response:
        return await simulating(Exchange(req))

    mine, theirs = (list(storage.load(recorded, lazy=True).interactions) for _ in range(2))
    assert mine and all(callable(r.answer) for r in mine + theirs)  # left on disk by the load
    results = await Verifier(send, Noise()).run(mine)
    paired, _ = diff(mine, theirs, Noise())
    assert len(results) == len(paired) == len(mine) and all(r.verdict.value == "same" for r in paired)
    assert all(callable(r.answer) for r in mine + theirs)  # read, compared, not kept


async def test_verify_reads_a_capture_at_most_a_window_ahead_of_what_it_verified(recorded, monkeypatch) -> None:
    """A day of traffic is verified as it is read: at most Verifier.AHEAD recordings read and not yet
    verified (the rest stay on disk), each story still in order, every result reported in file order."""
    from omproxy.cassette import storage
    from omproxy.exchange import Exchange
    from omproxy.gms.simulator import Simulator
    from omproxy.model import Request, Response
    from omproxy.serve.runtime import SimulatorResponder
    from omproxy.state.memory import MemoryState
    from omproxy.tools.compare import Noise
    from omproxy.tools.verify import Verifier

    def sender():
        simulating = SimulatorResponder(Simulator(), MemoryState())

        async def send(req: Request) -> Response:
            return await simulating(Exchange(req))
        return send

    whole = await Verifier(sender(), Noise()).run(list(storage.load(recorded).interactions))
    monkeypatch.setattr(Verifier, "AHEAD", 2)
    total, recordings = storage.timeline([recorded])
    verifier = Verifier(sender(), Noise(), concurrency=3)
    most = 0

    def counted():
        nonlocal most
        for n, rec in enumerate(recordings):
            most = max(most, n + 1 - len(verifier.results))
            yield rec

    results = await verifier.run(counted(), total)
    assert most == 2 and total == 13 and [r.recorded.index for r in results] == list(range(total))
    assert [(r.verdict, r.details) for r in results] == [(r.verdict, r.details) for r in whole]  # as if held whole


def test_diff_read_as_it_pairs_finds_what_diff_of_captures_held_whole_finds(recorded, tmp_path) -> None:
    """`omproxy diff` reads the first capture as it compares and keeps of the second only what its
    requests are paired by (each recording read again when it pairs): the same results as holding both."""
    from omproxy.cassette import storage
    from omproxy.tools.compare import Noise
    from omproxy.tools.verify import diff, pair, shape

    (tmp_path / "config.yaml").write_text(SECTIONS.format(queue="Elsewhere"))
    again = record_stories(tmp_path, tmp_path / "again.yaml")
    record_stories(tmp_path, again)  # twice: half of it only in the second capture
    whole = diff(list(storage.load(recorded).interactions), list(storage.load(again).interactions), Noise())
    read = pair(storage.timeline([recorded])[1], storage.revisits([again], shape), Noise())
    assert [(r.recorded, r.verdict, r.details) for r in read[0]] == [(r.recorded, r.verdict, r.details)
                                                                    for r in whole[0]]
    assert [r.recorded for r in read[1]] == [r.recorded for r in whole[1]] and len(whole[1]) >= 13
    assert {r.verdict.value for r in whole[0]} == {"same", "differs"}


async def test_a_story_that_fails_outright_raises_and_does_not_stall_the_reading(monkeypatch) -> None:
    """A sender that breaks (a bug, not a GMS error) is raised, never a verify that hangs with its
    window of recordings read ahead held by stories that died."""
    import asyncio

    from omproxy.model import Recorded, Request, Response
    from omproxy.tools.compare import Noise
    from omproxy.tools.verify import Verifier

    monkeypatch.setattr(Verifier, "AHEAD", 1)
    answer = Response(200, b'{"statusCode":0}')
    recorded = [Recorded("c.yaml", i, 0, Request("POST", f"{BASE}/s/ID{i:014d}/get"), answer,
                         f"2026-11-28T10:00:0{i}.000Z") for i in range(4)]

    async def send(req: Request) -> Response:
        raise RuntimeError("the sender broke")

    with pytest.raises(RuntimeError, match="the sender broke"):
        await asyncio.wait_for(Verifier(send, Noise()).run(recorded), 30)


def test_learn_noise_says_when_it_learned_nothing_and_a_typo_in_verify_ignore_is_warned(recorded, gms, tmp_path,
                                                                                      capsys) -> None:
    """D27: --learn-noise printed nothing when it learned nothing; a mistyped verify.ignore path was inert."""
    code, out = verify(recorded, "--upstream", gms(), "--learn-noise")
    assert code == 0 and "learned noise: none" in out
    capsys.readouterr()
    config = tmp_path / "typo.yaml"
    config.write_text((recorded.parent / "config.yaml").read_text() + "verify:\n  ignore: "
                      "[interactionProperties.interactionQeue, interactionProperties.interactionQueue]\n")
    assert main(["verify", "--cassette", str(recorded), "--config", str(config), "--upstream", gms()]) == 0
    err = capsys.readouterr().err
    assert "verify.ignore path 'interactionProperties.interactionQeue' matches no field" in err
    assert "'interactionProperties.interactionQueue' matches" not in err
