"""omproxy's log on stderr: text lines (the access lines written directly, in batches, by
`BatchingHandler.access`) or JSON lines (`JsonFormatter`), set up once by `setup_logging`."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from omproxy.config.options import Config, LogFormat

if TYPE_CHECKING:
    from omproxy.serve.observers.accesslog import Write


def iso_time(when: float) -> str:
    """ISO 8601 in UTC to the millisecond, with its zone: 2026-12-04T20:01:02.345Z."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, every line alike: `time` (ISO 8601, milliseconds, UTC), `level`,
    `logger`, `message`; an access line adds the exchange's fields (its own start as `time`)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": iso_time(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage()}
        entry = getattr(record, "entry", None)
        if isinstance(entry, dict):
            data.update(entry)
            if isinstance(entry.get("time"), int | float):
                data["time"] = iso_time(entry["time"])
        return json.dumps(data, ensure_ascii=False, default=str)


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines written in batches — every FLUSH_EVERY seconds, or at once when BATCH lines are waiting —
    in one write, rather than one write and flush each: under load the log costs a fraction. An
    access line is kept as its parts and its time, and formatted with its batch. Outside a running
    loop (start-up, shutdown) a line is written at once; `flush` (logging.shutdown at a clean stop, a
    second signal) writes whatever is pending. A process killed outright loses at most the last
    FLUSH_EVERY seconds of log lines (never a cassette entry: those are fsync'd before the answer)."""

    FLUSH_EVERY = 0.1
    BATCH = 512

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.pending: list[str | tuple[float, int, str, float, str]] = []
        self.second, self.stamp = 0, ""
        self.millis, self.level, self.start = 0, 0, ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._add(line)

    def access(self, level: int, when: float, before: str, duration_ms: float, after: str) -> None:
        """An access line without a LogRecord, in the text format's `asctime levelname message`:
        the one line every request writes costs a fraction of what `logging` would."""
        self._add((when, level, before, duration_ms, after))

    def _add(self, line: str | tuple[float, int, str, float, str]) -> None:
        pending = self.pending
        pending.append(line)
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_EVERY, self.flush)
            except RuntimeError:
                self.flush()
        elif len(pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            lines, self.pending = self.pending, []
            self.stream.write("\n".join(line if isinstance(line, str) else self._text(*line) for line in lines) + "\n")
        self.stream.flush()

    def _text(self, when: float, level: int, before: str, duration_ms: float, after: str) -> str:
        millis = int(when * 1000)
        if millis != self.millis or level != self.level:  # the lines of one millisecond share their start
            second = millis // 1000
            if second != self.second:
                self.second, self.stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self.millis, self.level = millis, level
            self.start = f"{self.stamp},{millis % 1000:03d} {_LEVELS[level]} "
        return f"{self.start}{before}{duration_ms:.1f}ms{after}"


_LEVELS = {level: logging.getLevelName(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING,
                                                            logging.ERROR, logging.CRITICAL)}


def setup_logging(config: Config) -> Write | None:
    """Configure omproxy's log; for the text format, the handler's direct access-line writer."""
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.log_format is LogFormat.JSON
                         else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    # What a record costs beyond its message: the caller's frame, thread and process (the logging
    # HOWTO's "Optimization"); omproxy's lines name none of them.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger("omproxy")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if (config.verbose or 0) > 1 else logging.INFO)
    root.propagate = False
    return handler.access if config.log_format is LogFormat.TEXT else None
