"""Running a capture: /_omproxy/ready beside health, and bounded captures that stop by themselves."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import aiohttp

from omproxy.cassette import storage
from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM

SVC = f"{BASE}/customer-support"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens there once closed


async def test_ready_says_what_keeps_omproxy_from_serving(aiohttp_client, tmp_path) -> None:
    gone = f"http://127.0.0.1:{closed_port()}"
    record = await aiohttp_client(build_app(Config(upstream=gone, cassette=str(tmp_path / "c.yaml")), Mode.RECORD))
    resp = await record.get("/_omproxy/ready")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "not ready" and "is not reachable" in body["problems"][0]
    assert (await record.get("/_omproxy/health")).status == 200  # alive all the same
    simulate = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    assert (await (await simulate.get("/_omproxy/ready")).json()) == {"status": "ready", "mode": "simulate"}


async def start(*args: str, cwd: Path) -> tuple[asyncio.subprocess.Process, str]:
    (cwd / "empty.yaml").write_text("{}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omproxy", *args, "--port", "0", "--config", str(cwd / "empty.yaml"), cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    assert "listening on http://" in line, line
    return proc, line.rsplit(" ", 1)[1].strip()


async def test_max_interactions_stops_cleanly_once_enough_is_recorded(tmp_path) -> None:
    cassette = tmp_path / "c.yaml"
    proc, base = await start("record", "--upstream", "builtin", "--cassette", str(cassette), "--max-interactions",
                             "3", cwd=tmp_path)
    async with aiohttp.ClientSession() as http:
        for i in range(3):
            async with http.post(base + SVC, data=f"externalId=m{i}".encode(), headers=FORM) as resp:
                assert resp.status == 200
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and b"--max-interactions 3 recorded: stopping" in err and b"summary:" in err
    assert len(storage.load(cassette).interactions) == 3


async def test_exit_after_stops_cleanly_when_the_time_is_up(tmp_path) -> None:
    started = time.monotonic()
    proc, _ = await start("simulate", "--exit-after", "1s", cwd=tmp_path)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and b"--exit-after 1 s reached" in err
    assert 1.0 <= time.monotonic() - started < 30
