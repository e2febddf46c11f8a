"""Files from the real world (`../shared/samples/field/`, other tools' own test data): each imports,
or is refused with one line naming what cannot be read, and what it imports replays through omproxy
over a socket. Then the round trips: export and import again gives the same bytes, for generated
exchanges (Hypothesis); every HAR omproxy writes passes the HAR 1.2 schema; VCR.py replays bytes
that are not UTF-8; no output file is replaced by surprise."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from omproxy import yamlsafe
from omproxy.cassette import entry as cassette
from omproxy.cassette import interchange, storage, yamlformat
from omproxy.cli import main
from omproxy.config.options import Config, Fallback, Mode
from omproxy.model import Recorded, Request, Response, Source, headers_of
from omproxy.serve.http.front import build_app
from tests.support import har_problems

FIELD = Path(__file__).resolve().parent.parent.parent.parent / "shared" / "samples" / "field"
FILES = sorted(p for p in FIELD.rglob("*") if p.is_file() and p.suffix in (".har", ".json", ".yaml")
               and "har-schema" not in p.parts)
# What each refused file is refused for: one line, naming it
REFUSED = {"vcrpy-old_cassette.python-tags.yaml": "python -m vcr.migration",
           "mitmproxy-charles.expected.json": "neither HAR",
           "gms-field-requests.yaml": "neither HAR"}
NOTED = {"mitmproxy-chrome.har": "skipped: response.status 0",
         "mitmproxy-corrupted_gzip_body.har": "not valid gzip: kept as its bytes",
         "harviewer-firebug-form-post-params-only.har": "rebuilt from postData.params",
         "asyncpraw-TestComment.test_reply.json": "rebuilt, form-encoded"}


def test_the_samples_are_there() -> None:
    assert len(FILES) >= 12, FILES


def _import(capsys, source: Path, out: Path, *more: str) -> tuple[int, str]:
    (out.parent / "empty.yaml").write_text("{}\n")
    code = main(["import", str(source), "--all", "--config", str(out.parent / "empty.yaml"), "-o", str(out), *more])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("source", FILES, ids=[p.name for p in FILES])
async def test_each_field_file_imports_and_replays(source: Path, tmp_path, capsys, aiohttp_client) -> None:
    out = tmp_path / "imported.yaml"
    code, err = _import(capsys, source, out)
    if source.name in REFUSED:
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert str(source) in err and REFUSED[source.name] in err and "Traceback" not in err
        return
    assert code == 0, err
    if source.name in NOTED:
        assert NOTED[source.name] in err, err
    recorded = storage.load(out).interactions
    assert recorded
    for rec in recorded:
        assert b"[('" not in rec.request.body and b"{'" not in rec.request.body  # never a repr as a body
    client = await aiohttp_client(build_app(Config(cassette=str(out), fallback=Fallback.NONE), Mode.REPLAY))
    for rec in recorded:
        req = rec.request
        sent = {k: v for k, v in req.headers.items() if k.lower() in ("content-type",)}
        async with client.request(req.method, req.target, data=req.body, auto_decompress=False,
                                  headers={**sent, "Accept-Encoding": "identity"}) as resp:
            body = await resp.read()
            assert resp.status == rec.response.status, (rec.where, body[:200])
            assert resp.headers.get("X-Omproxy-Source", "cassette") != "simulator"
            no_body = rec.response.status in (204, 304) or req.method == "HEAD"  # HTTP sends none
            assert body == (b"" if no_body else rec.response.body), rec.where


def test_vcr_aiohttp_data_dict_is_form_encoded_not_a_repr(tmp_path, capsys) -> None:
    """D5: VCR.py's aiohttp stub stores `data=` as given (a list of pairs in JSON, a dict in YAML)."""
    code, err = _import(capsys, FIELD / "vcr" / "asyncpraw-TestComment.test_reply.json", tmp_path / "a.yaml")
    assert code == 0
    first = storage.load(tmp_path / "a.yaml").interactions[0]
    assert first.request.body == b"grant_type=refresh_token&refresh_token=%3CREFRESH_TOKEN%3E"
    assert first.request.form.get("grant_type") == "refresh_token" and "data=" in first.note
    vcr = tmp_path / "dict.yaml"
    vcr.write_text(yaml.safe_dump({"interactions": [{
        "request": {"method": "POST", "uri": "http://gms.example/genesys/2/openmedia/s", "headers": {},
                    "body": {"externalId": "x 1", "userData[Order]": "A&B"}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {}, "body": {"string": "{}"}}}],
        "version": 1}))
    assert _import(capsys, vcr, tmp_path / "b.yaml")[0] == 0
    got = storage.load(tmp_path / "b.yaml").interactions[0].request
    assert got.form.get("userData[Order]") == "A&B" and got.form.get("externalId") == "x 1"


