"""The shared state backend: `state.State` and `state.InteractionStore` on Redis (the `redis` package's
asyncio client, the optional extra `omproxy[redis]`), so that N omproxy instances answer as one: a
playback position advances atomically (one Lua script), a create on one instance is read, updated and
stopped through another, a reset on any resets all.

Keys are namespaced by a digest of the loaded cassette set (`omproxy:<digest>:`) and by session, and a
session's keys expire after `session_idle` seconds unused. Redis unreachable: the request gets GMS's
retry answer (503, statusCode 1) and one log line; the next request tries again, so an instance
recovers by itself when Redis is back. Every change a request makes is one Redis command or script:
no request is answered from a half-applied state."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from omproxy.errors import StateUnavailable, UsageError
from omproxy.exchange import FIRED, Exchange
from omproxy.gms.vocabulary import Target
from omproxy.state import Interaction, Take

aioredis: Any
Failure: tuple[type[BaseException], ...]
try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    Failure = (RedisError, OSError)
except ImportError:  # the optional extra is not installed
    aioredis = None
    Failure = (OSError,)

T = TypeVar("T")
log = logging.getLogger(__name__)

# Take the next position of a key if one is left: atomically, whichever instance asks — unless the
# simulator owns the interaction asked about (ARGV[4], in the set KEYS[2]): -2, nothing taken. With it,
# when ARGV[5] names one, that interaction of the session's simulator (in the hash KEYS[3], whose
# expiry is refreshed: it is in use) or false — read in the same round trip.
# A take is named (ARGV[6]); the hash KEYS[4] keeps, per key, the name and position of its last take.
# ARGV[7] names a take of this key this instance gave up on (Redis stalled past the client's timeout):
# if it ran after all, its position is handed out again, to the retry; if it has not run, it is
# cancelled (the set KEYS[5]), so that if it ever runs it takes nothing (-3). Playback then stays
# exactly once for a request retried on the instance that lost its answer.
_TAKE = """
if redis.call('SISMEMBER', KEYS[5], ARGV[6]) == 1 then
  return {-3, false}
end
if ARGV[4] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 1 then
  return {-2, false}
