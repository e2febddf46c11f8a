"""Faults: GMS's answers when it is in trouble, and its latency, injected by rule (`config.faults`),
before any responder, in every serving mode. A rule from config.yaml applies to every session; one
added at run time (`POST /_omproxy/faults`, the pytest marker's `faults=`) to all sessions or to one.
How often a rule fires (`times`, `nth`) is counted per session in the state, so several instances
count as one; `probability` draws from a hash of the seed, the rule, the session and the count, so a
run gives the same sequence every time, on every backend. An injected answer is never recorded.
Pure: the connection-level answers (reset, timeout, truncate) are carried out by the HTTP edge."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from statistics import NormalDist

from omproxy.config import faults as rules
from omproxy.config.faults import Match, Rule
from omproxy.errors import ConfigError, RequestRefused
from omproxy.exchange import Exchange
from omproxy.gms import vocabulary as gms
from omproxy.model import Request, Response, Source, headers_of
from omproxy.state import State

RUNTIME = "runtime"  # the prefix of rules added for every session at run time


@dataclass(frozen=True)
class Decision:
    """A rule that fired on a request: its answer (None: only a delay, then the usual answer)."""

    rule: Rule
    count: int  # how many requests of the session this rule matched, this one included


def matches(rule: Rule, req: Request) -> bool:
    return matched(rule.match, req)


def matched(m: Match, req: Request) -> bool:
    """Whether a request is one `m` describes (a rule's match, record.only, record.skip)."""
    op = req.operation
    if m.operation is not None and (op is None or op.kind != m.operation):
        return False
    if m.service is not None and (op.service if op is not None else req.service) != m.service:
        return False
    if m.method is not None and req.method != m.method:
        return False
    if m.session is not None and req.session != m.session:
        return False
    if m.path is not None and not fnmatchcase(req.path, m.path):
        return False
    return all(any(fnmatchcase(v, want) for v in req.headers.getall(name, ())) for name, want in m.headers)


def draw(seed: int, rule: Rule, session: str, count: int) -> float:
    """A number in [0, 1) that depends on nothing else: the same run gives the same faults."""
    digest = hashlib.sha256(f"{seed}\0{rule.name}\0{session}\0{count}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fires(rule: Rule, count: int, chance: float) -> bool:
    if rule.times is not None:
        return count <= rule.times
    if rule.nth:
        return count in rule.nth
    if rule.probability is not None:
        return chance < rule.probability
    return True


@functools.lru_cache(maxsize=256)
def parsed(text: str, prefix: str) -> tuple[Rule, ...]:
    """Rules kept as JSON text in the state, read once per distinct text (the key is the whole input)."""
    return rules.rules("faults", json.loads(text), prefix) if text else ()


def scope_prefix(session: str | None) -> str:
    return RUNTIME if session is None else f"session {session}"


class Faults:
    def __init__(self, configured: tuple[Rule, ...], state: State, seed: int = 0, scale: float = 1.0) -> None:
        self.configured, self.state, self.seed, self.scale = configured, state, seed, scale

    async def rules_for(self, session: str) -> tuple[Rule, ...]:
        every, own = await self.state.fault_rules(session)
        return self.configured + parsed(every, RUNTIME) + parsed(own, scope_prefix(session))

    async def decide(self, ex: Exchange) -> Decision | None:
        """The first rule matching the request, when it fires on it (counted either way)."""
        req = ex.request
        for rule in await self.rules_for(req.session):
            if matches(rule, req):
                count = await self.state.tally(req.session, rule.name)
                if fires(rule, count, draw(self.seed, rule, req.session, count)):
                    ex.fault = rule.name
                    return Decision(rule, count)
                return None  # the first match decides: later rules are not asked
        return None

    def answer(self, decision: Decision, req: Request) -> Response | None:
        answer = decision.rule.answer
        if answer is None:
            return None
        headers = {"X-Omproxy-Fault": decision.rule.name}
        if answer.kind == "retry":
            body = gms.retry(f"injected by omproxy ({decision.rule.name}): try again")
        elif answer.kind == "gms_error":
            assert answer.code is not None
            advice = answer.advice or rules.KNOWN_CODES[answer.code]
            body = gms.failure(answer.code, advice.replace("{id}", req.interaction_id or "").replace(
                "{n}", str(decision.count)))
        elif answer.kind == "http":
            assert answer.status is not None
            return Response(answer.status, answer.body.encode(), headers_of(
                {**headers, "Content-Type": "text/plain;charset=utf-8"} if answer.body else headers), Source.FAULT)
        else:  # reset, timeout, truncate: the edge does it to the connection
            body = gms.retry(f"injected by omproxy ({decision.rule.name})")
            resp = Response.json(200, body, Source.FAULT, **headers)
            return Response(resp.status, resp.body, resp.headers, Source.FAULT, action=answer.kind)
        return Response.json(200, body, Source.FAULT, **headers)

    def delay_ms(self, decision: Decision, ex: Exchange) -> float:
        delay = decision.rule.delay
        if delay is None:
            return 0.0
        if delay.ms is not None:
            ms = delay.ms
        elif delay.recorded:
            ms = ex.matched.duration_ms if ex.matched is not None else 0.0
        else:
            assert delay.p50 is not None and delay.p99 is not None
            sigma = (math.log(delay.p99) - math.log(delay.p50)) / NormalDist().inv_cdf(0.99)
            u = draw(self.seed + 1, decision.rule, ex.request.session, decision.count)
            ms = delay.p50 * math.exp(sigma * NormalDist().inv_cdf(min(max(u, 1e-12), 1 - 1e-12)))
        return ms * self.scale


def added(existing: str, body: bytes, session: str | None) -> str:
    """The JSON text of a scope's rules once those in `body` (a rule, a list, or {"faults": [...]}) are
    added; a wrong one is refused whole, saying which and why."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise RequestRefused('send a fault rule as JSON: {"match": {...}, "answer": "retry"}') from None
    if isinstance(data, dict) and "faults" in data:
        data = data["faults"]
    new = data if isinstance(data, list) else [data]
    combined = (json.loads(existing) if existing else []) + new
    try:
        rules.rules("faults", combined, scope_prefix(session))
    except ConfigError as e:
        raise RequestRefused(e.message) from None
    return json.dumps(combined, separators=(",", ":"), sort_keys=True)
