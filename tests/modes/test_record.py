"""Record and passthrough over real sockets: a fake GMS (a real aiohttp app), omproxy in front."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from omproxy.cassette import storage, yamlformat
from omproxy.config.options import Config, Mode, Redaction
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM, loop_turn


@pytest.fixture
def proxy(aiohttp_client, gms, tmp_path):
    async def make(mode: Mode = Mode.RECORD, **overrides):
        settings = {"upstream": gms.url, "cassette": str(tmp_path / "cassettes" / "{service}.yaml"), **overrides}
        return await aiohttp_client(build_app(Config(**settings), mode))

    return make


def loaded(path: Path) -> list[dict]:
    """The cassette as any YAML reader sees it: plain safe_load."""
    return yaml.safe_load(path.read_text())["interactions"]


async def test_body_path_query_forwarded_byte_exact(proxy, gms, tmp_path) -> None:
    client = await proxy()
    body = b"externalId=xy932&userData%5BOrder%5D=A+B%20C&userData[Raw]=x y&z=%zz"
    path = f"{BASE}/customer-support/..%2F..%2Fx/get?trace=1%2B1&a=%5B"
    resp = await client.post(path, data=body, headers=FORM)
    assert resp.status == 200
    (got,) = gms.received
    assert got["raw_path"] == path  # not decoded-and-re-encoded into a traversal
    assert got["body"] == body


async def test_headers_end_to_end_forwarded_hop_by_hop_dropped(proxy, gms) -> None:
    client = await proxy(Mode.PASSTHROUGH)
    await client.post("/echo", data=b"a=1", headers={
        **FORM, "X-Custom": "kept", "gms_user": "agent1", "Connection": "keep-alive, X-Hop", "X-Hop": "dropped",
        "Keep-Alive": "timeout=5", "TE": "trailers", "Proxy-Authorization": "Basic eA==", "Upgrade": "h2c"})
    headers = {k.lower(): v for k, v in gms.received[0]["headers"]}
    assert headers["x-custom"] == "kept" and headers["gms_user"] == "agent1"
    for hop in ("x-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert hop not in headers, hop
    assert headers["host"] == gms.url.split("//")[1]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"].startswith("127.0.0.1:")
    assert headers["content-type"] == FORM["Content-Type"]
    assert "user-agent" in headers  # the client's own, aiohttp's client here


async def test_no_content_type_invented_when_client_sent_none(proxy, gms) -> None:
    client = await proxy(Mode.PASSTHROUGH)
    await client.post("/echo", data=b"a=1", skip_auto_headers=["Content-Type"])
    assert "content-type" not in {k.lower() for k, _ in gms.received[0]["headers"]}


@pytest.mark.parametrize("accept", ["gzip, deflate", "identity"], ids=["client-accepts-gzip", "client-no-gzip"])
@pytest.mark.parametrize("path,text", [("/gzip", '"zipped":true'), ("/deflate", '"deflated":true')],
                         ids=["gzip", "deflate"])
async def test_compressed_upstream_reaches_client_and_cassette_decoded(proxy, tmp_path, accept, path, text) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    resp = await client.post(path, data=b"a=1", headers={**FORM, "Accept-Encoding": accept}, auto_decompress=False)
    raw = await resp.read()
    body = gzip.decompress(raw) if resp.headers.get("Content-Encoding") == "gzip" else raw
    assert text in body.decode()
    (entry,) = loaded(tmp_path / "c.yaml")
    assert text in entry["response"]["body"]
    assert entry["response"]["content_encoding"] == path.strip("/")


async def test_chunked_upstream_response(proxy, tmp_path) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    resp = await client.post("/chunked", data=b"a=1", headers=FORM)
    assert await resp.json() == {"statusCode": 0, "chunked": True}
    assert loaded(tmp_path / "c.yaml")[0]["response"]["json"] == {"statusCode": 0, "chunked": True}


async def test_several_set_cookie_stay_several_and_are_redacted_on_disk(proxy, tmp_path) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    resp = await client.post("/cookies", data=b"a=1", headers={**FORM, "Cookie": "session=s3cret"})
    assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    text = (tmp_path / "c.yaml").read_text()
    (entry,) = loaded(tmp_path / "c.yaml")
    assert entry["response"]["headers"]["Set-Cookie"] == ["REDACTED", "REDACTED"]
    assert entry["request"]["headers"]["Cookie"] == "REDACTED"
    assert "s3cret" not in text and "a=1; Path" not in text


async def test_upstream_down_is_502_retry_and_nothing_recorded(aiohttp_client, refused_port, tmp_path) -> None:
    config = Config(upstream=f"http://127.0.0.1:{refused_port}", cassette=str(tmp_path / "c.yaml"))
    client = await aiohttp_client(build_app(config, Mode.RECORD))
    resp = await client.post(f"{BASE}/s", data=b"externalId=1", headers=FORM)
    assert resp.status == 502
    assert resp.headers["X-Omproxy-Error"] == "upstream-unreachable"
    body = await resp.json()
    assert body["statusCode"] == 1 and "unreachable" in body["errors"][0]["advice"]
    assert not (tmp_path / "c.yaml").exists()


async def test_slow_upstream_is_504_and_nothing_recorded(proxy, tmp_path) -> None:
    client = await proxy(upstream_timeout=0.2, cassette=str(tmp_path / "c.yaml"))
    resp = await client.post("/slow", data=b"a=1", headers=FORM)
    assert resp.status == 504
    assert resp.headers["X-Omproxy-Error"] == "upstream-timeout"
    assert (await resp.json())["statusCode"] == 1
    assert not (tmp_path / "c.yaml").exists()


async def raw_exchange(client, request_bytes: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request_bytes)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    return data


@pytest.mark.parametrize("raw", [
    b"GET http://other-host/genesys/2/openmedia/s HTTP/1.1\r\nHost: other-host\r\nContent-Length: 0\r\n\r\n",
    b"POST http://other-host/x HTTP/1.1\r\nHost: other-host\r\nContent-Length: 0\r\n\r\n",
    b"CONNECT other-host:443 HTTP/1.1\r\nHost: other-host:443\r\n\r\n",
], ids=["absolute-form-get", "absolute-form-post", "connect"])
async def test_not_an_open_proxy(proxy, gms, raw) -> None:
    client = await proxy(Mode.PASSTHROUGH)
    answer = await raw_exchange(client, raw)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert gms.received == []


async def test_body_over_max_body_is_413(proxy, gms) -> None:
    client = await proxy(max_body=1000)
    resp = await client.post(f"{BASE}/s", data=b"a=" + b"x" * 2000, headers=FORM)
    assert resp.status == 413
    assert "max_body" in (await resp.json())["errors"][0]["advice"]
    assert gms.received == []


async def test_admin_paths_are_never_forwarded(proxy, gms) -> None:
    client = await proxy()
    assert (await client.get("/_omproxy/health")).status == 200
    assert (await client.post("/_omproxy/anything")).status == 404
    assert gms.received == []


@pytest.mark.parametrize("service", ["..%2F..%2Fescape", "%2Ftmp%2Fabs", "a%00b", "..", "...%2F.."],
                         ids=["dotdot", "absolute", "nul", "bare-dotdot", "dots"])
async def test_service_template_cannot_write_outside_the_folder(proxy, tmp_path, service) -> None:
    client = await proxy(Mode.RECORD)
    resp = await client.post(f"{BASE}/{service}", data=b"externalId=1", headers=FORM)
    assert resp.status in (200, 404)
    folder = tmp_path / "cassettes"
    written = [p for p in tmp_path.rglob("*.yaml")]
    assert written and all(p.parent == folder for p in written), written
    assert not any(".." in p.name.split(".yaml")[0].strip("_") for p in written)


async def test_redaction_of_headers_and_percent_encoded_form_keys(proxy, gms, tmp_path, caplog) -> None:
    redact = Redaction(headers=("X-Api-Key",), form_keys=("userData[CreditCard]",),
                       json_fields=("interactionProperties.interactionSubmittedBy",))
    client = await proxy(redact=redact, cassette=str(tmp_path / "c.yaml"))
    caplog.set_level(logging.INFO, logger="omproxy")
    resp = await client.post(f"{BASE}/s", data=b"externalId=e1&userData%5BCreditCard%5D=4111111111111111",
                             headers={**FORM, "X-Api-Key": "k-123", "Authorization": "Basic dTpw"})
    iid = (await resp.json())["interactionId"]
    await client.post(f"{BASE}/s/{iid}/update", data=b"change%5BCreditCard%5D=5500000000000004", headers=FORM)
    got = await (await client.post(f"{BASE}/s/{iid}/get")).json()
    # Forwarded unchanged: GMS got the real values and echoes them to the client.
    assert gms.received[0]["body"].endswith(b"4111111111111111")
    assert {"key": "CreditCard", "type": "str", "value": "5500000000000004"} in \
        got["interactionProperties"]["interactionUserData"]
    text = (tmp_path / "c.yaml").read_text()
    for secret in ("4111111111111111", "5500000000000004", "k-123", "dTpw", "GMS-DC-API"):
        assert secret not in text, secret
        assert secret not in caplog.text, secret
    create, update, get = loaded(tmp_path / "c.yaml")
    assert create["request"]["body"] == "externalId=e1&userData%5BCreditCard%5D=REDACTED"
    assert create["request"]["form"]["userData"]["CreditCard"] == "REDACTED"
    assert update["request"]["form"]["change"]["CreditCard"] == "REDACTED"
    props = get["response"]["json"]["interactionProperties"]
    assert props["interactionSubmittedBy"] == "REDACTED"
    assert {"key": "CreditCard", "type": "str", "value": "REDACTED"} in props["interactionUserData"]


async def test_200_concurrent_requests_all_recorded_whole(proxy, tmp_path) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"))

    async def create(i: int) -> int:
        resp = await client.post(f"{BASE}/s", data=f"externalId=e{i}&userData%5BN%5D={i}".encode(), headers=FORM)
        return resp.status

    statuses = await asyncio.gather(*(create(i) for i in range(200)))
    assert statuses == [200] * 200
    entries = loaded(tmp_path / "c.yaml")
    assert sorted(e["request"]["form"]["externalId"] for e in entries) == sorted(f"e{i}" for i in range(200))
    assert all(e["response"]["json"]["statusCode"] == 0 for e in entries)


async def test_passthrough_records_nothing_and_logs_decoded_form(proxy, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await proxy(Mode.PASSTHROUGH)
    resp = await client.post(f"{BASE}/s/ID/stop", data=b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED",
                             headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "upstream"
    assert not list(tmp_path.rglob("*.yaml"))
    assert "double-encoded" in caplog.text and "did you mean 'reasonSystemName'" in caplog.text
    line = next(r for r in caplog.records if r.levelno == logging.INFO and "stop@s" in r.getMessage())
    assert "passthrough POST" in line.getMessage() and "-> 200 statusCode=2" in line.getMessage()


async def test_recorded_cassette_reads_back_with_plain_safe_load(proxy, tmp_path) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    await client.post(f"{BASE}/customer-support", data=b"externalId=xy932&userData%5BOrderNumber%5D=00012",
                      headers=FORM)
    raw = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert raw["version"] == 1
    (entry,) = raw["interactions"]
    assert entry["request"]["form"] == {"externalId": "xy932", "userData": {"OrderNumber": "00012"}}
    assert entry["response"]["json"]["statusCode"] == 0
    assert entry["request"]["body"] == "externalId=xy932&userData%5BOrderNumber%5D=00012"
    assert isinstance(entry["recorded_at"], str) and isinstance(entry["duration_ms"], float)


async def test_binary_body_recorded_losslessly(proxy, tmp_path) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    body = bytes(range(256))
    await client.post("/echo", data=body, headers=FORM)
    (entry,) = loaded(tmp_path / "c.yaml")
    assert base64.b64decode(entry["request"]["body_base64"]) == body
    (rec,) = storage.load(tmp_path / "c.yaml").interactions
    assert rec.request.body == body


def test_torn_tail_is_dropped_with_file_and_line(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    whole = yamlformat.HEADER + "".join(
        yamlformat.dump_entry({"request": {"method": "POST", "path": f"/p{i}", "body": "a=1"},
                             "response": {"status": 200, "body": "{}"}}).decode() for i in range(3))
    path.write_text(whole + "- recorded_at: '2026-11-28T10:15:02.114Z'\n  request:\n    method: POST\n    path: '/p")
    loaded_cassette = storage.load(path)
    assert [r.request.path for r in loaded_cassette.interactions] == ["/p0", "/p1", "/p2"]
    assert loaded_cassette.dropped is not None
    last_line = whole.count("\n") + 1
    assert f"{path}:{last_line}: dropped a torn last interaction (#3" in loaded_cassette.dropped


async def test_recording_after_a_torn_tail_repairs_it_first(proxy, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yamlformat.HEADER + yamlformat.dump_entry(
        {"request": {"method": "POST", "path": "/p0"}, "response": {"status": 200}}).decode()
        + "- request:\n    method: PO")
    client = await proxy(cassette=str(path))
    await client.post("/echo", data=b"a=1", headers=FORM)
    got = storage.load(path)
    assert got.dropped is None
    assert [r.request.path for r in got.interactions] == ["/p0", "/echo"]


async def test_credentials_in_the_upstream_url_never_reach_the_log(aiohttp_client, refused_port, tmp_path,
                                                                   caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    config = Config(upstream=f"http://admin:hunter2@127.0.0.1:{refused_port}", cassette=str(tmp_path / "c.yaml"))
    client = await aiohttp_client(build_app(config, Mode.PASSTHROUGH))
    resp = await client.post(f"{BASE}/s", data=b"a=1", headers=FORM)
    assert resp.status == 502
    assert "hunter2" not in await resp.text() and "hunter2" not in caplog.text
    assert f"127.0.0.1:{refused_port}" in await resp.text()


async def test_upstream_credentials_become_basic_auth_and_host_has_no_userinfo(aiohttp_client, gms) -> None:
    url = gms.url.replace("http://", "http://user:pa55@")
    client = await aiohttp_client(build_app(Config(upstream=url), Mode.PASSTHROUGH))
    await client.post("/echo", data=b"a=1", headers=FORM)
    headers = {k.lower(): v for k, v in gms.received[0]["headers"]}
    assert headers["host"] == gms.url.split("//")[1]
    assert headers["authorization"] == "Basic " + base64.b64encode(b"user:pa55").decode()


async def test_encoding_findings_in_the_log_do_not_leak_redacted_values(proxy, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await proxy(redact=Redaction(form_keys=("userData[CreditCard]",)), cassette=str(tmp_path / "c.yaml"))
    await client.post(f"{BASE}/s", data=b"userData%5BCreditCard%5D=4111 1111 1111 1111&userData%5BNote%5D=x%zz",
                      headers=FORM)
    assert "literal-space" in caplog.text and "invalid-escape" in caplog.text
    assert "4111" not in caplog.text
    assert "4111" not in (tmp_path / "c.yaml").read_text()


async def test_a_cassette_that_cannot_be_written_still_answers_and_says_so(proxy, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    blocker = tmp_path / "not-a-folder"
    blocker.mkdir()
    client = await proxy(cassette=str(blocker / "c.yaml"))  # writable at start-up ...
    blocker.rmdir()
    blocker.write_text("a file where the cassette folder should be")  # ... not any more
    resp = await client.post(f"{BASE}/s", data=b"externalId=1", headers=FORM)
    assert resp.status == 200 and (await resp.json())["statusCode"] == 0
    assert "NOT RECORDED" in caplog.text and str(blocker / "c.yaml") in caplog.text
    assert (await (await client.get("/_omproxy/journal")).json())["counts"]["write failed"] == 1


async def test_a_cassette_folder_removed_while_recording_is_made_again(proxy, tmp_path) -> None:
    folder = tmp_path / "captures"
    client = await proxy(cassette=str(folder / "{service}.yaml"))
    assert (await client.post(f"{BASE}/s", data=b"externalId=1", headers=FORM)).status == 200
    shutil.rmtree(folder)  # a clean-up script, while omproxy records
    assert (await client.post(f"{BASE}/s", data=b"externalId=2", headers=FORM)).status == 200
    assert [e["request"]["body"] for e in loaded(folder / "s.yaml")] == ["externalId=2"]


async def test_the_session_header_is_omproxys_own_never_forwarded_or_recorded(proxy, gms, tmp_path) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    await client.post("/echo", data=b"a=1", headers={**FORM, "X-Omproxy-Session": "run-7"})
    assert "x-omproxy-session" not in {k.lower() for k, _ in gms.received[0]["headers"]}
    assert "X-Omproxy-Session" not in loaded(tmp_path / "c.yaml")[0]["request"]["headers"]


async def test_unredacted_card_numbers_are_warned_about_by_key_only(proxy, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    for _ in range(2):
        await client.post(f"{BASE}/s", data=b"userData%5BCard%5D=4111+1111+1111+1111&userData%5BOrder%5D=1234567890123",
                          headers=FORM)
    warnings = [r.getMessage() for r in caplog.records if "(a card number) is recorded in clear" in r.getMessage()]
    assert len(warnings) == 1  # once per key per run
    assert "userData[Card]" in warnings[0] and "redact.form_keys" in warnings[0]
    assert "userData[Order]" not in warnings[0]  # 13 digits, but not a Luhn-valid card number
    assert "4111 1111" not in "".join(warnings)


async def test_redacted_keys_are_masked_in_the_query_string_too(proxy, gms, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await proxy(redact=Redaction(form_keys=("token",)), cassette=str(tmp_path / "c.yaml"))
    await client.post("/echo?token=s3cr3t&page=2", data=b"a=1", headers=FORM)
    assert gms.received[0]["raw_path"] == "/echo?token=s3cr3t&page=2"  # forwarded unchanged
    assert loaded(tmp_path / "c.yaml")[0]["request"]["query"] == "token=REDACTED&page=2"
    assert "s3cr3t" not in caplog.text and "s3cr3t" not in (tmp_path / "c.yaml").read_text()


async def test_an_upstream_failure_does_not_log_the_query(aiohttp_client, refused_port, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    config = Config(upstream=f"http://127.0.0.1:{refused_port}", redact=Redaction(form_keys=("token",)))
    client = await aiohttp_client(build_app(config, Mode.PASSTHROUGH))
    assert (await client.post("/echo?token=s3cr3t", data=b"a=1", headers=FORM)).status == 502
    assert "/echo" in caplog.text and "s3cr3t" not in caplog.text


async def test_the_raw_target_is_forwarded_byte_for_byte(proxy, gms) -> None:
    """Sent on a raw socket: an HTTP client library would normalise the target before omproxy sees it."""
    client = await proxy(Mode.PASSTHROUGH)
    path = f"{BASE}/s/%2E%2E%2Fx/get?a=%2E&b=%7e&c=%zz"
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()
    assert gms.received[0]["raw_path"] == path


async def test_a_json_field_path_masks_every_array_element(aiohttp_server, aiohttp_client, tmp_path) -> None:
    """D2: only a list (not a generator) inside any() masks every element; a lint "fix" must fail here."""
    from aiohttp import web

    async def items(request):
        return web.json_response({"items": [{"secret": "a"}, {"secret": "b"}, {"secret": "c"}]})

    app = web.Application()
    app.router.add_post("/items", items)
    server = await aiohttp_server(app)
    config = Config(upstream=str(server.make_url("")).rstrip("/"), cassette=str(tmp_path / "c.yaml"),
                    redact=Redaction(json_fields=("items.secret",)))
    client = await aiohttp_client(build_app(config, Mode.RECORD))
    assert (await (await client.post("/items")).json())["items"][2] == {"secret": "c"}  # forwarded unchanged
    (entry,) = loaded(tmp_path / "c.yaml")
    assert entry["response"]["json"] == {"items": [{"secret": "REDACTED"}] * 3}


async def test_an_empty_redacted_delete_stays_empty(proxy, tmp_path) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"), redact=Redaction(form_keys=("userData[CreditCard]",)))
    iid = (await (await client.post(f"{BASE}/s", data=b"externalId=e", headers=FORM)).json())["interactionId"]
    await client.post(f"{BASE}/s/{iid}/update", data=b"delete%5BCreditCard%5D=&change%5BCreditCard%5D=4111",
                      headers=FORM)
    (_, update) = loaded(tmp_path / "c.yaml")
    assert update["request"]["body"] == "delete%5BCreditCard%5D=&change%5BCreditCard%5D=REDACTED"
    assert update["request"]["form"]["delete"]["CreditCard"] == ""


async def test_hop_by_hop_request_headers_are_not_recorded(proxy, tmp_path) -> None:
    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    await client.post("/echo", data=b"a=1", headers={**FORM, "Connection": "keep-alive"})
    assert {k.lower() for k in loaded(tmp_path / "c.yaml")[0]["request"]["headers"]} & {"connection",
                                                                                       "keep-alive"} == set()


async def test_a_new_name_without_yaml_suffix_is_a_folder_replay_then_reads(proxy, aiohttp_client, tmp_path) -> None:
    folder = tmp_path / "newdir2"
    client = await proxy(cassette=str(folder))
    await client.post(f"{BASE}/billing", data=b"externalId=e", headers=FORM)
    assert (folder / "billing.yaml").is_file()
    replay = await aiohttp_client(build_app(Config(cassette=str(folder), fallback="none"), Mode.REPLAY))
    assert (await replay.post(f"{BASE}/billing", data=b"externalId=e", headers=FORM)).status == 200


async def test_cookies_the_upstream_sets_are_never_sent_for_another_client(proxy, gms) -> None:
    """A proxy keeps no cookie jar: one client's session cookie must not ride along another's request.
    (By a host name: aiohttp's jar ignores cookies of IP addresses.)"""
    client = await proxy(Mode.PASSTHROUGH, upstream=gms.url.replace("127.0.0.1", "localhost"))
    await client.post("/cookies")
    client.session.cookie_jar.clear()  # the next request comes from a client that holds no cookie
    await client.post("/echo", data=b"a=1")
    headers = {k.lower() for k, _ in gms.received[-1]["headers"]}
    assert "cookie" not in headers


async def test_an_entry_whose_client_hung_up_is_still_written_whole(tmp_path) -> None:
    """A request cancelled while its entry waits to be written (its client hung up): the entry is
    written with its batch all the same, and the others are answered."""
    writer = storage.CassetteWriter(storage.Template(str(tmp_path / "c.yaml")))
    path = writer.path_for(None)
    entries = [yamlformat.dump_entry({"recorded_at": "2026-11-28T10:00:00Z", "request": {"n": i}}) for i in range(3)]
    tasks = [asyncio.create_task(writer.append(path, data)) for data in entries]
    await loop_turn()  # each task runs to its wait: all three in the batch
    tasks[1].cancel()
    await writer.drain()
    assert tasks[0].done() and tasks[2].done() and tasks[0].exception() is None and tasks[1].cancelled()
    assert [e["request"]["n"] for e in yaml.safe_load(path.read_text())["interactions"]] == [0, 1, 2]


async def test_each_request_is_forwarded_with_its_own_head_however_often_it_repeats(proxy, gms) -> None:
    client = await proxy(Mode.PASSTHROUGH)
    for n in (1, 2, 1, 1):
        await client.post("/echo", data=b"a=%d" % n, headers={**FORM, "X-Request-Id": str(n)})
    await client.post("/echo", data=b"a=10", headers={**FORM, "X-Request-Id": "1"})  # another length
    sent = [{k.lower(): v for k, v in r["headers"]} for r in gms.received]
    assert [h["x-request-id"] for h in sent] == ["1", "2", "1", "1", "1"]
    assert [h["content-length"] for h in sent] == ["3", "3", "3", "3", "4"]
    assert [r["body"] for r in gms.received] == [b"a=1", b"a=2", b"a=1", b"a=1", b"a=10"]


async def test_headers_a_connection_header_names_are_not_forwarded_nor_stood_in_for(proxy, gms) -> None:
    client = await proxy(Mode.PASSTHROUGH)
    named = "keep-alive, Accept-Encoding, X-Forwarded-For"  # hop-by-hop, by the Connection header's say
    await client.post("/echo", data=b"a=1", headers={**FORM, "Connection": named, "Accept-Encoding": "br",
                                                   "X-Forwarded-For": "10.0.0.9"})
    headers = {k.lower(): v for k, v in gms.received[0]["headers"]}
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the hop's own, not carried on
    assert "br" not in headers.get("accept-encoding", "")  # never asked of the upstream


async def test_each_entry_says_where_it_was_recorded_from(proxy, gms, tmp_path) -> None:
    """D19: a recording of the built-in simulator looked like one of GMS. Each entry names its upstream
    (without credentials), or builtin, and reads back as `Recorded.recorded_from`."""
    url = gms.url.replace("http://", "http://agent:secret@")
    client = await proxy(upstream=url)
    assert (await client.post(f"{BASE}/customer-support", data=b"externalId=a", headers=FORM)).status == 200
    builtin = await proxy(upstream="builtin", cassette=str(tmp_path / "sim.yaml"))
    assert (await builtin.post(f"{BASE}/customer-support", data=b"externalId=a", headers=FORM)).status == 200
    await client.close()
    await builtin.close()
    (entry,) = loaded(tmp_path / "cassettes" / "customer-support.yaml")
    assert entry["recorded_from"] == gms.url and "secret" not in (tmp_path / "cassettes" / "customer-support.yaml"
                                                                  ).read_text()
    assert loaded(tmp_path / "sim.yaml")[0]["recorded_from"] == "builtin"
    (rec,) = storage.load(tmp_path / "sim.yaml").interactions
    assert rec.recorded_from == "builtin"


async def test_hop_by_hop_headers_are_neither_recorded_nor_re_sent_by_verify(proxy, gms, tmp_path) -> None:
    """D20: Java's HttpClient sends an h2c upgrade; what was not forwarded was recorded, and verify re-sent it."""
    from omproxy.model import Request, headers_of
    from omproxy.tools.verify import Ids, rewrite

    client = await proxy(cassette=str(tmp_path / "c.yaml"))
    await client.post("/echo", data=b"a=1", headers={**FORM, "Connection": "Upgrade, HTTP2-Settings",
                                                      "Upgrade": "h2c", "HTTP2-Settings": "AAEAAEAAAAIAAAAA",
                                                      "X-Kept": "yes"})
    recorded = {k.lower() for k in loaded(tmp_path / "c.yaml")[0]["request"]["headers"]}
    assert {"upgrade", "http2-settings", "connection"}.isdisjoint(recorded) and "x-kept" in recorded
    old = Request("POST", "/echo", "", headers_of({"Upgrade": "h2c", "HTTP2-Settings": "AAEA", "X-Kept": "yes"}))
    assert {k.lower() for k in rewrite(old, Ids()).headers} == {"x-kept"}
