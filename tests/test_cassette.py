"""The cassette format as pure logic: what goes in comes back out, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omproxy import cassette
from omproxy.config import Redaction
from omproxy.model import Request, Response, headers_of
from omproxy.redaction import Redactor

NO_REDACTION = Redactor(Redaction())


def round_trip(tmp_path: Path, req: Request, resp: Response) -> cassette.Recorded:
    path = tmp_path / "c.yaml"
    path.write_bytes(cassette.HEADER.encode() + cassette.dump_entry(cassette.entry(req, resp, 1.0, NO_REDACTION)))
    (rec,) = cassette.load(path).interactions
    return rec


@settings(max_examples=200, deadline=None)
@given(req_body=st.binary(max_size=80) | st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
       resp_body=st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
       value=st.text(max_size=30).filter(lambda t: "\r" not in t and "\n" not in t))
def test_bodies_and_header_values_survive_the_cassette_exactly(tmp_path_factory, req_body, resp_body, value) -> None:
    tmp = tmp_path_factory.mktemp("rt")
    safe_value = value.encode("latin-1", "ignore").decode("latin-1")
    req = Request("POST", "/genesys/2/openmedia/s", "a=1", headers_of({"X-Value": safe_value}), req_body)
    resp = Response(200, resp_body, headers_of({"Content-Type": "text/plain"}))
    rec = round_trip(tmp, req, resp)
    assert rec.request.body == req_body
    assert rec.response.body == resp_body
    assert rec.request.headers["X-Value"] == safe_value


@pytest.mark.parametrize("text", ["00012", "true", "on", "null", "1e3", "0x1F", "~", "- a", "a: b", "'q'", " lead",
                                  "trail ", "#hash", "\u2028", "\x85", "\ufeff"])
def test_strings_yaml_would_change_stay_strings(tmp_path, text) -> None:
    body = f"userData%5BK%5D={text}".encode()
    req = Request("POST", "/genesys/2/openmedia/s", "", headers_of({"Content-Type":
                                                                     "application/x-www-form-urlencoded"}), body)
    rec = round_trip(tmp_path, req, Response(200, b"{}"))
    assert rec.request.body == body


def test_hand_written_cassettes_may_use_anchors_and_merge_keys(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ninteractions:\n"
                    "- &created\n  request: {method: POST, path: /a, form: {x: '1'}}\n"
                    "  response: {status: 200, body: '{\"statusCode\":0}'}\n"
                    "- <<: *created\n  request: {method: POST, path: /b}\n")
    first, second = cassette.load(path).interactions
    assert second.request.path == "/b"
    assert second.response.body == first.response.body == b'{"statusCode":0}'


def test_repair_keeps_a_whole_last_entry_missing_only_its_newline(tmp_path) -> None:
    import os

    path = tmp_path / "c.yaml"
    whole = cassette.HEADER + cassette.dump_entry(
        {"request": {"method": "POST", "path": "/p0"}, "response": {"status": 200, "body": "{}"}}).decode()
    path.write_text(whole.rstrip("\n"))
    assert [r.request.path for r in cassette.load(path).interactions] == ["/p0"]  # load keeps it
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        assert cassette.repair_tail(fd, str(path)) is None  # and so does the writer
    finally:
        os.close(fd)
    assert path.read_text() == whole