end
local read = false
if ARGV[5] ~= '' then
  read = redis.call('HGET', KEYS[3], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
if ARGV[7] ~= '' then
  local last = redis.call('HGET', KEYS[4], ARGV[1])
  if last and string.sub(last, 1, string.len(ARGV[7]) + 1) == ARGV[7] .. ' ' then
    local again = tonumber(string.sub(last, string.len(ARGV[7]) + 2))
    redis.call('HSET', KEYS[4], ARGV[1], ARGV[6] .. ' ' .. again)
    return {again, read}
  end
  redis.call('SADD', KEYS[5], ARGV[7])
  redis.call('EXPIRE', KEYS[5], ARGV[3])
end
local position = redis.call('HINCRBY', KEYS[1], ARGV[1], 1) - 1
if position >= tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
  return {-1, read}
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[6] .. ' ' .. position)
redis.call('EXPIRE', KEYS[4], ARGV[3])
return {position, read}
"""


def digest(parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogateescape")).hexdigest()[:16]


class RedisState:
    def __init__(self, url: str, namespace: str, session_idle: float, name: str = "omproxy",
                 timeout: float = 5.0) -> None:
        if aioredis is None:
            raise UsageError("--state redis://... needs the redis package: pip install 'omproxy[redis]'")
        self.url = url
        self.client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=timeout)
        self._lost: dict[tuple[str, str], str] = {}  # (session, key) -> a take given up on, for its retry
        self.ns = f"omproxy:{namespace}:"
        self.ttl = max(1, int(session_idle))
        self._take = self.client.register_script(_TAKE)
        self.marked: set[tuple[str, int]] = set()  # marked played in Redis by this instance (a reset keeps them)
        self.stream = stream_key(name)  # what recording instances of this cluster append to

    async def call(self, action: Callable[[], Awaitable[T]]) -> T:
        try:
            return await action()
        except Failure as e:
            raise StateUnavailable(f"the shared state at {self.shown} is unavailable ({type(e).__name__}); "
                                   "try again") from None

    @property
    def shown(self) -> str:
        return self.url.split("@")[-1] if "@" in self.url else self.url

    async def ping(self) -> None:
        await self.call(self.client.ping)

    def _session(self, session: str) -> str:
        return f"{self.ns}s:{digest(session)}:"

    def interactions(self, session: str) -> RedisInteractions:
        return RedisInteractions(self, self._session(session))

    async def take(self, session: str, key: Hashable, count: int, about: Target | None = None,
                   read: bool = False) -> Take:
        base = self._session(session)
        owners = base + ("diverged-external" if about is not None and about.external else "diverged")
        reading = about.id if read and about is not None and not about.external else ""
        field, name = digest(key), secrets.token_hex(8)
        lost = self._lost.pop((base, field), "")
        try:
            position, raw = await self.call(lambda: self._take(
                keys=[base + "positions", owners, base + "interactions", base + "taken", base + "cancelled"],
                args=[field, count, self.ttl, about.id if about is not None else "", reading, name, lost]))
        except StateUnavailable:
            self._lost[(base, field)] = name  # it may still run: its retry here gets its position
            if len(self._lost) > 10_000:
                del self._lost[next(iter(self._lost))]
            raise
        position = int(position)
        if position == -3:  # a take given up on, run late: it took nothing (its caller is gone)
            return Take(None)
        if position == -2:
            return Take(None, owned=True)
        return Take(None if position < 0 else position, read=bool(reading),
                    interaction=_interaction(raw) if reading and raw else None)

    async def mark_played(self, cassette: str, index: int) -> None:
        if (cassette, index) in self.marked:  # once per recording per instance is enough: a set
            return
        await self.call(lambda: self.client.sadd(self.ns + "played", json.dumps([cassette, index])))
        self.marked.add((cassette, index))

    async def played(self) -> set[tuple[str, int]]:
        members = await self.call(lambda: self.client.smembers(self.ns + "played"))
        return {(c, i) for c, i in (json.loads(m) for m in members)}

    async def diverge(self, session: str, interaction_id: str, external_id: str | None) -> None:
        base = self._session(session)

        async def write() -> None:
            async with self.client.pipeline(transaction=True) as tx:
                tx.sadd(base + "diverged", interaction_id)
                tx.expire(base + "diverged", self.ttl)
                if external_id is not None:
                    tx.sadd(base + "diverged-external", external_id)
                    tx.expire(base + "diverged-external", self.ttl)
                await tx.execute()

        await self.call(write)

    async def owns(self, session: str, target: Target) -> bool:
        key = self._session(session) + ("diverged-external" if target.external else "diverged")
        return bool(await self.call(lambda: self.client.sismember(key, target.id)))

    async def tally(self, session: str, key: str) -> int:
        name = self._session(session) + "tallies"

        async def count() -> int:
            async with self.client.pipeline(transaction=True) as tx:
                tx.hincrby(name, key, 1)
                tx.expire(name, self.ttl)
                return int((await tx.execute())[0])

        return await self.call(count)

    def _faults_key(self, session: str | None) -> str:
        """Outside the sessions' keys, which a reset deletes: fault rules stay until cleared."""
        return self.ns + ("faults" if session is None else f"faults:{digest(session)}")

    async def fault_rules(self, session: str) -> tuple[str, str]:
        every, own = await self.call(lambda: self.client.mget([self._faults_key(None), self._faults_key(session)]))
        return (every or b"").decode(), (own or b"").decode()

    async def set_fault_rules(self, session: str | None, text: str) -> None:
        key = self._faults_key(session)
        await self.call(lambda: self.client.set(key, text) if text else self.client.delete(key))

    async def reset(self, session: str | None = None) -> None:
        """The sessions' keys go; which recordings were played, and the counts, are the run's and stay."""
        pattern = (self._session(session) if session is not None else self.ns + "s:") + "*"

        async def wipe() -> None:
            keys = [k async for k in self.client.scan_iter(match=pattern, count=500)]
            if keys:
                await self.client.delete(*keys)

        await self.call(wipe)

    async def count(self, outcomes: list[str]) -> None:
        async def add() -> None:
            async with self.client.pipeline(transaction=False) as tx:
                for outcome in outcomes:
                    tx.hincrby(self.ns + "counts", outcome, 1)
                await tx.execute()

        await self.call(add)

    async def counts(self) -> dict[str, int]:
        """What every instance sharing this state has counted."""
        raw = await self.call(lambda: self.client.hgetall(self.ns + "counts"))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self.client.aclose()


