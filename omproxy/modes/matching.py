"""RecordingRef matchers, the lookup index and the near-miss report. Pure.

A request's key is one value per matcher in `match.on` (+ named headers). The form is compared as
a multiset of decoded (key, value) pairs, so parameter order, `%5B` versus `[`, `+` versus `%20`
and which characters a client chose to percent-encode do not matter. Lookup is one dict access,
whatever the number of interactions; only a miss looks at candidates, to explain itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from omproxy.config.options import Matching
from omproxy.exchange import NearMiss
from omproxy.gms import formcodec
from omproxy.gms import vocabulary as gms
from omproxy.model import Recorded, Request
from omproxy.redaction import MASK, Redactor

NEAR_MISS_SCAN = 500  # candidates examined to explain one miss, at most: a miss never stalls other clients


@dataclass(frozen=True)
class Rules:
    on: tuple[str, ...]
    headers: tuple[str, ...]
    ignore: frozenset[str]
    # the redaction rules: a key they mask is never compared (nor shown in a miss report), in any of its
    # encodings; a pseudonymised key's value is compared as its pseudonym, as recorded
    redactor: Redactor | None = None

    @classmethod
    def of(cls, matching: Matching, also_ignore: Iterable[str] = (), redactor: Redactor | None = None) -> Rules:
        headers = tuple(h.lower() for h in matching.headers)
        return cls(matching.on, headers, frozenset(matching.ignore) | set(also_ignore), redactor)

    def fields(self, fields: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """Decoded fields as matching compares them: a multiset, ignored and masked keys left out,
        pseudonymised keys' values as their pseudonyms."""
        p = self.redactor
        if p is None or not (p.pseudo_keys or p.form_keys):
            return tuple(sorted(f for f in fields if f[0] not in self.ignore))
        return tuple(sorted((k, p.pseudonym(v) if v and p.pseudo_key(k) else v) for k, v in fields
                            if k not in self.ignore and not p.secret_key(k)))


def _form(req: Request, rules: Rules) -> tuple[tuple[str, str], ...]:
    """The decoded fields as a multiset; bytes invalid in the charset kept distinct; a body that is not
    a form at all (JSON, ...) compared whole."""
    # an empty body (a get, a big capture's most): its shared decoding, not remembered on the request
    form = req.form if req.body else formcodec.decoded(b"", req.headers.get("Content-Type"))
    if not form.fields and not form.findings:
        return ()
    if form.not_form:
        return (("body", req.body.decode("utf-8", "surrogateescape")),)
    return rules.fields(form.exact)


def _query(req: Request, rules: Rules) -> tuple[tuple[str, str], ...]:
    if not req.query:
        return ()
    return rules.fields(req.query_form.exact)


# Each matcher: the request's view of it, given the rules. RecordingRef in `config.MATCHERS`.
VIEWS: dict[str, Callable[[Request, Rules], Any]] = {
    "method": lambda req, rules: req.method.upper(),
    "path": lambda req, rules: unquote(req.path),
    "query": _query,
    "form": _form,
}


def views(req: Request, rules: Rules) -> dict[str, Any]:
    """Each matcher's view of a request, named."""
    out: dict[str, Any] = {name: VIEWS[name](req, rules) for name in rules.on}
    for header in rules.headers:
        out[f"header {header}"] = tuple(req.headers.getall(header, ()))
    return out


def key(req: Request, rules: Rules) -> Hashable:
    """`views`' values, in their order."""
    return (*(VIEWS[name](req, rules) for name in rules.on),
            *(tuple(req.headers.getall(header, ())) for header in rules.headers))


def differences(recorded: Request, received: Request, rules: Rules) -> list[str]:
    """What differs, field by field after decoding: `userData[X]: recorded 'a', received 'b'`."""
    return _differences(views(recorded, rules), views(received, rules))


def _differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name in want:
        if want[name] == got[name]:
            continue
        if name in ("form", "query"):
            out += _pair_differences(want[name], got[name], "" if name == "form" else "query ")
        else:
            out.append(f"{name}: recorded {_show(want[name])}, received {_show(got[name])}")
    return out


SHOWN = 80  # characters of a value a report quotes: a miss report stays small whatever the body


def abbreviated(value: str) -> str:
    """A value as a report quotes it: whole when short, else its start and how long it was."""
    shown = repr(value)
    if len(shown) <= SHOWN:
        return shown
    return f"{shown[:SHOWN - 3]}...' ({len(value)} characters)"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        if len(value) == 1:
            return abbreviated(value[0]) if isinstance(value[0], str) else repr(value[0])
        return "nothing" if not value else "[" + ", ".join(
            abbreviated(v) if isinstance(v, str) else repr(v) for v in value[:5]) + (
            f", ... {len(value)} in all]" if len(value) > 5 else "]")
    return abbreviated(value) if isinstance(value, str) else repr(value)


