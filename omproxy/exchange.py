"""One request's life, typed: what was asked, what was answered and by whom, how long it took, which
recording matched or why none did, where it was recorded. Responders fill it in; observers (the
journal, the access log, later metrics, HAR export, the inspector, the pytest plugin) only read it.
Pure."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from omproxy.model import Recorded, Request, Response


@dataclass(frozen=True)
class NearMiss:
    recorded: Recorded
    differences: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"cassette": self.recorded.cassette, "index": self.recorded.index, "line": self.recorded.line,
                "differences": list(self.differences)}


FIRED = "fault "  # a shared count of a fault rule's fires is named "fault <rule name>"


class Outcome(Enum):
    """What the summary line and the journal count. One per exchange (but RECORDED / WRITE_FAILED,
    which come on top of FORWARDED), plus NEVER_PLAYED at shutdown."""

    FROM_CASSETTE = "from cassette"
    SIMULATED = "simulated"
    FORWARDED = "forwarded"
    RECORDED = "recorded"
    MISSED = "missed"
    FAILED_UPSTREAM = "failed upstream"
    WRITE_FAILED = "write failed"
    REFUSED = "refused"
    NEVER_PLAYED = "never played"
    FAULTED = "faulted"  # answered by a fault rule instead
    BACK_PRESSURE = "not recorded (back-pressure)"  # answered; the disk was slower than the traffic
    DISK_FULL = "not recorded (disk full)"  # answered; the disk (or quota) was full
    UNREDACTED = "not recorded (unredacted secret)"  # answered; redact.block_on: a secret was left in clear
    SAMPLED_OUT = "not sampled"  # forwarded, not recorded: its story was not sampled
    FILTERED_OUT = "filtered out"  # forwarded, not recorded: record.only / record.skip


@dataclass(slots=True)
class Exchange:
    request: Request
    started: float = field(default_factory=time.time)  # wall clock, seconds
    response: Response | None = None
    outcome: Outcome | None = None
    duration_ms: float = 0.0
    matched: Recorded | None = None  # the recording that answered
    miss: str | None = None  # why no recording answered (a readable report)
    near_misses: tuple[NearMiss, ...] = ()
    owned: bool = False  # answered by the simulator under the consistency rule
    recorded_to: str | None = None
    record_error: str | None = None
    record_failure: Outcome | None = None  # why not recorded: BACK_PRESSURE, DISK_FULL, UNREDACTED, WRITE_FAILED
    upstream_ms: float | None = None  # how long the upstream took to answer
    append_ms: float | None = None  # how long appending to the cassette took
    appended_bytes: int = 0
    error: str | None = None  # the omproxy error the answer reports
    cut: int = 0  # bytes of its bodies not kept (`summary`)
    repeat: bool = False  # answered by the last recording again, its recordings used up
    restart: bool = False  # a create played again: its session's recorded stories start over
    too_old: str | None = None  # the recording is older than replay.max_age: what to say of it
    fault: str | None = None  # the fault rule that fired on it (its answer, or only its delay)
    delay_ms: float = 0.0  # how long a fault rule held the answer back
    not_kept: Outcome | None = None  # forwarded but not recorded, by choice: SAMPLED_OUT or FILTERED_OUT
    leaked: frozenset[str] = frozenset()  # form/query keys and header names holding a secret in clear (`leaks`)

    def counts(self) -> list[Outcome]:
        out = [self.outcome] if self.outcome is not None else []
        if self.recorded_to is not None:
            out.append(Outcome.RECORDED)
        if self.record_error is not None:
            out.append(self.record_failure or Outcome.WRITE_FAILED)
        if self.not_kept is not None:
            out.append(self.not_kept)
        return out

    @property
    def note(self) -> str:
        """One human line on where the answer came from, for the log."""
        fault = ""
        if self.fault is not None:
            action = self.response.action if self.response is not None else None
            fault = (f"rule {self.fault}: " + ("injected" if self.outcome is Outcome.FAULTED else "delayed")
                     + (f" ({action})" if action else "") + (f", held {self.delay_ms:.0f} ms" if self.delay_ms else ""))
        said = self._said()
        return f"{said}; {fault}" if said and fault else said or fault

    def _said(self) -> str:
        if self.matched is not None:
            again = " (repeat)" if self.repeat else " (restart: the session's recordings play again)" if (
                self.restart) else ""
            return self.matched.where + again + (f"; {self.too_old}" if self.too_old else "")
        if self.record_error is not None:
            return f"NOT RECORDED: {self.record_error}"
        if self.recorded_to is not None:
            return f"recorded to {self.recorded_to}"
        if self.owned:
            return "consistency rule: the simulator changed this interaction, so it answers for it"
        return self.miss or self.error or ""


KEPT_BODY = 16 * 1024  # bytes of each body kept by what keeps exchanges for later (journal, inspector)


def summary(ex: Exchange) -> Exchange:
    """The exchange as kept for later: bodies beyond KEPT_BODY bytes cut there (and `cut` says how
    much is not kept), so that what is kept is bounded by bytes, not only by a count of exchanges."""
    req, resp = ex.request, ex.response
    request_over = len(req.body) - KEPT_BODY
    response_over = len(resp.body) - KEPT_BODY if resp is not None else 0
    if request_over <= 0 and response_over <= 0:
        return ex
    return replace(ex, request=replace(req, body=req.body[:KEPT_BODY]) if request_over > 0 else req,
                   response=replace(resp, body=resp.body[:KEPT_BODY]) if resp is not None and response_over > 0
                   else resp, cut=max(request_over, 0) + max(response_over, 0))
