"""Rotation: by size (name.0001.yaml, name.0002.yaml, ...) and by time (strftime fields in the cassette
template), and reading a rotated set — a folder, a glob — as one capture."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from omproxy.cassette import storage
from omproxy.cli import main
from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM

SVC = f"{BASE}/customer-support"


async def test_size_rotation_keeps_every_entry_whole_in_numbered_parts(aiohttp_client, gms, tmp_path) -> None:
    spec = tmp_path / "c.yaml"
    client = await aiohttp_client(build_app(Config(upstream=gms.url, cassette=str(spec), rotate_size=4096),
                                            Mode.RECORD))
    for i in range(30):
        assert (await client.post(SVC, data=f"externalId=e{i:02d}".encode(), headers=FORM)).status == 200
    await client.close()
    parts = sorted(tmp_path.glob("c.*.yaml"))
    assert len(parts) >= 3 and [p.name for p in parts[:2]] == ["c.0001.yaml", "c.0002.yaml"]
    assert not spec.exists()
    got = []
    for part in parts:
        loaded = storage.load(part)  # each part a whole cassette
        assert loaded.dropped is None and part.stat().st_size <= 4096
        got += [r.request.form.get("externalId") for r in loaded.interactions]
    assert got == [f"e{i:02d}" for i in range(30)]  # none split, none lost, in order
    assert storage.Template(str(spec)).files() == parts  # the cassette's name reads the whole set
    replay = await aiohttp_client(build_app(Config(cassette=str(spec), fallback="none"), Mode.REPLAY))
    for i in (0, 29):
        resp = await replay.post(SVC, data=f"externalId=e{i:02d}".encode(), headers=FORM)
        assert resp.headers["X-Omproxy-Source"] == "cassette"


async def test_a_restarted_recorder_goes_on_in_the_last_part(aiohttp_client, gms, tmp_path) -> None:
    spec = tmp_path / "c.yaml"
    for run in range(2):
        client = await aiohttp_client(build_app(Config(upstream=gms.url, cassette=str(spec), rotate_size=1 << 20),
                                                Mode.RECORD))
        assert (await client.post(SVC, data=f"externalId=r{run}".encode(), headers=FORM)).status == 200
        await client.close()
    assert [p.name for p in tmp_path.iterdir()] == ["c.0001.yaml"]
    assert len(storage.load(tmp_path / "c.0001.yaml").interactions) == 2


def test_strftime_fields_name_the_file_as_it_is_now_in_utc(tmp_path) -> None:
    template = storage.Template(str(tmp_path / "prod-%Y%m%d-%H" / "{service}.yaml"))
    before = time.strftime("%Y%m%d-%H", time.gmtime())
    path = template.path_for("customer-support")
    after = time.strftime("%Y%m%d-%H", time.gmtime())
    assert path.parent.name in (f"prod-{before}", f"prod-{after}") and path.name == "customer-support.yaml"


def _story_file(path: Path, external: str) -> None:
    from omproxy.cassette import entry
    from omproxy.model import Request, Response, Source, headers_of

    req = Request("POST", SVC, "", headers_of(FORM), f"externalId={external}".encode())
    resp = Response(200, b'{"statusCode":0,"interactionId":"01QG0Q2S5S50G000"}', headers_of(
        {"Content-Type": "application/json"}), Source.UPSTREAM)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.save(path, [entry.to_entry(req, resp, 1.0)])


@pytest.mark.parametrize("spec", ["prod-%Y%m%d-%H/{service}.yaml", "prod-*/", "prod-2026*/*.yaml"])
def test_a_time_rotated_set_reads_as_one_capture_in_order(tmp_path, spec, capsys) -> None:
    for hour, external in (("10", "a"), ("11", "b")):
        _story_file(tmp_path / f"prod-20261203-{hour}" / "customer-support.yaml", external)
    (tmp_path / "prod-20261203-10" / "customer-support.pending.yaml").write_text("not read\n")
    template = storage.Template(str(tmp_path / spec))
    assert [p.parent.name for p in template.files()] == ["prod-20261203-10", "prod-20261203-11"]
    assert main(["inspect", str(tmp_path / spec), "--json"]) == 0
    assert capsys.readouterr().out.count('"operation": "create"') == 2
    out = tmp_path / "merged.yaml"
    assert main(["cassette", "merge", str(tmp_path / spec), "-o", str(out)]) == 0
    assert [r.request.form.get("externalId") for r in storage.load(out).interactions] == ["a", "b"]


def test_rewrite_refuses_a_rotated_cassette(tmp_path, capsys) -> None:
    assert main(["record", "--rewrite", "--rotate-size", "64MB", "--cassette", str(tmp_path / "c.yaml")]) == 2
    assert "rewrite replaces one cassette" in capsys.readouterr().err


async def test_each_rotated_file_starts_with_its_provenance_which_readers_ignore(aiohttp_client, gms,
                                                                                  tmp_path) -> None:
    import yaml

    spec = tmp_path / "c.yaml"
    settings = Config(upstream=gms.url.replace("http://", "http://agent:secret@"), cassette=str(spec),
                      rotate_size=2048, sample_rate=0.999, admin_token="s3cr3t-token")
    client = await aiohttp_client(build_app(settings, Mode.RECORD))
    for i in range(8):
        await client.post(SVC, data=f"externalId=p{i}".encode(), headers=FORM)
    await client.close()
    parts = storage.Template(str(spec)).files()
    assert len(parts) >= 2
    for part in parts:
        first = part.read_text().split("\n", 1)[0]
        assert first.startswith("# omproxy ") and f"upstream {gms.url};" in first and "sample 0.999 by interaction" \
            in first and "host " in first and "config " in first
        assert "secret" not in first and "s3cr3t" not in first
        assert yaml.safe_load(part.read_text())["version"] == 1  # any YAML reader skips it
        assert storage.in_layout(part.read_bytes(), storage.yamlformat.entry_starts(part.read_bytes()))
    loaded = [r.request.form.get("externalId") for p in parts for r in storage.load(p, lazy=True).interactions]
    streamed = [r.request.form.get("externalId") for p in parts for r in storage.stream(p)]
    assert loaded == streamed == [f"p{i}" for i in range(8)]
    again = await aiohttp_client(build_app(settings, Mode.RECORD))  # appending to a part with provenance
    await again.post(SVC, data=b"externalId=later", headers=FORM)
    await again.close()
    last = storage.Template(str(spec)).files()[-1]
    assert storage.load(last).interactions[-1].request.form.get("externalId") == "later"
