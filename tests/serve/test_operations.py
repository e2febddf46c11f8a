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


async def until(stream: asyncio.StreamReader, text: bytes) -> bytes:
    """The process's log, line by line, up to the first holding `text`."""
    while True:
        line = await asyncio.wait_for(stream.readline(), 30)
        assert line, f"the process ended before saying {text!r}"
        if text in line:
            return line


async def test_sighup_reloads_rules_on_a_kept_connection_and_a_bad_file_keeps_them(tmp_path) -> None:
    import json
    import signal

    cassette, settings = tmp_path / "c.yaml", tmp_path / "omproxy.yaml"
    settings.write_text("upstream: builtin\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omproxy", "record", "--port", "0", "--config", str(settings), "--cassette",
        str(cassette), cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    port = int(line.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # one keep-alive connection throughout

    async def create(card: str) -> dict:
        body = f"externalId=h&userData%5BCard%5D={card}".encode()
        writer.write(f"POST {SVC} HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM['Content-Type']}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
        return json.loads(await reader.readexactly(length))

    try:
        assert (await create("1111"))["statusCode"] == 0
        settings.write_text("upstream: builtin\nredact:\n  form_keys: ['userData[Card]']\nfaults:\n"
                            "  - match: {operation: create}\n    nth: [2]\n    answer: retry\n")
        proc.send_signal(signal.SIGHUP)
        await until(proc.stderr, b"SIGHUP: reloaded")
        assert (await create("2222"))["statusCode"] == 0  # the same connection, the new redaction
        assert (await create("3333"))["statusCode"] == 1  # the new fault rule: its 2nd create
        settings.write_text("faults: [{answer: explode}]\n")
        proc.send_signal(signal.SIGHUP)
        assert b"kept the running settings" in await until(proc.stderr, b"SIGHUP")
        assert (await create("4444"))["statusCode"] == 0  # still the rules read before
    finally:
        writer.close()
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 30)
    cards = [r.request.form.get("userData[Card]") for r in storage.load(cassette).interactions]
    assert cards == ["1111", "REDACTED", "REDACTED"]
