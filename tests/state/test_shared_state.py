"""Two omproxy instances sharing one real redis-server (Debian's package, started by the tests on a
unix socket of their own): one story across both, reset from either, Redis gone and back."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM, Redis

pytest.importorskip("redis", reason="the redis package (omproxy[redis]) is not installed")
SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(SERVER is None, reason="redis-server (Debian package redis-server) is not "
                                "installed; .ci/run installs it")
STORY = Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" / "reference-story.yaml"
SVC = f"{BASE}/customer-support"
CREATE = (b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BTestKey2%5D=Test+value"
          b"&userData%5BKeyToDelete%5D=value+to+delete")


@pytest.fixture
def redis():
    import tempfile

    with tempfile.TemporaryDirectory(prefix="omr", dir="/tmp") as folder:  # a unix socket path is short
        server = Redis(Path(folder))
        server.start()
        yield server
        server.stop()


async def two(aiohttp_client, mode: Mode, redis: Redis, **settings):
    config = Config(state=redis.url, **settings)
    return await aiohttp_client(build_app(config, mode)), await aiohttp_client(build_app(config, mode))


async def test_a_create_on_one_instance_is_read_updated_and_stopped_through_the_other(aiohttp_client, redis) -> None:
    a, b = await two(aiohttp_client, Mode.SIMULATE, redis)
    iid = (await (await a.post(SVC, data=b"externalId=x1&userData%5BK%5D=v", headers=FORM)).json())["interactionId"]
    got = await (await b.post(f"{SVC}/{iid}/get")).json()
    assert {"key": "K", "type": "str", "value": "v"} in got["interactionProperties"]["interactionUserData"]
    updated = await (await b.post(f"{SVC}/{iid}/update", data=b"change%5BK%5D=w", headers=FORM)).json()
    assert updated["statusCode"] == 0
    by_external = await (await a.post(f"{SVC}/x1/get", data=b"searchByExternalId=true", headers=FORM)).json()
    assert {"key": "K", "type": "str", "value": "w"} in by_external["interactionProperties"]["interactionUserData"]
    assert (await (await a.post(f"{SVC}/{iid}/stop")).json())["statusCode"] == 0
    assert (await (await b.post(f"{SVC}/{iid}/get")).json())["errors"][0]["code"] == 248


async def test_playback_positions_advance_once_across_instances_and_reset_from_either(aiohttp_client,
                                                                                    redis) -> None:
    from omproxy.cassette import storage

    a, b = await two(aiohttp_client, Mode.REPLAY, redis, cassette=str(STORY), fallback="none")
    story = storage.load(STORY).interactions
    recorded = [json.loads(r.response.body) for r in story]
    answers = []
    for i, rec in enumerate(story):  # alternately through each instance
        client = (a, b)[i % 2]
        resp = await client.post(rec.request.path, data=rec.request.body, headers=FORM)
        answers.append(await resp.json())
    assert answers == recorded  # each recording served once, in order, whichever instance asked
    assert (await b.post("/_omproxy/reset", json={})).status == 200
    again = await (await a.post(f"{SVC}/01QG0Q2S5S50G000/get")).json()
    assert again == recorded[1]  # rewound for both


async def test_fault_rules_and_their_counts_are_the_clusters(aiohttp_client, redis) -> None:
    """`times: 2` counts over both instances; a rule added through one applies through the other."""
    from omproxy.config.faults import rules

    retry = rules("faults", [{"match": {"operation": "create"}, "times": 2, "answer": "retry"}])
    a, b = await two(aiohttp_client, Mode.SIMULATE, redis, faults=retry)
    codes = [(await (await c.post(SVC, data=b"externalId=f", headers=FORM)).json())["statusCode"] for c in (a, b, a)]
    assert codes == [1, 1, 0]
    added = await a.post("/_omproxy/faults", json={"match": {"operation": "get"}, "answer": {"gms_error": 249}},
                         headers={"X-Omproxy-Session": "s1"})
    assert added.status == 200
    got = await (await b.post(f"{SVC}/X/get", headers={"X-Omproxy-Session": "s1"})).json()
    assert got["errors"][0]["code"] == 249
    other = await (await b.post(f"{SVC}/X/get", headers={"X-Omproxy-Session": "s2"})).json()
    assert other["errors"][0]["code"] == 248  # another session: the simulator's own "not found"
    listed = (await (await b.get("/_omproxy/faults", headers={"X-Omproxy-Session": "s1"})).json())["faults"]
    assert [(r["name"], r["fired"]) for r in listed] == [("faults[0]", 2), ("session s1[0]", 1)]


async def test_redis_gone_is_a_retry_answer_and_back_is_recovery(aiohttp_client, redis) -> None:
    a, _ = await two(aiohttp_client, Mode.SIMULATE, redis)
    assert (await a.post(SVC, data=b"externalId=x", headers=FORM)).status == 200
    redis.stop()
    resp = await a.post(SVC, data=b"externalId=y", headers=FORM)
    body = await resp.json()
    assert resp.status == 503 and body["statusCode"] == 1 and "shared state" in body["errors"][0]["advice"]
    redis.start()
    assert (await (await a.post(SVC, data=b"externalId=z", headers=FORM)).json())["statusCode"] == 0


def test_an_unreachable_redis_at_start_is_a_usage_error(tmp_path, capsys) -> None:
    from omproxy.cli import main

    (tmp_path / "empty.yaml").write_text("{}\n")
    code = main(["simulate", "--port", "0", "--config", str(tmp_path / "empty.yaml"), "--state",
                 f"unix://{tmp_path / 'nothing.sock'}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot start" in err and "shared state" in err and len(err.strip().splitlines()) == 1


def test_workers_without_a_shared_state_are_refused_saying_why(tmp_path, capsys) -> None:
    from omproxy.cli import main

    (tmp_path / "empty.yaml").write_text("{}\n")
    assert main(["replay", "--workers", "2", "--cassette", str(STORY), "--config", str(tmp_path / "empty.yaml")]) == 2
    assert "needs --state redis://" in capsys.readouterr().err


def two_workers(mode: str, redis: Redis, tmp_path: Path, *more: str) -> tuple[subprocess.Popen[str], str, list[int]]:
    """`omproxy MODE --workers 2` on a shared Redis: the process, its URL, its workers' pids."""
    import select
    import sys

    (tmp_path / "empty.yaml").write_text("{}\n")
    proc = subprocess.Popen([sys.executable, "-m", "omproxy", mode, "--workers", "2", "--port", "0",
                             "--state", redis.url, "--config", str(tmp_path / "empty.yaml"), *more],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready, "no ready line"
    line = proc.stdout.readline()
    assert "(2 workers)" in line, line
    pids: list[int] = []
    while len(pids) < 2:  # "... INFO worker PID started", logged before the ready line
        words = proc.stderr.readline().split()
        assert words, "the supervisor ended"
        if words[-1] == "started" and words[-3] == "worker":
            pids.append(int(words[-2]))
    return proc, line.split(" ")[4], pids


def post(url: str, body: bytes = b"") -> dict:
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers=FORM)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_two_workers_serve_the_story_survive_a_killed_worker_and_stop_with_one_summary(redis, tmp_path) -> None:
    import os
    import signal

    proc, url, pids = two_workers("simulate", redis, tmp_path)
    try:
        iid = post(url + SVC, b"externalId=w1")["interactionId"]
        assert all(post(f"{url}{SVC}/{iid}/get")["statusCode"] == 0 for _ in range(6))  # whichever worker answers
        os.kill(pids[0], signal.SIGKILL)
        line = ""
        while "starting another" not in line:  # the supervisor saw it die (its socket is gone with it)
            line = proc.stderr.readline()
            assert line, "the supervisor ended"
        assert all(post(f"{url}{SVC}/{iid}/get")["statusCode"] == 0 for _ in range(6))  # the other, then a new one
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers
            proc.communicate()
    assert proc.returncode == 0
    summaries = [x for x in err.splitlines() if "summary:" in x]
    assert len(summaries) == 1 and "2 workers, 1 restarted" in summaries[0], err
    # the killed worker's own count is lost with it; the six after the kill are the survivors' (the seven
    # before may all have gone to the killed one: the kernel spreads connections, ~1 run in 128)
    assert int(summaries[0].split("simulated ")[1].split()[0].rstrip(",")) >= 6