def test_vcr_export_keeps_bytes_that_are_not_utf8_and_vcrpy_replays_them(tmp_path, capsys) -> None:
    """D4: a request body that is not UTF-8 went out as U+FFFD; now as !!binary, both ways."""
    import requests
    import vcr

    body = b"message=M\xfcller&n=1"
    path = _cassette(tmp_path / "c.yaml", [(Request("POST", "/genesys/2/openmedia/s", "", headers_of(
        {"Content-Type": "application/x-www-form-urlencoded"}), body), Response(200, b"\xff\xfe raw", headers_of(
        {"Content-Type": "application/octet-stream"})))])
    out = tmp_path / "vcr.yaml"
    assert main(["export", str(path), "--format", "vcr", "--base-url", "http://gms.example", "-o", str(out)]) == 0
    loaded = yaml.safe_load(out.read_text())["interactions"][0]
    assert loaded["request"]["body"] == body and loaded["response"]["body"]["string"] == b"\xff\xfe raw"
    with vcr.use_cassette(str(out), record_mode="none"):
        answer = requests.post("http://gms.example/genesys/2/openmedia/s", data=body,
                               headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert answer.content == b"\xff\xfe raw"
    capsys.readouterr()
    assert _import(capsys, out, tmp_path / "back.yaml")[0] == 0
    back = storage.load(tmp_path / "back.yaml").interactions[0]
    assert back.request.body == body and back.response.body == b"\xff\xfe raw"


def test_gor_captures_import_paired_by_id_chunked_and_gzip_bodies_decoded(tmp_path, capsys) -> None:
    sep = "\n🐵🙈🙉\n".encode()
    create = (b"POST /genesys/2/openmedia/customer-support HTTP/1.1\r\nHost: gms:8080\r\n"
              b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\nexternalId=g1")
    answer = b'{"statusCode":0,"interactionId":"01QG0Q2S5S50G000"}'
    zipped = gzip.compress(answer)
    created = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(zipped):x}".encode() + b"\r\n" + zipped
               + b"\r\n0\r\n\r\n")
    get = b"POST /genesys/2/openmedia/customer-support/01QG0Q2S5S50G000/get HTTP/1.1\r\nHost: gms:8080\r\n\r\n"
    got = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"statusCode\":0}"
    lost = b"POST /genesys/2/openmedia/customer-support/X/stop HTTP/1.1\r\nHost: gms:8080\r\n\r\n"
    capture = tmp_path / "prod.gor"
    capture.write_bytes(sep.join([
        b"1 aa01 1764842102000000000 0\n" + create, b"1 aa02 1764842103000000000 0\n" + get,
        b"2 aa01 1764842102000000000 12000000\n" + created, b"1 aa03 1764842104000000000 0\n" + lost,
        b"2 aa02 1764842103000000000 3000000\n" + got, b"3 aa02 1764842103000000000 1000000\n" + got]) + sep)
    code, err = _import(capsys, capture, tmp_path / "c.yaml")
    assert code == 0 and "1 request(s) without their response left out" in err
    first, second = storage.load(tmp_path / "c.yaml").interactions
    assert first.request.body == b"externalId=g1" and first.response.body == answer
    assert first.response.content_encoding == "gzip" and first.duration_ms == 12.0
    assert first.recorded_at.startswith("2025-12-04T")
    assert second.request.path.endswith("/get") and second.response.body == b'{"statusCode":0}'
    capture.write_bytes(b"1 aa01 notanumber\n" + get)
    code, err = _import(capsys, capture, tmp_path / "d.yaml")
    assert code == 2 and "prod.gor: payload #0" in err and len(err.strip().splitlines()) == 1


def test_a_har_with_a_byte_order_mark_and_nulls_imports(tmp_path, capsys) -> None:
    doc = json.loads((FIELD / "har" / "mitmproxy-charles.har").read_text())
    doc["log"]["entries"][0]["response"]["content"]["text"] = None
    doc["log"]["entries"][0]["request"]["headers"].append({"name": "X-Null", "value": None})
    har = tmp_path / "bom.har"
    har.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    assert _import(capsys, har, tmp_path / "c.yaml")[0] == 0
    (rec,) = storage.load(tmp_path / "c.yaml").interactions
    assert rec.response.body == b"" and rec.request.headers["X-Null"] == ""


