"""A long production capture compressed: a real `omproxy record` process with size rotation and story
sampling, clients telling many stories at once, SIGKILL'd at a random moment. Every acknowledged
exchange of a sampled story is on disk, no story is in the capture in part, every rotated file loads,
and replay of the set answers every recording from the cassette."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
from pathlib import Path

import aiohttp

from omproxy.cassette import storage
from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM

SVC = f"{BASE}/customer-support"
STEPS = ("get", "update", "get", "stop")


async def test_sigkill_mid_capture_loses_no_acknowledged_sampled_exchange(aiohttp_client, tmp_path: Path) -> None:
    folder = tmp_path / "capture"
    (tmp_path / "empty.yaml").write_text("{}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omproxy", "record", "--upstream", "builtin", "--port", "0", "--config",
        str(tmp_path / "empty.yaml"), "--cassette", str(folder) + "/", "--rotate-size", "32KB", "--sample", "0.5",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    base = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().rsplit(" ", 1)[1].strip()
    kill_at = random.Random().randint(150, 450)  # acknowledged exchanges before the kill
    acknowledged: dict[str, int] = {}  # per story (its interaction id): exchanges answered
    done = asyncio.Event()

    async def teller(n: int, http: aiohttp.ClientSession) -> None:
        for i in range(10_000):
            try:
                async with http.post(base + SVC, data=f"externalId=t{n}-{i}".encode(), headers=FORM) as resp:
                    iid = (await resp.json())["interactionId"]
                acknowledged[iid] = 1
                for step in STEPS:
                    async with http.post(f"{base}{SVC}/{iid}/{step}", data=b"change%5BA%5D=1" if step == "update"
                                         else b"", headers=FORM) as resp:
                        await resp.read()
                    acknowledged[iid] += 1
                    if sum(acknowledged.values()) >= kill_at and not done.is_set():
                        done.set()
                        proc.send_signal(signal.SIGKILL)
            except (aiohttp.ClientError, ConnectionError):
                return  # killed: what was not answered was never acknowledged

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(teller(n, http) for n in range(4)))
    await proc.wait()
    assert done.is_set()

    parts = storage.Template(str(folder) + "/").files()
    assert len(parts) >= 2  # rotated while the stories were told
    captured: dict[str, int] = {}
    for part in parts:
        for rec in storage.load(part).interactions:  # every part loads (a torn, unacknowledged tail dropped)
            op = rec.request.operation
            assert op is not None
            iid = op.id or json.loads(rec.response.body)["interactionId"]
            captured[iid] = captured.get(iid, 0) + 1
    assert captured and set(acknowledged) - set(captured)  # sampled: some stories, not all
    for iid, count in captured.items():  # a sampled story: every acknowledged exchange of it is there
        told = acknowledged.get(iid, 0)  # (one more: written, then killed before its answer went out)
        assert count in (told, told + 1), (iid, count, told)

    replay = await aiohttp_client(build_app(Config(cassette=str(folder) + "/", fallback="none"), Mode.REPLAY))
    for part in parts:
        for rec in storage.load(part).interactions:
            resp = await replay.post(rec.request.path, data=rec.request.body, headers=FORM)
            assert resp.headers["X-Omproxy-Source"] == "cassette", rec.where
