"""The web inspector's data: every exchange as a row pushed to open pages (Server-Sent Events), one
exchange or recorded interaction in detail, and the decode box. Everything shown is redacted as the
cassette would be: the page never sees a value redaction masks. Pure: the page itself is the static
`inspector.html`, served by the admin API."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from omproxy.exchange import Exchange, summary
from omproxy.gms import formcodec, jetty
from omproxy.gms import vocabulary as gms
from omproxy.model import Recorded, Request, Response, headers_of
from omproxy.redaction import Redactor
from omproxy.serve.observers import entry

KEEP = 500  # exchanges kept for details and for a page that opens late
GONE = "gone"  # put in a page's queue when it is let go (it read nothing for KEEP rows): its stream ends


def explain(req: Request) -> dict[str, Any]:
    """What `omproxy decode` says of a request body: fields, the bracket view, findings, the repair."""
    fixed = gms.repair(req.operation, req.form)
    findings = [*req.findings, *gms.path_findings(req.path)]
    content_type = req.headers.get("Content-Type")
    reads = None if req.form.not_form or not req.body else jetty.as_dict(
        *jetty.compared(req.body, content_type, req.form, fixed))
    return {"fields": [list(f) for f in req.form.fields], "form": {} if req.form.not_form else req.form.view(),
            "findings": [f.as_dict() for f in findings],
            "repaired": fixed.text if fixed else None,
            "repair_note": fixed.reason if fixed and fixed.text is not None and fixed.reason else None,
            "unrepairable": fixed.reason if fixed and fixed.text is None else None,
            "gms_reads": reads}


def _body(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _response(resp: Response, redactor: Redactor) -> dict[str, Any]:
    shown = redactor.response(resp)
    reply = shown.reply
    return {"status": shown.status, "headers": [list(h) for h in shown.headers.items()],
            "body": json.dumps(reply, ensure_ascii=False, indent=2) if reply is not None else _body(shown.body),
            "source": resp.source.value}


def detail(req: Request, resp: Response | None, redactor: Redactor, where: dict[str, Any]) -> dict[str, Any]:
    """One exchange as the page shows it, redacted: request line and headers, the raw body, the
    decoded tree, findings (with the fragment to mark), the repair, the answer, where it came from."""
    shown = redactor.request(req)
    return {"method": shown.method, "target": shown.target, "headers": [list(h) for h in shown.headers.items()],
            "body": _body(shown.body), **explain(shown),
            "response": _response(resp, redactor) if resp is not None else None, "where": where}


class Live:
    """The observer keeping the last exchanges and pushing each, as a row, to every open page."""

    def __init__(self, redactor: Redactor, mode: str) -> None:
        self.redactor, self.mode = redactor, mode
        self.kept: deque[tuple[int, Exchange]] = deque(maxlen=KEEP)
        self.numbers = itertools.count(1)
        self.pages: set[asyncio.Queue[str]] = set()

    def __call__(self, ex: Exchange) -> None:
        number = next(self.numbers)
        ex = summary(ex)
        self.kept.append((number, ex))
        if self.pages:
            event = self.event(number, ex)  # made once, whatever the number of pages
            for page in list(self.pages):
                if page.full():  # a page that reads nothing for a whole queue's worth is let go: its stream
                    self.pages.discard(page)  # ends, the page reconnects when it reads again
                    page.get_nowait()
                    page.put_nowait(GONE)
                    continue
                page.put_nowait(event)

    def row(self, number: int, ex: Exchange) -> dict[str, Any]:
        row = entry(ex, self.redactor)
        row.update(id=number, mode=self.mode, findings=[f.kind for f in ex.request.findings])
        return row

    def event(self, number: int, ex: Exchange) -> str:
        return f"id: {number}\ndata: {json.dumps(self.row(number, ex), ensure_ascii=False)}\n\n"

    def find(self, number: int) -> Exchange | None:
        return next((ex for n, ex in self.kept if n == number), None)

    def exchange(self, number: int) -> dict[str, Any] | None:
        ex = self.find(number)
        if ex is None:
            return None
        where: dict[str, Any] = {"source": ex.response.source.value if ex.response else None, "note": ex.note}
        if ex.matched is not None:
            where.update(cassette=ex.matched.cassette, index=ex.matched.index)
        return detail(ex.request, ex.response, self.redactor.also(ex.leaked), where)

    async def stream(self) -> AsyncIterator[bytes]:
        """An open page: what was kept, then each new exchange as it happens (SSE)."""
        page: asyncio.Queue[str] = asyncio.Queue(maxsize=KEEP)
        self.pages.add(page)
        try:
            yield b"retry: 2000\n\n"
            for number, ex in list(self.kept):
                yield self.event(number, ex).encode()
            while True:
                try:
                    event = await asyncio.wait_for(page.get(), 15)
                except TimeoutError:
                    yield b": keep-alive\n\n"  # a comment line: proxies and the page know it is alive
                    continue
                if event is GONE:
                    return
                yield event.encode()
        finally:
            self.pages.discard(page)


def recorded(rec: Recorded, redactor: Redactor, played: bool) -> dict[str, Any]:
    return detail(rec.request, rec.response, redactor, {"cassette": rec.cassette, "index": rec.index,
                                                        "line": rec.line, "played": played})


def decode_box(body: bytes, path: str, content_type: str | None) -> dict[str, Any]:
    req = Request("POST", path, "", headers_of({"Content-Type": content_type or formcodec.FORM_TYPE}), body)
    op = req.operation
    return {"operation": {"kind": op.kind, "service": op.service, "id": op.id} if op else None, **explain(req)}
