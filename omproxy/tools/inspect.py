"""`omproxy inspect`: a cassette as a table a person reads in a terminal, one interaction a row —
index, recorded time, operation, service, interaction id, user data (abridged), HTTP status, GMS
statusCode, duration — or as JSON lines for scripts (each naming its cassette); filtered by operation,
service, id, HTTP status or GMS statusCode. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from omproxy.cassette.entry import row
from omproxy.model import Recorded


@dataclass(frozen=True)
class Filters:
    operation: str | None = None
    service: str | None = None
    id: str | None = None
    status: int | None = None
    gms_status: int | None = None  # GMS's statusCode: its failures are HTTP 200 with statusCode 2

    def keep(self, row: dict[str, Any]) -> bool:
        return ((self.operation is None or row["operation"] == self.operation)
                and (self.service is None or row["service"] == self.service)
                and (self.id is None or row["interactionId"] == self.id)
                and (self.status is None or row["status"] == self.status)
                and (self.gms_status is None or row["statusCode"] == self.gms_status))


HEADINGS = ("#", "recorded at", "operation", "service", "interaction id", "user data", "HTTP", "GMS", "ms")


def lines(recorded: Iterable[Recorded], filters: Filters, as_json: bool) -> Iterator[str]:
    """The table's lines (a heading first), or one JSON object a line, as the recordings come."""
    if not as_json:
        yield _format(HEADINGS)
    for rec in recorded:
        r = row(rec)
        if not filters.keep(r):
            continue
        if as_json:
            yield json.dumps({"cassette": rec.cassette, **r}, ensure_ascii=False)
            continue
        data = ", ".join(f"{k}={v}" for k, v in r["userData"].items())
        yield _format((str(r["index"]), r["recorded_at"][:23], str(r["operation"]), str(r["service"] or "-"),
                       str(r["interactionId"] or "-"), data[:40] + ("…" if len(data) > 40 else ""), str(r["status"]),
                       "-" if r["statusCode"] is None else str(r["statusCode"]), f"{r['duration_ms']:g}"))


def _format(cells: tuple[str, ...]) -> str:
    widths = (6, 23, 9, 18, 16, 41, 4, 3, 7)
    return "  ".join(c.ljust(w) if i < 6 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                         strict=True))).rstrip()