def test_workers_count_each_recording_never_played_once(redis, tmp_path) -> None:
    """D7's twin: two replay workers over a story of 6 each said "never played" for the same recordings
    of the one shared state, and the supervisor added them up (88 of a cassette of 45)."""
    import os
    import signal

    proc, url, _ = two_workers("replay", redis, tmp_path, "--cassette", str(STORY))
    try:
        for _ in range(4):  # over new connections: the kernel spreads them between the workers
            post(f"{url}{SVC}/01QG0Q2S5S50G000/get")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    summaries = [x for x in err.splitlines() if "summary:" in x]
    assert len(summaries) == 1 and "from cassette 4" in summaries[0], err
    assert "never played 3" in summaries[0], summaries  # the create, the update, the stop
    warnings = [x for x in err.splitlines() if "recorded but never played" in x]
    assert len(warnings) == 1 and "#0" in warnings[0] and "#1" not in warnings[0], err


async def test_two_recording_instances_then_pull_twice(aiohttp_client, redis, tmp_path) -> None:
    from omproxy.cassette import storage
    from omproxy.cli import main

    a, b = await two(aiohttp_client, Mode.RECORD, redis, cassette=str(tmp_path / "unused" / "{service}.yaml"))
    for i, client in enumerate((a, b, a, b)):
        service = ("billing", "customer-support")[i % 2]
        assert (await client.post(f"{BASE}/{service}", data=f"externalId=r{i}".encode(), headers=FORM)).status == 200
    assert not (tmp_path / "unused").exists()  # recorded into the stream, not into each instance's files
    one = tmp_path / "all.yaml"
    assert await asyncio.to_thread(main, ["cassette", "pull", "--state", redis.url, "-o", str(one)]) == 0
    assert [r.request.form.get("externalId") for r in storage.load(one).interactions] == ["r0", "r1", "r2", "r3"]
    assert await asyncio.to_thread(main, ["cassette", "pull", "--state", redis.url, "-o", str(one)]) == 0  # again
    assert len(storage.load(one).interactions) == 4
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis.url)
    try:  # what was pulled is on disk: trimmed from the stream, which never grows for ever
        assert await client.xlen("omproxy:omproxy:recorded") == 0
    finally:
        await client.aclose()
    for i, instance in enumerate((a, b), start=4):  # more, then pulled split by service
        service = ("billing", "customer-support")[i % 2]
        assert (await instance.post(f"{BASE}/{service}", data=f"externalId=r{i}".encode(), headers=FORM)).status == 200
    split = tmp_path / "split"
    assert await asyncio.to_thread(main, ["cassette", "pull", "--state", redis.url, "-o", str(split), "--split-by",
                                          "service"]) == 0
    assert sorted(p.name for p in split.iterdir()) == ["billing.yaml", "customer-support.yaml"]
    assert [r.request.form.get("externalId") for r in storage.load(split / "billing.yaml").interactions] == ["r4"]


