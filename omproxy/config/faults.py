"""Fault rules, as config.yaml's `faults:` and the admin API's `POST /_omproxy/faults` write them:
which requests (`match`), how often (`times`, `probability`, `nth`), and what happens (`answer`, `delay`).
Read and checked here, once: a wrong rule is an error naming its index and key. Pure.

    faults:
      - match: {service: customer-support, operation: create}
        times: 2
        answer: retry              # statusCode 1: GMS's "try again"
      - match: {operation: get}
        delay: 1500ms              # or {recorded: true}, or {p50: 80ms, p99: 900ms}
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from omproxy.errors import ConfigError

OPERATIONS = ("create", "get", "update", "stop")
SIMPLE = ("retry", "reset", "timeout", "truncate")  # answers named by one word
KNOWN_CODES = {  # GMS's own errors, with the advice it gives ({id}: the interaction asked about)
    248: "Specified interaction Id[{id}] was not found",
    249: "Media server was not able to execute request. referenceId[{n}]",
}
RULE_KEYS = ("name", "match", "times", "probability", "nth", "answer", "delay")
MATCH_KEYS = ("service", "operation", "path", "method", "session", "header")


@dataclass(frozen=True)
class Match:
    """Which requests a rule is for: every field given must hold (`path`: a glob, `header`: name -> value)."""

    service: str | None = None
    operation: str | None = None
    path: str | None = None
    method: str | None = None
    session: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Answer:
    """What is answered instead: `retry` (statusCode 1), `gms_error` (statusCode 2, `code` and `advice`),
    `http` (`status`, `body`), or what the connection does: `reset`, `timeout`, `truncate`."""

    kind: str
    code: int | None = None
    advice: str | None = None
    status: int | None = None
    body: str = ""


@dataclass(frozen=True)
class Delay:
    """How long before answering: `ms`, or the recording's own `duration_ms` (`recorded`), or a
    log-normal draw with this median and 99th percentile (`p50`, `p99`, in ms)."""

    ms: float | None = None
    recorded: bool = False
    p50: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    answer: Answer | None = None
    delay: Delay | None = None
    times: int | None = None  # the first N matching requests of a session
    probability: float | None = None  # each matching request, with this chance (faults_seed: reproducible)
    nth: tuple[int, ...] = ()  # these matching requests of a session (1-based)


def _keys(where: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    for key in value:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            raise ConfigError(f"{where}.{key}: unknown key" + (f" — did you mean '{near[0]}'?" if near else
                                                              f" (known: {', '.join(allowed)})"))
    return value


def milliseconds(where: str, value: Any) -> float:
    """1500ms, 1.5s, or a number of milliseconds."""
    text = str(value).strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text = text[:-2]
    elif text.endswith("s"):
        text, scale = text[:-1], 1000.0
    try:
        ms = float(text) * scale
    except ValueError:
        raise ConfigError(f"{where}: expected a duration like 1500ms or 1.5s, not {value!r}") from None
    if not math.isfinite(ms) or ms < 0 or ms > 3_600_000:
        raise ConfigError(f"{where}: expected a duration between 0 and 1 hour, not {value!r}")
    return ms


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise ConfigError(f"{where}: expected a string")
    return str(value)


def _count(where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: expected a whole number of at least 1, not {value!r}")
    return value


def match_of(where: str, value: Any) -> Match:
    data = _keys(where, value if value is not None else {}, MATCH_KEYS)
    fields = {k: _text(f"{where}.{k}", v) for k, v in data.items() if k != "header"}
    if "operation" in fields and fields["operation"] not in OPERATIONS:
        raise ConfigError(f"{where}.operation: expected one of {', '.join(OPERATIONS)}, not {fields['operation']!r}")
    if "method" in fields:
        fields["method"] = fields["method"].upper()
    headers: tuple[tuple[str, str], ...] = ()
    if "header" in data:
        if not isinstance(data["header"], dict) or not data["header"]:
            raise ConfigError(f"{where}.header: expected a mapping of header name: value")
        headers = tuple((str(k).lower(), _text(f"{where}.header.{k}", v)) for k, v in data["header"].items())
    return Match(**fields, headers=headers)


def _answer(where: str, value: Any) -> Answer:
    if isinstance(value, str):
        if value not in SIMPLE:
            raise ConfigError(f"{where}: expected one of {', '.join(SIMPLE)}, or {{gms_error: CODE}} or "
                              f"{{http: STATUS}}, not {value!r}")
        return Answer(value)
    data = _keys(where, value, ("gms_error", "advice", "http", "body"))
    if ("gms_error" in data) == ("http" in data):
        raise ConfigError(f"{where}: give one of gms_error: CODE or http: STATUS")
    if "gms_error" in data:
        code = data["gms_error"]
        if not isinstance(code, int) or isinstance(code, bool) or code < 1:
            raise ConfigError(f"{where}.gms_error: expected a GMS error code (a number), not {code!r}")
        if "body" in data:
            raise ConfigError(f"{where}.body: a gms_error's body is GMS's errors[] envelope; use advice:")
        advice = data.get("advice")
        if advice is None and code not in KNOWN_CODES:
            raise ConfigError(f"{where}.advice: GMS error {code} is not one omproxy knows the text of "
                              f"({', '.join(map(str, KNOWN_CODES))}); give its advice text")
        return Answer("gms_error", code=code, advice=_text(f"{where}.advice", advice) if advice is not None else None)
    status = data["http"]
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ConfigError(f"{where}.http: expected an HTTP status (200-599), not {status!r}")
    if "advice" in data:
        raise ConfigError(f"{where}.advice: an http answer has a body:, not advice:")
    return Answer("http", status=status, body=str(data.get("body", "")))


def _delay(where: str, value: Any) -> Delay:
    if not isinstance(value, dict):
        return Delay(ms=milliseconds(where, value))
    data = _keys(where, value, ("recorded", "p50", "p99"))
    if data.get("recorded") is True:
        if len(data) > 1:
            raise ConfigError(f"{where}: recorded: true takes no p50/p99")
        return Delay(recorded=True)
    if "recorded" in data:
        raise ConfigError(f"{where}.recorded: expected true")
    if set(data) != {"p50", "p99"}:
        raise ConfigError(f"{where}: give p50 and p99 (a log-normal delay), or recorded: true")
    p50, p99 = milliseconds(f"{where}.p50", data["p50"]), milliseconds(f"{where}.p99", data["p99"])
    if not 0 < p50 <= p99:
        raise ConfigError(f"{where}: expected 0 < p50 <= p99")
    return Delay(p50=p50, p99=p99)


def rule(where: str, value: Any, name: str) -> Rule:
    data = _keys(where, value, RULE_KEYS)
    if "answer" not in data and "delay" not in data:
        raise ConfigError(f"{where}: a rule needs an answer: or a delay: (or both)")
    how = [k for k in ("times", "probability", "nth") if k in data]
    if len(how) > 1:
        raise ConfigError(f"{where}: give at most one of times, probability, nth (not {' and '.join(how)})")
    probability = data.get("probability")
    if probability is not None and (isinstance(probability, bool) or not isinstance(probability, int | float)
                                    or not 0 <= probability <= 1):
        raise ConfigError(f"{where}.probability: expected a number from 0 to 1, not {probability!r}")
    nth = data.get("nth", [])
    if not isinstance(nth, list) or ("nth" in data and not nth):
        raise ConfigError(f"{where}.nth: expected a list of request numbers, like [3, 7]")
    return Rule(name=_text(f"{where}.name", data["name"]) if "name" in data else name,
                match=match_of(f"{where}.match", data.get("match")),
                answer=_answer(f"{where}.answer", data["answer"]) if "answer" in data else None,
                delay=_delay(f"{where}.delay", data["delay"]) if "delay" in data else None,
                times=_count(f"{where}.times", data["times"]) if "times" in data else None,
                probability=float(probability) if probability is not None else None,
                nth=tuple(sorted({_count(f"{where}.nth", n) for n in nth})))


def rules(where: str, value: Any, prefix: str = "faults") -> tuple[Rule, ...]:
    """A list of rules; each named `prefix[i]` unless it names itself."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of rules (each with match: and answer: or delay:)")
    found = tuple(rule(f"{where}[{i}]", v, f"{prefix}[{i}]") for i, v in enumerate(value))
    names = [r.name for r in found]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"{where}: two rules are named {n!r}")
    return found


