"""Recording: the Recorder responder (asks the upstream, writes the exchange, then answers) and the
CassetteWriter that appends entries safely. An entry is on disk (fsync'd) before the client gets
its response; concurrent requests are group-committed in one append; an flock lets two processes
record into one cassette; nothing is ever rewritten."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from omproxy import cassette
from omproxy.journal import Journal
from omproxy.model import Request, Responder, Response
from omproxy.redaction import Redactor

log = logging.getLogger(__name__)


def safe_name(service: str | None) -> str:
    """A service name usable as one file name: no separators, no leading dots, no NUL."""
    name = re.sub(r"[^A-Za-z0-9._-]|\.{2,}", "_", service or "_other").lstrip(".")
    return (name or "_")[:120]


class CassetteWriter:
    def __init__(self, template: str) -> None:
        if template.endswith("/") or Path(template).is_dir():
            template = str(Path(template) / "{service}.yaml")
        self.template = template
        self._pending: dict[Path, list[tuple[bytes, asyncio.Future[None]]]] = defaultdict(list)
        self._flushing: dict[Path, asyncio.Task[None]] = {}
        self._checked: set[Path] = set()

    def path_for(self, service: str | None) -> Path:
        if "{service}" not in self.template:
            return Path(self.template)
        return Path(self.template.replace("{service}", safe_name(service)))

    async def append(self, path: Path, data: bytes) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[path].append((data, future))
        if path not in self._flushing:
            self._flushing[path] = asyncio.create_task(self._flush(path))
        await asyncio.shield(future)  # a client that hangs up does not stop its entry being written

    async def _flush(self, path: Path) -> None:
        try:
            while self._pending.get(path):
                batch = self._pending.pop(path)
                try:
                    await asyncio.to_thread(self._write, path, b"".join(d for d, _ in batch))
                except OSError as e:
                    for _, f in batch:
                        f.set_exception(e)
                        f.exception()  # retrieved here too: a waiter whose client hung up is gone
                else:
                    for _, f in batch:
                        f.set_result(None)
        finally:
            del self._flushing[path]

    async def drain(self) -> None:
        while self._flushing:
            await asyncio.gather(*self._flushing.values(), return_exceptions=True)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another omproxy recording into the same file waits
            if path not in self._checked:
                self._checked.add(path)
                report = cassette.repair_tail(fd, str(path))
                if report:
                    log.warning("%s", report)
            if os.fstat(fd).st_size == 0:
                data = cassette.HEADER.encode() + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


class Recorder:
    """Asks the upstream, appends the exchange to the cassette, then answers. Upstream failures
    raise and are never recorded."""

    def __init__(self, upstream: Responder, writer: CassetteWriter, redactor: Redactor, journal: Journal) -> None:
        self.upstream, self.writer, self.redactor, self.journal = upstream, writer, redactor, journal
        self._warned: set[str] = set()  # suspect keys already warned about, once per run

    async def __call__(self, req: Request) -> Response | None:
        started = time.perf_counter()
        resp = await self.upstream(req)
        if resp is None:  # nothing answered: nothing to record
            return None
        path = self.writer.path_for(req.service)
        data = cassette.dump_entry(cassette.entry(req, resp, (time.perf_counter() - started) * 1000, self.redactor))
        try:
            await self.writer.append(path, data)
        except OSError as e:
            self.journal.count("write failed")
            log.error("NOT RECORDED %s %s: cannot write %s: %s", req.method,
                      self.redactor.target(req.path, req.query), path, e.strerror or e)
            return replace(resp, note=f"NOT recorded: {e.strerror or e}")
        self.journal.count("recorded")
        for key in self.redactor.suspects(req.form.fields):
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s looks like a card number or credential and is recorded in clear in %s; "
                            "add '%s' to redact.form_keys in config.yaml", key, path, key)
        return replace(resp, note=f"recorded to {path}")
