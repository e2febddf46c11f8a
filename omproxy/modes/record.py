"""Recording: the Recorder responder asks the upstream, redacts the exchange, hands its entry to the
storage's append engine and answers once it is on disk. Upstream failures raise and are never
recorded; a refused write still answers the client (NOT RECORDED in the log, counted)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Protocol

from omproxy.cassette import entry as cassette
from omproxy.cassette import yamlformat
from omproxy.errors import OmproxyError
from omproxy.exchange import Exchange
from omproxy.model import Request, Response
from omproxy.modes import Responder, escape
from omproxy.redaction import Redactor

log = logging.getLogger(__name__)
OFF_LOOP = 256 * 1024  # bodies above this size are redacted and encoded on a worker thread


class Writer(Protocol):
    """Where entries go: a file writer (`storage.CassetteWriter`) or a shared stream (`redisstate`)."""

    def path_for(self, service: str | None) -> Path: ...
    async def append(self, path: Path, data: bytes) -> None: ...


class Recorder:
    def __init__(self, upstream: Responder, writer: Writer, redactor: Redactor, origin: str = "") -> None:
        """`origin`: the upstream's URL (no credentials) or builtin, kept in each entry (`recorded_from`)."""
        self.upstream, self.writer, self.redactor, self.origin = upstream, writer, redactor, origin
        self._warned: set[str] = set()  # suspect keys already warned about, once per run

    async def __call__(self, ex: Exchange) -> Response | None:
        started = time.perf_counter()
        resp = await self.upstream(ex)
        if resp is None:  # nothing answered: nothing to record
            return None
        req = ex.request
        path = self.writer.path_for(req.service)
        duration = (time.perf_counter() - started) * 1000
        if len(req.body) + len(resp.body) > OFF_LOOP:  # a big answer must not stall every other client
            data = await asyncio.to_thread(self._encode, ex, resp, duration)
        else:
            data = self._encode(ex, resp, duration)
        appending = time.perf_counter()
        try:
            await self.writer.append(path, data)
            ex.append_ms, ex.appended_bytes = (time.perf_counter() - appending) * 1000, len(data)
        except (OSError, OmproxyError) as e:  # a full disk, a shared state gone: answered, not recorded
            reason = e.message if isinstance(e, OmproxyError) else e.strerror or str(e)
            ex.record_error = f"cannot write {path}: {reason}"
            log.error("NOT RECORDED %s %s: %s", req.method, escape(self.redactor.target(req.path, req.query)),
                      ex.record_error)
            return resp
        ex.recorded_to = str(path)
        for key in self.redactor.suspects(req.form.fields):
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s looks like a card number or credential and is recorded in clear in %s; "
                            "add '%s' to redact.form_keys in config.yaml", key, path, key)
        return resp

    def _encode(self, ex: Exchange, resp: Response, duration_ms: float) -> bytes:
        return encode(self.redactor, ex.request, resp, duration_ms, recorded_from=self.origin)


def encode(redactor: Redactor, req: Request, resp: Response, duration_ms: float,
           recorded_at: str | None = None, recorded_from: str | None = None) -> bytes:
    """An exchange's cassette entry, redacted."""
    return yamlformat.dump_entry(cassette.to_entry(redactor.request(req), redactor.response(resp), duration_ms,
                                                   recorded_at, recorded_from))