def written(rule: Rule) -> dict[str, Any]:
    """A rule as config.yaml writes it (what `GET /_omproxy/faults` shows)."""
    m = rule.match
    match: dict[str, Any] = {k: v for k, v in (("service", m.service), ("operation", m.operation), ("path", m.path),
                                               ("method", m.method), ("session", m.session)) if v is not None}
    if m.headers:
        match["header"] = dict(m.headers)
    out: dict[str, Any] = {"name": rule.name, "match": match}
    for key in ("times", "probability"):
        if getattr(rule, key) is not None:
            out[key] = getattr(rule, key)
    if rule.nth:
        out["nth"] = list(rule.nth)
    a = rule.answer
    if a is not None:
        out["answer"] = a.kind if a.kind in SIMPLE else (
            {"gms_error": a.code, **({"advice": a.advice} if a.advice else {})} if a.kind == "gms_error" else
            {"http": a.status, **({"body": a.body} if a.body else {})})
    d = rule.delay
    if d is not None:
        out["delay"] = f"{d.ms:g}ms" if d.ms is not None else {"recorded": True} if d.recorded else {
            "p50": f"{d.p50:g}ms", "p99": f"{d.p99:g}ms"}
    return out


def matches_of(where: str, value: Any) -> tuple[Match, ...]:
    """A list of `match` shapes (record.only, record.skip)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of matches, like [{{service: billing}}]")
    return tuple(match_of(f"{where}[{i}]", v) for i, v in enumerate(value))
