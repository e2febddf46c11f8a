"""VCR.py and HAR interchange: an exported cassette replayed by VCR.py itself for requests, httpx and
aiohttp; HAR 1.2 written with its required fields and read back; HARs as browsers and mitmproxy write
them imported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omproxy import yamlsafe
from omproxy.cassette import interchange, storage
from omproxy.cli import main
from tests.support import har_problems

STORY = Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" / "reference-story.yaml"
BASE_URL = "http://gms.example:8080"
SVC = "/genesys/2/openmedia/customer-support"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CREATE = (b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BTestKey2%5D=Test+value"
          b"&userData%5BKeyToDelete%5D=value+to+delete")


def same_interactions(a: Path, b: Path) -> None:
    first, second = storage.load(a).interactions, storage.load(b).interactions
    assert [(r.request.method, r.request.path, r.request.query, r.request.body, r.response.status,
             r.response.body) for r in first] == \
        [(r.request.method, r.request.path, r.request.query, r.request.body, r.response.status,
          r.response.body) for r in second]


@pytest.fixture
def vcr_cassette(tmp_path) -> Path:
    out = tmp_path / "story-vcr.yaml"
    assert main(["export", str(STORY), "--format", "vcr", "--base-url", BASE_URL, "-o", str(out)]) == 0
    return out


def test_vcr_replays_the_export_for_requests(vcr_cassette) -> None:
    import requests
    import vcr

    with vcr.use_cassette(str(vcr_cassette), record_mode="none"):
        created = requests.post(BASE_URL + SVC, data=CREATE, headers=FORM).json()
        first = requests.post(f"{BASE_URL}{SVC}/{created['interactionId']}/get").json()
    assert created == {"statusCode": 0, "interactionId": "01QG0Q2S5S50G000"}
    assert first["interactionProperties"]["interactionId"] == "01QG0Q2S5S50G000"


def test_vcr_replays_the_export_for_httpx(vcr_cassette) -> None:
    import httpx
    import vcr

    with vcr.use_cassette(str(vcr_cassette), record_mode="none"), httpx.Client() as client:
        assert client.post(BASE_URL + SVC, content=CREATE, headers=FORM).json()["interactionId"] == "01QG0Q2S5S50G000"


async def test_vcr_replays_the_export_for_aiohttp(vcr_cassette) -> None:
    import aiohttp
    import vcr

    with vcr.use_cassette(str(vcr_cassette), record_mode="none"):
        async with aiohttp.ClientSession() as http, http.post(BASE_URL + SVC, data=CREATE, headers=FORM) as r:
            assert (await r.json(content_type=None))["interactionId"] == "01QG0Q2S5S50G000"


def test_vcr_round_trip(vcr_cassette, tmp_path) -> None:
    back = tmp_path / "back.yaml"
    assert main(["import", str(vcr_cassette), "--from", "vcr", "-o", str(back), "--config",
                 str(_empty(tmp_path))]) == 0
    same_interactions(STORY, back)


def test_har_export_has_the_required_fields_and_round_trips(tmp_path) -> None:
    har = tmp_path / "story.har"
    assert main(["export", str(STORY), "--format", "har", "-o", str(har)]) == 0
    assert har_problems(json.loads(har.read_text())) == []  # the HAR 1.2 JSON schema's word
    log = json.loads(har.read_text())["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "omproxy"
    for entry in log["entries"]:
        assert {"startedDateTime", "time", "request", "response", "cache", "timings"} <= set(entry)
        assert {"method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize",
                "bodySize"} <= set(entry["request"])
        assert {"status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL",
                "headersSize", "bodySize"} <= set(entry["response"])
        assert {"size", "mimeType"} <= set(entry["response"]["content"])
    create = log["entries"][0]["request"]["postData"]
    assert create["text"] == CREATE.decode() and {"name": "userData[OrderNumber]", "value": "ABC123456789"} in \
        create["params"]
    back = tmp_path / "back.yaml"
    assert main(["import", str(har), "-o", str(back), "--config", str(_empty(tmp_path))]) == 0
    same_interactions(STORY, back)


def test_an_export_written_a_piece_at_a_time_is_the_whole_document() -> None:
    recorded = storage.load(STORY).interactions
    assert json.loads("".join(interchange.har_text(recorded, BASE_URL))) == interchange.to_har(recorded, BASE_URL)
    assert yamlsafe.load("".join(interchange.vcr_text(recorded, BASE_URL))) == interchange.to_vcr(recorded, BASE_URL)
    assert json.loads("".join(interchange.har_text([], BASE_URL)))["log"]["entries"] == []
    assert har_problems(interchange.to_har(recorded, BASE_URL)) == []


@pytest.mark.parametrize("fmt", ["har", "vcr"])
def test_an_export_is_written_whole_or_not_at_all(tmp_path, capsys, fmt) -> None:
    """Written as the cassette is read: a broken entry met at its end leaves the output as it was."""
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(STORY.read_bytes() + b"- request: {method: POST\n")
    out = tmp_path / f"out.{fmt}"
    out.write_text("before")
    assert main(["export", str(broken), "--format", fmt, "-o", str(out), "--force"]) == 2
    assert "broken.yaml:" in capsys.readouterr().err
    assert out.read_text() == "before" and sorted(p.name for p in tmp_path.iterdir()) == ["broken.yaml", f"out.{fmt}"]


def har(*entries: dict) -> dict:
    return {"log": {"version": "1.2", "creator": {"name": "test", "version": "1"}, "entries": list(entries)}}


def entry(url: str, post: dict | None, content: dict) -> dict:
    request = {"method": "POST", "url": url, "httpVersion": "HTTP/2", "cookies": [], "queryString": [],
               "headers": [{"name": ":authority", "value": "gms.example"},
                           {"name": "content-type", "value": "application/x-www-form-urlencoded"}],
               "headersSize": -1, "bodySize": -1}
    if post is not None:
        request["postData"] = post
    return {"startedDateTime": "2026-11-28T10:15:02.114Z", "time": 12.5, "request": request,
            "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/2", "cookies": [],
                         "headers": [{"name": "content-type", "value": "application/json"},
                                     {"name": "content-encoding", "value": "gzip"}],
                         "content": {"size": 0, "mimeType": "application/json", **content},
                         "redirectURL": "", "headersSize": -1, "bodySize": -1},
            "cache": {}, "timings": {"send": 0, "wait": 12.5, "receive": 0}}


def test_har_from_a_browser_and_from_mitmproxy(tmp_path) -> None:
    import base64

    capture = tmp_path / "capture.har"
    capture.write_text(json.dumps(har(
        entry(f"{BASE_URL}{SVC}", {"mimeType": "application/x-www-form-urlencoded", "text": "externalId=m1"},
              {"text": '{"statusCode":0,"interactionId":"MITM000000000001"}'}),  # mitmproxy: text only
        entry(f"{BASE_URL}{SVC}", {"mimeType": "application/x-www-form-urlencoded",
                                   "params": [{"name": "externalId", "value": "b 1"}]},  # a browser: params
              {"text": base64.b64encode(b'{"statusCode":0}').decode(), "encoding": "base64"}),
        entry("https://cdn.example/app.js", None, {"text": "js"}))))  # not GMS: left out
    out = tmp_path / "imported.yaml"
    assert main(["import", str(capture), "-o", str(out), "--config", str(_empty(tmp_path))]) == 0
    first, second = storage.load(out).interactions
    assert first.request.body == b"externalId=m1" and first.response.body.startswith(b'{"statusCode":0,"inter')
    assert second.request.form.get("externalId") == "b 1" and second.response.body == b'{"statusCode":0}'
    assert ":authority" not in first.request.headers and first.response.content_encoding == "gzip"


def test_a_bad_har_is_one_line_naming_the_entry(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.har"
    bad.write_text(json.dumps(har({"request": {"url": f"{BASE_URL}{SVC}"}})))
    assert main(["import", str(bad), "-o", str(tmp_path / "x.yaml"), "--config", str(_empty(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "bad.har: entry #0" in err and len(err.strip().splitlines()) == 1


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path
