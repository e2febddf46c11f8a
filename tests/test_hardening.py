"""The reliability and security probe's findings, each as a test over real sockets and real files: a
full disk never destroys a cassette, odd bytes never give a 500, secrets stay out, bombs are refused."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from omproxy.cassette import entry as cassette
from omproxy.cassette import storage, yamlformat
from omproxy.config.options import Config, Mode, Redaction
from omproxy.errors import CassetteError
from omproxy.model import Request, Response, headers_of
from omproxy.serve.http.front import build_app
from omproxy.state.memory import MemoryState
from tests.support import BASE, FORM, FakeGms, RawUpstream, raw_answer, send_raw

OK = b'{"statusCode":0,"interactionId":"ABCDEFGHIJKLMNOP"}'
JSON = b"Content-Type: application/json"


@pytest.fixture
async def raw_upstream():
    made = []

    async def make(answers: dict[str, bytes]) -> tuple[RawUpstream, str]:
        up = RawUpstream(answers)
        made.append(up)
        return up, await up.start()

    yield make
    for up in made:
        await up.close()


def entry_bytes(i: int) -> bytes:
    req = Request("POST", f"{BASE}/s", "", headers_of(FORM), f"externalId=e{i}".encode())
    return yamlformat.dump_entry(cassette.to_entry(req, Response(200, OK, headers_of({"Content-Type":
                                                                                      "application/json"})), 1.0))


# ---- 1, 1f, 2: the disk -----------------------------------------------------------------------

DISK_FULL = textwrap.dedent("""
    import asyncio, resource, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from omproxy.cassette import storage
    from tests.test_hardening import entry_bytes
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # past the limit, write() fails with EFBIG
    path, limit = Path(sys.argv[1]), int(sys.argv[2])

    async def main():
        writer = storage.CassetteWriter(storage.Template(str(path)))
        acked = failed = 0
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        for i in range(40):
            try:
                await writer.append(path, entry_bytes(i))
                acked += 1
            except OSError:
                failed += 1
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        for i in range(40, 45):                     # space freed: the same process goes on
            await writer.append(path, entry_bytes(i))
            acked += 1
        print(acked, failed)

    asyncio.run(main())
""")


@pytest.mark.parametrize("limit", [3000, 4321, 5000])
def test_a_full_disk_leaves_the_cassette_whole_and_every_acknowledged_entry_in_it(tmp_path, limit) -> None:
    """1 and 2: a failed write is truncated back, whatever byte the cut fell on; later appends follow
    whole entries; replay reads exactly what was acknowledged."""
    script = tmp_path / "full.py"
    script.write_text(DISK_FULL)
    path = tmp_path / "c.yaml"
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, str(script), str(path), str(limit), root], capture_output=True,
                         text=True, timeout=60, cwd=root)
    assert out.returncode == 0, out.stderr
    acked, failed = map(int, out.stdout.split())
    assert failed > 0  # the limit was hit
    loaded = storage.load(path)
    assert loaded.dropped is None
    assert len(loaded.interactions) == acked
    assert [r.request.form.get("externalId") for r in loaded.interactions][-5:] == [f"e{i}" for i in range(40, 45)]


@pytest.mark.parametrize("cut_after", [b"    headers:\n", b"  response:\n", b"    status: 200\n", b"\n  request:\n"])
def test_an_entry_cut_right_after_a_newline_is_never_replayable(tmp_path, cut_after) -> None:
    """2: the cut falls after a newline, so the file parses; the entry lacks what omproxy writes last."""
    whole = yamlformat.HEADER.encode() + entry_bytes(0) + entry_bytes(1)
    last = whole.rindex(b"- recorded_at:")
    cut = whole[:whole.index(cut_after, last) + len(cut_after)]
    path = tmp_path / "c.yaml"
    path.write_bytes(cut)
    got = storage.load(path)
    assert len(got.interactions) == 1 and got.dropped is not None
    writer = storage.CassetteWriter(storage.Template(str(path)))
    asyncio.run(writer.append(path, entry_bytes(2)))  # and the next append cuts it first
    assert [r.request.form.get("externalId") for r in storage.load(path).interactions] == ["e0", "e2"]


def test_a_broken_entry_in_the_middle_is_refused_with_file_and_line(tmp_path) -> None:
    text = (yamlformat.HEADER.encode() + entry_bytes(0).replace(b"  duration_ms: 1.0\n", b"")
            + entry_bytes(1)).decode()
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(CassetteError, match=r"c.yaml:3: interaction #0: cut short"):
        storage.load(path)


async def test_each_append_starts_from_a_whole_entry_after_another_process_tore_the_tail(tmp_path) -> None:
    """1f: the first append of this process checked the tail; another recorder then died mid-write."""
    path = tmp_path / "c.yaml"
    writer = storage.CassetteWriter(storage.Template(str(path)))
    await writer.append(path, entry_bytes(0))
    with path.open("ab") as f:
        f.write(entry_bytes(1)[:57])  # the other process's torn entry, no newline
    await writer.append(path, entry_bytes(2))
    got = storage.load(path)
    assert got.dropped is None and [r.request.form.get("externalId") for r in got.interactions] == ["e0", "e2"]


async def test_a_symlink_named_by_a_service_is_never_followed(aiohttp_client, tmp_path, caplog) -> None:
    """18: decided and documented: a {service} file is opened with O_NOFOLLOW."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours\n")
    folder = tmp_path / "cassettes"
    folder.mkdir()
    client = await aiohttp_client(build_app(Config(cassette=str(folder / "{service}.yaml")), Mode.RECORD))
    (folder / "evil.yaml").symlink_to(outside)  # planted while omproxy runs (at start-up it is refused)
    resp = await client.post(f"{BASE}/evil", data=b"externalId=x", headers=FORM)
    assert resp.status == 200 and outside.read_text() == "not yours\n"
    assert "NOT RECORDED" in caplog.text


