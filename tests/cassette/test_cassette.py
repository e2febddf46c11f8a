"""The cassette format as pure logic: what goes in comes back out, byte for byte."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omproxy.cassette import entry as cassette
from omproxy.cassette import storage, yamlformat
from omproxy.errors import CassetteChanged, CassetteError
from omproxy.model import Recorded, Request, Response, headers_of


def round_trip(tmp_path: Path, req: Request, resp: Response) -> Recorded:
    path = tmp_path / "c.yaml"
    path.write_bytes(yamlformat.HEADER.encode() + yamlformat.dump_entry(cassette.to_entry(req, resp, 1.0)))
    (rec,) = storage.load(path).interactions
    return rec


@settings(max_examples=200, deadline=None)
@given(req_body=st.binary(max_size=80) | st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
       resp_body=st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
       value=st.text(max_size=30).filter(lambda t: not set(t) & set("\r\n\0")))
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
    first, second = storage.load(path).interactions
    assert second.request.path == "/b"
    assert second.response.body == first.response.body == b'{"statusCode":0}'


def test_a_last_entry_missing_its_newline_is_torn_even_when_it_parses(tmp_path) -> None:
    """D1: a cut inside a plain scalar parses as a shorter value; omproxy always ends an entry with a
    newline, so a missing one means torn, however the rest reads."""
    path = tmp_path / "c.yaml"
    req = Request("POST", "/p0")
    whole = (yamlformat.HEADER.encode() + yamlformat.dump_entry(cassette.to_entry(req, Response(200, b"{}"), 1.0))
             + yamlformat.dump_entry(cassette.to_entry(req, Response(502, b"Bad Gateway from upstream load balancer",
                                                                   headers_of({"Content-Type": "text/plain"})), 1.0)))
    end = whole.index(b"Bad Gateway from ups") + len(b"Bad Gateway from ups")
    cut = whole[:end] + whole[-len(b"\n  duration_ms: 1.0\n"):]  # parses: a shorter body, a whole entry
    path.write_bytes(cut.rstrip(b"\n"))
    got = storage.load(path)
    assert [r.response.status for r in got.interactions] == [200]
    assert got.dropped is not None and "torn" in got.dropped


def test_a_big_capture_is_remembered_by_content_and_never_believed_when_it_changed(tmp_path, monkeypatch) -> None:
    from omproxy.cassette import indexcache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "big.yaml"
    req = Request("POST", "/genesys/2/openmedia/s/ID/get", "", headers_of({"Content-Type": "x"}), b"")
    one = yamlformat.dump_entry(cassette.to_entry(req, Response(200, b'{"statusCode":0,"pad":"' + b"x" * 4000 + b'"}'),
                                                  1.0))
    count = indexcache.MIN_SIZE // len(one) + 10
    path.write_bytes(yamlformat.HEADER.encode() + one * count)
    first = storage.load(path)
    (remembered,) = [p for p in (tmp_path / "cache" / "omproxy").iterdir() if p.is_file()]  # (paths/: pointers)
    again = storage.load(path)  # from the cache
    assert [r.response.body for r in again.interactions] == [r.response.body for r in first.interactions]
    with path.open("ab") as f:  # changed: another content, another key; the old one is not believed
        f.write(yamlformat.dump_entry(cassette.to_entry(req, Response(201, b"{}"), 1.0)))
    changed = storage.load(path)
    assert len(changed.interactions) == count + 1 and changed.interactions[-1].response.status == 201
    remembered.write_text("{not json")  # a broken cache is not used, never an error
    path.write_bytes(yamlformat.HEADER.encode() + one * count)
    assert len(storage.load(path).interactions) == count


def test_a_big_capture_with_a_broken_entry_still_names_its_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "big.yaml"
    req = Request("POST", "/p")
    entries = [yamlformat.dump_entry(cassette.to_entry(req, Response(200, b"{}"), 1.0)) for _ in range(5000)]
    entries[4321] = entries[4321].replace(b"status: 200", b"status: [")
    path.write_bytes(yamlformat.HEADER.encode() + b"".join(entries))
    with pytest.raises(CassetteError, match=r"big.yaml:\d+: not valid YAML"):
        storage.load(path)


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
           | st.sampled_from(["on", "yes", "No", "~", "null", "0x1F", "1e3", "2026-11-28", "12:30", "<<", "=",
                              "- a", "a: b", "a #b", " a", "a ", "'q'", '"q"', "*x", "&x", "!x", "%x", "@x",
                              "\u2028", "\x85", "\ufeff", "\x7f", "a\nb", "{}", "[]", ":", "?", ",", "http://x/a b"]))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8) | st.sampled_from(["on", "1", "y"]), inner, max_size=4),
                         max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(entry=st.dictionaries(st.text(max_size=8), documents, max_size=5))
def test_the_fast_entry_writer_round_trips_through_any_yaml_reader(entry) -> None:
    import yaml

    from omproxy import yamlsafe

    text = yamlformat.dump_entry(entry).decode("utf-8")
    assert yaml.safe_load(text) == [entry]  # any reader of YAML 1.1 (PyYAML), and
    assert yamlsafe.load(text) == [entry]  # omproxy's own (YAML 1.2 booleans)


def test_save_writes_a_whole_cassette_that_loads_back(tmp_path) -> None:
    entries = [cassette.to_entry(Request("POST", f"/p{i}"), Response(200, b"{}"), 1.0) for i in range(3)]
    path = tmp_path / "sub" / "saved.yaml"
    storage.save(path, entries)
    assert [r.request.path for r in storage.load(path).interactions] == ["/p0", "/p1", "/p2"]
    storage.save(path, [])
    assert storage.load(path).interactions == ()
    assert [p.name for p in path.parent.iterdir()] == ["saved.yaml"]  # no temporary file left behind


def test_a_file_written_whole_has_a_new_files_mode_or_keeps_the_one_it_replaces(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.har"
        storage.write_atomically(new, [b"{}"])
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # as any new file (it was 0600, a temporary one's)
        new.chmod(0o600)
        storage.write_atomically(new, [b"[]"])
        assert stat.S_IMODE(new.stat().st_mode) == 0o600 and new.read_bytes() == b"[]"

        def failing():
            yield b"half"
            raise OSError(28, "No space left on device")

        with pytest.raises(OSError):
            storage.write_atomically(new, failing())
        assert new.read_bytes() == b"[]" and [p.name for p in tmp_path.iterdir()] == ["new.har"]
    finally:
        os.umask(umask)


def test_what_is_not_a_file_is_written_to_not_replaced(tmp_path) -> None:
    """`-o /dev/stdout`, a pipe: written straight to (renaming a file over /dev/null, as root, would
    have replaced the device)."""
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    storage.write_atomically(fifo, [b"a", b"b"])
    reader.join(10)
    assert got == [b"ab"] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_cassette_merge_orders_by_recorded_at_keeping_each_files_order(tmp_path) -> None:
    from omproxy.cli import main

    def at(second: int, path: str) -> dict:
        stamp = f"2026-11-28T10:00:{second:02d}.000Z"
        return cassette.to_entry(Request("POST", path), Response(200, b"{}"), 1.0, stamp)

    storage.save(tmp_path / "a.yaml", [at(1, "/a1"), at(3, "/a3"), at(3, "/a3-again")])
    storage.save(tmp_path / "b.yaml", [at(2, "/b2"), at(3, "/b3"), at(9, "/b9")])
    assert main(["cassette", "merge", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "-o",
                 str(tmp_path / "all.yaml")]) == 0
    merged = [r.request.path for r in storage.load(tmp_path / "all.yaml").interactions]
    assert merged == ["/a1", "/b2", "/a3", "/a3-again", "/b3", "/b9"]
    # read as it is merged: an entry broken at the end of one file leaves the output as it was
    with (tmp_path / "b.yaml").open("ab") as f:
        f.write(b"- request: {method: POST\n")
    assert main(["cassette", "merge", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "-o",
                 str(tmp_path / "all.yaml")]) == 2
    assert [r.request.path for r in storage.load(tmp_path / "all.yaml").interactions] == merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "all.yaml", "b.yaml"]


@settings(max_examples=300, deadline=None)
@given(body=st.text(max_size=40), headers=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12) |
                                                          st.lists(st.text(max_size=8), min_size=2, max_size=3),
                                                          max_size=3),
       extra=st.dictionaries(st.text(max_size=8), documents, max_size=3), view=documents, status=st.integers(100, 599))
def test_the_quick_reader_reads_what_pyyaml_reads_or_declines(body, headers, extra, view, status) -> None:
    """Whatever the writer writes, the quick reader gives what PyYAML gives (views skipped alike), or None."""
    from omproxy.cassette import quickyaml

    entry = {"recorded_at": "2026-11-28T10:00:00.000Z", "request": {"method": "POST", "path": "/p", "query": "",
                                                                   "headers": headers, "body": body, "form": view},
             "response": {"status": status, "headers": headers, "body": body, "json": view, **extra},
             "duration_ms": 1.5, **extra}
    text = yamlformat.dump_entry(entry).decode() * 2
    quick = quickyaml.entries(text)
    if quick is None:  # it knows everything the writer writes, but declines a view (conservatively) ...
        assert re.search(r"[!&*?\[{]", text)  # ... only where such a character could be YAML syntax
        return
    assert quick == yamlformat.parse_entries(text, "c.yaml")


@pytest.mark.parametrize("text", [
    "- request: {method: POST}\n",  # a flow mapping
    "- a: 1 # a comment\n",
    "- a: !!python/name:os.system x\n",
    "- a: &x 1\n  b: *x\n",
    "- request:\n    form:\n      k: !!python/object:os.system x\n",
    "- a: 012\n",  # an octal to YAML 1.1
    "- a: yes\n",
    "-   a: 1\n",  # another indentation
])
def test_the_quick_reader_declines_what_it_does_not_know(text) -> None:
    from omproxy.cassette import quickyaml

    assert quickyaml.entries(text) is None


def test_lazy_answers_are_read_when_first_asked_and_only_if_unchanged(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    entries = [yamlformat.dump_entry(cassette.to_entry(Request("POST", f"/p/{i}"),
                                                       Response(200 + i, f'{{"statusCode":{i}}}'.encode()), 1.0))
               for i in range(3)]
    path.write_bytes(yamlformat.HEADER.encode() + b"".join(entries))
    lazy, eager = storage.load(path, lazy=True), storage.load(path)
    assert all(not isinstance(r.answer, Response) for r in lazy.interactions)  # on disk until asked
    assert lazy.interactions[1].response == eager.interactions[1].response
    assert isinstance(lazy.interactions[1].answer, Response)  # read once, then kept
    assert lazy.interactions == eager.interactions
    again = storage.load(path, lazy=True)
    path.write_bytes(path.read_bytes().replace(b"status: 202", b"status: 299"))  # edited while loaded
    assert again.interactions[0].response.status == 200  # untouched bytes: believed
    with pytest.raises(CassetteChanged, match=r"c.yaml:\d+: interaction #2: the cassette changed on disk"):
        again.interactions[2].response  # noqa: B018 — reading it is the point


def test_entries_that_cannot_be_read_alone_are_loaded_whole_even_for_replay(tmp_path) -> None:
    path = tmp_path / "hand.yaml"  # an anchor in one entry, its alias in the next: PyYAML reads them together
    path.write_text("version: 1\ninteractions:\n- request: &r {method: POST, path: /p}\n  response: {status: 200}\n"
                    "- request: *r\n  response: {status: 201}\n")
    recs = storage.load(path, lazy=True).interactions
    assert all(isinstance(r.answer, Response) for r in recs) and [r.response.status for r in recs] == [200, 201]


def test_a_torn_tail_is_dropped_and_the_rest_read_lazily(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    entries = [yamlformat.dump_entry(cassette.to_entry(Request("POST", f"/p/{i}"),
                                                       Response(200, f'{{"statusCode":{i}}}'.encode()), 1.0))
               for i in range(3)]
    path.write_bytes(yamlformat.HEADER.encode() + b"".join(entries) + entries[0][:40])  # cut while writing
    loaded = storage.load(path, lazy=True)
    assert loaded.dropped is not None and len(loaded.interactions) == 3
    assert [r.response.body for r in loaded.interactions] == [f'{{"statusCode":{i}}}'.encode() for i in range(3)]


def test_a_big_capture_replayed_lazily_is_remembered_with_where_each_answer_is(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from omproxy.cassette import indexcache

    path = tmp_path / "big.yaml"
    entries = [yamlformat.dump_entry(cassette.to_entry(Request("POST", f"/p/{i}"), Response(
        200, b'{"statusCode":0,"n":%d,"pad":"%s"}' % (i, b"x" * 4000)), 1.0)) for i in range(1100)]
    path.write_bytes(yamlformat.HEADER.encode() + b"".join(entries))
    assert path.stat().st_size >= indexcache.MIN_SIZE
    cache = tmp_path / "cache" / "omproxy"
    cache.mkdir(parents=True)
    (cache / f".{indexcache.key_of(path.read_bytes())}.x8k2").write_text("{half wri")  # a write stopped midway
    storage.load(path, lazy=True)
    (remembered,) = [p for p in cache.iterdir() if p.is_file()]  # and that leftover is gone
    assert remembered.name.endswith(".requests.json") and remembered.stat().st_size < path.stat().st_size / 10
    again = storage.load(path, lazy=True)  # from the index: no YAML, answers still on disk
    assert again.interactions == storage.load(path).interactions
    good = remembered.read_text()
    for broken in (good.replace('"at":[', '"at":["x",', 1), good.replace('"at":[', '"nowhere":[')):
        remembered.write_text(broken)  # an index omproxy did not write that way is not believed
        assert [r.response.body for r in storage.load(path, lazy=True).interactions] == \
            [r.response.body for r in again.interactions]
    recs = storage.load(path, lazy=True).interactions
    path.write_bytes(path.read_bytes().replace(b'"n":1099,', b'"n":9999,'))  # same size, other bytes
    assert recs[1098].response.status == 200
    with pytest.raises(CassetteChanged, match="changed on disk"):
        recs[1099].response  # noqa: B018 — reading it is the point


def test_an_entry_is_stamped_to_the_millisecond_in_utc() -> None:
    from datetime import UTC, datetime

    before = datetime.now(UTC)
    stamp = cassette.now_stamp()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert cassette.now_stamp(before) <= stamp <= cassette.now_stamp(after)


@pytest.mark.parametrize("depth", [960, 990, 1500])
def test_an_answer_nested_near_pythons_stack_limit_is_recorded_so_that_it_loads_back(tmp_path, depth) -> None:
    """Near the limit an entry's sections may be written in block style where the entry written whole
    goes to the safe dumper: other bytes, the same data, read back alike."""
    from omproxy.config.options import Redaction
    from omproxy.modes.record import encode
    from omproxy.redaction import Redactor

    body = (b'{"a":' * depth) + b"1" + b"}" * depth
    resp = Response(200, body, headers_of({"Content-Type": "application/json"}))
    path = tmp_path / "deep.yaml"
    path.write_bytes(yamlformat.HEADER.encode() + encode(Redactor(Redaction()), Request("POST", "/x"), resp, 1.0))
    (rec,) = storage.load(path).interactions
    assert rec.response.body == body and rec.request.path == "/x"


@pytest.mark.parametrize("lazy", [False, True])
def test_a_last_entry_written_whole_then_edited_wrong_is_refused_not_dropped(tmp_path, lazy, capsys) -> None:
    """Torn means cut while writing: no final newline, or no `duration_ms` (written last). A last entry
    with both that does not read was edited: an error naming file:line, never "one fewer, exit 0"."""
    from omproxy.cli import main

    path = tmp_path / "c.yaml"
    entries = [yamlformat.dump_entry(cassette.to_entry(Request("POST", f"/x/{i}"), Response(200, b"{}"), 1.0))
               for i in range(2)]
    edited = entries[1].replace(b"    method: POST", b"    method: [POST")  # a hand edit that breaks it
    assert b"\n  duration_ms:" in edited and edited.endswith(b"\n")
    path.write_bytes(yamlformat.HEADER.encode() + entries[0] + edited)
    with pytest.raises(CassetteError, match=r"c\.yaml:\d+"):
        storage.load(path, lazy=lazy)
    assert main(["inspect", str(path)]) == 2
    assert "c.yaml:" in capsys.readouterr().err
    torn = entries[1].split(b"  duration_ms:")[0]  # cut before what is written last: torn, dropped
    path.write_bytes(yamlformat.HEADER.encode() + entries[0] + torn)
    got = storage.load(path, lazy=lazy)
    assert len(got.interactions) == 1 and got.dropped is not None
