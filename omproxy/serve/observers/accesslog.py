"""The log of what happened, built from exchanges only when a log line will be written: one line per
request (operation, service, decoded form with secrets masked, status, GMS statusCode, interaction
id, source, duration; a miss at WARNING with its report) and one warning per encoding finding.
Pure: `cli` configures where the lines go."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from omproxy.exchange import Exchange, Outcome
from omproxy.modes import escape
from omproxy.redaction import Redactor
from omproxy.serve.observers import entry

log = logging.getLogger("omproxy.access")


def text(mode: str, e: dict[str, Any]) -> str:
    before, after = halves(mode, e)
    return f"{before}{e['duration_ms']}ms{after}"


def halves(mode: str, e: dict[str, Any]) -> tuple[str, str]:
    """An access line but its duration: what comes before it, and after."""
    op = f"{e['operation']}@{e['service']}" if e.get("operation") else "-"
    parts = [mode, e["method"], escape(e["path"]), op]
    if e["form"]:
        parts.append(json.dumps(e["form"], ensure_ascii=False, separators=(",", ":")))
    parts.append(f"-> {e['status']}")
    if e.get("statusCode") is not None:
        parts.append(f"statusCode={e['statusCode']}")
    if e.get("interactionId"):
        parts.append(f"id={escape(str(e['interactionId']))}")
    parts.append(f"[{e['source']}{' ' + e['note'] if e.get('note') else ''}]")
    if e.get("session"):
        parts.append(f"session={escape(e['session'])}")
    after = "".join(f" {key}={json.dumps(e[key], ensure_ascii=False)}"
                    for key in ("request_headers", "response_headers") if key in e)
    return " ".join(str(p) for p in parts) + " ", after


class AccessLog:
    """The observer writing one line per exchange (a miss at WARNING), built only when it is written."""

    def __init__(self, mode: str, redactor: Redactor, verbose: int = 0, write: Write | None = None) -> None:
        self.mode, self.redactor, self.verbose = mode, redactor, verbose
        self.write = write  # a direct writer of text lines (the command line's); else `logging`

    def __call__(self, ex: Exchange) -> None:
        level = logging.WARNING if ex.outcome is Outcome.MISSED else logging.INFO
        if not log.isEnabledFor(level):
            return
        if self.write is not None:
            before, after = halves(self.mode, entry(ex, self.redactor, self.verbose))
            self.write(level, ex.started, before, ex.duration_ms, after)
        else:
            e = entry(ex, self.redactor, self.verbose)
            e["mode"] = self.mode
            log.log(level, "%s", Line(e), extra={"entry": e})


Write = Callable[[int, float, str, float, str], None]  # level, time, the line before its duration, ms, after


class Line:
    """The text of an access line, made only if a text formatter asks (the JSON one reads `entry`)."""

    __slots__ = ("e",)

    def __init__(self, e: dict[str, Any]) -> None:
        self.e = e

    def __str__(self) -> str:
        return text(self.e["mode"], self.e)


class FindingsLog:
    """The observer warning once per encoding finding of a request, secrets scrubbed."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(self, ex: Exchange) -> None:
        req = ex.request
        if not req.findings or not log.isEnabledFor(logging.WARNING):
            return
        secrets = self.redactor.secrets_in(req.form.fields, req.body, req.headers.get("Content-Type"))
        target = escape(self.redactor.target(req.path, req.query))
        for finding in req.findings:
            shown = {k: self.redactor.scrub(v, secrets) for k, v in finding.as_dict().items()}
            log.warning("%s %s: %s: %s%s", req.method, target, shown["kind"], shown["message"],
                        f" [{escape(shown['fragment'])}]" if shown["fragment"] else "",
                        extra={"entry": {"finding": shown, "method": req.method, "path": target}})