# ---- 3, 4, 5, 12: odd bytes never give a 500 ---------------------------------------------------

async def test_a_client_header_that_is_not_utf8_is_recorded_losslessly_and_answered(aiohttp_client, tmp_path):
    """3: the header reaches the upstream, the exchange is recorded, the client gets its answer."""
    client = await aiohttp_client(build_app(Config(cassette=str(tmp_path / "c.yaml")), Mode.RECORD))
    status, body = await send_raw(client.port, b"POST " + BASE.encode() + b"/s HTTP/1.1\r\nHost: x\r\n"
                                  b"X-Name: caf\xe9\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                                  b"Content-Length: 12\r\nConnection: close\r\n\r\nexternalId=a")
    assert status == 200 and json.loads(body)["statusCode"] == 0
    (entry,) = yaml.safe_load((tmp_path / "c.yaml").read_text())["interactions"]
    assert entry["request"]["headers"]["X-Name"] == "caf\xe9"  # latin-1: one character per byte


async def test_an_upstream_header_that_is_not_utf8_is_recorded(aiohttp_client, raw_upstream, tmp_path) -> None:
    """5: a legacy server's latin-1 header value."""
    _, url = await raw_upstream({"s": raw_answer(OK, JSON, b"X-Bin: caf\xe9 \xff\xfe")})
    client = await aiohttp_client(build_app(Config(upstream=url, cassette=str(tmp_path / "c.yaml")), Mode.RECORD))
    resp = await client.post(f"{BASE}/s", data=b"externalId=a", headers=FORM)
    assert resp.status == 200
    (entry,) = yaml.safe_load((tmp_path / "c.yaml").read_text())["interactions"]
    assert entry["response"]["headers"]["X-Bin"] == "caf\xe9 \xff\xfe"


@pytest.mark.parametrize("mode", [Mode.RECORD, Mode.PASSTHROUGH])
async def test_an_upstream_status_that_is_no_http_status_is_a_502_and_never_recorded(aiohttp_client, raw_upstream,
                                                                                      tmp_path, mode) -> None:
    """An answer with status 999 (three digits, so the parser takes it) was passed on and recorded,
    and then every command refused the whole cassette. RFC 9110: a client treats it as a 5xx."""
    _, url = await raw_upstream({"odd": raw_answer(OK, JSON, status=b"999 Odd"), "s": raw_answer(OK, JSON)})
    path = tmp_path / "c.yaml"
    client = await aiohttp_client(build_app(Config(upstream=url, cassette=str(path)), mode))
    assert (await client.post(f"{BASE}/s", data=b"externalId=a", headers=FORM)).status == 200
    resp = await client.post(f"{BASE}/odd", data=b"externalId=b", headers=FORM)
    assert resp.status == 502 and resp.headers["X-Omproxy-Error"] == "upstream-unreachable"
    assert "answered with status 999, which is not an HTTP status" in (await resp.json())["errors"][0]["advice"]
    if mode is Mode.RECORD:
        assert [r.request.path for r in storage.load(path).interactions] == [f"{BASE}/s"]


async def test_credentials_in_the_upstream_url_and_a_clients_authorization(aiohttp_server, aiohttp_client) -> None:
    """4: the client's header is forwarded unchanged; the URL's credentials only when the client sent none."""
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    url = str(server.make_url("")).rstrip("/").replace("http://", "http://svc:pw@")
    client = await aiohttp_client(build_app(Config(upstream=url), Mode.PASSTHROUGH))
    assert (await client.post("/echo", headers={"Authorization": "Basic Y2xpZW50OnNlY3JldA=="})).status == 200
    assert (await client.post("/echo")).status == 200
    auth = [dict((k.lower(), v) for k, v in r["headers"])["authorization"] for r in fake.received]
    assert auth == ["Basic Y2xpZW50OnNlY3JldA==", "Basic c3ZjOnB3"]


@pytest.mark.parametrize("mode", [Mode.SIMULATE, Mode.RECORD, Mode.PASSTHROUGH])
@pytest.mark.parametrize("charset", ["rot13", "base64", "zlib", "idna", "punycode"])
async def test_a_charset_that_is_no_charset_is_never_a_500(aiohttp_client, tmp_path, mode, charset) -> None:
    client = await aiohttp_client(build_app(Config(cassette=str(tmp_path / "c.yaml")), mode))
    resp = await client.post(f"{BASE}/s", data=b"externalId=a",
                             headers={"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"})
    assert resp.status == 200


async def test_deeply_nested_json_from_the_upstream_is_never_a_500(aiohttp_client, raw_upstream, tmp_path) -> None:
    _, url = await raw_upstream({"deep": raw_answer(b"[" * 100_000 + b"]" * 100_000, JSON)})
    client = await aiohttp_client(build_app(Config(upstream=url, cassette=str(tmp_path / "c.yaml")), Mode.RECORD))
    assert (await client.post(f"{BASE}/s/ID/deep")).status == 200
    assert len(storage.load(tmp_path / "c.yaml").interactions) == 1


@pytest.mark.parametrize("encoding,body", [("gzip", b"\x1f\x8b\x08\x00garbage"), ("deflate", b"not deflate")])
async def test_a_corrupt_compressed_request_body_is_a_400(aiohttp_client, encoding, body) -> None:
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    resp = await client.post(f"{BASE}/s", data=body, headers={**FORM, "Content-Encoding": encoding})
    assert resp.status == 400 and (await resp.json())["statusCode"] == 2


async def test_a_gzip_request_body_is_forwarded_plain_without_its_content_encoding(aiohttp_server, aiohttp_client):
    """12: aiohttp hands omproxy the body decompressed; the label must go with the compression."""
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    client = await aiohttp_client(build_app(Config(upstream=str(server.make_url("")).rstrip("/")), Mode.PASSTHROUGH))
    zipped = gzip.compress(b"externalId=GZIPPED")
    resp = await client.post(f"{BASE}/s", data=zipped, headers={**FORM, "Content-Encoding": "gzip"})
    assert resp.status == 200 and (await resp.json())["statusCode"] == 0
    (got,) = fake.received
    assert got["body"] == b"externalId=GZIPPED"
    assert "content-encoding" not in {k.lower() for k, _ in got["headers"]}


# ---- 6, 10: secrets -----------------------------------------------------------------------------

async def test_a_query_secret_never_reaches_a_502_or_the_log(aiohttp_client, refused_port, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    config = Config(upstream=f"http://127.0.0.1:{refused_port}", redact=Redaction(form_keys=("userData[CreditCard]",)))
    client = await aiohttp_client(build_app(config, Mode.PASSTHROUGH))
    resp = await client.post(f"{BASE}/s?userData%5BCreditCard%5D=4111111111111111")
    assert resp.status == 502
    assert "4111111111111111" not in await resp.text() and "4111111111111111" not in caplog.text


async def test_a_twice_encoded_secret_key_is_redacted_too(aiohttp_client, tmp_path, caplog) -> None:
    """10: `userData%255BCreditCard%255D` decodes once to `userData%5BCreditCard%5D`."""
    caplog.set_level(logging.INFO, logger="omproxy")
    config = Config(cassette=str(tmp_path / "c.yaml"), redact=Redaction(form_keys=("userData[CreditCard]",)))
    client = await aiohttp_client(build_app(config, Mode.RECORD))
    await client.post(f"{BASE}/s", data=b"externalId=e&userData%255BCreditCard%255D=4012888888881881", headers=FORM)
    assert "4012888888881881" not in (tmp_path / "c.yaml").read_text()
    assert "4012888888881881" not in caplog.text


# ---- 7, 14: cassettes that are bombs or not HTTP --------------------------------------------------

BOMB = "version: 1\ninteractions:\n- request: {method: POST, path: /a}\n  response:\n    status: 200\n    x:\n" + \
    "".join(f"      - &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'lol'}]\n" for i in range(10))
CYCLE = "version: 1\ninteractions:\n- &a\n  request: {method: POST, path: /a}\n  response: {status: 200, x: *a}\n"


@pytest.mark.parametrize("text,message", [
    (BOMB, "aliases expand to more than"),
    (CYCLE, "refers to a node that contains it"),
    ("version: 1\ninteractions:\n- request: {method: POST, path: /a}\n  response: {status: 99}\n", "not an HTTP"),
    ("version: 1\ninteractions:\n- request: {method: POST, path: /a}\n  response: {status: 1000}\n", "not an HTTP"),
    ("version: 1\ninteractions:\n- request: {method: POST, path: /a}\n  response: {status: -1}\n", "not an HTTP"),
    ("version: 1\ninteractions:\n- request: {method: POST, path: /a}\n  response: {status: 200, headers: "
     "{X-A: \"a\\r\\nSet-Cookie: evil\"}}\n", "CR, LF or NUL"),
    ("version: 1\ninteractions:\n- request: {method: POST, path: /a}\n  response: {status: 200, headers: "
     "{\"Bad Name\": x}}\n", "not a valid HTTP header name"),
    ("version: 1\ninteractions:\n- request: {method: POST, path: /a, path: /b}\n  response: {status: 200}\n",
     "given twice"),
    ("version: 1\ninteractions:\n- request: {method: POST, path: /a}\n  response:\n    status: 200\n"
     "    headers: {X-A: 1, X-A: 2}\n", "given twice"),
], ids=["alias-bomb", "alias-cycle", "status-99", "status-1000", "status-negative", "crlf-header", "bad-name",
        "duplicate-key", "duplicate-header"])
def test_a_cassette_that_is_a_bomb_or_not_http_is_refused_with_file_and_line(tmp_path, text, message) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(CassetteError, match=message) as refused:
        storage.load(path)
    assert refused.value.message.startswith(f"{path}:")


# ---- 9: the admin API ---------------------------------------------------------------------------

async def test_the_admin_token_guards_everything_but_health(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(Config(admin_token="s3cret"), Mode.SIMULATE))
    assert (await client.get("/_omproxy/health")).status == 200
    for method, path in (("GET", "journal"), ("GET", "cassettes"), ("POST", "reset")):
        resp = await client.request(method, f"/_omproxy/{path}", json={})
        assert resp.status == 401 and "s3cret" not in await resp.text(), path
    bearer = {"Authorization": "Bearer s3cret"}
    assert (await client.get("/_omproxy/journal", headers=bearer)).status == 200
    assert (await client.post("/_omproxy/reset", json={}, headers=bearer)).status == 200


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "text/plain"])
async def test_a_state_change_a_browser_form_could_send_is_refused(aiohttp_client, content_type) -> None:
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    resp = await client.post("/_omproxy/reset", data=b"x=1", headers={"Content-Type": content_type})
    assert resp.status == 403
    assert (await client.post("/_omproxy/reset", headers={"X-Omproxy-Admin": "1"})).status == 200


