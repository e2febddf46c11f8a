"""One behaviour, whatever serves it: generated stories over a small cassette, told through the pipeline
itself (`Pipeline.serve`), the command line's front over a socket, the pytest plugin's front, and the
`build_app` adapter, each on the memory state and on a real redis-server. The answers (Date aside),
the journal's outcomes and what was recorded must be the same everywhere.

The stories mix what a CI suite sends: a create, gets by id and by external id, a recorded and an
unrecorded update (the simulator then owns the interaction), a stop, a request nothing matches,
repeats, resets, two sessions, `Connection: close`, a header named by `match.headers`."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omproxy.cassette import entry as cassette
from omproxy.cassette import yamlformat
from omproxy.config.faults import rules
from omproxy.config.options import Config, Fallback, Matching, Mode, Redaction, Repeat
from omproxy.model import SESSION_HEADER, Request, Response, headers_of
from omproxy.serve.http import front as server
from omproxy.serve.http.convert import assemble
from omproxy.serve.http.front import RUNTIME, build_app
from omproxy.serve.runtime import Runtime, build_runtime
from tests.support import BASE, Redis

IID = "01QG0Q2S5S50G000"
SVC = f"{BASE}/customer-support"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json;charset=utf-8"


def interaction(state: str, **user_data: str) -> bytes:
    return json.dumps({"statusCode": 0, "interactionProperties": {
        "interactionId": IID, "interactionState": state, "interactionQueue": "Inbound",
        "interactionUserData": [{"key": k, "type": "str", "value": v} for k, v in user_data.items()]}}).encode()


CREATED = (SVC, b"externalId=x1&userData%5BA%5D=1", json.dumps({"statusCode": 0, "interactionId": IID}).encode())
QUEUED = (f"{SVC}/{IID}/get", b"", interaction("Queued", A="1", ExternalId="x1"))
UPDATED = (f"{SVC}/{IID}/update", b"change%5BB%5D=2", b'{"statusCode":0}')
BY_EXTERNAL_ID = (f"{SVC}/x1/get", b"searchByExternalId=true", interaction("Processing", A="1", D="4", ExternalId="x1"))
STOPPED = (f"{SVC}/{IID}/stop", b"", b'{"statusCode":0}')
CASSETTES = {  # stories as recorded: (path, body, answer)
    # the get recorded twice: a repeated get takes the second, and then repeats it
    "two gets": [CREATED, QUEUED, UPDATED, (f"{SVC}/{IID}/get", b"", interaction("Processing", A="1", B="2",
                                                                                 ExternalId="x1")),
                 BY_EXTERNAL_ID, STOPPED],
    # the get recorded once: every get repeats it (what settled answers and the replay memo got wrong)
    "one get": [CREATED, QUEUED, UPDATED, BY_EXTERNAL_ID, STOPPED],
}
STEPS = {  # what a client may send: (path, body); "reset" is the admin API's
    "create": (SVC, b"externalId=x1&userData%5BA%5D=1"),
    "get": (f"{SVC}/{IID}/get", b""),
    "get by external id": (f"{SVC}/x1/get", b"searchByExternalId=true"),
    "recorded update": (f"{SVC}/{IID}/update", b"change%5BB%5D=2"),
    "unrecorded update": (f"{SVC}/{IID}/update", b"change%5BC%5D=3"),
    "stop": (f"{SVC}/{IID}/stop", b""),
    "unknown": (f"{SVC}/NOPE/get", b""),
    "reset": ("/_omproxy/reset", b""),
}


@dataclass(frozen=True)
class Step:
    what: str
    session: str
    close: bool
    tenant: str

    def headers(self) -> dict[str, str]:
        out = {"Content-Type": FORM, "X-Tenant": self.tenant}
        if self.session:
            out[SESSION_HEADER] = self.session
        if self.what == "reset":
            out["X-Omproxy-Admin"] = "1"
        if self.close:
            out["Connection"] = "close"
        return out


steps = st.builds(Step, st.sampled_from(list(STEPS)), st.sampled_from(["", "s1"]), st.booleans(),
                  st.sampled_from(["a", "b"]))
stories = st.lists(steps, min_size=1, max_size=14)
configs = st.sampled_from(["default", "repeat miss", "fallback none", "match headers", "auto", "faults",
                           "pseudonyms"])
recordings = st.sampled_from(list(CASSETTES))


def _recorded_entries(recorded: str) -> list[bytes]:
    out = []
    for target, body, answer in CASSETTES[recorded]:
        req = Request("POST", target, "", headers_of({"Content-Type": FORM, "X-Tenant": "a"}), body)
        out.append(yamlformat.dump_entry(cassette.to_entry(req, Response(200, answer, headers_of(
            {"Content-Type": JSON})), 1.0, "2026-12-01T10:00:00.000Z")))
    return out


def config_of(kind: str, recorded: str, folder: Path, state: str, namespace: str) -> tuple[Config, Mode]:
    path = folder / "story.yaml"
    path.write_bytes(yamlformat.HEADER.encode() + b"".join(_recorded_entries(recorded)))
    config = Config(port=0, cassette=str(path), state=state, state_namespace=namespace)
    if kind == "repeat miss":
        config = replace(config, repeat=Repeat.MISS)
    elif kind == "fallback none":
        config = replace(config, fallback=Fallback.NONE)
    elif kind == "match headers":
        config = replace(config, match=Matching(headers=("X-Tenant",)))
    elif kind == "auto":  # replay, and what is not recorded forwarded to the built-in simulator and recorded
        return replace(config, upstream="builtin"), Mode.AUTO
    elif kind == "pseudonyms":  # matched by pseudonym on replay, recorded as pseudonyms in auto
        (folder / "key").write_text("a key of sixteen bytes or more")
        return replace(config, upstream="builtin", redact=Redaction(pseudonymize=("userData[A]",),
                                                                    key_file=str(folder / "key"))), Mode.AUTO
    elif kind == "faults":  # counted per session in the state, drawn from the seed: the same on every backend
        config = replace(config, faults_seed=3, faults=rules("faults", [
            {"match": {"operation": "create"}, "nth": [2], "answer": {"gms_error": 249}},
            {"match": {"operation": "get"}, "probability": 0.5, "answer": "retry"}]))
    return config, Mode.REPLAY


_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")  # the simulator's clock


def answer_of(status: int, source: str | None, headers: Any, body: bytes) -> tuple[Any, ...]:
    return (status, source, headers.get("X-Omproxy-Error"), headers.get("Content-Type"), _TIME.sub(b"<now>", body))


# What differs by how a request came, not by what it asked: when, how long, and the headers an HTTP
# client adds of its own (the Host names the port of each front)
_CIRCUMSTANCE = (b"- recorded_at:", b"  duration_ms:", b"      Host:", b"      User-Agent:", b"      Accept:",
                 b"      Accept-Encoding:", b"      Content-Length:")


def entries(data: bytes) -> list[bytes]:
    """Cassette text's lines, but for the circumstances of each request."""
    return [line for line in data.splitlines() if not line.startswith(_CIRCUMSTANCE)]