class SharedCounts:
    """The observer adding each exchange's outcomes to the cluster's counts (in the background: the
    answer never waits for it; a count Redis missed is logged, never an error)."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.pending: set[asyncio.Task[None]] = set()

    def __call__(self, ex: Exchange) -> None:
        outcomes = [o.value for o in ex.counts()]
        if ex.fault is not None:
            outcomes.append(FIRED + ex.fault)
        if outcomes:
            task = asyncio.get_running_loop().create_task(self._add(outcomes))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def drain(self) -> None:
        """Wait for the counts still being added (at a stop, before the state is closed)."""
        while self.pending:
            await asyncio.gather(*self.pending)

    async def _add(self, outcomes: list[str]) -> None:
        try:
            await self.state.count(outcomes)
        except StateUnavailable as e:
            log.warning("a count was not shared: %s", e.message)


class RedisInteractions:
    """One session's simulator interactions: a hash of id -> JSON, and a sequence counter."""

    def __init__(self, state: RedisState, base: str) -> None:
        self.state, self.key, self.seq_key = state, base + "interactions", base + "seq"
        self.read: dict[str, bytes] = {}  # what `get` read, by id (this object lives for one request)

    async def get(self, interaction_id: str) -> Interaction | None:
        async def read() -> Any:
            async with self.state.client.pipeline(transaction=False) as tx:  # one round trip
                tx.hget(self.key, interaction_id)
                tx.expire(self.key, self.state.ttl)  # in use: kept, even when nothing is written back
                return (await tx.execute())[0]

        raw = await self.state.call(read)
        if raw is None:
            return None
        self.read[interaction_id] = raw
        return _interaction(raw)

    async def put(self, interaction: Interaction) -> None:
        data = json.dumps({"id": interaction.id, "service": interaction.service, "properties": interaction.properties,
                           "user_data": interaction.user_data, "order": interaction.properties.get(
                               "interactionSubmitSeq", "")})
        if self.read.get(interaction.id) == data.encode():
            return  # as read in this request (a recorded `get` replayed again): nothing to write

        async def write() -> None:
            async with self.state.client.pipeline(transaction=True) as tx:
                tx.hset(self.key, interaction.id, data)
                tx.expire(self.key, self.state.ttl)
                await tx.execute()

        await self.state.call(write)

    async def delete(self, interaction_id: str) -> None:
        await self.state.call(lambda: self.state.client.hdel(self.key, interaction_id))

    async def find_by_external_id(self, external_id: str) -> Interaction | None:
        values = await self.state.call(lambda: self.state.client.hvals(self.key))
        found = [i for i in (_interaction(v) for v in values) if i.user_data.get("ExternalId") == external_id]
        return max(found, key=lambda i: str(i.properties.get("interactionSubmitSeq", ""))) if found else None

    async def next_seq(self) -> int:
        async def bump() -> int:
            async with self.state.client.pipeline(transaction=True) as tx:
                tx.incrby(self.seq_key, 2)
                tx.expire(self.seq_key, self.state.ttl)
                value, _ = await tx.execute()
            return 1_000_000 + int(value)

        return await self.state.call(bump)

    async def clear(self) -> None:
        await self.state.call(lambda: self.state.client.delete(self.key, self.seq_key))


def _after(stream_id: bytes) -> str:
    """The stream id just after `stream_id` (XTRIM MINID keeps ids at or above it)."""
    ms, _, seq = stream_id.decode().partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _interaction(raw: bytes | str) -> Interaction:
    data = json.loads(raw)
    return Interaction(data["id"], data["service"], data["properties"], data["user_data"])