def test_listening_beyond_loopback_is_warned_about() -> None:
    from omproxy.serve.process import beyond_loopback

    assert beyond_loopback("0.0.0.0") and beyond_loopback("192.168.1.5") and beyond_loopback("gms-proxy.local")
    assert not beyond_loopback("127.0.0.1") and not beyond_loopback("::1") and not beyond_loopback("localhost")


# ---- 11: the size of an answer --------------------------------------------------------------------

async def test_an_answer_over_max_response_body_is_a_502_and_not_recorded(aiohttp_client, raw_upstream,
                                                                       tmp_path) -> None:
    bomb = gzip.compress(b"0" * (64 << 20))  # 64 MiB of zeros, 64 KiB on the wire
    _, url = await raw_upstream({"big": raw_answer(b"x" * (2 << 20), JSON),
                                 "bomb": raw_answer(bomb, JSON, b"Content-Encoding: gzip")})
    config = Config(upstream=url, cassette=str(tmp_path / "c.yaml"), max_response_body=1 << 20)
    client = await aiohttp_client(build_app(config, Mode.RECORD))
    for path in ("big", "bomb"):
        resp = await client.post(f"{BASE}/s/ID/{path}")
        assert resp.status == 502 and resp.headers["X-Omproxy-Error"] == "upstream-too-large", path
        assert "max_response_body" in (await resp.json())["errors"][0]["advice"]
    assert not (tmp_path / "c.yaml").exists()


