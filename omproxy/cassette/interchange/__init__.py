"""Cassettes to and from what other tools write, a module a format:

    har      HAR 1.1 and 1.2 (browsers, Charles, Fiddler, Insomnia, mitmproxy): in, and out as HAR 1.2
    vcr      VCR.py cassettes (YAML or JSON, every stub's dialect): in and out; Betamax's (and Ruby
             VCR's) in
    gor      GoReplay's .gor captures: in

An import reads what it can and names the entry and field it cannot (`UsageError`, exit 2); what it
left out or mended is said, a line each (`Imported.notes`). Pure: the command line reads, redacts
and writes the files."""

from __future__ import annotations

from omproxy.cassette.interchange.common import Imported, parse
from omproxy.cassette.interchange.gor import from_gor
from omproxy.cassette.interchange.har import from_har, har_entry, har_text, to_har
from omproxy.cassette.interchange.vcr import from_betamax, from_vcr, to_vcr, vcr_interaction, vcr_text
from omproxy.errors import UsageError

FORMATS = ("har", "vcr", "betamax", "gor")

__all__ = ["FORMATS", "Imported", "from_betamax", "from_gor", "from_har", "from_vcr", "har_entry", "har_text",
           "read", "to_har", "to_vcr", "vcr_interaction", "vcr_text"]


def read(raw: bytes, name: str, source: str | None = None, *, everything: bool = False) -> Imported:
    """A file another tool wrote, as exchanges; its format by its content unless `source` says."""
    found, data = parse(raw, name)
    if source is not None and source != found:
        raise UsageError(f"{name}: --from {source}, but it reads as {found}")
    if found == "har":
        return from_har(data, name, everything=everything)
    if found == "betamax":
        return from_betamax(data, name)
    if found == "gor":
        return from_gor(data, name, everything=everything)
    return from_vcr(data, name)
