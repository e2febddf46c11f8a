"""Recording never fails or stalls a client: a disk slower than the traffic (here: another writer
holding the cassette's lock) or a full one (a small tmpfs) — the exchange is answered all the same and
counted as not recorded, and what is on disk stays whole."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from omproxy.cassette import storage
from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM

SVC = f"{BASE}/customer-support"


class Locked:
    """The cassette's flock, held as another omproxy writing into it would hold it."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(b"version: 1\ninteractions:\n")
        self.fd = os.open(path, os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


async def test_a_full_queue_answers_at_once_and_counts_back_pressure(aiohttp_client, gms, tmp_path, caplog) -> None:
    path = tmp_path / "c.yaml"
    lock = Locked(path)
    client = await aiohttp_client(build_app(Config(upstream=gms.url, cassette=str(path), record_queue=1024),
                                            Mode.RECORD))
    try:
        first = asyncio.create_task(client.post(SVC, data=b"externalId=first", headers=FORM))  # waits for the disk
        while not gms.received:  # forwarded: its entry is now waiting for the lock
            await asyncio.sleep(0)
        for i in range(5):
            resp = await client.post(SVC, data=f"externalId=more{i}".encode(), headers=FORM)
            assert resp.status == 200 and (await resp.json())["statusCode"] == 0  # answered, not stalled
        assert not first.done()
    finally:
        lock.release()
    assert (await first).status == 200
    counts = (await (await client.get("/_omproxy/journal")).json())["counts"]
    await client.close()
    assert counts["not recorded (back-pressure)"] == 5 and counts["recorded"] == 1
    assert [r.request.form.get("externalId") for r in storage.load(path).interactions] == ["first"]
    assert any("NOT RECORDED (BACK-PRESSURE)" in r.getMessage() for r in caplog.records)


async def test_durability_interval_answers_before_the_entry_is_written(aiohttp_client, gms, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    lock = Locked(path)
    client = await aiohttp_client(build_app(Config(upstream=gms.url, cassette=str(path), durability="interval"),
                                            Mode.RECORD))
    try:
        for i in range(3):  # the disk is held, the answers are not
            assert (await client.post(SVC, data=f"externalId=i{i}".encode(), headers=FORM)).status == 200
    finally:
        lock.release()
    await client.close()  # a clean stop writes and fsyncs what is queued
    assert [r.request.form.get("externalId") for r in storage.load(path).interactions] == ["i0", "i1", "i2"]


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


async def test_a_full_disk_never_gives_a_client_an_error(aiohttp_client, gms, tiny_disk) -> None:
    path = tiny_disk / "c.yaml"
    client = await aiohttp_client(build_app(Config(upstream=gms.url, cassette=str(path)), Mode.RECORD))
    for i in range(60):
        resp = await client.post(SVC, data=f"externalId=d{i:02d}&userData%5BPad%5D={'x' * 200}".encode(),
                                 headers=FORM)
        assert resp.status == 200 and (await resp.json())["statusCode"] == 0
    counts = (await (await client.get("/_omproxy/journal")).json())["counts"]
    await client.close()
    full = counts.get("not recorded (disk full)", 0)
    assert full > 0 and counts["recorded"] + full == 60
    kept = storage.load(path)
    assert kept.dropped is None and len(kept.interactions) == counts["recorded"]  # whole, nothing half-written
