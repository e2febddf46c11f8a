"""The admin API under /_omproxy/: never forwarded, recorded, matched or journaled; a thin view of the
Runtime, answered by the pipeline before any responder (pure: any server front serves it).
With `admin.token` set, every call but health needs `Authorization: Bearer TOKEN`. A call that
changes state needs a JSON Content-Type or an X-Omproxy-Admin header, which a cross-site HTML form
cannot send."""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from omproxy import __version__
from omproxy.cassette import entry as cassette_entry
from omproxy.config.faults import written
from omproxy.errors import AdminRefused, OmproxyError, RequestRefused
from omproxy.exchange import FIRED
from omproxy.gms import vocabulary as gms
from omproxy.gms.formcodec import media_type_of
from omproxy.model import SESSION_HEADER, Recorded, Request, Response, Source, headers_of
from omproxy.modes import escape, faults
from omproxy.serve.observers import entry, inspector

if TYPE_CHECKING:
    from omproxy.serve.runtime import Runtime

PREFIX = "/_omproxy/"


def _count(text: str) -> bool:
    """A whole number as a query gives it: ASCII digits, nine at most (`²` is a digit to isdigit, and
    int() refuses 5,000 digits)."""
    return 0 < len(text) <= 9 and text.isascii() and text.isdigit()


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def compact(data: Any, status: int = 200, **headers: str) -> Response:
    """JSON as GMS writes it: no spaces (so `grep '"status":"ok"'` works)."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return Response.json(status, body, Source.OMPROXY, **headers)


class AdminNotFound(OmproxyError):
    status = 404
    code = "admin-not-found"
    gms_code = gms.UNKNOWN_OPERATION


class AdminMethod(OmproxyError):
    status = 405
    code = "method-not-allowed"
    gms_code = gms.UNKNOWN_OPERATION


class Admin:
    """The responder for /_omproxy/...; errors are raised into the error tree like any other."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.endpoints: dict[str, tuple[str, Callable[[Request], Awaitable[Response]]]] = {
            "health": ("GET", self.health), "ready": ("GET", self.ready), "journal": ("GET", self.journal),
            "cassettes": ("GET", self.cassettes), "reset": ("POST", self.reset), "metrics": ("GET", self.metrics),
            "ui": ("GET", self.ui), "events": ("GET", self.events), "exchange": ("GET", self.exchange),
            "cassette": ("GET", self.cassette), "decode": ("POST", self.decode), "download": ("GET", self.download),
            "faults": ("GET POST DELETE", self.faults)}

    async def __call__(self, req: Request) -> Response:
        name = req.path[len(PREFIX):]
        found = self.endpoints.get(name)
        if found is None:
            raise AdminNotFound(f"no admin endpoint {req.method} {req.path}; see {PREFIX}health, journal, "
                                "cassettes, reset, metrics, ui")
        methods, endpoint = found
        if req.method not in methods.split() and not (req.method == "HEAD" and name == "health"):
            raise AdminMethod(f"{PREFIX}{name} takes {' or '.join(methods.split())}, not {req.method}")
        if name not in ("health", "ready"):
            self.host_check(req)
            self.guard(req, changes=name == "reset" or req.method in ("POST", "DELETE") and name == "faults")
        try:
            return await endpoint(req)
        except (ValueError, TypeError, RecursionError, UnicodeError) as e:  # an input no check above foresaw
            raise RequestRefused(f"{PREFIX}{name} cannot take that input ({type(e).__name__}); see "
                                 f"{PREFIX}health for the endpoints") from None

    def host_check(self, req: Request) -> None:
        """DNS rebinding: a web page whose name its DNS points at 127.0.0.1 is same-origin with omproxy.
        Only a Host that cannot be rebound is answered: an IP address, localhost, the address omproxy
        listens on, or one of admin.allowed_hosts (with admin.token set, the token guards instead)."""
        if self.rt.config.admin_token is not None:
            return
        host = req.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
        allowed = {"localhost", self.rt.config.host.lower(), *(h.lower() for h in self.rt.config.admin_allowed_hosts)}
        if not name or name.lower() in allowed or name.lower().endswith(".localhost") or _ip_literal(name):
            return  # (no Host: not a browser's request, which always names one)
        raise AdminRefused(f"the admin API answers no Host '{escape(name)}' (a DNS rebinding page would send one); "
                           "open it by IP address or localhost, or add the name to admin.allowed_hosts", 403)

    def guard(self, req: Request, *, changes: bool) -> None:
        token = self.rt.config.admin_token
        if token is not None:
            given = req.headers.get("Authorization", "")
            scheme, _, credentials = given.partition(" ")
            given = f"Bearer {credentials}" if scheme.lower() == "bearer" else given  # schemes: any case
            if not given.startswith("Bearer ") and req.method == "GET":  # the inspector page: ?token=
                given = "Bearer " + dict(parse_qsl(req.query)).get("token", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise AdminRefused("the admin API needs 'Authorization: Bearer <admin.token>'")
        json_type = media_type_of(req.headers.get("Content-Type")) == "application/json"
        if changes and not (json_type or "X-Omproxy-Admin" in req.headers):
            raise AdminRefused("a call that changes state needs Content-Type: application/json or an "
                               "X-Omproxy-Admin header (so that no web page's form can send it)", 403)

    async def health(self, req: Request) -> Response:
        return compact({"status": "ok", "mode": self.rt.mode.value, "version": __version__})

    async def ready(self, req: Request) -> Response:
        """200 when omproxy can serve (cassettes loaded, the upstream reachable in the modes that
        forward, the shared state reachable); 503 saying what is not, for a load balancer or a probe."""
        problems = [p for p in [await check() for check in self.rt.readiness] if p]
        if problems:
            return compact({"status": "not ready", "problems": problems}, 503)
        return compact({"status": "ready", "mode": self.rt.mode.value})

    async def journal(self, req: Request) -> Response:
        """?session=NAME keeps one session's exchanges (and counts them); ?limit=N the last N."""
        query = dict(parse_qsl(req.query, keep_blank_values=True))
        journal = self.rt.journal
        session = query.get("session")
        kept = journal.of_session(session) if session is not None else list(journal.entries)
        raw = query.get("limit", str(len(kept)))
        if not _count(raw):
            raise RequestRefused(f"limit must be a whole number of 0 or more, not {raw!r}")
        kept = kept[len(kept) - int(raw):] if int(raw) else []
        counts: dict[str, int] = {}
        shared = getattr(self.rt.state, "counts", None)  # several instances: the cluster's counts
        if session is None and shared is not None:
            counts = {k: n for k, n in (await shared()).items() if not k.startswith(FIRED)}
        elif session is None:
            counts = {o.value: n for o, n in journal.counts.items()}
        else:
            for ex in journal.of_session(session):
                for o in ex.counts():
                    counts[o.value] = counts.get(o.value, 0) + 1
        entries = [entry(ex, self.rt.redactor, self.rt.config.verbose) for ex in kept]
        return compact({"entries": entries, "counts": counts})

    async def cassettes(self, req: Request) -> Response:
        playback = self.rt.playback
        return compact({"cassettes": playback.report(await self.rt.state.played()) if playback else []})

    async def metrics(self, req: Request) -> Response:
        """The Prometheus text format (with the `metrics` extra installed)."""
        if self.rt.metrics is None:
            raise AdminNotFound(f"{PREFIX}metrics needs the prometheus-client package: pip install "
                                "'omproxy[metrics]'")
        body, content_type = self.rt.metrics.exposition()
        return Response(200, body, headers_of({"Content-Type": content_type}), Source.OMPROXY)

    # ---- the web inspector (`inspector`, and the page `inspector.html`) ----------------------------
    async def ui(self, req: Request) -> Response:
        page = resources.files("omproxy.serve.observers").joinpath("inspector.html").read_bytes()
        policy = "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
        return Response(200, page, headers_of({"Content-Type": "text/html; charset=utf-8",
                                                "Content-Security-Policy": policy}), Source.OMPROXY)

    async def events(self, req: Request) -> Response:
        return Response(200, b"", headers_of({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}),
                        Source.OMPROXY, stream=self.rt.live.stream())

    async def exchange(self, req: Request) -> Response:
        raw = dict(parse_qsl(req.query)).get("id", "")
        found = self.rt.live.exchange(int(raw)) if _count(raw) else None
        if found is None:
            raise AdminNotFound(f"no exchange {raw!r} among the last {inspector.KEEP}")
        return compact(found)

    async def cassette(self, req: Request) -> Response:
        """?file=PATH: its interactions as rows; &index=N: that one in detail."""
        query = dict(parse_qsl(req.query))
        playback = self.rt.playback
        found = next((c for c in playback.cassettes if c.path == query.get("file")), None) if playback else None
        if playback is None or found is None:
            raise AdminNotFound(f"no loaded cassette {query.get('file')!r}; GET {PREFIX}cassettes lists them")
        played = await self.rt.state.played()
        if _count(query.get("index", "")) and int(query["index"]) < len(found.interactions):
            rec = found.interactions[int(query["index"])]
            return compact(inspector.recorded(rec, self.rt.redactor, (rec.cassette, rec.index) in played))
        rows = [{**cassette_entry.row(self._shown(r)), "played": (r.cassette, r.index) in played}
                for r in found.interactions[:5000]]
        return compact({"cassette": found.path, "interactions": rows})

    async def download(self, req: Request) -> Response:
        """?format=har|cassette&ids=1,2,...: the inspector's kept exchanges (those ids, else all), redacted
        as shown, as a HAR 1.2 file or an omproxy cassette (bodies as the inspector keeps them)."""
        from omproxy.cassette import interchange, yamlformat
        from omproxy.cassette.entry import now_stamp

        query = dict(parse_qsl(req.query))
        form = query.get("format", "har")
        if form not in ("har", "cassette"):
            raise RequestRefused(f"format must be har or cassette, not {form!r}")
        wanted = {int(n) for n in query.get("ids", "").split(",") if _count(n)}
        recorded: list[Recorded] = []
        for number, ex in self.rt.live.kept:
            if (wanted and number not in wanted) or ex.response is None:
                continue
            shown = self.rt.redactor.also(ex.leaked)
            when = now_stamp(datetime.fromtimestamp(ex.started, UTC))
            note = f"bodies cut to what the inspector keeps ({ex.cut} bytes not kept)" if ex.cut else ""
            recorded.append(Recorded("inspector", len(recorded), 0, shown.request(ex.request),
                                     shown.response(ex.response), when, ex.duration_ms, note=note))
        if form == "har":
            host = req.headers.get("Host", "localhost")
            body = "".join(interchange.har_text(recorded, f"http://{host}")).encode()
            kind, name = "application/json", "omproxy.har"
        else:
            body = yamlformat.HEADER.encode() + b"".join(yamlformat.dump_entry(cassette_entry.to_entry(
                r.request, r.response, r.duration_ms, r.recorded_at, note=r.note or None)) for r in recorded)
            kind, name = "application/yaml", "omproxy-cassette.yaml"
        return Response(200, body, headers_of({"Content-Type": kind,
                                               "Content-Disposition": f'attachment; filename="{name}"'}),
                        Source.OMPROXY)

    def _shown(self, rec: Recorded) -> Recorded:
        return replace(rec, request=self.rt.redactor.request(rec.request))

    async def decode(self, req: Request) -> Response:
        usage = 'send {"body": "...", "path": "...", "content_type": "..."} as JSON, each a string'
        try:
            data = json.loads(req.body or b"{}")
        except (ValueError, RecursionError):
            raise RequestRefused(usage) from None
        if not isinstance(data, dict):
            raise RequestRefused(usage)
        body, path, content_type = data.get("body", ""), data.get("path") or "", data.get("content_type")
        if not isinstance(body, str) or not isinstance(path, str) or not isinstance(content_type, str | None):
            raise RequestRefused(usage)
        return compact(inspector.decode_box(body.encode("utf-8", "surrogateescape"), path, content_type))

    async def faults(self, req: Request) -> Response:
        """GET: the rules (config's, every session's, this session's) and how often each fired; POST adds
        rules (a rule, a list, or {"faults": [...]}) for every session, or only for the one named by
        X-Omproxy-Session; DELETE removes those added (config.yaml's stay)."""
        session = req.session if req.session or SESSION_HEADER in req.headers else None
        state = self.rt.state
        every, own = await state.fault_rules(session or "")
        if req.method == "POST":
            await state.set_fault_rules(session, faults.added(own if session is not None else every, req.body,
                                                              session))
        elif req.method == "DELETE":
            await state.set_fault_rules(session, "")
        else:
            fired = dict(self.rt.journal.fired)
            shared = getattr(state, "counts", None)
            if shared is not None:  # several instances: the cluster's counts
                fired = {k[len(FIRED):]: n for k, n in (await shared()).items() if k.startswith(FIRED)}
            rows: list[dict[str, Any]] = [{"name": r.name, "scope": "config", "rule": written(r)}
                                          for r in self.rt.config.faults]
            scopes = [(None, every)] + ([(session, own)] if session is not None else [])
            for scope, text in scopes:
                names = [r.name for r in faults.parsed(text, faults.scope_prefix(scope))]
                rows += [{"name": n, "scope": "every session" if scope is None else f"session {scope}", "rule": raw}
                         for n, raw in zip(names, json.loads(text) if text else [], strict=True)]
            for row in rows:
                row["fired"] = fired.get(row["name"], 0)
            return compact({"faults": rows, "seed": self.rt.config.faults_seed})
        return compact({"status": "cleared" if req.method == "DELETE" else "added", "session": session})

    async def reset(self, req: Request) -> Response:
        session = req.session if req.session or SESSION_HEADER in req.headers else None  # None: every session
        await self.rt.state.reset(session)
        self.rt.journal.clear(session)
        return compact({"status": "reset", "session": session})