async def test_two_clusters_on_one_redis_keep_their_recordings_apart(aiohttp_client, redis, tmp_path) -> None:
    from omproxy.cassette import storage
    from omproxy.cli import main

    for name in ("blue", "green"):
        (one,) = [await aiohttp_client(build_app(Config(state=redis.url, state_namespace=name), Mode.RECORD))]
        assert (await one.post(f"{BASE}/billing", data=f"externalId={name}".encode(), headers=FORM)).status == 200
    out = tmp_path / "green.yaml"
    assert await asyncio.to_thread(main, ["cassette", "pull", "--state", redis.url, "--state-namespace", "green",
                                          "-o", str(out)]) == 0
    assert [r.request.form.get("externalId") for r in storage.load(out).interactions] == ["green"]


async def test_the_journal_counts_the_whole_cluster(aiohttp_client, redis) -> None:
    from omproxy.serve.http.front import RUNTIME
    from omproxy.state.redis import SharedCounts

    a, b = await two(aiohttp_client, Mode.SIMULATE, redis)
    for client in (a, b, b):
        await client.post(SVC, data=b"externalId=c", headers=FORM)
    for client in (a, b):  # the counts are added in the background: wait for exactly those
        counter = next(o for o in client.server.app[RUNTIME].pipeline.observers if isinstance(o, SharedCounts))
        await asyncio.gather(*counter.pending)
    assert (await (await a.get("/_omproxy/journal")).json())["counts"] == {"simulated": 3}


