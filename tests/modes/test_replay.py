"""Replay over real sockets: record a story against a fake GMS, stop it, replay it offline."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from omproxy.cassette import storage, yamlformat
from omproxy.cli import main
from omproxy.config.options import Config, Matching, Mode, Redaction
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM, FakeGms

SVC = f"{BASE}/customer-support"
CREATE = b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BTestKey2%5D=Test+value"
STORY = [
    ("", CREATE),
    ("/{id}/get", b""),
    ("/{id}/update", b"change%5BOrderNumber%5D=ABC123456780&delete%5BTestKey2%5D="),
    ("/{id}/get", b""),
    ("/{id}/stop", b"reasonSystemName=Cancel&reasonDescription=Not+needed"),
    ("/{id}/get", b""),
]


async def play_story(client, session: str | None = None) -> list[tuple[int, bytes]]:
    answers, iid = [], ""
    headers = {**FORM, **({"X-Omproxy-Session": session} if session else {})}
    for path, body in STORY:
        resp = await client.post(SVC + path.format(id=iid), data=body, headers=headers)
        raw = await resp.read()
        answers.append((resp.status, raw))
        iid = iid or json.loads(raw)["interactionId"]
    return answers


class CountingListener:
    """A TCP listener that counts connections: the proof replay stays offline."""

    def __init__(self) -> None:
        self.connections = 0

    async def start(self) -> str:
        async def accept(reader, writer) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def listener():
    counting = CountingListener()
    yield counting
    await counting.close()


@pytest.fixture
async def recorded(aiohttp_server, aiohttp_client, tmp_path) -> tuple[Path, list[tuple[int, bytes]]]:
    """The whole story recorded against a fake GMS, which is then shut down."""
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    path = tmp_path / "story.yaml"
    client = await aiohttp_client(build_app(Config(upstream=str(server.make_url("")).rstrip("/"),
                                                   cassette=str(path)), Mode.RECORD))
    answers = await play_story(client)
    await client.close()
    await server.close()
    assert len(storage.load(path).interactions) == 6
    return path, answers


@pytest.fixture
def replay(aiohttp_client, recorded):
    async def make(**overrides):
        settings = {"cassette": str(recorded[0]), **overrides}
        return await aiohttp_client(build_app(Config(**settings), Mode.REPLAY))

    return make


async def test_replay_serves_the_story_identically_and_stays_offline(replay, recorded, listener) -> None:
    upstream = await listener.start()
    client = await replay(upstream=upstream, fallback="none")
    assert await play_story(client) == recorded[1]
    statuses = [json.loads(body)["statusCode"] for _, body in recorded[1]]
    assert statuses == [0, 0, 0, 0, 0, 2]  # the last get: 248 after stop
    # a miss, a used-up request and an unknown path: still no connection
    assert (await client.post(f"{SVC}/NOPE/get")).status == 404
    assert (await client.post("/anything/else", data=b"x=1")).status == 404
    assert listener.connections == 0


async def test_every_response_says_where_it_came_from(replay) -> None:
    client = await replay()
    resp = await client.post(SVC, data=CREATE, headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "cassette"
    resp = await client.post(f"{BASE}/other", data=b"externalId=1", headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "simulator"
    client2 = await replay(fallback="none")
    resp = await client2.post(f"{BASE}/other", data=b"externalId=1", headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "omproxy"


async def test_matching_ignores_order_and_percent_encoding_choices(replay, recorded) -> None:
    client = await replay(fallback="none")
    same = b"userData[TestKey2]=Test%20value&externalId=%78y932&userData%5bOrderNumber%5d=ABC123456789"
    resp = await client.post(SVC, data=same, headers=FORM)
    assert (resp.status, await resp.read()) == recorded[1][0]


async def test_identical_requests_get_recorded_answers_in_order_then_repeat_last(replay, recorded) -> None:
    client = await replay(fallback="none")
    iid = json.loads(recorded[1][0][1])["interactionId"]
    gets = [await (await client.post(f"{SVC}/{iid}/get")).read() for _ in range(4)]
    assert gets[:3] == [recorded[1][1][1], recorded[1][3][1], recorded[1][5][1]]
    assert gets[3] == recorded[1][5][1]
    journal = (await (await client.get("/_omproxy/journal")).json())["entries"]
    assert [e.get("repeat", False) for e in journal if e.get("operation") == "get"] == [False, False, False, True]
    assert journal[-1]["note"].endswith("(repeat)")  # the log line says so too


async def test_repeat_miss_treats_used_up_as_a_miss(replay, recorded) -> None:
    client = await replay(fallback="none", repeat="miss")
    iid = json.loads(recorded[1][0][1])["interactionId"]
    for _ in range(3):  # the story's three gets
        assert (await client.post(f"{SVC}/{iid}/get")).status == 200
    resp = await client.post(f"{SVC}/{iid}/get")
    assert resp.status == 404
    assert "used up" in (await resp.json())["errors"][0]["advice"]


async def test_near_miss_report_names_cassette_index_and_field(replay, recorded) -> None:
    client = await replay(fallback="none")
    resp = await client.post(SVC, data=CREATE.replace(b"ABC123456789", b"ABC123456780"), headers=FORM)
    assert resp.status == 404
    assert resp.headers["X-Omproxy-Error"] == "no-match"
    body = await resp.json()
    assert body["statusCode"] == 2 and body["errors"][0]["code"] == 910
    advice = body["errors"][0]["advice"]
    assert f"[{recorded[0]} #0]" in advice
    assert "userData[OrderNumber]: recorded 'ABC123456789', received 'ABC123456780'" in advice
    assert 1 <= len(body["nearMisses"]) <= 3
    assert body["nearMisses"][0]["index"] == 0


async def test_near_miss_reports_missing_and_extra_keys(replay) -> None:
    client = await replay(fallback="none")
    resp = await client.post(SVC, data=b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BX%5D=1",
                             headers=FORM)
    advice = (await resp.json())["errors"][0]["advice"]
    assert "userData[TestKey2]: recorded 'Test value', received nothing" in advice
    assert "userData[X]: recorded nothing, received '1'" in advice


async def test_unrecorded_update_is_simulated_consistently_with_the_recording(replay, recorded) -> None:
    client = await replay()
    created = json.loads(await (await client.post(SVC, data=CREATE, headers=FORM)).read())
    iid = created["interactionId"]
    resp = await client.post(f"{SVC}/{iid}/update", data=b"change%5BNote%5D=off+script", headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "simulator"
    assert await resp.json() == {"statusCode": 0}
    # The recording's next get would show OrderNumber only; the simulator owns this interaction now.
    resp = await client.post(f"{SVC}/{iid}/get")
    assert resp.headers["X-Omproxy-Source"] == "simulator"
    data = {e["key"]: e["value"] for e in (await resp.json())["interactionProperties"]["interactionUserData"]}
    assert data == {"ExternalId": "xy932", "OrderNumber": "ABC123456789", "TestKey2": "Test value",
                    "Note": "off script"}
    # Even though the recording went on to stop it, the interaction lives until the client stops it.
    stop = await client.post(f"{SVC}/{iid}/stop", data=b"reasonSystemName=Cancel&reasonDescription=Not+needed",
                             headers=FORM)
    assert stop.headers["X-Omproxy-Source"] == "simulator"
    assert (await (await client.post(f"{SVC}/{iid}/get")).json())["errors"][0]["code"] == 248


async def test_simulated_get_shows_properties_learned_from_recorded_get(replay, recorded) -> None:
    client = await replay()
    iid = json.loads(await (await client.post(SVC, data=CREATE, headers=FORM)).read())["interactionId"]
    recorded_get = await (await client.post(f"{SVC}/{iid}/get")).json()
    await client.post(f"{SVC}/{iid}/update", data=b"change%5BNote%5D=1", headers=FORM)
    simulated = (await (await client.post(f"{SVC}/{iid}/get")).json())["interactionProperties"]
    for field in ("interactionSubmitSeq", "interactionReceivedAt", "interactionQueue", "interactionSubmittedBy"):
        assert simulated[field] == recorded_get["interactionProperties"][field], field


async def test_unknown_ids_are_answered_as_the_simulator_alone_would(replay, recorded) -> None:
    client = await replay()
    resp = await client.post(f"{SVC}/0000KaA0C8XH003Y/update", data=b"change%5BA%5D=1", headers=FORM)
    assert (await resp.json())["errors"][0] == {
        "code": 248, "advice": "Interaction with specified id[0000KaA0C8XH003Y] was not found"}


async def test_sessions_have_their_own_positions_and_state(replay, recorded) -> None:
    client = await replay(fallback="none")
    a = await play_story(client, session="run-a")
    b = await play_story(client, session="run-b")
    assert a == b == recorded[1]


async def test_reset_rewinds_playback_and_empties_the_simulator(replay, recorded) -> None:
    client = await replay()
    assert await play_story(client) == recorded[1]
    iid = json.loads(recorded[1][0][1])["interactionId"]
    assert (await client.post("/_omproxy/reset", json={})).status == 200
    assert (await (await client.post(f"{SVC}/{iid}/update", data=b"change%5BA%5D=1", headers=FORM)).json())[
        "errors"][0]["code"] == 248  # the simulator forgot everything
    assert (await client.post("/_omproxy/reset", json={})).status == 200
    assert await play_story(client) == recorded[1]


async def test_reset_of_one_session_leaves_the_others(replay, recorded) -> None:
    client = await replay(fallback="none")
    iid = json.loads(recorded[1][0][1])["interactionId"]
    for s in ("a", "b"):
        await client.post(f"{SVC}/{iid}/get", headers={"X-Omproxy-Session": s})
    await client.post("/_omproxy/reset", json={}, headers={"X-Omproxy-Session": "a"})
    got_a = await (await client.post(f"{SVC}/{iid}/get", headers={"X-Omproxy-Session": "a"})).read()
    got_b = await (await client.post(f"{SVC}/{iid}/get", headers={"X-Omproxy-Session": "b"})).read()
    assert got_a == recorded[1][1][1] and got_b == recorded[1][3][1]


async def test_a_story_run_twice_gets_the_same_answers_twice(replay, recorded, caplog) -> None:
    """D8: the second run got create 0, update 0, get 248 (the last recording of each again). A create
    whose recordings this session played starts the session's recordings over, and the log says so."""
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await replay(fallback="none")
    assert await play_story(client) == recorded[1]
    assert await play_story(client) == recorded[1]
    assert any("(restart: the session's recordings play again)" in r.getMessage() for r in caplog.records)
    entries = (await (await client.get("/_omproxy/journal")).json())["entries"]
    assert [e.get("restart", False) for e in entries] == [False] * 6 + [True] + [False] * 5