def _pair_differences(want: tuple[tuple[str, str], ...], got: tuple[tuple[str, str], ...], prefix: str) -> list[str]:
    wanted: dict[str, list[str]] = defaultdict(list)
    given: dict[str, list[str]] = defaultdict(list)
    for k, v in want:
        wanted[k].append(v)
    for k, v in got:
        given[k].append(v)
    out = []
    for k in list(wanted) + [k for k in given if k not in wanted]:
        a, b = wanted.get(k, []), given.get(k, [])
        if a != b:
            shown = k.encode("utf-8", "backslashreplace").decode("utf-8")[:SHOWN]  # bytes not in the charset, escaped
            out.append(f"{prefix}{shown}: recorded {_show(tuple(a))}, received {_show(tuple(b))}")
    return out


Route = Recorded | list[Recorded]  # the recordings of one path: one, or several in order


class Index:
    """Recorded interactions by match key, in recorded order; plus by route and operation, to explain
    misses (built at the first miss: a big capture starts without them)."""

    def __init__(self, recorded: Iterable[Recorded], rules: Rules) -> None:
        self.rules = rules
        self.by_key: dict[Hashable, list[Recorded]] = defaultdict(list)
        self._by_route: dict[str, Route] | None = None
        self._by_operation: dict[tuple[str, str], list[Recorded]] = defaultdict(list)
        self.all: list[Recorded] = []
        self._views: dict[int, dict[str, Any]] = {}
        for rec in recorded:
            self.add(rec)

    def add(self, rec: Recorded) -> None:
        self.all.append(rec)
        self.by_key[key(rec.request, self.rules)].append(rec)
        if self._by_route is not None:
            self._place(rec, self._by_route, self._by_operation)

    @staticmethod
    def _place(rec: Recorded, by_route: dict[str, Route],
               by_operation: dict[tuple[str, str], list[Recorded]]) -> None:
        path = unquote(rec.request.path)
        found = by_route.get(path)  # one recording as itself, more as a list: a big capture's memory
        if found is None:
            by_route[path] = rec
        elif isinstance(found, list):
            found.append(rec)
        else:
            by_route[path] = [found, rec]
        op = gms.parse_path(rec.request.path)  # not kept on the request: a big capture's memory
        if op is not None:
            by_operation[(op.kind, op.service)].append(rec)

    def routes(self) -> dict[str, Route]:
        """The recordings by route (and by operation), built the first time they are needed."""
        for _ in self.build_routes():
            pass
        assert self._by_route is not None
        return self._by_route

    def build_routes(self, step: int = 5000) -> Iterator[None]:
        """Build them `step` recordings at a time (`app` does, between requests, once serving); each
        index is put in place whole, so a miss meanwhile builds its own."""
        if self._by_route is not None:
            return
        by_route: dict[str, Route] = {}
        by_operation: dict[tuple[str, str], list[Recorded]] = defaultdict(list)
        recorded = list(self.all)
        for k in range(0, len(recorded), step):
            for rec in recorded[k:k + step]:
                self._place(rec, by_route, by_operation)
            yield
        if self._by_route is None:
            self._by_operation, self._by_route = by_operation, by_route

    def key_of(self, req: Request) -> Hashable:
        return key(req, self.rules)

    def lookup(self, req: Request) -> list[Recorded]:
        return self.by_key.get(self.key_of(req), [])

    def near_misses(self, req: Request, n: int = 3, scan: int = NEAR_MISS_SCAN) -> list[NearMiss]:
        """The n recorded interactions closest to req (of at most `scan` candidates), with what differs."""
        found = self.routes().get(unquote(req.path))
        pool = [r for r in ([found] if isinstance(found, Recorded) else found or [])
                if r.request.method.upper() == req.method.upper()]
        op = req.operation
        if not pool and op is not None:
            pool = self._by_operation.get((op.kind, op.service), [])
        pool = (pool or self.all)[:scan]
        scored = []
        got = views(req, self.rules)  # once, not once per candidate
        for rec in pool:
            seen = self._views.get(id(rec))
            if seen is None:
                seen = self._views[id(rec)] = views(rec.request, self.rules)
            diffs = _differences(seen, got)
            weight = sum(3 if d.startswith(("method", "path")) else 1 for d in diffs)
            if _kind(rec.request) != _kind(req):  # a create is nearer to a create than to any get
                weight += 100
            scored.append((weight, rec.index, rec, diffs))
        scored.sort(key=lambda s: (s[0], s[1]))
        return [NearMiss(rec, tuple(diffs)) for _, _, rec, diffs in scored[:n]]


def _kind(req: Request) -> str | None:
    return req.operation.kind if req.operation else None


def redacted_keys(recorded: Iterable[Recorded]) -> set[str]:
    """Form and query keys stored as REDACTED at record time: matching must ignore them."""
    return {k for rec in recorded if rec.request.body or rec.request.query
            for form in (rec.request.form, rec.request.query_form) for k, v in form.fields if v == MASK}


def miss_report(req: Request, misses: list[NearMiss]) -> str:
    """One readable paragraph: what was asked, and how the nearest recordings differ."""
    op = req.operation
    what = f"{op.kind} on '{op.service}'" if op else f"{req.method} {req.path}"
    if not misses:
        return f"no recorded interaction matches {what}: the cassettes hold nothing near it"
    parts = [f"no recorded interaction matches {what}; nearest:"]
    for miss in misses:
        diffs = "; ".join(miss.differences) or "identical but used up (replay.repeat: miss)"
        parts.append(f"[{miss.recorded.where}] {diffs}")
    return " ".join(parts)