def stream_key(name: str) -> str:
    """The stream every recording instance of a cluster (its `state_namespace`) appends to; `cassette
    pull` reads it, and trims what it pulled."""
    return f"omproxy:{name}:recorded"


class StreamWriter:
    """`record` and `auto` with a shared state: each entry (redacted, encoded as the cassette holds it)
    is added to one Redis stream, acknowledged by Redis before the client is answered; `omproxy
    cassette pull` writes the stream into ordinary cassettes."""

    def __init__(self, state: RedisState) -> None:
        self.state = state

    def path_for(self, service: str | None) -> Path:
        return Path(service or "_other")

    async def append(self, path: Path, data: bytes) -> None:
        await self.state.call(lambda: self.state.client.xadd(self.state.stream, {"service": str(path), "entry": data}))


_PULLED = re.compile(rb"\n  pulled_from: '(\d+)-(\d+)'\n")


def _with_id(entry: bytes, stream_id: bytes) -> bytes:
    """An entry as pulled: its stream id kept in it (`pulled_from`, before `duration_ms`, which stays
    last), so that the output itself says how far a pull got, whatever happened to the marker."""
    at = entry.rfind(b"\n  duration_ms:")
    if at < 0:
        return entry
    return entry[:at] + b"\n  pulled_from: '" + stream_id + b"'" + entry[at:]


def _stream_id(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.decode().partition("-")
    return int(ms or 0), int(seq or 0)


def _outputs(output: Path, split: bool) -> list[Path]:
    if split:
        return sorted(output.glob("*.yaml")) if output.is_dir() else []
    return [output] if output.is_file() else []


def _last_pulled(path: Path) -> tuple[int, int]:
    """The highest stream id the last entries of an output carry (0-0 when none)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 256 * 1024))
            tail = f.read()
    except OSError:
        return 0, 0
    return max(((int(m.group(1)), int(m.group(2))) for m in _PULLED.finditer(tail)), default=(0, 0))


def pull(url: str, output: Path, split_by_service: bool, name: str = "omproxy") -> tuple[int, int]:
    """Write what the cluster `name` recorded since the last pull into `output` (a file, or with
    `split_by_service` a folder of `<service>.yaml`), in arrival order, then trim it from the stream;
    the last stream id pulled into that output is kept in Redis, so pulling twice writes nothing
    twice. (entries, files)"""
    import asyncio

    from omproxy.cassette import storage

    async def run() -> tuple[int, int]:
        state = RedisState(url, "pull", 60, name)
        stream = state.stream
        marker = f"omproxy:{name}:pulled:{output.resolve()}{'/' if split_by_service else ''}"
        try:
            last = (await state.call(lambda: state.client.get(marker))) or b"0-0"
            # A pull killed after writing and before it kept its marker: the output knows where it got to
            done = max([_stream_id(last), *(_last_pulled(p) for p in _outputs(output, split_by_service))])
            last = f"{done[0]}-{done[1]}".encode()
            written, files = 0, set[Path]()
            while True:
                batch = await state.call(functools.partial(state.client.xrange, stream, min=f"({last.decode()}",
                                                           count=1000))
                if not batch:
                    return written, len(files)
                groups: dict[Path, list[bytes]] = {}
                for stream_id, fields in batch:
                    service = fields[b"service"].decode()
                    target = output / f"{storage.safe_name(service)}.yaml" if split_by_service else output
                    groups.setdefault(target, []).append(_with_id(fields[b"entry"], stream_id))
                for target, entries in groups.items():
                    storage.append_locked(target, b"".join(entries))
                    files.add(target)
                written += len(batch)
                last = batch[-1][0]
                await state.call(functools.partial(state.client.set, marker, last))
                # what is on disk (and fsync'd) leaves Redis: a capture of days does not grow it for ever
                await state.call(functools.partial(state.client.xtrim, stream, minid=_after(last), approximate=False))
        finally:
            await state.close()

    return asyncio.run(run())