async def test_no_wrong_answer_while_redis_goes_away_under_load(aiohttp_client, redis) -> None:
    a, b = await two(aiohttp_client, Mode.SIMULATE, redis)

    async def one(i: int) -> tuple[int, dict]:
        resp = await (a, b)[i % 2].post(SVC, data=f"externalId=l{i}".encode(), headers=FORM)
        return resp.status, await resp.json()

    during = asyncio.gather(*(one(i) for i in range(40)))  # in flight while Redis stops
    stopping = asyncio.create_task(asyncio.to_thread(redis.stop))
    answers = await during
    await stopping
    after = await asyncio.gather(*(one(i) for i in range(40, 50)))
    for status, body in answers:  # either a real answer or GMS's "retry", nothing in between
        assert (status, body["statusCode"]) in ((200, 0), (503, 1)), body
    assert {(s, b["statusCode"]) for s, b in after} == {(503, 1)}
    redis.start()
    assert [(await one(i))[1]["statusCode"] for i in range(60, 64)] == [0, 0, 0, 0]  # recovered


async def test_a_reset_rewinds_playback_but_keeps_what_was_played_and_counted(aiohttp_client, redis) -> None:
    """D11: after a reset, "never played" and the counts were the ones since the reset (Redis zeroed the
    cluster's counts; both backends forgot the plays), so every run with a reset ended on a false "stale
    cassette?" warning. A reset rewinds positions and the simulator; the run's plays and counts stay."""
    a, b = await two(aiohttp_client, Mode.REPLAY, redis, cassette=str(STORY), fallback="none")
    iid = "01QG0Q2S5S50G000"
    first = await (await a.post(f"{SVC}/{iid}/get")).json()
    assert (await b.post("/_omproxy/reset", json={})).status == 200
    assert await (await b.post(f"{SVC}/{iid}/get")).json() == first  # rewound for both
    cassettes = (await (await a.get("/_omproxy/cassettes")).json())["cassettes"]
    assert cassettes[0]["played"] == 1  # the get's first recording, played before the reset and after
    counts = (await (await b.get("/_omproxy/journal")).json())["counts"]
    assert counts["from cassette"] == 2


async def test_a_recorded_get_replayed_again_writes_nothing_and_keeps_the_interaction(aiohttp_client, redis,
                                                                                      tmp_path) -> None:
    """The recording applied to the simulator changes nothing the second time: no write (a round trip a
    request less: replay on Redis +20%), and the interactions are still kept alive by the reads."""
    import redis.asyncio as aioredis

    from omproxy.cassette import entry as cassette
    from omproxy.cassette import storage

    story = storage.load(STORY).interactions[:2]  # create, get
    path = tmp_path / "two.yaml"
    storage.save(path, [cassette.to_entry(r.request, r.response, 1.0) for r in story])
    a, b = await two(aiohttp_client, Mode.REPLAY, redis, cassette=str(path), session_idle=600)  # with the simulator
    iid = (await (await a.post(SVC, data=CREATE, headers=FORM)).json())["interactionId"]
    first = await (await b.post(f"{SVC}/{iid}/get")).json()
    client = aioredis.from_url(redis.url)
    try:
        await client.config_resetstat()
        for c in (a, b, a, b):
            assert await (await c.post(f"{SVC}/{iid}/get")).json() == first
        stats = await client.info("commandstats")
        assert "cmdstat_hset" not in stats and stats["cmdstat_hget"]["calls"] == 4
        assert stats["cmdstat_expire"]["calls"] == 4  # each read keeps the session's interactions alive
    finally:
        await client.aclose()


