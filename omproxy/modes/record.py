"""Recording: the Recorder responder asks the upstream, redacts the exchange, hands its entry to the
storage's append engine and answers once it is on disk. Upstream failures raise and are never
recorded; a refused write still answers the client (NOT RECORDED in the log, counted)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import random
import time
from pathlib import Path
from typing import Protocol

from omproxy.cassette import entry as cassette
from omproxy.cassette import yamlformat
from omproxy.config.faults import Match
from omproxy.config.options import BlockOn, SampleBy
from omproxy.errors import BackPressure, OmproxyError
from omproxy.exchange import Exchange, Outcome
from omproxy.model import Request, Response
from omproxy.modes import Responder, escape, faults
from omproxy.redaction import Leak, Redactor, leaks

log = logging.getLogger(__name__)
OFF_LOOP = 256 * 1024  # bodies above this size are redacted and encoded on a worker thread


class Writer(Protocol):
    """Where entries go: a file writer (`storage.CassetteWriter`) or a shared stream (`redisstate`)."""

    def path_for(self, service: str | None) -> Path: ...
    async def append(self, path: Path, data: bytes) -> None: ...


class Recorder:
    def __init__(self, upstream: Responder, writer: Writer, redactor: Redactor, origin: str = "",
                 choice: Choice | None = None) -> None:
        """`origin`: the upstream's URL (no credentials) or builtin, kept in each entry (`recorded_from`);
        `choice`: which exchanges are recorded (all, without one)."""
        self.upstream, self.writer, self.redactor, self.origin = upstream, writer, redactor, origin
        self.choice = choice
        self._warned: set[str] = set()  # where secrets were left in clear, warned about once per run

    async def __call__(self, ex: Exchange) -> Response | None:
        started = time.perf_counter()
        resp = await self.upstream(ex)
        if resp is None:  # nothing answered: nothing to record
            return None
        req = ex.request
        if self.choice is not None:
            ex.not_kept = self.choice(req, resp)
            if ex.not_kept is not None:
                return resp  # forwarded all the same
        path = self.writer.path_for(req.service)
        duration = (time.perf_counter() - started) * 1000
        if len(req.body) + len(resp.body) > OFF_LOOP:  # a big answer must not stall every other client
            data, found = await asyncio.to_thread(self._encode, ex, resp, duration)
        else:
            data, found = self._encode(ex, resp, duration)
        if found:  # what shows the exchange (log, journal, inspector) masks them, recorded or not
            ex.leaked = frozenset(leak.key for leak in found if leak.place != "answer")
        if found and BlockOn.SECRET in self.redactor.rules.block_on:
            ex.record_failure = Outcome.UNREDACTED
            ex.record_error = f"unredacted secret in {', '.join(escape(leak.where) for leak in found)}"
            log.error("NOT RECORDED (%s) %s %s: add %s, or leave redact.block_on to record it", ex.record_error,
                      req.method, escape(self.redactor.target(req.path, req.query)),
                      " and ".join(sorted({f"'{escape(leak.key)}' to {leak.option}" for leak in found})))
            return resp
        appending = time.perf_counter()
        try:
            await self.writer.append(path, data)
            ex.append_ms, ex.appended_bytes = (time.perf_counter() - appending) * 1000, len(data)
        except (OSError, OmproxyError) as e:  # a full disk, a slow one, a shared state gone: answered anyway
            ex.record_failure = failure_of(e)
            reason = e.message if isinstance(e, OmproxyError) else e.strerror or str(e)
            ex.record_error = f"cannot write {path}: {reason}"
            log.error("%s %s %s: %s", not_recorded(ex.record_failure), req.method,
                      escape(self.redactor.target(req.path, req.query)), ex.record_error)
            return resp
        ex.recorded_to = str(path)
        for leak in found:
            if leak.where not in self._warned:
                self._warned.add(leak.where)
                log.warning("%s (%s) is recorded in clear in %s; add '%s' to %s in config.yaml (or "
                            "redact.block_on: secret to refuse such entries)", escape(leak.where), leak.why, path,
                            escape(leak.key), leak.option)
        return resp

    def _encode(self, ex: Exchange, resp: Response, duration_ms: float) -> tuple[bytes, list[Leak]]:
        return encoded(self.redactor, ex.request, resp, duration_ms, recorded_from=self.origin)


def encoded(redactor: Redactor, req: Request, resp: Response, duration_ms: float,
            recorded_at: str | None = None, recorded_from: str | None = None) -> tuple[bytes, list[Leak]]:
    """An exchange's cassette entry, redacted, and the secrets it would hold in clear (`leaks`: lint's rule)."""
    req, resp = redactor.request(req), redactor.response(resp)
    entry = cassette.to_entry(req, resp, duration_ms, recorded_at, recorded_from)
    return yamlformat.dump_entry(entry), leaks(req, resp)


def encode(redactor: Redactor, req: Request, resp: Response, duration_ms: float,
           recorded_at: str | None = None, recorded_from: str | None = None) -> bytes:
    """An exchange's cassette entry, redacted."""
    return encoded(redactor, req, resp, duration_ms, recorded_at, recorded_from)[0]