# ---- 13: sessions ---------------------------------------------------------------------------------

async def test_sessions_are_bounded_and_expire() -> None:
    now = [0.0]
    state = MemoryState(max_sessions=3, session_idle=60, clock=lambda: now[0])
    for name in ("a", "b", "c", "d"):
        await state.take(name, "k", 5)
    assert state.sessions == ["b", "c", "d"]  # the least recently used went first
    now[0] = 100.0
    await state.take("e", "k", 5)
    assert state.sessions == ["e"]  # the idle ones expired
    await state.take("", "k", 5)
    now[0] = 1000.0
    await state.take("f", "k", 5)
    assert "" in state.sessions  # the default session is never expired


# ---- 15: the log ----------------------------------------------------------------------------------

async def test_control_characters_from_a_path_are_escaped_in_the_log(aiohttp_client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    await send_raw(client.port, b"POST /genesys/2/openmedia/a\x1b[31mred HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    assert "\x1b" not in caplog.text


def test_scan_for_a_miss_is_bounded() -> None:
    from omproxy.config.options import Matching
    from omproxy.model import Recorded
    from omproxy.modes import matching

    recs = [Recorded("c", i, 0, Request("POST", f"{BASE}/s", "", headers_of(FORM), f"externalId=e{i}".encode()),
                     Response(200, OK)) for i in range(2000)]
    index = matching.Index(recs, matching.Rules.of(Matching()))
    index.near_misses(Request("POST", f"{BASE}/s", "", headers_of(FORM), b"externalId=none"))
    assert len(index._views) == matching.NEAR_MISS_SCAN



async def test_an_unsupported_request_encoding_is_a_415_and_a_gzip_bomb_a_413(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(Config(max_body=1 << 20), Mode.SIMULATE))
    resp = await client.post(f"{BASE}/s", data=b"abc", headers={**FORM, "Content-Encoding": "br"})
    assert resp.status == 415 and (await resp.json())["statusCode"] == 2
    bomb = gzip.compress(b"a=" + b"0" * (16 << 20))
    resp = await client.post(f"{BASE}/s", data=bomb, headers={**FORM, "Content-Encoding": "gzip"})
    assert resp.status == 413


async def test_answers_with_other_header_lines_are_each_forwarded_with_their_own(raw_upstream) -> None:
    """Header lines an upstream repeats are made into omproxy's headers (and a head) once; an answer
    whose lines differ — a value, an encoding — is never sent another's."""
    from omproxy.serve.http import front as server
    from omproxy.serve.runtime import build_runtime
    from tests.serve.test_server import read_answer

    JSON_TYPE = b"Content-Type: application/json"
    _, url = await raw_upstream({
        "a": raw_answer(b'{"statusCode":0}', JSON_TYPE, b"X-Which: a"),
        "b": raw_answer(b'{"statusCode":0}', JSON_TYPE, b"X-Which: b"),
        "z": raw_answer(gzip.compress(b'{"statusCode":0}'), JSON_TYPE, b"X-Which: a", b"Content-Encoding: gzip"),
        "e": raw_answer(b'{"statusCode":2}', JSON_TYPE, b"X-Which: a", status=b"404 Not Found")})
    config = Config(port=0, upstream=url)
    listener = await server.start(build_runtime(config, Mode.PASSTHROUGH), config)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        seen = []
        for name in ("a", "b", "a", "z", "a", "e", "b"):
            writer.write(f"POST {BASE}/s/ID/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            status, headers, body = await read_answer(reader)
            seen.append((status, headers["x-which"], "content-encoding" in headers, json.loads(body)["statusCode"]))
        writer.close()
    finally:
        await listener.close()
    assert seen == [(200, "a", False, 0), (200, "b", False, 0), (200, "a", False, 0), (200, "a", False, 0),
                    (200, "a", False, 0), (404, "a", False, 2), (200, "b", False, 0)]


# ---- round 3 (../shared/reviews/2026-12-02-reliability-security.md) ------------------------------

@pytest.mark.parametrize("charset", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf_16"])
async def test_3_a_utf16_form_is_recorded_replayable_and_replayed_never_a_500(aiohttp_client, tmp_path,
                                                                             charset) -> None:
    """3: replay answered 500, and one recorded entry made its cassette and folder refuse to load."""
    headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"}
    body = "externalId=u16&userData[Note]=Müller".encode(charset)
    recorder = await aiohttp_client(build_app(Config(cassette=str(tmp_path / "{service}.yaml"), upstream="builtin"),
                                              Mode.RECORD))
    assert (await recorder.post(f"{BASE}/s", data=body, headers=headers)).status == 200
    (loaded,) = storage.load_spec(storage.Template(str(tmp_path) + "/"), must_exist=True)  # the folder loads
    assert loaded.interactions[0].request.form.get("userData[Note]") == "Müller"
    replayer = await aiohttp_client(build_app(Config(cassette=str(tmp_path) + "/", fallback="none"), Mode.REPLAY))
    resp = await replayer.post(f"{BASE}/s", data=body, headers=headers)
    assert resp.status == 200 and resp.headers["X-Omproxy-Source"] == "cassette"


SECRET_FORMS = {  # finding 4's five encodings of one card number under a redacted key
    "whole body encoded once more": b"userData%5BCreditCard%5D%3D4012888888881881%26x%3D1",
    "key encoded three times": b"externalId=e&userData%25255BCreditCard%25255D=4012888888881881",
    "value encoded twice": b"externalId=e&userData%5BCreditCard%5D=" + b"".join(
        b"%25" + f"{ord(c):02X}".encode() for c in "4012888888881881"),
    "utf-16": "externalId=e&userData[CreditCard]=4012888888881881".encode("utf-16"),
}


@pytest.mark.parametrize("body", list(SECRET_FORMS.values()), ids=list(SECRET_FORMS))
async def test_4_a_redacted_card_number_is_nowhere_in_any_encoding(aiohttp_client, tmp_path, caplog, body) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    config = Config(cassette=str(tmp_path / "c.yaml"), upstream="builtin", verbose=1,
                    redact=Redaction(form_keys=("userData[CreditCard]",)))
    client = await aiohttp_client(build_app(config, Mode.RECORD))
    kind = "utf-16" if body.startswith(b"\xff\xfe") else None
    headers = {"Content-Type": "application/x-www-form-urlencoded" + (f"; charset={kind}" if kind else "")}
    assert (await client.post(f"{BASE}/customer-support", data=body, headers=headers)).status == 200
    journal = await (await client.get("/_omproxy/journal")).text()
    detail = await (await client.get("/_omproxy/exchange?id=1")).text()
    raw = (tmp_path / "c.yaml").read_bytes()
    stored = raw + b"".join(r.request.body for r in storage.load(tmp_path / "c.yaml").interactions)
    for where, text in (("cassette", stored.decode("utf-8", "replace")), ("utf-16 body", stored.decode(
            "utf-16", "replace") if kind else ""), ("log", caplog.text), ("journal", journal), ("inspector", detail)):
        assert "4012888888881881" not in text and "4012%" not in text, where


async def test_4_a_twice_encoded_secret_key_never_reaches_a_miss_report(aiohttp_client, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    story = Path(__file__).resolve().parent.parent / "cassettes" / "examples" / "reference-story.yaml"
    config = Config(cassette=str(story), fallback="none", redact=Redaction(form_keys=("userData[CreditCard]",)))
    client = await aiohttp_client(build_app(config, Mode.REPLAY))
    resp = await client.post(f"{BASE}/customer-support", headers=FORM,
                             data=b"externalId=xy932&userData%255BCreditCard%255D=4012888888881881")
    answer = await resp.text()
    journal = await (await client.get("/_omproxy/journal")).text()
    for where, text in (("404", answer), ("log", caplog.text), ("journal", journal)):
        assert "4012888888881881" not in text, where


async def test_11_another_writers_torn_entry_ending_on_a_newline_is_cut_before_the_next_append(tmp_path) -> None:
    """11: only the last byte was checked after a process's first append: a torn entry that ended on a
    newline stayed, and the next entry after it made the cassette refused."""
    path = tmp_path / "c.yaml"
    writer = storage.CassetteWriter(storage.Template(str(path)))
    await writer.append(path, entry_bytes(0))
    torn = entry_bytes(1)
    with path.open("ab") as f:  # the other writer, killed with the cut right after a line
        f.write(torn[:torn.rindex(b"\n", 0, len(torn) - 30) + 1])
    await writer.append(path, entry_bytes(2))
    got = storage.load(path)
    assert got.dropped is None and [r.request.form.get("externalId") for r in got.interactions] == ["e0", "e2"]


def test_10_an_empty_cassette_file_is_a_cassette_with_nothing_in_it(tmp_path, capsys) -> None:
    """10: a 0-byte file (a full disk's leftover) made replay, lint and inspect refuse the whole folder."""
    from omproxy.cli import main

    (tmp_path / "old.yaml").write_bytes(yamlformat.HEADER.encode() + entry_bytes(0))
    (tmp_path / "new.yaml").write_bytes(b"")
    assert len(storage.load(tmp_path / "new.yaml").interactions) == 0
    assert main(["inspect", str(tmp_path) + "/"]) == 0
    assert main(["lint", str(tmp_path) + "/"]) == 0, capsys.readouterr()


@pytest.mark.skipif(not Path("/bin/mount").exists() and not Path("/usr/bin/mount").exists(), reason="no mount")
async def test_10_a_full_disk_leaves_no_empty_cassette_file(aiohttp_client, tmp_path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        client = await aiohttp_client(build_app(Config(cassette=str(disk / "{service}.yaml"), upstream="builtin"),
                                                Mode.RECORD))
        assert (await client.post(f"{BASE}/old", data=b"externalId=a", headers=FORM)).status == 200
        with (disk / "filler").open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"x" * 4096)
        resp = await client.post(f"{BASE}/newservice", data=b"externalId=b", headers=FORM)
        assert resp.status == 200  # answered; not recorded, and said
        assert not (disk / "newservice.yaml").exists()  # no 0-byte file left behind
        (disk / "filler").unlink()
        assert [c.path for c in storage.load_spec(storage.Template(str(disk) + "/"), must_exist=True)] == [
            str(disk / "old.yaml")]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("target,body", [
    ("/_omproxy/journal?limit=%C2%B2", None), ("/_omproxy/journal?limit=%D9%A3", None),
    ("/_omproxy/journal?limit=" + "9" * 5000, None), ("/_omproxy/exchange?id=%C2%B2", None),
    ("/_omproxy/exchange?id=" + "9" * 5000, None), ("/_omproxy/download?ids=%C2%B2,1", None),
    ("/_omproxy/decode", b"[" * 100_000), ("/_omproxy/decode", b'{"body": "a=b", "content_type": ["x"]}'),
    ("/_omproxy/decode", b'{"body": "a=b", "content_type": 5}'), ("/_omproxy/decode", b'{"body": "a=b", "path": {}}'),
    ("/_omproxy/decode", b'{"body": "\\ud800=1"}'), ("/_omproxy/decode", b'{"body": 1e400}'),
    ("/_omproxy/decode", b'{"body": ' + b"9" * 5000 + b"}"), ("/_omproxy/decode", b"[1, 2]")])
async def test_9_odd_admin_inputs_get_an_answer_at_once(aiohttp_client, target, body) -> None:
    """9: each of these got no answer and held its connection for idle_timeout."""
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    if body is None:
        resp = await asyncio.wait_for(client.get(target), 10)
    else:
        resp = await asyncio.wait_for(client.post(target, data=body, headers={"Content-Type": "application/json"}), 10)
    assert resp.status in (200, 400, 404), (target, resp.status)
    assert resp.status != 500


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", True), ("localhost", True), ("[::1]", True), ("10.1.2.3", True), ("app.localhost", True),
    ("rebind.test", False), ("evil.example.com", False), ("gms-proxy.internal", True)])
async def test_14_the_admin_api_answers_only_hosts_that_cannot_be_rebound(aiohttp_client, host, allowed) -> None:
    """14: a page whose DNS name rebinds to 127.0.0.1 was same-origin with omproxy: journal read, state reset."""
    config = Config(admin_allowed_hosts=("gms-proxy.internal",))
    client = await aiohttp_client(build_app(config, Mode.SIMULATE))
    for target in ("/_omproxy/journal", "/_omproxy/ui", "/_omproxy/events"):
        resp = await client.get(target, headers={"Host": f"{host}:8080"})
        assert (resp.status != 403) is allowed, (host, target, resp.status)
        resp.close()
    health = await client.get("/_omproxy/health", headers={"Host": "rebind.test"})  # probes: never refused
    assert health.status == 200
    with_token = await aiohttp_client(build_app(Config(admin_token="t0ken"), Mode.SIMULATE))
    resp = await with_token.get("/_omproxy/journal", headers={"Host": "rebind.test", "Authorization": "Bearer t0ken"})
    assert resp.status == 200  # with a token, the token guards


async def test_15_a_form_key_cannot_forge_log_lines_through_the_secret_warning(aiohttp_client, tmp_path,
                                                                               caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await aiohttp_client(build_app(Config(cassette=str(tmp_path / "c.yaml"), upstream="builtin"),
                                            Mode.RECORD))
    await client.post(f"{BASE}/s", headers=FORM, data=b"externalId=q&userData%5B%1B%5B2J%1B%5B31mX%0D2026-12-02"
                                                     b"%2000:00:00,000%20INFO%20forged%5D=4111111111111111")
    warnings = [r.getMessage() for r in caplog.records if "recorded in clear" in r.getMessage()]
    assert warnings and not any("\x1b" in w or "\r" in w for w in warnings), warnings


@pytest.mark.parametrize("journal", [b"[" * 100_000, b'{"cassettes":[{"cassette":5,"never_played":"x"}]}',
                                     b'{"entries": 5, "cassettes": {"a": 1}}'])
def test_19_a_deep_or_odd_journal_is_one_line_never_a_traceback(tmp_path, capsys, journal) -> None:
    from omproxy.cli import main

    (tmp_path / "c.yaml").write_bytes(yamlformat.HEADER.encode() + entry_bytes(0))
    (tmp_path / "j.json").write_bytes(journal)
    code = main(["lint", str(tmp_path / "c.yaml"), "--journal", str(tmp_path / "j.json")])
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err


@pytest.mark.parametrize("coding", [b"gzip, gzip", b"compress", b"br"])
async def test_20_an_answer_in_a_coding_omproxy_cannot_decode_is_a_502(aiohttp_client, raw_upstream, tmp_path,
                                                                       coding) -> None:
    """20: gzip, gzip was decoded once and passed on as JSON, still gzip; compress went through unlabelled."""
    zipped = gzip.compress(gzip.compress(OK))
    _, url = await raw_upstream({"x": raw_answer(zipped, JSON, b"Content-Encoding: " + coding)})
    client = await aiohttp_client(build_app(Config(upstream=url, cassette=str(tmp_path / "c.yaml")), Mode.RECORD))
    resp = await client.post(f"{BASE}/x", data=b"a=1", headers=FORM)
    advice = (await resp.json())["errors"][0]["advice"]
    assert resp.status == 502 and ("Content-Encoding" in advice or coding == b"br"), advice  # br: aiohttp's own
    assert not (tmp_path / "c.yaml").exists()


async def test_21_notes_credentials_stay_out_of_an_export_and_bearer_is_any_case(aiohttp_client, tmp_path,
                                                                                 capsys) -> None:
    from omproxy.cli import main

    story = Path(__file__).resolve().parent.parent / "cassettes" / "examples" / "reference-story.yaml"
    for fmt in ("vcr", "har"):
        out = tmp_path / f"x.{fmt}"
        assert main(["export", str(story), "--format", fmt, "--base-url", "http://user:s3cret@gms.example:8080",
                     "-o", str(out)]) == 0
        assert "s3cret" not in out.read_text() and "gms.example:8080" in out.read_text()
    client = await aiohttp_client(build_app(Config(admin_token="t0ken"), Mode.SIMULATE))
    assert (await client.get("/_omproxy/journal", headers={"Authorization": "bearer t0ken"})).status == 200
    assert (await client.get("/_omproxy/journal", headers={"Authorization": "bearer wrong"})).status == 401


async def test_18_a_form_of_many_keys_is_shown_in_part_and_decoded_off_the_loop(aiohttp_client) -> None:
    """18: a 45,000-key form held every other client ~2 s while it was decoded and every key rendered
    into the log line, the journal and the inspector's row (measured by hand: a health probe's worst
    wait 719 ms -> 58 ms); what shows it now shows its first 200 fields and says how many more."""
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    body = b"&".join(b"userData%5BK" + str(i).encode() + b"%5D=v" for i in range(30_000))  # > 256 KiB
    assert (await client.post(f"{BASE}/s", data=body, headers=FORM)).status == 200
    (shown,) = (await (await client.get("/_omproxy/journal")).json())["entries"]
    assert len(shown["form"]["userData"]) == 200 and shown["fields_not_shown"] > 0  # of what the journal keeps
    assert shown["bytes_not_kept"] > 0  # (its body, cut at 16 KiB)
