"""omproxy record as a real process: SIGKILL loses nothing answered; SIGTERM finishes in-flight work."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp

from omproxy.cassette import storage
from tests.support import BASE, FORM, FakeGms


async def start(*args: str, cwd: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omproxy", *args, "--port", "0", cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    assert "listening on http://" in line, line
    return proc, line.rsplit(" ", 1)[1].strip()


async def test_sigkill_after_n_answers_loses_none_of_them(tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    proc, base = await start("record", "--upstream", "builtin", "--cassette", str(target), cwd=tmp_path)
    answered = 0
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(25):
                async with http.post(f"{base}{BASE}/s", data=f"externalId=e{i}".encode(), headers=FORM) as resp:
                    assert (await resp.json())["statusCode"] == 0
                    answered += 1
    finally:
        proc.kill()
        await proc.wait()
    got = storage.load(target)
    assert got.dropped is None
    assert len(got.interactions) == answered == 25


async def test_sigterm_finishes_and_records_in_flight_requests(aiohttp_server, tmp_path: Path) -> None:
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    target = tmp_path / "c.yaml"
    proc, base = await start("record", "--upstream", str(server.make_url("")).rstrip("/"),
                             "--cassette", str(target), cwd=tmp_path)
    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(http.post(f"{base}/hold", data=b"a=1", headers=FORM))
        await asyncio.wait_for(fake.holding.wait(), 30)
        proc.send_signal(signal.SIGTERM)
        fake.release.set()
        resp = await asyncio.wait_for(pending, 30)
        assert resp.status == 200
        resp.release()
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "summary: forwarded 1, recorded 1, failed upstream 0" in err.decode()
    assert [r.request.path for r in storage.load(target).interactions] == ["/hold"]


async def test_json_log_lines_carry_the_decoded_request_and_mask_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("redact:\n  form_keys: ['userData[CreditCard]']\n")
    proc, base = await start("record", "--config", str(cfg), "--cassette", str(tmp_path / "c.yaml"),
                             "--log-format", "json", "-v", cwd=tmp_path)
    async with aiohttp.ClientSession() as http:
        body = b"externalId=xy932&userData%5BCreditCard%5D=4111111111111111&userData%5BNote%5D=a b"
        async with http.post(f"{base}{BASE}/customer-support", data=body,
                             headers={**FORM, "Authorization": "Basic c2VjcmV0"}) as resp:
            iid = (await resp.json())["interactionId"]
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    import json

    lines = [json.loads(line) for line in err.decode().splitlines()]
    access = next(e for e in lines if e.get("operation") == "create")
    assert access["mode"] == "record" and access["service"] == "customer-support"
    assert access["form"] == {"externalId": "xy932", "userData": {"CreditCard": "REDACTED", "Note": "a b"}}
    assert access["status"] == 200 and access["statusCode"] == 0 and access["interactionId"] == iid
    assert access["request_headers"]["Authorization"] == "REDACTED"
    assert any(e.get("finding", {}).get("kind") == "literal-space" for e in lines)
    assert "4111111111111111" not in err.decode() and "c2VjcmV0" not in err.decode()
    import re

    # D16: one time format on every line (access lines had epoch floats), and a message on each
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    assert all(isinstance(e["time"], str) and iso.match(e["time"]) for e in lines), [e["time"] for e in lines]
    assert all(isinstance(e.get("message"), str) and e["message"] for e in lines)
    assert "create@customer-support" in access["message"]


async def test_two_processes_recording_into_one_cassette_interleave_no_entry(tmp_path: Path) -> None:
    target = tmp_path / "shared.yaml"
    procs = [await start("record", "--upstream", "builtin", "--cassette", str(target), cwd=tmp_path)
             for _ in range(2)]
    async with aiohttp.ClientSession() as http:
        async def create(i: int) -> int:
            base = procs[i % 2][1]
            async with http.post(f"{base}{BASE}/s", data=f"externalId=e{i}".encode(), headers=FORM) as resp:
                return resp.status

        assert await asyncio.gather(*(create(i) for i in range(120))) == [200] * 120
    for proc, _ in procs:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
    got = storage.load(target)
    assert got.dropped is None
    assert sorted(r.request.form.get("externalId") for r in got.interactions) == sorted(f"e{i}" for i in range(120))
    assert target.read_text().count("version: 1") == 1


async def test_a_second_signal_stops_at_once(aiohttp_server, tmp_path: Path) -> None:
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    proc, base = await start("record", "--upstream", str(server.make_url("")).rstrip("/"),
                             "--cassette", str(tmp_path / "c.yaml"), cwd=tmp_path)
    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(http.post(f"{base}/hold", data=b"a=1", headers=FORM))
        await asyncio.wait_for(fake.holding.wait(), 30)
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        while b"stopping: finishing requests in flight" not in await asyncio.wait_for(proc.stderr.readline(), 30):
            pass
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        assert b"second signal: stopping now" in err
        try:
            resp = await asyncio.wait_for(pending, 30)
            assert resp.status != 200
        except aiohttp.ClientError:
            pass  # the connection went away: nobody was told the request succeeded
    fake.release.set()
    assert not (tmp_path / "c.yaml").exists()


async def record_some(target: Path, cwd: Path, *flags: str, ids: range, stop: signal.Signals | None) -> str:
    """`omproxy record` of creates with these external ids, stopped by `stop` (None: killed); its stderr."""
    proc, base = await start("record", "--upstream", "builtin", "--cassette", str(target), *flags, cwd=cwd)
    try:
        async with aiohttp.ClientSession() as http:
            for i in ids:
                async with http.post(f"{base}{BASE}/s", data=f"externalId=e{i}".encode(), headers=FORM) as resp:
                    assert (await resp.json())["statusCode"] == 0
    finally:
        if stop is None:
            proc.kill()
        else:
            proc.send_signal(stop)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return err.decode()


def external_ids(target: Path) -> list[str | None]:
    return [r.request.form.get("externalId") for r in storage.load(target).interactions]


async def test_recording_again_appends_and_says_so_and_rewrite_replaces(tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    await record_some(target, tmp_path, ids=range(0, 2), stop=signal.SIGTERM)
    err = await record_some(target, tmp_path, ids=range(2, 3), stop=signal.SIGTERM)
    assert "recording appends to" in err and "--rewrite" in err  # said at start
    assert external_ids(target) == ["e0", "e1", "e2"]
    err = await record_some(target, tmp_path, "--rewrite", ids=range(3, 5), stop=signal.SIGTERM)
    assert "rewriting" in err and f"rewrote {target}" in err
    assert external_ids(target) == ["e3", "e4"]  # the old recordings are gone: replay serves the new
    assert not (tmp_path / "c.yaml.partial").exists()


async def test_a_rewrite_that_dies_leaves_the_old_cassette_whole_and_the_new_one_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    await record_some(target, tmp_path, ids=range(0, 2), stop=signal.SIGTERM)
    before = target.read_bytes()
    await record_some(target, tmp_path, "--rewrite", ids=range(5, 8), stop=None)  # SIGKILL
    assert target.read_bytes() == before
    partial = tmp_path / "c.yaml.partial"
    assert external_ids(partial) == ["e5", "e6", "e7"]  # what was answered is on disk, beside
    await record_some(target, tmp_path, "--rewrite", ids=range(9, 10), stop=signal.SIGTERM)
    assert external_ids(target) == ["e9"] and not partial.exists()  # a next rewrite starts anew


async def test_rewrite_with_workers_keeps_what_every_worker_recorded(aiohttp_server, tmp_path: Path) -> None:
    """Each worker emptied the partial file at its first entry (the other's entries with it) and renamed
    it at its stop: the run's recordings were lost but for one worker's last ones."""
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    target = tmp_path / "c.yaml"
    target.write_bytes((Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" /
                        "reference-story.yaml").read_bytes())  # the old recordings, to be replaced
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omproxy", "record", "--rewrite", "--workers", "2", "--port", "0",
        "--upstream", str(server.make_url("")).rstrip("/"), "--cassette", str(target), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert "(2 workers)" in line, line
    base = line.split(" ")[4]
    for i in range(12):  # a connection each: the kernel spreads them between the two workers
        async with aiohttp.ClientSession() as http, http.post(f"{base}{BASE}/s", data=f"externalId=w{i}".encode(),
                                                              headers=FORM) as resp:
            assert resp.status == 200
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    got = sorted(r.request.form.get("externalId") or "" for r in storage.load(target).interactions)
    assert got == sorted(f"w{i}" for i in range(12))
    assert not list(tmp_path.glob("*.partial"))
