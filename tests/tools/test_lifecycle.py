"""A cassette's life: pending recordings reviewed and accepted, recordings too old to trust, recordings
no run played pruned, a capture reduced to a few stories per class. Over real sockets and the real
command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from omproxy.cassette import entry as cassette
from omproxy.cassette import storage
from omproxy.cli import main
from omproxy.config.options import Config, Mode
from omproxy.modes.replay import too_old
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM

SVC = f"{BASE}/customer-support"
STORY = Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" / "reference-story.yaml"


async def test_pending_recordings_wait_for_review_then_accept_moves_them_in(aiohttp_client, gms, tmp_path,
                                                                             caplog, capsys) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    real, pending = tmp_path / "c.yaml", tmp_path / "c.pending.yaml"
    storage.save(real, [cassette.to_entry(r.request, r.response, 1.0) for r in storage.load(STORY).interactions[:1]])
    before = real.read_bytes()
    settings = Config(cassette=str(real), upstream=gms.url, pending=True)
    auto = await aiohttp_client(build_app(settings, Mode.AUTO))
    for external in (b"p-1", b"p-2"):
        assert (await auto.post(SVC, data=b"externalId=" + external, headers=FORM)).status == 200
    await auto.close()
    again = await aiohttp_client(build_app(settings, Mode.AUTO))  # the next run replays the pending ones
    assert (await again.post(SVC, data=b"externalId=p-1", headers=FORM)).headers["X-Omproxy-Source"] == "cassette"
    await again.close()
    assert real.read_bytes() == before and len(gms.received) == 2
    assert [r.request.form.get("externalId") for r in storage.load(pending).interactions] == ["p-1", "p-2"]

    replay = await aiohttp_client(build_app(Config(cassette=str(real), fallback="none"), Mode.REPLAY))
    assert (await replay.post(SVC, data=b"externalId=p-1", headers=FORM)).status == 404  # never trusted
    assert any("waiting for review" in r.getMessage() and "cassette accept" in r.getMessage() for r in caplog.records)
    await replay.close()

    assert main(["cassette", "accept", str(real), "--only", "1"]) == 0
    assert [r.request.form.get("externalId") for r in storage.load(real).interactions] == ["xy932", "p-2"]
    assert [r.request.form.get("externalId") for r in storage.load(pending).interactions] == ["p-1"]
    assert main(["cassette", "accept", str(real)]) == 0
    assert [r.request.form.get("externalId") for r in storage.load(real).interactions] == ["xy932", "p-2", "p-1"]
    assert not pending.exists()
    assert storage.load(real).interactions[1].recorded_from == gms.url  # provenance kept
    assert main(["cassette", "accept", str(real)]) == 2
    assert "no pending recordings" in capsys.readouterr().err


def test_a_folder_of_cassettes_never_loads_the_pending_ones_as_cassettes(tmp_path) -> None:
    (tmp_path / "svc.yaml").write_text("version: 1\ninteractions: []\n")
    (tmp_path / "svc.pending.yaml").write_text("version: 1\ninteractions: []\n")
    template = storage.Template(str(tmp_path) + "/")
    assert template.files() == [tmp_path / "svc.yaml"]
    assert template.pending.files() == [tmp_path / "svc.pending.yaml"]


def test_an_entry_older_than_max_age_is_said_to_be() -> None:
    day = 86400.0
    now = 1_800_000_000.0  # 2027-01-15
    assert too_old("2026-01-01T00:00:00.000Z", 180 * day, now) is not None
    assert "older than replay.max_age (180d)" in (too_old("2026-01-01T00:00:00.000Z", 180 * day, now) or "")
    assert too_old("2027-01-01T00:00:00.000Z", 180 * day, now) is None
    assert too_old("", 180 * day, now) is None and too_old("last tuesday", day, now) is None


async def test_replay_notes_an_old_recording_in_its_log_line(aiohttp_client, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="omproxy")
    client = await aiohttp_client(build_app(Config(cassette=str(STORY), max_age=86400.0), Mode.REPLAY))
    await client.post(f"{SVC}/01QG0Q2S5S50G000/get")
    assert any("older than replay.max_age (1d)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text,seconds", [("180d", 180 * 86400), ("12h", 43200), ("30m", 1800), ("45", 45)])
def test_max_age_reads_days_hours_minutes_and_seconds(text, seconds, tmp_path) -> None:
    from omproxy.config.file import load

    (tmp_path / "c.yaml").write_text(f"replay:\n  max_age: {text}\n")
    assert load(tmp_path / "c.yaml", {}).max_age == seconds


def test_a_bad_max_age_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["replay", "--cassette", str(STORY), "--max-age", "soon"])
    assert exit.value.code == 2
    assert "expected an age like 180d" in capsys.readouterr().err


def test_prune_lists_then_drops_what_a_run_never_played(tmp_path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(STORY.read_bytes())
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"cassettes": [{"cassette": str(path), "interactions": 6, "played": 4,
                                                 "never_played": [3, 5]}]}))
    assert main(["cassette", "prune", str(path), "--journal", str(report)]) == 0
    out = capsys.readouterr()
    assert out.out.count("never played") == 2 and "#3 POST" in out.out and "2 recording(s) would go" in out.err
    assert path.read_bytes() == STORY.read_bytes()  # a dry run
    assert main(["cassette", "prune", str(path), "--journal", str(report), "--apply"]) == 0
    kept = storage.load(path).interactions
    assert len(kept) == 4 and [r.response.body for r in kept] == [
        r.response.body for r in storage.load(STORY).interactions if r.index not in (3, 5)]


def test_prune_refuses_a_journal_of_recent_exchanges(tmp_path, capsys) -> None:
    report = tmp_path / "journal.json"
    report.write_text(json.dumps({"entries": [], "counts": {}}))
    assert main(["cassette", "prune", str(STORY), "--journal", str(report), "--apply"]) == 2
    assert "expected a cassette report" in capsys.readouterr().err


def _story(iid: str, keys: list[str], stopped: bool = True) -> list[dict]:
    """A create, a get and (maybe) a stop of one interaction, as entries."""
    from omproxy.model import Request, Response, Source, headers_of

    form = "&".join(f"userData%5B{k}%5D=v" for k in keys).encode()
    reply = {"statusCode": 0, "interactionId": iid}
    parts = [(Request("POST", SVC, "", headers_of([("Content-Type", FORM["Content-Type"])]), form), reply),
             (Request("POST", f"{SVC}/{iid}/get", "", headers_of(), b""), {"statusCode": 0})]
    if stopped:
        parts.append((Request("POST", f"{SVC}/{iid}/stop", "", headers_of(), b""), {"statusCode": 0}))
    return [cassette.to_entry(req, Response(200, json.dumps(body).encode(), headers_of(
        [("Content-Type", "application/json")]), Source.UPSTREAM), 1.0) for req, body in parts]


def test_dedup_keeps_n_stories_per_class_and_reports_the_classes(tmp_path, capsys) -> None:
    capture = tmp_path / "week.yaml"
    entries = [*_story("A" * 16, ["Order"]), *_story("B" * 16, ["Order"]), *_story("C" * 16, ["Order"]),
               *_story("D" * 16, ["Order", "Phone"]), *_story("E" * 16, ["Order"], stopped=False)]
    storage.save(capture, entries)
    out = tmp_path / "ci.yaml"
    assert main(["cassette", "dedup", str(capture), "--keep", "1", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stories"] == 5 and report["kept"] == 3
    assert [(c["operations"], c["keys"], c["stories"]) for c in report["classes"]] == [
        ("create get stop", "Order", 3), ("create get stop", "Order,Phone", 1), ("create get", "Order", 1)]
    kept = storage.load(out).interactions
    assert [r.request.interaction_id or json.loads(r.response.body)["interactionId"] for r in kept] == [
        "A" * 16] * 3 + ["D" * 16] * 3 + ["E" * 16] * 2
    assert yaml.safe_load(out.read_text())["version"] == 1