async def through_pipeline(config: Config, mode: Mode, story: list[Step]) -> Runtime:
    rt = build_runtime(config, mode)
    await rt.start()
    rt.answers = []  # type: ignore[attr-defined]
    try:
        for step in story:
            target, body = STEPS[step.what]
            ex = await rt.pipeline.serve(assemble("POST", target, headers_of(step.headers()), body, config.max_body,
                                                  "127.0.0.1"))
            assert ex.response is not None
            resp = ex.response
            rt.answers.append(answer_of(resp.status, resp.source.value, resp.headers, resp.body))  # type: ignore[attr-defined]
        rt.pipeline.flush()
    finally:
        await rt.close()
    return rt


async def send_all(url: str, story: list[Step]) -> list[tuple[Any, ...]]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for step in story:
            target, body = STEPS[step.what]
            async with http.post(url + target, data=body, headers=step.headers()) as resp:
                source = resp.headers.get("X-Omproxy-Source")
                out.append(answer_of(resp.status, source, resp.headers, await resp.read()))
    return out


async def through_server(config: Config, mode: Mode, story: list[Step]) -> tuple[list[Any], Runtime]:
    rt = build_runtime(config, mode)
    listener = await server.start(rt, config)
    try:
        answers = await send_all(f"http://127.0.0.1:{listener.port}", story)
    finally:
        await listener.close()
    return answers, rt


async def through_app(config: Config, mode: Mode, story: list[Step]) -> tuple[list[Any], Runtime]:
    from aiohttp import web

    app = build_app(config, mode)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        answers = await send_all(f"http://127.0.0.1:{runner.addresses[0][1]}", story)
    finally:
        await runner.cleanup()
    return answers, app[RUNTIME]


async def through_plugin(config: Config, mode: Mode, story: list[Step]) -> tuple[list[Any], Runtime]:
    from omproxy.pytest_plugin import Server

    plugin = await asyncio.to_thread(Server, config, mode)
    try:
        answers = await send_all(plugin.url, story)
    finally:
        await asyncio.to_thread(plugin.stop)
    return answers, plugin.runtime