def test_output_files_are_never_replaced_by_surprise(tmp_path, capsys) -> None:
    """D18: import -o and export -o refuse an existing file without --force (import: or --append)."""
    har = FIELD / "har" / "harviewer-firebug-form-post-params-only.har"
    out = tmp_path / "c.yaml"
    out.write_text("mine\n")
    code, err = _import(capsys, har, out)
    assert code == 2 and "exists; --force replaces it, --append adds to it" in err and out.read_text() == "mine\n"
    assert _import(capsys, har, out, "--force")[0] == 0
    assert len(storage.load(out).interactions) == 1
    assert _import(capsys, har, out, "--append")[0] == 0
    assert len(storage.load(out).interactions) == 2
    exported = tmp_path / "x.har"
    exported.write_text("mine")
    assert main(["export", str(out), "--format", "har", "-o", str(exported)]) == 2
    assert "exists; --force replaces it" in capsys.readouterr().err and exported.read_text() == "mine"
    assert main(["export", str(out), "--format", "har", "-o", str(exported), "--force"]) == 0
    assert har_problems(json.loads(exported.read_text())) == []


def test_every_har_omproxy_writes_passes_the_schema_and_real_ones_are_read_anyway() -> None:
    story = storage.load(Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" /
                         "reference-story.yaml").interactions
    assert har_problems(interchange.to_har(story, "http://gms.example:8080")) == []
    # what real tools write and the schema refuses, read all the same (above, per file)
    charles = json.loads((FIELD / "har" / "mitmproxy-charles.har").read_text())
    assert any("redirectURL" in p for p in har_problems(charles))


# ---- round trips: export then import is the identity -------------------------------------------

names = st.sampled_from(["X-Trace", "X-Tenant", "Accept", "Set-Cookie", "Cache-Control", "Content-Type"])
values = st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=12).map(str.strip)
bodies = st.one_of(st.binary(max_size=40), st.text(max_size=30).map(str.encode),
                   st.just(b"externalId=x&userData%5BA%5D=M%C3%BCller"))
exchanges = st.builds(
    lambda method, path, query, rq_headers, body, status, rs_headers, answer, encoding: (
        Request(method, path, query, headers_of(rq_headers), body),
        Response(status, answer, headers_of(rs_headers), Source.CASSETTE, content_encoding=encoding)),
    st.sampled_from(["POST", "GET", "PUT"]),
    st.sampled_from(["/genesys/2/openmedia/s", "/genesys/2/openmedia/s/01QG0Q2S5S50G000/get", "/a%20b"]),
    st.sampled_from(["", "a=1", "a=1&a=2&b=", "q=%E4"]),
    st.lists(st.tuples(names, values), max_size=4), bodies, st.sampled_from([200, 201, 204, 404, 500, 503]),
    st.lists(st.tuples(names, values), max_size=4), bodies, st.sampled_from([None, "gzip", "deflate"]))


def _cassette(path: Path, pairs: list[tuple[Request, Response]]) -> Path:
    path.write_bytes(yamlformat.HEADER.encode() + b"".join(
        yamlformat.dump_entry(cassette.to_entry(q, r, 1.5, "2026-12-01T10:00:00.000Z")) for q, r in pairs))
    return path


def _seen(rec: Recorded) -> tuple[object, ...]:
    req, resp = rec.request, rec.response

    def grouped(headers: object) -> list[tuple[str, list[str]]]:  # per name, its values in order
        found: dict[str, list[str]] = {}
        for k, v in headers.items():  # type: ignore[attr-defined]
            found.setdefault(k.lower(), []).append(v)
        return sorted(found.items())

    return (req.method, req.path, req.query, grouped(req.headers), req.body, resp.status, grouped(resp.headers),
            resp.body, resp.content_encoding)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(exchanges, min_size=1, max_size=4), fmt=st.sampled_from(["har", "vcr"]))
@example(pairs=[(Request("POST", "/genesys/2/openmedia/s", "", headers_of([]), b""),  # found by Hypothesis:
                 Response(200, b"\x03\x00", headers_of([]), Source.CASSETTE, content_encoding="deflate"))],
         fmt="har")  # a decoded body that reads as an empty raw deflate stream
def test_export_then_import_gives_the_same_bytes(tmp_path_factory, pairs, fmt) -> None:
    folder = tmp_path_factory.mktemp("trip")
    original = storage.load(_cassette(folder / "c.yaml", pairs)).interactions
    text = "".join((interchange.har_text if fmt == "har" else interchange.vcr_text)(original, "http://gms.example"))
    if fmt == "har":
        assert har_problems(json.loads(text)) == []
    raw = text.encode()
    back = interchange.read(raw, f"x.{fmt}", everything=True).recorded
    assert [_seen(r) for r in back] == [_seen(r) for r in original]
    # and what VCR.py itself reads back from the YAML is what was written
    if fmt == "vcr":
        assert yamlsafe.load(text) == interchange.to_vcr(original, "http://gms.example")
