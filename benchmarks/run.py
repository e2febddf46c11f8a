"""omproxy benchmarks: every number is a ratio against a baseline measured in the same run, so the
machine's speed cancels out. Run: python benchmarks/run.py [--big 100000]. Never part of the tests.

1. index lookup: lookup time with a big cassette / with a small one (flat = O(1))
2. cassette load: per-interaction load time, big / small (flat = linear load)
3. append: time to record one interaction into a big cassette / into an empty one (flat = append-only)
4. proxy overhead: requests/s through omproxy passthrough (builtin simulator upstream) / omproxy simulate
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omproxy import cassette, matching, storage, yamlformat  # noqa: E402
from omproxy.config import Config, Matching, Mode  # noqa: E402
from omproxy.model import Request, Response, headers_of  # noqa: E402
from omproxy.redaction import Redactor  # noqa: E402

FORM = headers_of({"Content-Type": "application/x-www-form-urlencoded"})


def exchange(i: int) -> tuple[Request, Response]:
    iid = f"BENCH{i:011d}"
    body = f"externalId=e{i}&userData%5BOrderNumber%5D=ABC{i:09d}&userData%5BNote%5D=Test+value".encode()
    return (Request("POST", "/genesys/2/openmedia/customer-support", "", FORM, body),
            Response(200, f'{{"statusCode":0,"interactionId":"{iid}"}}'.encode(),
                     headers_of({"Content-Type": "application/json"})))


def write_cassette(path: Path, n: int) -> None:
    redactor = Redactor(Config().redact)
    with path.open("wb") as f:
        f.write(yamlformat.HEADER.encode())
        for i in range(n):
            req, resp = exchange(i)
            f.write(yamlformat.dump_entry(cassette.to_entry(redactor.request(req), redactor.response(resp), 1.0)))


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_cassettes(small: int, big: int, tmp: Path) -> list[tuple[str, float, float]]:
    rows = []
    paths = {}
    for n in (small, big):
        paths[n] = tmp / f"c{n}.yaml"
        write_cassette(paths[n], n)
    loads = {}
    loaded = {}
    for n in (small, big):
        t = time.perf_counter()
        loaded[n] = storage.load(paths[n])
        loads[n] = (time.perf_counter() - t) / n
    rows.append(("cassette load, per interaction (s)", loads[small], loads[big]))

    rules = matching.Rules.of(Matching())
    probes = [exchange(i)[0] for i in range(0, small, max(1, small // 500))]
    lookups = {}
    for n in (small, big):
        index = matching.Index(loaded[n].interactions, rules)
        lookups[n] = best(lambda index=index: [index.lookup(p) for p in probes]) / len(probes)
    rows.append(("index lookup (s)", lookups[small], lookups[big]))

    async def appends(path: Path, count: int = 200) -> float:
        writer = storage.CassetteWriter(storage.Template(str(path)))
        data = yamlformat.dump_entry(cassette.to_entry(*exchange(0), 1.0))
        await writer.append(path, data)  # first append checks the tail once
        t = time.perf_counter()
        for _ in range(count):
            await writer.append(path, data)
        return (time.perf_counter() - t) / count

    empty = tmp / "empty.yaml"
    rows.append(("append one interaction (s)", asyncio.run(appends(empty)), asyncio.run(appends(paths[big]))))
    return rows


async def bench_proxy(requests: int) -> tuple[str, float, float]:
    import aiohttp
    from aiohttp import web

    from omproxy.app import build_app

    async def rate(mode: Mode) -> float:
        runner = web.AppRunner(build_app(Config(upstream="builtin"), mode), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/genesys/2/openmedia/customer-support"
        async with aiohttp.ClientSession() as http:
            async def one(i: int) -> None:
                async with http.post(url, data=exchange(i)[0].body, headers=dict(FORM)) as r:
                    await r.read()

            await asyncio.gather(*(one(i) for i in range(50)))  # warm-up
            t = time.perf_counter()
            for start in range(0, requests, 50):
                await asyncio.gather(*(one(i) for i in range(start, start + 50)))
            elapsed = time.perf_counter() - t
        await runner.cleanup()
        return requests / elapsed

    import logging

    logging.getLogger("omproxy").setLevel(logging.WARNING)
    return ("requests/s, passthrough vs simulate", await rate(Mode.SIMULATE), await rate(Mode.PASSTHROUGH))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_cassettes(args.small, args.big, Path(tmp))
    rows.append(asyncio.run(bench_proxy(args.requests)))
    print(f"{'measure':40} {'baseline':>12} {'measured':>12} {'ratio':>7}")
    print(f"{'':40} {f'(n={args.small})':>12} {f'(n={args.big})':>12}")
    for name, base, value in rows:
        print(f"{name:40} {base:12.3g} {value:12.3g} {value / base:7.2f}")
    print(f"\nmachine: {os.cpu_count()} cpu(s), python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
