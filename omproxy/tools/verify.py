"""Regression from captured traffic: re-send recorded requests to a live GMS (`verify`) or pair two
recordings of the same story (`diff`), and say per interaction what answers differently. Pure: the
sending is injected (`Send`), so the command line gives it a Forwarder or the simulator.

Requests that belong to one GMS interaction (a create and every request naming its id, or its
external id) form a story, sent in recorded order, each after the previous answer; stories may run
concurrently. A capture is verified as it is read, in recorded order (`storage.timeline`): a story is
told by what came before it, and at most `Verifier.AHEAD` recordings are read ahead. Interaction ids
are translated, not compared: the id a live create answers replaces the recorded one in every later
request (path, form, query) and in comparisons. A request holding a value
redaction masked is never sent with the mask: it is reported as not verifiable, and so is every later
request of its story that needs its id."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum

from omproxy.config.options import Redaction
from omproxy.errors import OmproxyError
from omproxy.gms import vocabulary as gms
from omproxy.model import Recorded, Request, Response, end_to_end, headers_of
from omproxy.redaction import MASK, Redactor
from omproxy.tools import compare
from omproxy.tools.compare import Ids, Noise

Send = Callable[[Request], Awaitable[Response]]


class Verdict(Enum):
    SAME = "same"
    DIFFERS = "differs"
    NOT_VERIFIABLE = "not verifiable"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RecordingRef:
    """What a result says of its recording — where it is and what it asked — without holding it (a
    capture's results outlive its recordings)."""

    cassette: str
    index: int
    line: int
    name: str

    @classmethod
    def of(cls, rec: Recorded) -> RecordingRef:
        op = rec.request.operation
        what = f"{op.kind}@{op.service}" if op else f"{rec.request.method} {rec.request.path}"
        return cls(rec.cassette, rec.index, rec.line, f"{rec.where} {what}")


@dataclass
class Result:
    recorded: RecordingRef
    verdict: Verdict
    details: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.recorded.name


class Stories:
    """Which story (the GMS interaction it addresses) each recording belongs to, told one recording at
    a time in recorded order: a create by the id its answer gave (and its external id), every later
    request by the id or external id it names."""

    def __init__(self) -> None:
        self.by_external: dict[str, str] = {}

    def key(self, rec: Recorded) -> str:
        op, target = rec.request.operation, rec.request.target_of
        if op is not None and op.kind == "create":
            found = gms.ids_in_reply(op, rec.read().reply)
            key = found[0] if found else f"create {rec.where}"
            external = rec.request.form.get("externalId")
            if external:
                self.by_external[external] = key
            return key
        if target is not None:
            return self.by_external.get(target.id, target.id) if target.external else target.id
        return rec.where


def masked(req: Request) -> list[str]:
    """The form and query keys whose value redaction replaced: such a request cannot be sent."""
    return [k for form in (req.form, req.query_form) for k, v in form.fields if v == MASK]


def rewrite(req: Request, ids: Ids) -> Request:
    """The recorded request with recorded ids replaced by live ones, and headers that only described
    the recording (or were masked) left to the sender."""
    headers = [(k, v) for k, v in end_to_end(req.headers.items())  # an older cassette's hop-by-hop: not re-sent
               if v != MASK and k.lower() not in ("host", "content-length")]
    body = ids.translate(req.body.decode("latin-1")).encode("latin-1")
    return replace(req, path=ids.translate(req.path), query=ids.translate(req.query), body=body,
                   headers=headers_of(headers))


def _when(rec: Recorded) -> float | None:
    try:
        return datetime.fromisoformat(rec.recorded_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Verifier:
    AHEAD = 1000  # recordings read ahead of those verified: what a capture of any size holds at once

    def __init__(self, send: Send, noise: Noise, *, concurrency: int = 1, speed: float = 0.0,
                 progress: Callable[[list[Result], int], None] | None = None,
                 redactor: Redactor | None = None) -> None:
        self.send, self.noise, self.concurrency, self.speed = send, noise, concurrency, speed
        # The recording was redacted when it was made: the live answer is too, before it is compared
        # or shown (a masked field is then the same on both sides, and never printed in clear).
        self.redactor = redactor or Redactor(Redaction())
        self.progress = progress
        self.ids = Ids()
        self.results: list[Result] = []

    async def run(self, recorded: Iterable[Recorded], total: int | None = None) -> list[Result]:
        """Verify recordings in recorded order (a list, sorted here; or `storage.timeline`'s, as it reads them):
        each story's requests one after another, stories side by side up to `concurrency`, at most
        AHEAD recordings read and not yet verified; the results in the cassettes' order."""
        if isinstance(recorded, list):  # held whole already: put in recorded order here (stable)
            recorded = sorted(recorded, key=lambda r: r.recorded_at)
        told = Stories()
        waiting: dict[str, deque[Recorded]] = {}  # each story's recordings read and not yet sent
        broken: dict[str, str] = {}  # a story whose create was not verified: where that create is
        gate, ahead = asyncio.Semaphore(self.concurrency), asyncio.Semaphore(self.AHEAD)
        running: set[asyncio.Task[None]] = set()
        first: float | None = None
        started = time.monotonic()
        count = total if total is not None else len(recorded) if isinstance(recorded, list) else 0

        async def story(key: str) -> None:
            steps = waiting[key]
            try:
                async with gate:
                    while steps:
                        rec = steps[0]
                        when = _when(rec)
                        if self.speed > 0 and when is not None and first is not None:
                            await asyncio.sleep(max(0.0, started + (when - first) / self.speed - time.monotonic()))
                        result = await self.step(rec, broken.get(key))
                        if result.verdict in (Verdict.NOT_VERIFIABLE, Verdict.ERROR) and rec.request.operation \
                                and rec.request.operation.kind == "create":
                            broken[key] = rec.where
                        self.results.append(result)
                        steps.popleft()
                        ahead.release()
                        if self.progress is not None:
                            self.progress(self.results, count)
            finally:  # a story that failed lets go of what it held: the reading goes on, the error is raised below
                del waiting[key]
                for _ in steps:
                    ahead.release()

        reading = iter(recorded)
        while True:
            await ahead.acquire()  # before the next is read: at most AHEAD held
            rec = next(reading, None)
            if rec is None:
                break
            if first is None:
                first = _when(rec)
            key = told.key(rec)
            steps = waiting.get(key)
            if steps is not None:  # its story is being verified: this is its next step
                steps.append(rec)
                continue
            waiting[key] = deque([rec])
            task = asyncio.create_task(story(key))
            running.add(task)
            task.add_done_callback(running.discard)
        while running:
            await asyncio.gather(*running)
        return sorted(self.results, key=lambda r: (r.recorded.cassette, r.recorded.index))

    async def step(self, rec: Recorded, broken: str | None) -> Result:
        hidden = masked(rec.request)
        if hidden:
            return Result(RecordingRef.of(rec), Verdict.NOT_VERIFIABLE,
                          [f"redacted {', '.join(dict.fromkeys(hidden))}"])
        if broken is not None:
            return Result(RecordingRef.of(rec), Verdict.NOT_VERIFIABLE,
                          [f"its interaction's create ({broken}) was not verified"])
        try:
            answer = await self.send(rewrite(rec.request, self.ids))
        except OmproxyError as e:
            return Result(RecordingRef.of(rec), Verdict.ERROR, [e.message])
        recorded = rec.read()
        self.ids.learn(recorded, answer, rec.request.operation)  # ids are never masked
        live = self.redactor.response(answer)
        found = compare.differences(recorded, live, self.ids, self.noise)
        return Result(RecordingRef.of(rec), Verdict.DIFFERS if found else Verdict.SAME, found)

    async def learn_noise(self, recorded: Iterable[Recorded]) -> list[str]:
        """Send each service's first recorded create twice, read both new interactions back, and
        return the paths whose values differ between the two (Diffy's idea); both are stopped."""
        paths: list[str] = []
        seen: set[str] = set()
        for rec in recorded:
            op = rec.request.operation
            if op is None or op.kind != "create" or op.service in seen or masked(rec.request):
                continue
            seen.add(op.service)
            answers, gets = [], []
            for _ in range(2):
                answer = await self.send(rewrite(rec.request, Ids()))
                answers.append(answer)
                new = gms.ids_in_reply(op, answer.reply)
                if new:
                    base = f"{gms.BASE}{rec.request.path[len(gms.BASE):]}/{new[0]}"
                    gets.append(await self.send(Request("POST", f"{base}/get", "", rec.request.headers)))
                    await self.send(Request("POST", f"{base}/stop", "", rec.request.headers))
            paths += compare.learned(answers[0].reply, answers[1].reply)
            if len(gets) == 2:
                paths += compare.learned(gets[0].reply, gets[1].reply)
        return [p for p in dict.fromkeys(paths) if p and not self.noise.ignores(tuple(p.split(".")))]


Shape = tuple[str, str, str, bytes]  # what two recordings' requests are paired by


def diff(a: list[Recorded], b: list[Recorded], noise: Noise) -> tuple[list[Result], list[Result]]:
    """`pair` for two recordings held whole (put in recorded order here)."""
    def ordered(held: list[Recorded]) -> list[Recorded]:
        return sorted(held, key=lambda r: r.recorded_at)  # stable: file order where times are equal

    def held(rec: Recorded) -> Callable[[], Recorded]:
        return lambda: rec

    return pair(ordered(a), [(shape(r), held(r)) for r in ordered(b)], noise)


def pair(a: Iterable[Recorded], b: Iterable[tuple[Shape, Callable[[], Recorded]]],
         noise: Noise) -> tuple[list[Result], list[Result]]:
    """Pair two recordings of one story, each given in recorded order — B as each request's `shape`
    and how to read the recording again — by order and request (ids translated as they pair up) and
    compare the answers; also what only B holds. Of B only the shapes are held: a recording is read
    again when it pairs."""
    ids = Ids()
    unpaired: dict[Shape, list[Callable[[], Recorded]]] = {}  # each reversed below: pop() the earliest
    for kept, again in b:
        unpaired.setdefault(kept, []).append(again)  # a client polling: many alike
    for queue in unpaired.values():
        queue.reverse()
    results: list[Result] = []
    alone: list[tuple[int, Recorded]] = []  # A's recordings no request of B is the same as
    for rec in a:
        waiting = unpaired.get(shape(rec, ids))
        if not waiting:
            alone.append((len(results), rec))
            results.append(Result(RecordingRef.of(rec), Verdict.DIFFERS, ["only in the first recording"]))
            continue
        other = waiting.pop()()
        mine, theirs = rec.read(), other.read()
        ids.learn(mine, theirs, rec.request.operation)
        found = compare.differences(mine, theirs, ids, noise, compare.DIFF)
        results.append(Result(RecordingRef.of(rec), Verdict.DIFFERS if found else Verdict.SAME, found))
    # Requests that differ in their body or query still pair by method and path, in order: what
    # differs is said (the request, then the answer), not "only in the first" and "only in the second".
    by_route: dict[tuple[str, str], list[tuple[Shape, Callable[[], Recorded]]]] = {}
    for kept, queue in unpaired.items():
        for again in reversed(queue):
            by_route.setdefault((kept[0], kept[1]), []).append((kept, again))
    for at, rec in alone:
        route = shape(rec, ids)[:2]
        candidates = by_route.get(route)
        if not candidates:
            continue
        kept, again = candidates.pop(0)
        unpaired[kept].remove(again)
        other = again()
        found = [*_request_differences(rec, other, ids), *compare.differences(rec.read(), other.read(), ids, noise,
                                                                             compare.DIFF)]
        results[at] = Result(RecordingRef.of(rec), Verdict.DIFFERS, found)
    only_b = [Result(RecordingRef.of(again()), Verdict.DIFFERS, ["only in the second recording"])
              for queue in unpaired.values() for again in reversed(queue)]
    return results, only_b


def _request_differences(a: Recorded, b: Recorded, ids: Ids) -> list[str]:
    first, second = rewrite(a.request, ids), b.request
    out = []
    if first.query != second.query:
        out.append(f"request query: first {first.query!r}, second {second.query!r}")
    if first.body != second.body:
        theirs = dict(second.form.fields) if not second.form.not_form else {}
        mine = dict(first.form.fields) if not first.form.not_form else {}
        keys = [k for k in dict.fromkeys([*mine, *theirs]) if mine.get(k) != theirs.get(k)]
        if keys and (mine or theirs):
            out += [f"request {k}: first {mine.get(k, 'absent')!r}, second {theirs.get(k, 'absent')!r}" for k in keys]
        else:
            out.append(f"request body: first {compare.shown(first.body)}, second {compare.shown(second.body)}")
    return out


def shape(rec: Recorded, ids: Ids | None = None) -> Shape:
    """What a recording's request is paired by: method, path, query and body, ids translated."""
    translated = rewrite(rec.request, ids or Ids())
    return translated.method, translated.path, translated.query, translated.body
