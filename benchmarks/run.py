"""omproxy benchmarks: every number is compared with a baseline measured in the same run, so the
machine's speed cancels out. Not part of the tests; it asserts nothing.

    python benchmarks/run.py            # the full table (a few minutes)
    python benchmarks/run.py --quick    # the same rows, shorter runs and a 10,000-interaction capture

Servers run on core 0 and the load generator on core 1 (taskset, when there is more than one core).
Load comes from wrk (Debian package `wrk`) when installed, else from a bundled aiohttp load loop
(its numbers are lower: it shares the machine with what it measures). Workload `get`: POST
/genesys/2/openmedia/customer-support/<id>/get, form content type, empty body, a ~920-byte JSON
answer; 32 connections.

    replay      bare aiohttp (one handler, a constant answer) = 1.00x; omproxy replay, defaults
    record      the upstream alone = 1.00x; omproxy record / passthrough in front of it (same core),
                and what each process spent on CPU a request meanwhile (/proc): the ratio is the
                upstream's cost alone over both processes' cost together
    capture     replay from a 10-interaction cassette = 1.00x; from the big capture
    load        PyYAML's C loader on the big capture = 1.00x; omproxy's first start and restart
                (minus a start with a 1-interaction cassette: interpreter and imports); VCR.py
                loading the same capture exported as a VCR.py cassette (when vcrpy is installed)
    paced       the upstream alone at a fixed 1,000 req/s (open loop) = 1.00x; the p99 omproxy record adds,
                durability each and interval
    append      one fsync'd append to an empty cassette = 1.00x; to the big capture
    workers     replay on a Redis state (when redis-server is installed): one worker = 1.00x; --workers 2
                (these two unpinned, wrk with two threads: the point is both cores)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from omproxy.cassette import entry as cassette  # noqa: E402
from omproxy.cassette import yamlformat  # noqa: E402
from omproxy.model import Request, Response, headers_of  # noqa: E402

FORM = "application/x-www-form-urlencoded"
GET = "/genesys/2/openmedia/customer-support/{id}/get"
BARE = """
import sys
from aiohttp import web
BODY = open(sys.argv[2], "rb").read()
async def answer(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=lambda *a: print(*a, flush=True))
"""
WRK_SCRIPT = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
# Each request new to omproxy's front, as a client sending a request id makes it: the whole pipeline runs.
DISTINCT = WRK_SCRIPT + ('n = 0\nrequest = function()\n  n = n + 1\n  wrk.headers["X-Request-Id"] = tostring(n)\n'
                         '  return wrk.format()\nend\n')
# Many stories: each request names one of 1,000 interaction ids in turn, so sampling has stories to choose.
STORIES = WRK_SCRIPT + ('n = 0\nrequest = function()\n  n = n + 1\n  local path = string.format('
                        '"/genesys/2/openmedia/customer-support/01QG%012d/get", n % 1000)\n'
                        '  return wrk.format(nil, path)\nend\n')


def answer_body(iid: str) -> bytes:
    props = {"interactionType": "Inbound", "interactionId": iid, "interactionReceivedAt": "2026-11-28T10:15:02Z",
             "interactionIsHeld": False, "interactionSubmittedBy": "GMS-DC-API:omproxy:1",
             "interactionMediatype": "workitem", "interactionTenantId": 1,
             "interactionQueue": "Open Media Inbound Queue", "interactionSubmitSeq": "1000001",
             "interactionMovedToQueueAt": "2026-11-28T10:15:02Z", "interactionState": "Queued",
             "interactionSubmittedAt": "2026-11-28T10:15:02Z", "interactionPlacedInQueueAt": "2026-11-28T10:15:02Z",
             "interactionUserData": [{"key": "ExternalId", "type": "str", "value": "xy932"},
                                     {"key": "OrderNumber", "type": "str", "value": "ABC123456789"},
                                     {"key": "TestKey2", "type": "str", "value": "Test value"}],
             "interactionSubtype": "InboundNew", "interactionIsLocked": False, "interactionIsOnline": False,
             "interactionPlaceInQueueSeq": "1000002"}
    return json.dumps({"statusCode": 0, "interactionProperties": props}, separators=(",", ":")).encode()


def iid(i: int) -> str:
    return f"01QG{i:012d}"


def write_capture(path: Path, n: int) -> None:
    """n recorded `get`s as `record` writes them (~2.5 KB an entry)."""
    headers = headers_of({"Host": "127.0.0.1:8080", "User-Agent": "wrk", "Content-Type": FORM})
    with path.open("wb") as f:
        f.write(yamlformat.HEADER.encode())
        for i in range(n):
            req = Request("POST", GET.format(id=iid(i)), "", headers, b"")
            resp = Response(200, answer_body(iid(i)), headers_of({"Content-Type": "application/json;charset=utf-8",
                                                                 "X-Gms-Node": "gms1"}))
            f.write(yamlformat.dump_entry(cassette.to_entry(req, resp, 1.2)))


# ---- processes ---------------------------------------------------------------------------------

def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    ready_after: float

    def rss_mb(self) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return float("nan")
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(found.group(1)) / 1024 if found else float("nan")

    def cpu(self) -> tuple[float, int]:
        """CPU seconds the process used so far (all its threads, user and system) and its context
        switches (voluntary and not); nan and 0 where /proc does not say."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return float("nan"), 0
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        return seconds, sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", status))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(args: list[str], workdir: Path, timeout: float = 900, pin: bool = True) -> Server:
    """Start a server whose first stdout line says where it listens; time until then."""
    started = time.perf_counter()
    env = {**os.environ, "XDG_CACHE_HOME": str(workdir / "cache")}  # a first start is a first start
    proc = subprocess.Popen([*(pinned(0) if pin else []), *args], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    line = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or "http://" in line:
            break
    found = re.search(r"http://[\d.]+:(\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"could not start: {' '.join(args)}")
    return Server(proc, int(found.group(1)), time.perf_counter() - started)


def omproxy(mode: str, workdir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "omproxy", mode, "--port", "0", "--config", str(workdir / "empty.yaml"), *flags]


# ---- load ---------------------------------------------------------------------------------------

@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float


def drive(port: int, path: str, seconds: float, workdir: Path, pin: bool = True, distinct: bool = False,
          stories: bool = False) -> Load:
    if shutil.which("wrk"):
        return _wrk(port, path, seconds, workdir, pin, distinct, stories)
    return asyncio.run(_loop(port, path, seconds, distinct, stories))


def _wrk(port: int, path: str, seconds: float, workdir: Path, pin: bool = True, distinct: bool = False,
         stories: bool = False) -> Load:
    script = workdir / "post.lua"
    script.write_text(STORIES if stories else DISTINCT if distinct else WRK_SCRIPT)
    command = [*(pinned(1) if pin else []), "wrk", "-t1" if pin else "-t2", "-c32", f"-d{seconds:g}s", "-s",
               str(script), "--latency", f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(label: str) -> float:
        found = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not found:
            return float("nan")
        return float(found.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[found.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return Load(float(rps.group(1)) if rps else 0.0, ms("50"), ms("99"))


async def _loop(port: int, path: str, seconds: float, distinct: bool = False, stories: bool = False) -> Load:
    import aiohttp

    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as http:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                headers = {"Content-Type": FORM, **({"X-Request-Id": str(len(latencies))} if distinct else {})}
                url = f"http://127.0.0.1:{port}{GET.format(id=iid(len(latencies) % 1000)) if stories else path}"
                async with http.post(url, data=b"", headers=headers) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(worker() for _ in range(32)))
    latencies.sort()
    n = len(latencies)
    return Load(n / seconds, latencies[n // 2] * 1000, latencies[int(n * 0.99)] * 1000)


async def _paced(port: int, rate: float, seconds: float) -> list[float]:
    """Open loop, as production traffic comes: request i is sent at start + i/rate whether or not
    the answers before it came back; its latency counts from when it was due (no coordinated
    omission). Each names one of 1,000 stories in turn. Latencies in ms, sorted."""
    import aiohttp

    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as http:
        async def one(i: int, due: float) -> None:
            url = f"http://127.0.0.1:{port}{GET.format(id=iid(i % 1000))}"
            async with http.post(url, data=b"", headers={"Content-Type": FORM}) as r:
                await r.read()
            latencies.append((time.perf_counter() - due) * 1000)

        tasks = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            due = begin + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    return sorted(latencies)


def paced(port: int, rate: float, seconds: float) -> Load:
    """`_paced` on core 1 (the servers are on core 0); its achieved rate, p50 and p99."""
    cores = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    try:
        begin = time.perf_counter()
        latencies = asyncio.run(_paced(port, rate, seconds))
        took = time.perf_counter() - begin
    finally:
        os.sched_setaffinity(0, cores)
    n = len(latencies)
    return Load(n / took, latencies[n // 2], latencies[min(n - 1, int(n * 0.99))])


# ---- the table --------------------------------------------------------------------------------

Row = tuple[str, str, float, float, float, float, float]  # group, what, req/s, p50, p99, rss, ratio
Cost = tuple[str, float, float, float]  # what, server's CPU µs a request, the upstream's, context switches a request


def costs_during(load: Callable[[], Load], seconds: float, *servers: Server) -> tuple[Load, list[float], float]:
    """Drive `load` for `seconds`; the CPU each of `servers` spent a request meanwhile (µs, all its
    threads), and the context switches a request of the first."""
    before = [server.cpu() for server in servers]
    done = load()
    after = [server.cpu() for server in servers]
    count = max(done.rps * seconds, 1.0)
    spent = [(a[0] - b[0]) / count * 1e6 for a, b in zip(after, before, strict=True)]
    return done, spent, (after[0][1] - before[0][1]) / count


GROUPS = ("replay", "record", "paced", "capture", "load", "workers", "append")


def run(quick: bool, workdir: Path, groups: tuple[str, ...] = GROUPS) -> tuple[list[Row], list[Cost]]:
    seconds = 3.0 if quick else 8.0
    big = 10_000 if quick else 100_000
    (workdir / "empty.yaml").write_text("{}\n")
    (workdir / "answer.json").write_bytes(answer_body(iid(0)))
    (workdir / "bare.py").write_text(BARE)
    small, one, capture = workdir / "small.yaml", workdir / "one.yaml", workdir / "capture.yaml"
    write_capture(small, 10)
    write_capture(one, 1)
    if {"capture", "load", "append"} & set(groups):
        print(f"writing a {big:,}-interaction capture ...", file=sys.stderr)
        write_capture(capture, big)
    path = GET.format(id=iid(0))
    rows: list[Row] = []
    costs: list[Cost] = []

    def measure(group: str, what: str, args: list[str], base: float | None, pin: bool = True,
                distinct: bool = False, upstream: Server | None = None, stories: bool = False) -> float:
        """One row; with `upstream` (the server it forwards to), where the CPU went, too."""
        server = start(args, workdir, pin=pin)
        try:
            drive(server.port, path, 1.0, workdir, pin, distinct, stories)  # warm-up
            load, spent, switches = costs_during(
                lambda: drive(server.port, path, seconds, workdir, pin, distinct, stories), seconds, server,
                *([upstream] if upstream else []))
            rss = server.rss_mb()
        finally:
            server.stop()
        ratio = load.rps / base if base else 1.0
        rows.append((group, what, load.rps, load.p50_ms, load.p99_ms, rss, ratio))
        if upstream is not None:
            costs.append((what, spent[0], spent[1], switches))
        return load.rps

    bare = [sys.executable, str(workdir / "bare.py"), "0", str(workdir / "answer.json")]
    if "replay" in groups:
        base = measure("replay", "bare aiohttp server", bare, None)
        measure("replay", "omproxy replay (defaults)", omproxy("replay", workdir, "--cassette", str(small)), base)
        measure("replay", "omproxy replay --fallback none", omproxy("replay", workdir, "--cassette", str(small),
                                                                     "--fallback", "none"), base)
        measure("replay", "omproxy replay, a request id in each request", omproxy(
            "replay", workdir, "--cassette", str(small)), base, distinct=True)
    if "record" in groups:
        record(workdir, bare, path, seconds, measure, rows, costs)
    if "paced" in groups:
        paced_rows(workdir, bare, seconds, rows)
    if "capture" in groups:
        ten = measure("capture", "replay, 10-interaction cassette", omproxy("replay", workdir, "--cassette",
                                                                            str(small)), None)
        measure("capture", f"replay, {big:,}-interaction capture", omproxy("replay", workdir, "--cassette",
                                                                           str(capture)), ten)
    if "load" in groups:
        load(workdir, capture, one, rows)
    if "workers" in groups:
        workers(workdir, small, measure)
    if "append" in groups:
        empty = workdir / "empty-capture.yaml"
        small_append, big_append = asyncio.run(appends(empty)), asyncio.run(appends(capture))
        rows.append(("append", "one fsync'd append, empty cassette (ms)", small_append * 1000, 0, 0, float("nan"),
                     1.0))
        rows.append(("append", f"one fsync'd append, {big:,}-interaction capture (ms)", big_append * 1000, 0, 0,
                     float("nan"), big_append / small_append))
    return rows, costs


Measure = Callable[..., float]


def record(workdir: Path, bare: list[str], path: str, seconds: float, measure: Measure, rows: list[Row],
           costs: list[Cost]) -> None:
    upstream = start(bare, workdir)
    try:
        url = f"http://127.0.0.1:{upstream.port}"
        direct, (alone,), _ = costs_during(lambda: drive(upstream.port, path, seconds, workdir), seconds,
                                                  upstream)
        rows.append(("record", "the upstream, no proxy", direct.rps, direct.p50_ms, direct.p99_ms,
                     upstream.rss_mb(), 1.0))
        costs.append(("the upstream, no proxy", float("nan"), alone, float("nan")))
        plain = measure("record", "omproxy record", omproxy("record", workdir, "--upstream", url, "--cassette",
                                                            str(workdir / "rec" / "{service}.yaml")), direct.rps,
                        upstream=upstream)
        # Issue 25: what capturing for days costs. Its baseline is plain record on the same load, 1,000
        # stories in turn (so sampling has stories to choose): the ratios are of that row, not the upstream.
        many = measure("record", "omproxy record, 1,000 stories in turn", omproxy(
            "record", workdir, "--upstream", url, "--cassette", str(workdir / "many" / "{service}.yaml")),
            direct.rps, stories=True)
        measure("record", "  + rotate every 1MB, sample 0.5 (of the row above)", omproxy(
            "record", workdir, "--upstream", url, "--cassette", str(workdir / "rot" / "{service}.yaml"),
            "--rotate-size", "1MB", "--sample", "0.5"), many, stories=True)
        measure("record", "  durability interval (of omproxy record)", omproxy(
            "record", workdir, "--upstream", url, "--cassette", str(workdir / "int" / "{service}.yaml"),
            "--durability", "interval"), plain)
        measure("record", "omproxy passthrough", omproxy("passthrough", workdir, "--upstream", url), direct.rps,
                upstream=upstream)
        # each request new to the recorder (its request id differs): its part of the entry redacted and written
        measure("record", "omproxy record, a request id in each request", omproxy(
            "record", workdir, "--upstream", url, "--cassette", str(workdir / "rec2" / "{service}.yaml")), direct.rps,
            distinct=True, upstream=upstream)
    finally:
        upstream.stop()


RATE = 1000.0


def paced_rows(workdir: Path, bare: list[str], seconds: float, rows: list[Row]) -> None:
    """p99 latency omproxy record adds at a fixed 1,000 req/s, for each durability: the upstream
    alone at that rate is the baseline; the value is the p99 added (ms), the ratio p99 over its."""
    upstream = start(bare, workdir)
    try:
        url = f"http://127.0.0.1:{upstream.port}"
        paced(upstream.port, RATE, 1.0)  # warm-up
        direct = paced(upstream.port, RATE, seconds)
        rows.append(("paced", f"the upstream alone at {RATE:,.0f} req/s (p99 ms)", direct.p99_ms, direct.p50_ms,
                     direct.p99_ms, upstream.rss_mb(), 1.0))
        for durability in ("each", "interval"):
            server = start(omproxy("record", workdir, "--upstream", url, "--cassette",
                                   str(workdir / f"paced-{durability}" / "{service}.yaml"), "--durability",
                                   durability), workdir)
            try:
                paced(server.port, RATE, 1.0)
                done = paced(server.port, RATE, seconds)
                rss = server.rss_mb()
            finally:
                server.stop()
            rows.append(("paced", f"record, durability {durability} (p99 added, ms)", done.p99_ms - direct.p99_ms,
                         done.p50_ms, done.p99_ms, rss, done.p99_ms / direct.p99_ms))
    finally:
        upstream.stop()


def load(workdir: Path, capture: Path, one: Path, rows: list[Row]) -> None:
    import yaml

    t = time.perf_counter()
    with capture.open("rb") as f:
        yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 — a safe loader
    pyyaml = time.perf_counter() - t
    floor = start(omproxy("replay", workdir, "--cassette", str(one)), workdir)
    floor.stop()
    shutil.rmtree(workdir / "cache", ignore_errors=True)  # nothing remembered: a first start
    first = start(omproxy("replay", workdir, "--cassette", str(capture)), workdir)
    # Resident memory once settled: after a first start, the index for the next start is written on a
    # thread while serving (a benchmark may poll; a test may not).
    deadline = time.monotonic() + 120
    while not any((workdir / "cache").rglob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the write's own memory given back
    rss = first.rss_mb()
    first.stop()
    again = start(omproxy("replay", workdir, "--cassette", str(capture)), workdir)
    again.stop()
    size_mb = capture.stat().st_size / 2**20
    rows.append(("load", f"PyYAML C loader, {size_mb:.0f} MB capture (s)", pyyaml, 0, 0, float("nan"), 1.0))
    rows.append(("load", "omproxy first start (s)", first.ready_after - floor.ready_after, 0, 0, rss,
                 (first.ready_after - floor.ready_after) / pyyaml))
    rows.append(("load", "omproxy restart, unchanged capture (s)", again.ready_after - floor.ready_after, 0, 0,
                 float("nan"), (again.ready_after - floor.ready_after) / pyyaml))
    rows.append(("load", "resident memory, settled / file size", rss / size_mb, 0, 0, rss, rss / size_mb))
    peer = vcr_load(workdir, capture)  # issue 30, item 4: the peer a Python team would load it with
    if peer is not None:
        rows.append(("load", "VCR.py loading the same capture, exported (s)", peer, 0, 0, float("nan"),
                     peer / pyyaml))


def vcr_load(workdir: Path, capture: Path) -> float | None:
    """Seconds VCR.py (its filesystem persister and YAML serializer, as `use_cassette` loads) takes to
    read the capture exported as a VCR.py cassette; None when VCR.py is not installed."""
    try:
        from vcr.persisters.filesystem import FilesystemPersister
        from vcr.serializers import yamlserializer
    except ImportError:
        print("VCR.py is not installed (pip install vcrpy): its load row is left out", file=sys.stderr)
        return None
    from omproxy.cassette import interchange, storage

    exported = workdir / "capture-vcr.yaml"
    with exported.open("w", encoding="utf-8") as f:
        for part in interchange.vcr_text(storage.stream(capture), "http://gms.example:8080"):
            f.write(part)
    t = time.perf_counter()
    FilesystemPersister.load_cassette(str(exported), yamlserializer)
    return time.perf_counter() - t


def workers(workdir: Path, small: Path, measure: Measure) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server:  # --workers on a shared state: 2 workers against 1 (Redis runs on core 1, beside wrk)
        socket_path = workdir / "redis.sock"
        redis = subprocess.Popen([redis_server, "--port", "0", "--unixsocket", str(socket_path),
                                  "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not socket_path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # a benchmark, not a test: waiting for the socket file is fine here
            state = f"unix://{socket_path}"
            # Not pinned: the point is to use both cores (wrk and Redis share them too).
            one_worker = measure("workers", "replay --state redis, 1 worker", omproxy(
                "replay", workdir, "--cassette", str(small), "--state", state), None, pin=False)
            measure("workers", "replay --state redis, --workers 2", omproxy(
                "replay", workdir, "--cassette", str(small), "--state", state, "--workers", "2"), one_worker,
                pin=False)
        finally:
            redis.terminate()
            redis.wait()


async def appends(path: Path, count: int = 200) -> float:
    """Seconds per append of one interaction, as `record` appends them (flock, write, fsync)."""
    from omproxy.cassette import storage

    writer = storage.CassetteWriter(storage.Template(str(path)))
    headers = headers_of({"Content-Type": FORM})
    data = yamlformat.dump_entry(cassette.to_entry(Request("POST", GET.format(id=iid(1)), "", headers, b""),
                                                   Response(200, answer_body(iid(1))), 1.0))
    await writer.append(path, data)  # the first append of a process checks the tail once
    t = time.perf_counter()
    for _ in range(count):
        await writer.append(path, data)
    return (time.perf_counter() - t) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs and a 10,000-interaction capture")
    parser.add_argument("--only", metavar="GROUP,...", help=f"only these groups: {', '.join(GROUPS)}")
    args = parser.parse_args()
    groups = tuple(args.only.split(",")) if args.only else GROUPS
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"no such group: {', '.join(sorted(unknown))} (groups: {', '.join(GROUPS)})")
    with tempfile.TemporaryDirectory() as tmp:
        rows, costs = run(args.quick, Path(tmp), groups)
    loader = "wrk" if shutil.which("wrk") else "bundled aiohttp loop"
    print(f"{'':9}{'measure':48}{'req/s or s':>12}{'p50 ms':>9}{'p99 ms':>9}{'RSS MB':>9}{'ratio':>8}")
    for group, what, value, p50, p99, rss, ratio in rows:
        shown = f"{ratio:.3f}" if ratio < 0.1 else f"{ratio:.2f}"  # a small ratio, not rounded to its target
        print(f"{group:9}{what:48}{value:12,.2f}{p50:9.2f}{p99:9.2f}{rss:9.0f}{shown:>7}x")
    if costs:  # the ratio is the upstream's cost over both: what each spent, from /proc
        print(f"\n{'CPU a forwarded request costs (from /proc; both on one core)':57}{'omproxy µs':>12}"
              f"{'upstream µs':>12}{'omproxy switches':>18}")
        for what, server_us, upstream_us, switches in costs:
            alone = server_us != server_us  # nan: the upstream's own row
            mine, moves = (f"{'-':>12}", f"{'-':>18}") if alone else (f"{server_us:12.0f}", f"{switches:18.2f}")
            print(f"{what:57}{mine}{upstream_us:12.0f}{moves}")
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print(f"\nload: {loader}; omproxy's loop: {loop}; {os.cpu_count()} cpu(s); python {sys.version.split()[0]}; "
          f"{time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