async def test_a_replayed_get_on_redis_is_one_round_trip_its_interaction_read_with_the_take(
        aiohttp_client, redis, tmp_path) -> None:
    """The interaction the recording is applied to is read in the take's script: a repeated `get` is
    one round trip to Redis (EVALSHA), as Redis's own MONITOR shows — no read of its own."""
    import redis.asyncio as aioredis

    from omproxy.cassette import entry as cassette
    from omproxy.cassette import storage

    story = storage.load(STORY).interactions[:2]  # create, get
    path = tmp_path / "two.yaml"
    storage.save(path, [cassette.to_entry(r.request, r.response, 1.0) for r in story])
    a, b = await two(aiohttp_client, Mode.REPLAY, redis, cassette=str(path))
    iid = (await (await a.post(SVC, data=CREATE, headers=FORM)).json())["interactionId"]
    first = await (await b.post(f"{SVC}/{iid}/get")).json()
    watching, other = aioredis.from_url(redis.url), aioredis.from_url(redis.url)
    try:
        async with watching.monitor() as monitor:
            await other.echo("start")
            seen: list[dict] = []
            while not (seen and seen[-1]["command"] == "ECHO start"):
                seen.append(await monitor.next_command())
            for c in (a, b, a, b):
                assert await (await c.post(f"{SVC}/{iid}/get")).json() == first
            await other.echo("end")
            seen = []
            while not (seen and seen[-1]["command"] == "ECHO end"):
                seen.append(await monitor.next_command())
        sent = [c["command"].split()[0].upper() for c in seen if c["client_type"] != "lua"]
        in_scripts = [c["command"].split()[0].upper() for c in seen if c["client_type"] == "lua"]
        assert sent.count("EVALSHA") == 4 and "HGET" not in sent  # the takes; no read besides
        assert in_scripts.count("HGET") == 4  # the interaction, read by each take
    finally:
        await watching.aclose()
        await other.aclose()


async def test_the_consistency_rule_holds_across_instances(aiohttp_client, redis, tmp_path) -> None:
    """An interaction the simulator took over on one instance (an update off the recording) is the
    simulator's on the other too, by id and by external id: asked in the same step as the take."""
    from omproxy.cassette import yamlformat

    rid, props = "REC0000000000001", {"interactionUserData": [{"key": "A", "type": "str", "value": "1"},
                                                              {"key": "ExternalId", "type": "str", "value": "e1"}]}
    entries = [({"method": "POST", "path": SVC, "body": "externalId=e1&userData%5BA%5D=1"},
                {"statusCode": 0, "interactionId": rid}),
               ({"method": "POST", "path": f"{SVC}/{rid}/get", "body": ""},
                {"statusCode": 0, "interactionProperties": {"interactionId": rid, **props}}),
               ({"method": "POST", "path": f"{SVC}/e1/get", "body": "searchByExternalId=true"},
                {"statusCode": 0, "interactionProperties": {"interactionId": rid, **props}})]
    path = tmp_path / "ext.yaml"
    path.write_text(yamlformat.HEADER + "".join(yamlformat.dump_entry({"request": {**rq, "headers": FORM}, "response": {
        "status": 200, "body": json.dumps(body)}}).decode() for rq, body in entries))
    a, b = await two(aiohttp_client, Mode.REPLAY, redis, cassette=str(path))
    assert (await a.post(SVC, data=b"externalId=e1&userData%5BA%5D=1", headers=FORM)).headers["X-Omproxy-Source"] \
        == "cassette"
    update = await a.post(f"{SVC}/{rid}/update", data=b"change%5BB%5D=2", headers=FORM)
    assert update.headers["X-Omproxy-Source"] == "simulator"  # not recorded: the simulator takes it over
    for asked in (b.post(f"{SVC}/{rid}/get"), b.post(f"{SVC}/e1/get", data=b"searchByExternalId=true", headers=FORM)):
        resp = await asked
        assert resp.headers["X-Omproxy-Source"] == "simulator"  # the recorded answers would lack B
        data = (await resp.json())["interactionProperties"]["interactionUserData"]
        assert {"key": "B", "type": "str", "value": "2"} in data


