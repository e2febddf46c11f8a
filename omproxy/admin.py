"""The admin API under /_omproxy/: never forwarded, recorded or matched; a thin view of the Runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from omproxy import __version__, gms
from omproxy.model import SESSION_HEADER

if TYPE_CHECKING:
    from omproxy.app import Runtime

PREFIX = "/_omproxy/"


def install(app: web.Application, rt: Runtime) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "mode": rt.mode.value, "version": __version__})

    async def journal(request: web.Request) -> web.Response:
        """?session=NAME keeps one session's entries; ?limit=N the last N."""
        entries = list(rt.journal.entries)
        if "session" in request.query:
            entries = [e for e in entries if e.get("session", "") == request.query["session"]]
        try:
            limit = int(request.query.get("limit", len(entries)))
        except ValueError:
            return web.json_response({"statusCode": 2, "errors": [{"advice": "limit must be a whole number"}]},
                                     status=400, headers={"X-Omproxy-Error": "bad-admin-query"})
        return web.json_response({"entries": entries[-limit:] if limit > 0 else [],
                                  "counts": dict(rt.journal.counts)})

    async def cassettes(request: web.Request) -> web.Response:
        return web.json_response({"cassettes": rt.playback.report() if rt.playback else []})

    async def reset(request: web.Request) -> web.Response:
        session = request.headers.get(SESSION_HEADER)
        if rt.playback is not None:
            rt.playback.reset(session)
        rt.journal.clear(session)
        return web.json_response({"status": "reset", "session": session})

    async def unknown(request: web.Request) -> web.Response:
        body: dict[str, Any] = {"statusCode": 2, "errors": [{"code": gms.UNKNOWN_OPERATION, "advice":
                                f"no admin endpoint {request.method} {request.path}; see "
                                f"{PREFIX}health, journal, cassettes, reset"}]}
        return web.json_response(body, status=404, headers={"X-Omproxy-Error": "admin-not-found"})

    app.router.add_get(PREFIX + "health", health)
    app.router.add_get(PREFIX + "journal", journal)
    app.router.add_get(PREFIX + "cassettes", cassettes)
    app.router.add_post(PREFIX + "reset", reset)
    app.router.add_route("*", PREFIX + "{tail:.*}", unknown)