async def test_without_restart_a_story_run_twice_gets_the_last_recordings(replay, recorded, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await replay(fallback="none", restart=False)
    await play_story(client)
    again = await play_story(client)
    assert again[1] == again[3] == recorded[1][-1]  # each get: its last recording, "not found"
    assert any("#0 (repeat)" in r.getMessage() for r in caplog.records)


async def test_a_reset_keeps_what_was_played_for_the_never_played_report(replay, recorded, caplog) -> None:
    """D11: plays before a reset were forgotten, so the shutdown said "never played 6" after 6 answers."""
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await replay(fallback="none")
    await play_story(client)
    await client.post("/_omproxy/reset", json={})
    report = (await (await client.get("/_omproxy/cassettes")).json())["cassettes"]
    assert report[0]["played"] == 6 and report[0]["never_played"] == []
    await client.close()
    assert not [r for r in caplog.records if "never played" in r.getMessage()]


async def test_never_played_recordings_are_listed_at_shutdown(replay, recorded, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="omproxy")
    client = await replay(fallback="none")
    await client.post(SVC, data=CREATE, headers=FORM)
    await client.close()
    line = next(r.getMessage() for r in caplog.records if "never played" in r.getMessage())
    assert f"{recorded[0]} #1, {recorded[0]} #2" in line and f"{recorded[0]} #0" not in line


async def test_admin_journal_and_cassettes(replay, recorded) -> None:
    client = await replay(fallback="none")
    await client.post(SVC, data=CREATE, headers=FORM)
    await client.post(SVC, data=b"externalId=other", headers=FORM)
    journal = await (await client.get("/_omproxy/journal")).json()
    first, second = journal["entries"]
    assert first["source"] == "cassette" and (first["cassette"], first["index"]) == (str(recorded[0]), 0)
    assert first["form"]["userData"]["OrderNumber"] == "ABC123456789"
    assert second["status"] == 404 and "externalId: recorded 'xy932', received 'other'" in second["miss"]
    assert second["nearMisses"][0]["differences"][0] == "externalId: recorded 'xy932', received 'other'"
    report = (await (await client.get("/_omproxy/cassettes")).json())["cassettes"]
    assert report == [{"cassette": str(recorded[0]), "interactions": 6, "played": 1, "never_played": [1, 2, 3, 4, 5]}]


async def test_ignored_form_keys_do_not_matter(aiohttp_client, recorded) -> None:
    config = Config(cassette=str(recorded[0]), fallback="none",
                    match=Matching(ignore=("userData[TestKey2]",)))
    client = await aiohttp_client(build_app(config, Mode.REPLAY))
    resp = await client.post(SVC, data=b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789"
                                       b"&userData%5BTestKey2%5D=other", headers=FORM)
    assert resp.status == 200


async def test_header_matcher_when_named(aiohttp_client, recorded) -> None:
    config = Config(cassette=str(recorded[0]), fallback="none", match=Matching(headers=("gms_user",)))
    client = await aiohttp_client(build_app(config, Mode.REPLAY))
    resp = await client.post(SVC, data=CREATE, headers={**FORM, "gms_user": "agent7"})
    assert resp.status == 404
    assert "header gms_user: recorded nothing, received 'agent7'" in (await resp.json())["errors"][0]["advice"]


async def test_keys_redacted_at_record_time_are_ignored_when_matching(aiohttp_server, aiohttp_client,
                                                                      tmp_path) -> None:
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    path = tmp_path / "c.yaml"
    redact = Redaction(form_keys=("userData[CreditCard]",))
    rec = await aiohttp_client(build_app(Config(upstream=str(server.make_url("")).rstrip("/"), cassette=str(path),
                                                redact=redact), Mode.RECORD))
    body = b"externalId=e&userData%5BCreditCard%5D=4111111111111111"
    created = await (await rec.post(SVC, data=body, headers=FORM)).read()
    redact = Redaction(form_keys=("token",))  # D4: in the query too, with the default config at replay
    await rec.close()
    rec = await aiohttp_client(build_app(Config(upstream=str(server.make_url("")).rstrip("/"), cassette=str(path),
                                                redact=redact), Mode.RECORD))
    got = await (await rec.post(SVC + "/X1/get?token=abc&a=1", data=b"", headers=FORM)).read()
    client = await aiohttp_client(build_app(Config(cassette=str(path), fallback="none"), Mode.REPLAY))
    resp = await client.post(SVC, data=body.replace(b"4111111111111111", b"5500000000000004"), headers=FORM)
    assert (resp.status, await resp.read()) == (200, created)
    resp = await client.post(SVC + "/X1/get?token=xyz&a=1", data=b"", headers=FORM)
    assert (resp.status, await resp.read()) == (200, got)


async def test_an_injected_simulator_answers_in_replay_too(aiohttp_client, recorded, make_simulator) -> None:
    client = await aiohttp_client(build_app(Config(cassette=str(recorded[0])), Mode.REPLAY,
                                            simulator=make_simulator(prefix="INJECTED0000")))
    resp = await client.post(SVC, data=b"externalId=off-script", headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "simulator"
    assert (await resp.json())["interactionId"] == "INJECTED0000000"


async def test_a_folder_replays_every_cassette_in_it(aiohttp_client, recorded, tmp_path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(yamlformat.HEADER + yamlformat.dump_entry(
        {"request": {"method": "POST", "path": f"{BASE}/billing"},
         "response": {"status": 200, "body": '{"statusCode":0,"interactionId":"BILL000000000001"}'}}).decode())
    client = await aiohttp_client(build_app(Config(cassette=str(tmp_path), fallback="none"), Mode.REPLAY))
    assert (await client.post(SVC, data=CREATE, headers=FORM)).status == 200
    assert (await (await client.post(f"{BASE}/billing")).json())["interactionId"] == "BILL000000000001"


async def test_auto_replays_what_matches_and_records_the_rest(aiohttp_server, aiohttp_client, recorded) -> None:
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    config = Config(upstream=str(server.make_url("")).rstrip("/"), cassette=str(recorded[0]))
    client = await aiohttp_client(build_app(config, Mode.AUTO))
    resp = await client.post(SVC, data=CREATE, headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "cassette"
    assert fake.received == []
    resp = await client.post(SVC, data=b"externalId=new", headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "upstream"
    assert len(fake.received) == 1
    resp = await client.post(SVC, data=CREATE, headers=FORM)  # recording used up: a new episode
    assert resp.headers["X-Omproxy-Source"] == "upstream"
    await client.close()
    paths = [r.request.form.get("externalId") for r in storage.load(recorded[0]).interactions]
    assert paths[6:] == ["new", "xy932"]


BAD = [
    ("not-yaml", "version: 1\ninteractions:\n- request: {method: POST\n", "not valid YAML"),
    ("unknown-version", "version: 7\ninteractions: []\n", "unknown cassette version 7"),
    ("missing-path", "version: 1\ninteractions:\n- request: {method: POST}\n  response: {status: 200}\n",
     "interaction #0: missing request.path"),
    ("missing-response", "version: 1\ninteractions:\n- request: {method: POST, path: /x}\n",
     "interaction #0: missing response"),
    ("python-tag", "version: 1\ninteractions:\n- !!python/object/apply:os.system ['touch {marker}']\n",
     "refused YAML tag"),
    ("python-tag-in-a-view", "version: 1\ninteractions:\n- request: {method: POST, path: /x}\n  response:\n"
     "    status: 200\n    json: !!python/object/apply:os.system ['touch {marker}']\n", "refused YAML tag"),
    ("not-a-cassette", "- just\n- a list\n", "not a cassette"),
]


@pytest.mark.parametrize("content,message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_cassette_is_refused_at_start_with_one_line(tmp_path, capsys, content, message) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "bad.yaml"
    path.write_text(content.replace("{marker}", str(marker)))
    assert main(["replay", "--cassette", str(path), "--port", "0", "--config", str(_empty_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err, err
    assert not marker.exists()


def test_bad_cassette_error_names_the_line(tmp_path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\ninteractions:\n- request: {method: POST, path: /x}\n  response: {status: 200}\n"
                    "- !!python/object/apply:os.system ['true']\n")
    main(["replay", "--cassette", str(path), "--config", str(_empty_config(tmp_path))])
    assert f"{path}:5:" in capsys.readouterr().err


def test_missing_cassette_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["replay", "--cassette", str(tmp_path / "nope.yaml"), "--config", str(_empty_config(tmp_path))]) == 2
    assert "cassette not found" in capsys.readouterr().err


def _empty_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "empty-config.yaml"
    cfg.write_text("{}\n")
    return cfg


async def test_concurrent_identical_requests_each_take_a_different_recording(replay, recorded) -> None:
    client = await replay(fallback="none", repeat="miss")
    iid = json.loads(recorded[1][0][1])["interactionId"]

    async def get() -> tuple[int, bytes]:
        resp = await client.post(f"{SVC}/{iid}/get")
        return resp.status, await resp.read()

    answers = await asyncio.gather(*(get() for _ in range(10)))
    served = sorted(body for status, body in answers if status == 200)
    assert served == sorted([recorded[1][1][1], recorded[1][3][1], recorded[1][5][1]])
    assert [status for status, _ in answers].count(404) == 7


async def test_consistency_rule_covers_gets_by_external_id(aiohttp_client, tmp_path) -> None:
    path = tmp_path / "ext.yaml"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    entries = [
        ({"method": "POST", "path": SVC, "headers": form, "body": "externalId=e1&userData%5BA%5D=1"},
         '{"statusCode":0,"interactionId":"REC0000000000001"}'),
        ({"method": "POST", "path": f"{SVC}/e1/get", "headers": form, "body": "searchByExternalId=true"},
         json.dumps({"statusCode": 0, "interactionProperties": {"interactionId": "REC0000000000001",
                     "interactionUserData": [{"key": "A", "type": "str", "value": "1"},
                                             {"key": "ExternalId", "type": "str", "value": "e1"}]}})),
    ]
    path.write_text(yamlformat.HEADER + "".join(yamlformat.dump_entry(
        {"request": rq, "response": {"status": 200, "body": body}}).decode() for rq, body in entries))
    client = await aiohttp_client(build_app(Config(cassette=str(path)), Mode.REPLAY))
    await client.post(SVC, data=b"externalId=e1&userData%5BA%5D=1", headers=FORM)
    resp = await client.post(f"{SVC}/REC0000000000001/update", data=b"change%5BB%5D=2", headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "simulator"
    resp = await client.post(f"{SVC}/e1/get", data=b"searchByExternalId=true", headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "simulator"  # the recorded get would lack B
    data = {e["key"]: e["value"] for e in (await resp.json())["interactionProperties"]["interactionUserData"]}
    assert data == {"A": "1", "B": "2", "ExternalId": "e1"}


async def test_a_failed_simulated_update_does_not_take_the_interaction_from_the_recording(replay, recorded) -> None:
    client = await replay()
    iid = json.loads(recorded[1][0][1])["interactionId"]
    await client.post(SVC, data=CREATE, headers=FORM)
    resp = await client.post(f"{SVC}/{iid}/update", data=b"reasonSystemName=x", headers=FORM)  # 902, no change
    assert resp.headers["X-Omproxy-Source"] == "simulator" and (await resp.json())["statusCode"] == 2
    resp = await client.post(f"{SVC}/{iid}/get")
    assert (resp.headers["X-Omproxy-Source"], await resp.read()) == ("cassette", recorded[1][1][1])


async def test_journal_filters_by_session_and_limit(replay, recorded) -> None:
    client = await replay(fallback="none")
    for name in ("a", "b", "a"):
        await client.post(SVC, data=CREATE, headers={**FORM, "X-Omproxy-Session": name})
    got = await (await client.get("/_omproxy/journal", params={"session": "a"})).json()
    assert [e["session"] for e in got["entries"]] == ["a", "a"]
    got = await (await client.get("/_omproxy/journal", params={"limit": "1"})).json()
    assert len(got["entries"]) == 1 and got["entries"][0]["session"] == "a"
    assert (await client.get("/_omproxy/journal", params={"limit": "x"})).status == 400


async def test_journal_of_a_session_counts_that_session_and_admin_answers_are_compact(replay, recorded) -> None:
    client = await replay(fallback="none")
    for name in ("a", "b", "a"):
        await client.post(SVC, data=CREATE, headers={**FORM, "X-Omproxy-Session": name})
    got = await (await client.get("/_omproxy/journal", params={"session": "b"})).json()
    assert got["counts"] == {"from cassette": 1}
    assert (await client.get("/_omproxy/journal", params={"limit": "-1"})).status == 400
    assert (await client.post("/_omproxy/health")).status == 405
    health = await (await client.get("/_omproxy/health")).text()
    assert '"status":"ok"' in health


def _one(path, request: dict, body: str) -> None:
    path.write_text(yamlformat.HEADER + yamlformat.dump_entry(
        {"request": {"method": "POST", **request}, "response": {"status": 200, "body": body}}).decode())


async def test_a_template_with_a_prefix_replays_only_the_files_it_names(aiohttp_client, tmp_path) -> None:
    _one(tmp_path / "prod-billing.yaml", {"path": f"{BASE}/billing"}, '{"statusCode":0,"from":"prod"}')
    _one(tmp_path / "test-billing.yaml", {"path": f"{BASE}/billing"}, '{"statusCode":0,"from":"test"}')
    config = Config(cassette=str(tmp_path / "prod-{service}.yaml"), fallback="none")
    client = await aiohttp_client(build_app(config, Mode.REPLAY))
    assert (await (await client.post(f"{BASE}/billing")).json())["from"] == "prod"
    report = (await (await client.get("/_omproxy/cassettes")).json())["cassettes"]
    assert [c["cassette"] for c in report] == [str(tmp_path / "prod-billing.yaml")]


async def test_values_not_valid_in_the_charset_match_on_their_bytes(aiohttp_client, tmp_path) -> None:
    _one(tmp_path / "c.yaml", {"path": f"{BASE}/s", "body": "userData%5BName%5D=M%FCller",
                               "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, '{"statusCode":0}')
    client = await aiohttp_client(build_app(Config(cassette=str(tmp_path / "c.yaml"), fallback="none"), Mode.REPLAY))
    assert (await client.post(f"{BASE}/s", data=b"userData%5BName%5D=M%E4ller", headers=FORM)).status == 404
    assert (await client.post(f"{BASE}/s", data=b"userData%5BName%5D=M%FCller", headers=FORM)).status == 200


async def test_a_miss_is_logged_once_and_ranks_the_same_operation_first(aiohttp_client, tmp_path, caplog) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yamlformat.HEADER + "".join(yamlformat.dump_entry(
        {"request": {"method": "POST", "path": p, "body": b, "headers": dict(FORM)},
         "response": {"status": 200, "body": '{"statusCode":0}'}}).decode() for p, b in (
        (f"{BASE}/s/ID1/get", ""), (f"{BASE}/s/ID2/get", ""), (f"{BASE}/s/ID3/get", ""),
        (f"{BASE}/s", "externalId=a"))))
    client = await aiohttp_client(build_app(Config(cassette=str(path), fallback="none"), Mode.REPLAY))
    caplog.set_level(logging.INFO, logger="omproxy")
    body = await (await client.post(f"{BASE}/other", data=b"externalId=b", headers=FORM)).json()
    assert body["nearMisses"][0]["index"] == 3  # the recorded create, before any get
    assert sum("no recorded interaction matches" in r.getMessage() for r in caplog.records) == 1


async def test_a_cassette_seeded_interaction_keeps_the_recorded_times(aiohttp_client) -> None:
    """D26: the simulator's answer for an interaction a recorded create made gave the time of the replay."""
    story = Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" / "reference-story.yaml"
    client = await aiohttp_client(build_app(Config(cassette=str(story)), Mode.REPLAY))
    create = await client.post(SVC, headers=FORM, data=(
        b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BTestKey2%5D=Test+value"
        b"&userData%5BKeyToDelete%5D=value+to+delete"))
    assert create.headers["X-Omproxy-Source"] == "cassette"
    by_external = await client.post(f"{SVC}/xy932/get", data=b"searchByExternalId=true", headers=FORM)
    assert by_external.headers["X-Omproxy-Source"] == "simulator"
    props = (await by_external.json())["interactionProperties"]
    assert props["interactionReceivedAt"] == "2017-05-31T04:43:52Z"  # the create's recorded_at, to the second
    assert props["interactionSubmittedAt"] == props["interactionPlacedInQueueAt"] == "2017-05-31T04:43:52Z"