def test_a_second_workers_instance_on_a_served_port_is_refused(redis, tmp_path) -> None:
    """D3: SO_REUSEPORT let a second `--workers` instance share the port silently."""
    import os
    import signal
    import sys

    proc, url, _ = two_workers("simulate", redis, tmp_path)
    try:
        port = url.rsplit(":", 1)[1].strip("/")
        second = subprocess.run([sys.executable, "-m", "omproxy", "simulate", "--workers", "2", "--port", port,
                                 "--state", redis.url, "--config", str(tmp_path / "empty.yaml")],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert second.returncode == 2, second.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "Traceback" not in second.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)


async def test_a_pull_killed_after_writing_then_run_again_writes_nothing_twice(aiohttp_client, redis,
                                                                               tmp_path) -> None:
    """Reliability finding 12: the entries were on disk, the marker not yet set: the next pull wrote them
    again (up to 1,000). Each pulled entry now carries its stream id, and a pull resumes after the last."""
    import redis.asyncio as aioredis

    from omproxy.cassette import storage
    from omproxy.cli import main
    from omproxy.state.redis import _with_id

    a, _ = await two(aiohttp_client, Mode.RECORD, redis, cassette=str(tmp_path / "unused" / "{service}.yaml"))
    for i in range(3):
        assert (await a.post(f"{BASE}/billing", data=f"externalId=k{i}".encode(), headers=FORM)).status == 200
    out = tmp_path / "pulled.yaml"
    client = aioredis.from_url(redis.url)
    try:  # what a pull killed between its write and its marker leaves: the entries written, nothing else
        batch = await client.xrange("omproxy:omproxy:recorded")
        storage.append_locked(out, b"".join(_with_id(fields[b"entry"], stream_id) for stream_id, fields in batch))
    finally:
        await client.aclose()
    assert await asyncio.to_thread(main, ["cassette", "pull", "--state", redis.url, "-o", str(out)]) == 0
    assert [r.request.form.get("externalId") for r in storage.load(out).interactions] == ["k0", "k1", "k2"]
    assert (await a.post(f"{BASE}/billing", data=b"externalId=k3", headers=FORM)).status == 200
    assert await asyncio.to_thread(main, ["cassette", "pull", "--state", redis.url, "-o", str(out)]) == 0
    assert [r.request.form.get("externalId") for r in storage.load(out).interactions] == ["k0", "k1", "k2", "k3"]


async def test_2_a_take_redis_ran_after_its_client_gave_up_is_the_retrys(redis) -> None:
    """Reliability finding 2: Redis stalled past the client's timeout ran the take anyway; the 503'd
    request's retry got the next recording. Now the retry on that instance gets the position the lost
    take had — or, had the lost take not run yet, it is cancelled and takes nothing when it does."""
    import os
    import signal

    from omproxy.errors import StateUnavailable
    from omproxy.state.redis import RedisState, digest

    state = RedisState(redis.url, "stall", 60, timeout=2)
    try:
        assert (await state.take("s1", "get", 5)).position == 0
        os.kill(redis.proc.pid, signal.SIGSTOP)  # a stalled Redis: the take is sent, and waits
        try:
            with pytest.raises(StateUnavailable):
                await state.take("s1", "get", 5)  # answered 503; the take runs when Redis wakes
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        assert (await state.take("s1", "get", 5)).position == 1  # the retry: the lost take's position
        assert (await state.take("s1", "get", 5)).position == 2  # and on from there
        # the other order: the lost take is cancelled before it runs, and takes nothing when it does
        state._lost[(state._session("s1"), digest("get"))] = "never-ran-yet"
        assert (await state.take("s1", "get", 5)).position == 3
        late = await state._take(keys=[state._session("s1") + k for k in ("positions", "diverged", "interactions",
                                                                          "taken", "cancelled")],
                                 args=[digest("get"), 5, 60, "", "", "never-ran-yet", ""])
        assert int(late[0]) == -3 and (await state.take("s1", "get", 5)).position == 4
    finally:
        await state.close()