def outcomes(rt: Runtime) -> list[tuple[str, str | None, list[str]]]:
    return [(ex.request.session, ex.request.path, [o.value for o in ex.counts()]) for ex in rt.journal.entries]


async def appended(config: Config, mode: Mode, recorded: str) -> list[bytes]:
    """What the run recorded: appended to the cassette (memory state) or to the cluster's stream (Redis)."""
    if mode is not Mode.AUTO:
        return []
    if config.state == "memory":
        before = len(entries(yamlformat.HEADER.encode() + b"".join(_recorded_entries(recorded))))
        return entries(Path(config.cassette).read_bytes())[before:]
    import redis.asyncio as aioredis

    from omproxy.state.redis import stream_key

    client = aioredis.from_url(config.state)
    try:
        return [line for _, fields in await client.xrange(stream_key(config.state_namespace))
                for line in entries(fields[b"entry"])]
    finally:
        await client.aclose()


FRONTS = {"pipeline": None, "server": through_server, "build_app": through_app, "plugin": through_plugin}
_runs = iter(range(10**9))


async def tell(kind: str, recorded: str, story: list[Step], state: str, folder: Path) -> dict[str, Any]:
    """The story through every front on `state`: what each answered, journaled and recorded."""
    told = {}
    for front, through in FRONTS.items():  # one after another, on the same cassette made anew
        config, mode = config_of(kind, recorded, folder, state, f"diff{next(_runs)}")
        if through is None:
            rt = await through_pipeline(config, mode, story)
            answers = rt.answers  # type: ignore[attr-defined]
        else:
            answers, rt = await through(config, mode, story)
        told[front] = ids_in_order({"answers": answers, "journal": outcomes(rt),
                                    "recorded": await appended(config, mode, recorded)})
    return told


_ID = re.compile(rb"\b(?!" + IID.encode() + rb")[A-Z0-9]{16}\b")


def ids_in_order(told: dict[str, Any]) -> dict[str, Any]:
    """The ids the simulator made (at random) named by the order they first appear in, so that two
    runs compare by how they use them."""
    names: dict[bytes, bytes] = {}

    def named(data: bytes) -> bytes:
        return _ID.sub(lambda m: names.setdefault(m.group(0), b"<id%d>" % len(names)), data)

    answers = [(*a[:4], named(a[4])) for a in told["answers"]]
    paths = [(session, named(path.encode()).decode(), counts) for session, path, counts in told["journal"]]
    return {"answers": answers, "journal": paths, "recorded": [named(line) for line in told["recorded"]]}


@pytest.fixture(scope="module")
def redis_url():
    pytest.importorskip("redis", reason="the redis package (omproxy[redis]) is not installed")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server (Debian package redis-server) is not installed; .ci/run installs it")
    with tempfile.TemporaryDirectory(prefix="omd", dir="/tmp") as folder:
        redis = Redis(Path(folder))
        redis.start()
        yield redis.url
        redis.stop()


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=configs, recorded=recordings, story=stories)
def test_every_front_and_every_state_answer_a_story_alike(kind: str, recorded: str, story: list[Step],
                                                         redis_url: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        told = asyncio.run(tell(kind, recorded, story, "memory", Path(folder)))
        told_shared = asyncio.run(tell(kind, recorded, story, redis_url, Path(folder)))
    reference = told["pipeline"]
    for front, seen in [*told.items(), *((f"{f} on redis", s) for f, s in told_shared.items())]:
        for what in ("answers", "journal", "recorded"):
            assert seen[what] == reference[what], (front, what, [s.what for s in story])


# The review's stories (2026-12-02, appendix A), named: each answered differently by two fronts or two
# states before one front and one rule for what replay applies.
H1 = ["create", "get", "get", "get", "recorded update", "get", "unrecorded update", "get"]
H2 = ["create", "get", "get by external id", "get", "unrecorded update", "get"]


@pytest.mark.parametrize("named", [H1, H2], ids=["H1-settled-answers", "H2-memo-and-redis"])
def test_the_stories_the_review_found_are_answered_alike(named: list[str], redis_url: str) -> None:
    story = [Step(what, "", False, "a") for what in named]
    with tempfile.TemporaryDirectory() as folder:
        told = asyncio.run(tell("default", "one get", story, "memory", Path(folder)))
        told_shared = asyncio.run(tell("default", "one get", story, redis_url, Path(folder)))
    last = json.loads(told["pipeline"]["answers"][-1][4])
    # what the client was last shown (the recorded get: A), then its own update (C): nothing else
    assert {d["key"] for d in last["interactionProperties"]["interactionUserData"]} == {"A", "C", "ExternalId"}
    for seen in [*told.values(), *told_shared.values()]:
        assert seen["answers"] == told["pipeline"]["answers"]
