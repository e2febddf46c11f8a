"""Memory is bounded by bytes, not only by counts: big bodies are not kept whole by what keeps
exchanges (journal, inspector), caches and miss reports; a client that pipelines and never reads its
answers makes omproxy stop reading, not queue what it sends. Measured in a process of their own (a
test process's log capture would keep the log records itself)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from omproxy.config.options import Config, Mode
from omproxy.serve.http import front as server
from omproxy.serve.runtime import build_runtime

STORY = Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" / "reference-story.yaml"

BIG_REQUESTS = textwrap.dedent('''
    import asyncio, gc, json, sys, tracemalloc
    from omproxy.serve.runtime import build_runtime
    from omproxy.config.options import Config, Fallback, Mode
    from omproxy.model import Request, headers_of

    async def main():
        rt = build_runtime(Config(cassette=sys.argv[1], fallback=Fallback.NONE), Mode.REPLAY)
        await rt.start()
        form = headers_of({"Content-Type": "application/x-www-form-urlencoded"})
        gc.collect()
        tracemalloc.start()
        for n in range(100):  # 100 distinct creates of 256 KiB each: a miss each, explained
            body = b"externalId=%d&userData%%5BBlob%%5D=" % n + b"x" * (256 * 1024)
            ex = await rt.pipeline.serve(Request("POST", "/genesys/2/openmedia/customer-support", "", form, body))
            assert ex.response.status == 404, ex.response.status
            del ex, body
            await asyncio.sleep(0)  # the observers run
        gc.collect()
        live = tracemalloc.get_traced_memory()[0]
        print(json.dumps({"live": live, "journal": len(rt.journal.entries)}))
        await rt.close()

    asyncio.run(main())
''')


def test_a_hundred_distinct_big_requests_leave_little_behind() -> None:
    out = subprocess.run([sys.executable, "-c", BIG_REQUESTS, str(STORY)], capture_output=True, text=True,
                         timeout=120, check=True)
    measured = json.loads(out.stdout.splitlines()[-1])
    assert measured["journal"] == 100  # each kept, in summary
    assert measured["live"] < 40 * 2**20, measured  # 225 MB before: 9x the bodies


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


async def test_a_client_that_pipelines_and_never_reads_is_not_queued_without_bound(tmp_path) -> None:
    (tmp_path / "config.yaml").write_text("{}\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "omproxy", "simulate", "--port", "0",
                                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), 30)
        port = int(ready.decode().rsplit(":", 1)[1])
        before = rss_kb(proc.pid)
        one = b"POST /genesys/2/openmedia/s/NOPE/get HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = 0
        for _ in range(40):  # 14 MB of requests, never reading an answer
            writer.write(one * 5000)
            try:
                await asyncio.wait_for(writer.drain(), 2)
            except TimeoutError:  # omproxy stopped reading: the kernel's buffers are full
                break
            sent += 5000
        # while that connection is held open: omproxy still serves others, and did not grow
        health = await asyncio.open_connection("127.0.0.1", port)
        health[1].write(b"GET /_omproxy/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(health[0].read(), 10)).startswith(b"HTTP/1.1 200")
        health[1].close()
        grown = rss_kb(proc.pid) - before
        assert sent < 40 * 5000  # it stopped reading
        assert grown < 40 * 1024, grown  # kilobytes; 140 MB before, with 176,376 requests queued
        writer.transport.abort()
    finally:
        proc.terminate()
        await proc.wait()


async def test_an_idle_connection_is_closed_at_a_stop_without_waiting_for_it() -> None:
    config = Config(port=0)
    listener = await server.start(build_runtime(config, Mode.SIMULATE), config)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /_omproxy/health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    assert json.loads(await reader.readexactly(length))["status"] == "ok"
    await asyncio.wait_for(listener.close(), 5)  # kept alive, idle: closed, not waited for (aiohttp waits)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
