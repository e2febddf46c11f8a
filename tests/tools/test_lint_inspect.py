"""omproxy lint and omproxy inspect on hand-written and generated cassettes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omproxy.cassette import entry as cassette
from omproxy.cassette import storage, yamlformat
from omproxy.cli import main
from omproxy.errors import CassetteChanged, CassetteError
from omproxy.model import Request, Response, headers_of
from tests.support import BASE

FORM = headers_of({"Content-Type": "application/x-www-form-urlencoded"})
ID = "01QG0Q255S50G000"


def write(path: Path, exchanges: list[tuple[Request, Response]]) -> Path:
    path.write_bytes(yamlformat.HEADER.encode() + b"".join(
        yamlformat.dump_entry(cassette.to_entry(req, resp, 1.0)) for req, resp in exchanges))
    return path


def ok(body: bytes = b'{"statusCode":0}', status: int = 200) -> Response:
    return Response(status, body, headers_of({"Content-Type": "application/json"}))


REFERENCE_MISTAKES = [  # the reference page's own examples, as a client copying them would send them
    (Request("POST", f"{BASE}/customer-support/{ID}/stop", "", FORM,
             b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED"), "double-encoded"),
    (Request("POST", f"{BASE}/customer-support", "", FORM, b"userData%5BKeyToDelete%5D=value to delete"),
     "literal-space"),
    (Request("POST", f"{BASE}/customer-support/{ID}/update", "", FORM, b"change%5BTestKey2%5D=uTest+value"),
     "python-repr"),
    (Request("POST", f"{BASE}/customer-support", "", FORM, b"userData%5B0rderNumber%5D=ABC"), "zero-for-o"),
    (Request("POST", f"{BASE}/customer-support/{ID}/stop", "", FORM, b"change%5BA%5D=1"), "unknown-parameter"),
    (Request("POST", f"{BASE}/customer-support/{ID}/update", "", FORM, b""), "empty-update"),
    (Request("POST", f"{BASE}/customer-support/short-id/get", "", FORM, b""), "id-pattern"),
]


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_lint_finds_each_of_the_reference_pages_mistakes(tmp_path, capsys) -> None:
    path = write(tmp_path / "c.yaml", [(req, ok()) for req, _ in REFERENCE_MISTAKES])
    code, out = run(capsys, "lint", str(path))
    assert code == 1
    for index, (_, kind) in enumerate(REFERENCE_MISTAKES):
        assert any(line.startswith(f"{path}:") and f" #{index} {kind}:" in line for line in out.splitlines()), kind


def test_lint_is_quiet_on_a_clean_cassette(tmp_path, capsys) -> None:
    clean = write(tmp_path / "clean.yaml", [
        (Request("POST", f"{BASE}/customer-support", "", FORM, b"externalId=xy932&userData%5BOrder%5D=A1"),
         ok(b'{"statusCode":0,"interactionId":"01QG0Q2S5S50G000"}')),
        (Request("POST", f"{BASE}/customer-support/01QG0Q2S5S50G000/get", "", FORM, b""), ok())])
    assert run(capsys, "lint", str(clean)) == (0, "")
    assert run(capsys, "lint", "cassettes/examples/") == (0, "")


def test_lint_reads_as_it_checks_and_a_broken_entry_is_a_usage_error(tmp_path, capsys) -> None:
    """lint streams (a capture of any size is never held whole): what comes before a broken entry is
    checked, then the entry is named with its file and line, exit 2."""
    path = write(tmp_path / "c.yaml", [(req, ok()) for req, _ in REFERENCE_MISTAKES])
    with path.open("ab") as f:
        f.write(b"- request: {method: POST\n")
    assert main(["lint", str(path)]) == 2
    out, err = capsys.readouterr()
    assert f" #{len(REFERENCE_MISTAKES) - 1} " in out and f"{path}:" in err
    assert main(["lint", str(tmp_path / "none.yaml")]) == 2 and "cassette not found" in capsys.readouterr().err


def test_a_torn_tail_is_a_lint_finding_and_a_warning_of_inspect(tmp_path, capsys, caplog) -> None:
    path = write(tmp_path / "c.yaml", [(Request("POST", f"{BASE}/customer-support", "", FORM, b"externalId=x"),
                                        ok(b'{"statusCode":0,"interactionId":"01QG0Q2S5S50G000"}'))] * 2)
    path.write_bytes(path.read_bytes()[:-20])  # the last entry cut short while being written
    code, out = run(capsys, "lint", str(path))
    assert code == 1 and out.startswith(f"{path}:") and "dropped a torn last interaction (#1" in out
    code, out = run(capsys, "lint", str(path), "--json")
    got = json.loads(out)
    assert (got["cassette"], got["kind"]) == (str(path), "torn-tail") and "re-record it" in got["message"]
    main(["inspect", str(path)])
    assert f"{path}:" in caplog.text and "dropped a torn last interaction (#1" in caplog.text


def test_lint_names_a_planted_secret_but_never_prints_it(tmp_path, capsys) -> None:
    path = write(tmp_path / "c.yaml", [
        (Request("POST", f"{BASE}/s", "", FORM,
                 b"userData%5BCard%5D=4111111111111111&userData%5BMail%5D=a%40b.example"), ok()),
        (Request("POST", f"{BASE}/s/{ID}/get", "", headers_of({"X-Token": "Bearer abcdefghijklmnop"}), b""), ok()),
        (Request("POST", f"{BASE}/s/{ID}/get"), ok(b'{"statusCode":1,"errors":[]}')),
        (Request("POST", f"{BASE}/s/{ID}/get"), ok(b"busy", 503))])
    code, out = run(capsys, "lint", str(path), "--json")
    found = [json.loads(line) for line in out.splitlines()]
    kinds = {(f["index"], f["kind"]) for f in found}
    assert {(0, "unredacted-secret"), (0, "personal-data"), (1, "unredacted-secret"), (2, "gms-retry"),
            (3, "server-error")} <= kinds
    assert "4111111111111111" not in out and "abcdefghijklmnop" not in out and "a@b.example" not in out


def test_lint_reports_what_a_journal_never_played(tmp_path, capsys) -> None:
    path = write(tmp_path / "c.yaml", [(Request("POST", f"{BASE}/s/{ID}/get", f"n={i}"), ok()) for i in range(3)])
    journal = tmp_path / "journal.json"
    journal.write_text(json.dumps({"entries": [{"cassette": str(path), "index": 1}]}))
    code, out = run(capsys, "lint", str(path), "--journal", str(journal))
    assert code == 1 and [line.split()[1] for line in out.splitlines()] == ["#0", "#2"]


def big(tmp_path: Path, n: int) -> Path:
    req = Request("POST", f"{BASE}/customer-support", "", FORM, b"externalId=e&userData%5BOrder%5D=A")
    one = yamlformat.dump_entry(cassette.to_entry(req, ok(b'{"statusCode":0,"interactionId":"01QG0Q2S5S50G000"}'),
                                                  1.0))
    path = tmp_path / "big.yaml"
    path.write_bytes(yamlformat.HEADER.encode() + one * n)
    return path


def test_inspect_lists_and_filters(tmp_path, capsys) -> None:
    code, out = run(capsys, "inspect", "cassettes/examples/reference-story.yaml")
    rows = out.splitlines()
    assert code == 0 and rows[0].startswith("#") and len(rows) == 7
    assert "create" in rows[1] and "ExternalId=xy932" in rows[1] and "01QG0Q2S5S50G000" in rows[1]
    code, out = run(capsys, "inspect", "cassettes/examples/reference-story.yaml", "--json", "--operation", "get")
    got = [json.loads(line) for line in out.splitlines()]
    assert [g["index"] for g in got] == [1, 3, 5] and got[-1]["statusCode"] == 2


def test_inspect_takes_a_folder_as_lint_does_a_table_a_cassette(tmp_path, capsys) -> None:
    folder = tmp_path / "cassettes"
    folder.mkdir()
    write(folder / "a.yaml", [(Request("POST", f"{BASE}/a/{ID}/get"), ok())])
    write(folder / "b.yaml", [(Request("POST", f"{BASE}/b/{ID}/get"), ok()), (Request("POST", f"{BASE}/b"), ok())])
    code, out = run(capsys, "inspect", str(folder))
    blocks = [block.splitlines() for block in out.split("\n\n")]
    assert code == 0 and [b[0] for b in blocks] == [str(folder / "a.yaml"), str(folder / "b.yaml")]
    assert [len(b) for b in blocks] == [3, 4] and all(b[1].startswith("#") for b in blocks)
    code, out = run(capsys, "inspect", str(folder / "b.yaml"), "--json")  # one file: no name line, as before
    assert [json.loads(line)["cassette"] for line in out.splitlines()] == [str(folder / "b.yaml")] * 2
    assert main(["inspect", str(tmp_path / "none")]) == 2 and "cassette not found" in capsys.readouterr().err


def test_inspect_streams_a_big_cassette(tmp_path) -> None:
    """The first rows come before the end of the file is parsed: a broken last entry is only met at the end."""
    path = big(tmp_path, 3_000)  # a dozen batches
    with path.open("ab") as f:
        f.write(b"- request: {method: POST\n")  # broken, and (ending in a newline) not torn
    rows = storage.stream(path)
    assert next(rows).index == 0
    with pytest.raises(CassetteError, match=r"big.yaml:\d+"):
        for _ in rows:
            pass


@pytest.mark.parametrize("name", ["big", "reference", "torn"])
def test_streaming_reads_what_loading_reads(tmp_path, name) -> None:
    if name == "reference":
        path = Path("cassettes/examples/reference-story.yaml")
    else:
        path = big(tmp_path, 1_200)
        if name == "torn":
            path.write_bytes(path.read_bytes()[:-30])
    loaded = storage.load(path).interactions
    streamed = list(storage.stream(path))
    assert [(r.index, r.line, r.request.body, r.response.body) for r in streamed] == \
        [(r.index, r.line, r.request.body, r.response.body) for r in loaded]


def test_a_phone_number_is_named_but_a_bare_numeric_id_is_not(tmp_path, capsys) -> None:
    path = write(tmp_path / "c.yaml", [
        (Request("POST", f"{BASE}/s", "", FORM, b"userData%5BPhone%5D=%2B44+20+7946+0958"), ok()),
        (Request("POST", f"{BASE}/s", "", FORM, b"userData%5BOrderNumber%5D=123456789012"), ok())])
    code, out = run(capsys, "lint", str(path), "--json")
    assert [(json.loads(line)["index"], json.loads(line)["kind"]) for line in out.splitlines()] == \
        [(0, "personal-data")]


def test_a_timeline_gives_every_recording_in_recorded_order_read_when_its_turn_comes(tmp_path) -> None:
    """What `verify` reads a capture through: recorded order across files (ties in file order), each
    recording read from its file when asked for — and one whose entry changed since is refused, said."""
    def at(when: str, n: int) -> bytes:
        return yamlformat.dump_entry(cassette.to_entry(Request("POST", f"{BASE}/s/{ID}/get", f"n={n}"), ok(), 1.0,
                                                       f"2026-11-28T10:00:0{when}.000Z"))

    (tmp_path / "a.yaml").write_bytes(yamlformat.HEADER.encode() + at("1", 1) + at("3", 3))
    (tmp_path / "b.yaml").write_bytes(yamlformat.HEADER.encode() + at("2", 2) + at("3", 4))
    hand = tmp_path / "c.yaml"  # hand-written: not omproxy's layout, held as loaded
    hand.write_text(f"version: 1\ninteractions:\n- request: {{method: POST, path: '{BASE}/s/{ID}/get', query: n=0}}\n"
                    "  response: {status: 200, body: '{}'}\n  recorded_at: '2026-11-28T10:00:00.000Z'\n"
                    "  duration_ms: 1.0\n")
    total, recordings = storage.timeline([tmp_path / "a.yaml", tmp_path / "b.yaml", hand])
    assert total == 5 and [r.request.query for r in recordings] == [f"n={n}" for n in range(5)]
    total, recordings = storage.timeline([tmp_path / "a.yaml"])
    assert next(recordings).request.query == "n=1"
    data = (tmp_path / "a.yaml").read_bytes()
    (tmp_path / "a.yaml").write_bytes(data.replace(b"n=3", b"n=9"))  # edited while it is being verified
    with pytest.raises(CassetteChanged, match=r"a.yaml:\d+: interaction #1: the cassette changed on disk"):
        next(recordings)


def test_lint_journal_names_match_wherever_lint_runs(tmp_path, capsys, monkeypatch) -> None:
    """D22: a server in work/ names capB/cassettes/c.yaml; lint run in work/capB names cassettes/c.yaml."""
    (tmp_path / "capB" / "cassettes").mkdir(parents=True)
    path = write(tmp_path / "capB" / "cassettes" / "c.yaml",
                 [(Request("POST", f"{BASE}/s/{ID}/get", f"n={i}"), ok()) for i in range(3)])
    journal = tmp_path / "cass.json"
    journal.write_text(json.dumps({"cassettes": [{"cassette": "capB/cassettes/c.yaml", "interactions": 3,
                                                  "never_played": [2]}]}))
    monkeypatch.chdir(tmp_path / "capB")
    code, out = run(capsys, "lint", "cassettes/c.yaml", "--journal", str(journal))
    assert code == 1 and [line.split()[1] for line in out.splitlines()] == ["#2"], out
    monkeypatch.chdir(tmp_path)
    code, out = run(capsys, "lint", str(path), "--journal", str(journal))  # an absolute path here
    assert [line.split()[1] for line in out.splitlines()] == ["#2"], out
