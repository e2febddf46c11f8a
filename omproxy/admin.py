"""The admin API under /_omproxy/: never forwarded, recorded or matched; a thin view of the Runtime.
With `admin.token` set, every call but health needs `Authorization: Bearer TOKEN`. A call that
changes state needs a JSON Content-Type or an X-Omproxy-Admin header, which a cross-site HTML form
cannot send."""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from omproxy import __version__, accesslog, gms
from omproxy.errors import AdminRefused, RequestRefused
from omproxy.model import SESSION_HEADER

if TYPE_CHECKING:
    from omproxy.app import Runtime

PREFIX = "/_omproxy/"


def compact(data: Any, status: int = 200, **headers: str) -> web.Response:
    """JSON as GMS writes it: no spaces (so `grep '"status":"ok"'` works)."""
    return web.Response(text=json.dumps(data, ensure_ascii=False, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers)


def install(app: web.Application, rt: Runtime) -> None:
    def guard(request: web.Request, *, changes: bool = False) -> None:
        token = rt.config.admin_token
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise AdminRefused("the admin API needs 'Authorization: Bearer <admin.token>'")
        if changes and not (request.content_type == "application/json" or "X-Omproxy-Admin" in request.headers):
            raise AdminRefused("a call that changes state needs Content-Type: application/json or an "
                               "X-Omproxy-Admin header (so that no web page's form can send it)", 403)

    async def health(request: web.Request) -> web.Response:
        return compact({"status": "ok", "mode": rt.mode.value, "version": __version__})

    async def journal(request: web.Request) -> web.Response:
        """?session=NAME keeps one session's exchanges (and counts them); ?limit=N the last N."""
        guard(request)
        session = request.query.get("session")
        kept = rt.journal.of_session(session) if session is not None else list(rt.journal.entries)
        raw = request.query.get("limit", str(len(kept)))
        if not raw.isdigit():
            raise RequestRefused(f"limit must be a whole number of 0 or more, not {raw!r}")
        kept = kept[len(kept) - int(raw):] if int(raw) else []
        counts: dict[str, int] = {}
        if session is None:
            counts = {o.value: n for o, n in rt.journal.counts.items()}
        else:
            for ex in rt.journal.of_session(session):
                for o in ex.counts():
                    counts[o.value] = counts.get(o.value, 0) + 1
        entries = [accesslog.entry(ex, rt.redactor, rt.config.verbose) for ex in kept]
        return compact({"entries": entries, "counts": counts})

    async def cassettes(request: web.Request) -> web.Response:
        guard(request)
        report = rt.playback.report(await rt.state.played()) if rt.playback else []
        return compact({"cassettes": report})

    async def reset(request: web.Request) -> web.Response:
        guard(request, changes=True)
        session = request.headers.get(SESSION_HEADER)
        await rt.state.reset(session)
        rt.journal.clear(session)
        return compact({"status": "reset", "session": session})

    async def unknown(request: web.Request) -> web.Response:
        known = {"health": "GET", "journal": "GET", "cassettes": "GET", "reset": "POST"}
        name = request.path[len(PREFIX):]
        if name in known:
            return compact({"statusCode": 2, "errors": [{"code": gms.UNKNOWN_OPERATION, "advice":
                           f"{PREFIX}{name} takes {known[name]}, not {request.method}"}]}, 405,
                           Allow=known[name], **{"X-Omproxy-Error": "method-not-allowed"})
        return compact({"statusCode": 2, "errors": [{"code": gms.UNKNOWN_OPERATION, "advice":
                       f"no admin endpoint {request.method} {request.path}; see "
                       f"{PREFIX}health, journal, cassettes, reset"}]}, 404, **{"X-Omproxy-Error": "admin-not-found"})

    app.router.add_get(PREFIX + "health", health, allow_head=True)
    app.router.add_get(PREFIX + "journal", journal, allow_head=False)
    app.router.add_get(PREFIX + "cassettes", cassettes, allow_head=False)
    app.router.add_post(PREFIX + "reset", reset)
    app.router.add_route("*", PREFIX + "{tail:.*}", unknown)