def failure_of(e: BaseException) -> Outcome:
    """Why an entry was not recorded, as counted."""
    if isinstance(e, BackPressure):
        return Outcome.BACK_PRESSURE
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return Outcome.DISK_FULL
    return Outcome.WRITE_FAILED


def not_recorded(failure: Outcome) -> str:
    """What the log says: NOT RECORDED (BACK-PRESSURE), NOT RECORDED (DISK FULL), NOT RECORDED (WRITE FAILED)."""
    return f"NOT RECORDED ({failure.value.removeprefix('not recorded (').rstrip(')').upper()})"


class Choice:
    """Which forwarded exchanges are recorded: the filters (`record.only`, `record.skip`) and story-
    complete sampling (`sample.rate`): a story — a create and everything that names its interaction id
    (or, `by: external_id`, its external id) — is kept or not as a whole, by a hash keyed by
    `sample.seed`, so instances with one seed keep the same stories. A request that names no story is
    sampled by itself. Pure."""

    REMEMBERED = 100_000  # interaction id -> external id pairs kept for `by: external_id` (the oldest go)

    def __init__(self, only: tuple[Match, ...], skip: tuple[Match, ...], rate: float, by: SampleBy,
                 seed: str) -> None:
        self.only, self.skip, self.rate, self.by, self.seed = only, skip, rate, by, seed
        self.external: dict[str, str] = {}

    def __call__(self, req: Request, resp: Response) -> Outcome | None:
        """None: record it; else why not."""
        if (self.only and not any(faults.matched(m, req) for m in self.only)) or any(
                faults.matched(m, req) for m in self.skip):
            return Outcome.FILTERED_OUT
        if self.rate >= 1:
            return None
        story = self.story(req, resp)
        chance = random.random() if story is None else _draw(f"{self.seed}\0{story}")
        return None if chance < self.rate else Outcome.SAMPLED_OUT

    def story(self, req: Request, resp: Response) -> str | None:
        op = req.operation
        if op is None:
            return None
        reply = resp.reply or {}
        props = reply.get("interactionProperties")
        answered = reply.get("interactionId") or (props.get("interactionId") if isinstance(props, dict) else None)
        target = req.target_of
        iid = answered if isinstance(answered, str) else (target.id if target and not target.external else None)
        if self.by is SampleBy.INTERACTION:
            return iid
        external = req.form.get("externalId") if op.kind == "create" else (
            target.id if target is not None and target.external else None)
        if external is not None and iid is not None:
            self.external[iid] = external
            if len(self.external) > self.REMEMBERED:
                del self.external[next(iter(self.external))]
        return external or (self.external.get(iid) if iid else None) or iid


def _draw(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
