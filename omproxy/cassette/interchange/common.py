"""What the formats share: the result of an import (the exchanges, and a line for each entry skipped
or mended), the headers no cassette keeps, compressed answers, and telling a file's format by its
content. Pure."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import yaml

from omproxy import yamlsafe
from omproxy.errors import UsageError
from omproxy.model import Recorded

# Not kept in a cassette: derived from the body, or hop-by-hop. (Content-Encoding is kept as the
# answer's `content_encoding` when its body could be decoded.)
DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"})
GOR_SEPARATOR = "\n🐵🙈🙉\n".encode()


@dataclass
class Imported:
    """What an import read: the exchanges in the order captured, and one line for each entry left
    out or mended (`name: entry #N: ...`), for the person importing."""

    recorded: list[Recorded] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def kept_headers(pairs: Any) -> list[tuple[str, str]]:
    """(name, value) pairs as a cassette keeps them: HTTP/2 pseudo-headers and DROPPED left out, a
    null value read as empty."""
    return [(str(k), "" if v is None else str(v)) for k, v in pairs
            if not str(k).startswith(":") and str(k).lower() not in DROPPED]


def encoding_of(pairs: Any) -> str | None:
    return next((str(v).strip().lower() for k, v in pairs if str(k).lower() == "content-encoding" and v), None)


def decoded_answer(body: bytes, encoding: str | None, decoded_already: bool) -> tuple[bytes, str | None, str | None]:
    """An answer's body, decoded; the encoding it came in (kept as `content_encoding`), or None when
    the body is kept as its bytes; and a note when it could not be decoded. `decoded_already`: the
    format holds bodies decoded (HAR does), unless they plainly are not (gzip's magic bytes)."""
    if encoding in (None, "", "identity"):
        return body, None, None
    if encoding in ("gzip", "x-gzip"):
        if decoded_already and not body.startswith(b"\x1f\x8b"):
            return body, "gzip", None
        try:
            return gzip.decompress(body), "gzip", None
        except (OSError, EOFError, zlib.error):
            return body, None, "Content-Encoding gzip, but the body is not valid gzip: kept as its bytes"
    if encoding == "deflate":
        if decoded_already and not (len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0):
            return body, "deflate", None  # decoded, as the format holds it (no zlib header: not compressed)
        for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):  # zlib-wrapped, as the RFC says, or raw, as some send
            try:
                return zlib.decompress(body, wbits), "deflate", None
            except zlib.error:
                continue
        if decoded_already:
            return body, "deflate", None
        return body, None, "Content-Encoding deflate, but the body is not valid deflate: kept as its bytes"
    if decoded_already:
        return body, encoding, None
    return body, None, f"Content-Encoding {encoding}, which omproxy does not decode: kept as its bytes"


def answer_of(body: bytes, pairs: list[tuple[str, str]], at: str, out: Imported,
              decoded_already: bool) -> tuple[bytes, list[tuple[str, str]], str | None]:
    """An answer's body decoded (`decoded_answer`), the headers a cassette keeps of it, and the encoding
    it came in; one that cannot be decoded keeps its bytes and its Content-Encoding (they still mean
    what they meant), and the import says so in `out`."""
    sent_as = encoding_of(pairs)
    decoded, encoding, note = decoded_answer(body, sent_as, decoded_already)
    kept = kept_headers(pairs)
    if note:
        out.notes.append(f"{at}: {note}")
        kept.append(("Content-Encoding", sent_as or ""))
    return decoded, kept, encoding


def parse(raw: bytes, name: str) -> tuple[str, Any]:
    """The format of a file other tools wrote, by its content, and its parsed document: har, vcr
    (VCR.py's YAML or JSON), betamax (Betamax, and Ruby VCR's `http_interactions`) or gor (raw bytes)."""
    if GOR_SEPARATOR in raw or raw[:2] in (b"1 ", b"2 ", b"3 "):
        return "gor", raw
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark (Windows tools write one) is not content
    except UnicodeDecodeError as e:
        raise UsageError(f"{name}: not UTF-8 text (byte {e.start}), nor a GoReplay capture") from None
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise UsageError(f"{name}: not valid JSON: {e}") from None
    else:
        try:
            data = yamlsafe.load(text)
        except yaml.constructor.ConstructorError as e:
            if "python/" in str(e):  # VCR.py before 1.0 pickled its requests: never constructed here
                raise UsageError(f"{name}: a VCR.py cassette of before VCR.py 1.0, with Python object tags "
                                 "(!!python/object), which omproxy never constructs (nothing from a file is run); "
                                 "convert it with VCR.py's own `python -m vcr.migration` first") from None
            raise UsageError(f"{name}: not valid YAML: {e}") from None
        except yaml.YAMLError as e:
            raise UsageError(f"{name}: not valid YAML: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("log"), dict):
        return "har", data
    if isinstance(data, dict) and "http_interactions" in data:
        return "betamax", data
    if isinstance(data, dict) and "interactions" in data:
        return "vcr", data
    raise UsageError(f"{name}: neither HAR (log.entries), a VCR.py cassette (interactions), Betamax "
                     "(http_interactions) nor GoReplay (.gor)")


def where(name: str, i: int, what: str = "entry") -> str:
    return f"{name}: {what} #{i}"
