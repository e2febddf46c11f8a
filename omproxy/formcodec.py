"""Decode and encode application/x-www-form-urlencoded bodies, build the bracket view
(`userData[Key]=v` -> {"userData": {"Key": "v"}}) and name encoding anomalies.

Pure and generic: it knows nothing of GMS operations (that is `gms`) and never raises on any bytes.
Defined behaviour for bad input: an invalid `%` escape is kept literally (`%zz` stays `%zz`); bytes
that are not valid in the charset decode to U+FFFD. Both are reported as findings; the raw bytes are
always kept by the caller, so nothing is lost.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

FORM_TYPE = "application/x-www-form-urlencoded"
_HEX = b"0123456789abcdefABCDEF"
# Bytes that a form encoder must percent-encode but that lenient servers (Jetty) accept literally.
_MUST_ENCODE = set(b' "#<>\\^`{|}') | set(range(0x00, 0x20)) | {0x7F} | set(range(0x80, 0x100))
_BRACKET_KEY = re.compile(r"^([^\[\]]+)\[([^\[\]]*)\]$")
_ESCAPE_AFTER_DECODE = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True)
class Finding:
    """One encoding anomaly: a stable name, a sentence a person can act on, the offending text."""

    kind: str
    message: str
    fragment: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "fragment": self.fragment}


@dataclass(frozen=True)
class DecodedForm:
    """The decoded body: ordered (key, value) pairs, repeated keys and empty values kept."""

    fields: tuple[tuple[str, str], ...]
    findings: tuple[Finding, ...] = ()
    charset: str = "utf-8"

    def view(self) -> dict[str, Any]:
        """The bracket view (a new dict each call: callers may change it)."""
        return bracket_view(self.fields)

    @property
    def not_form(self) -> bool:
        """The body is not form fields at all (JSON, multipart, ...): no form view, no parameter findings."""
        return any(f.kind == "not-form" for f in self.findings)

    def get(self, key: str) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        return None


EMPTY = DecodedForm(())


def charset_of(content_type: str | None) -> str:
    """The charset parameter of a Content-Type header, UTF-8 when absent or unknown."""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            value = value.strip().strip('"')
            try:
                return codecs.lookup(value).name
            except LookupError:
                return "utf-8"
    return "utf-8"


def media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def split_key(key: str) -> tuple[str, str] | None:
    """`userData[OrderNumber]` -> ("userData", "OrderNumber"); None for a plain or malformed key."""
    m = _BRACKET_KEY.match(key)
    if m and m.group(2):
        return m.group(1), m.group(2)
    return None


def bracket_view(fields: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> dict[str, Any]:
    """Group bracket keys under their prefix; a repeated key's values become a list, in order.
    Malformed bracket keys stay top-level keys, verbatim."""
    view: dict[str, Any] = {}

    def put(target: dict[str, Any], key: str, value: str) -> None:
        if key not in target:
            target[key] = value
        elif isinstance(target[key], list):
            target[key].append(value)
        elif isinstance(target[key], dict):  # plain `userData=x` beside `userData[k]=y`
            target[key].setdefault("", value)
        else:
            target[key] = [target[key], value]

    for key, value in fields:
        parts = split_key(key)
        if parts is None:
            put(view, key, value)
            continue
        group = view.get(parts[0])
        if not isinstance(group, dict):
            group = view[parts[0]] = {} if group is None else {"": group}
        put(group, parts[1], value)
    return view


def unescape(raw: bytes) -> tuple[bytes, list[str]]:
    """Percent-decode one key or value (`+` is a space); invalid escapes kept literally."""
    out = bytearray()
    bad: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25:  # %
            if i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
                continue
            bad.append(raw[i : i + 3].decode("latin-1"))
            out.append(b)
        elif b == 0x2B:  # +
            out.append(0x20)
        else:
            out.append(b)
        i += 1
    return bytes(out), bad


def decode(body: bytes, content_type: str | None = FORM_TYPE) -> DecodedForm:
    """Decode a form body. Never raises; anomalies are returned as findings."""
    charset = charset_of(content_type)
    findings: list[Finding] = []
    fields: list[tuple[str, str]] = []
    findings += _content_type_findings(body, content_type)
    for segment in body.split(b"&"):
        if not segment:
            continue
        raw_key, has_eq, raw_value = segment.partition(b"=")
        texts = []
        for raw in (raw_key, raw_value):
            decoded, bad = unescape(raw)
            for frag in bad:
                findings.append(Finding(
                    "invalid-escape",
                    f"'{frag}' is not a valid percent escape (a % must be followed by two hex digits); "
                    "kept literally — encode a literal % as %25",
                    segment.decode("latin-1")))
            try:
                text = decoded.decode(charset)
            except UnicodeDecodeError:
                text = decoded.decode(charset, errors="replace")
                findings.append(Finding(
                    "invalid-charset",
                    f"bytes that are not valid {charset} (shown as U+FFFD); encode the text as {charset} "
                    "or declare its charset in Content-Type",
                    segment.decode("latin-1")))
            texts.append(text)
        fields.append((texts[0], texts[1]))
    if not any(f.kind == "not-form" for f in findings):  # a JSON body's braces are not the point
        findings += _literal_findings(body)
        findings += _shape_findings(body, fields)
    return DecodedForm(tuple(fields), tuple(_unique(findings)), charset)


_REPAIRABLE = {"double-encoded", "literal-space", "unencoded-character", "invalid-escape"}


def intended(form: DecodedForm) -> DecodedForm:
    """The fields the client meant: for a whole body percent-encoded twice, the body decoded once more."""
    if len(form.fields) == 1 and "=" in form.fields[0][0] and any(f.kind == "double-encoded" for f in form.findings):
        return decode(form.fields[0][0].encode(form.charset))
    return form


@dataclass(frozen=True)
class Repair:
    """The body as a careful client would have encoded it (`text`), or why there is none (`reason`)."""

    text: str | None
    reason: str = ""


def repaired(form: DecodedForm) -> Repair | None:
    """The body as a careful client would have encoded what this one meant, when its encoding was off."""
    kinds = {f.kind for f in form.findings}
    if not kinds & _REPAIRABLE or "not-form" in kinds:
        return None
    return Repair(encode(intended(form).fields, form.charset).decode("ascii"))


def encode(fields: list[tuple[str, str]] | tuple[tuple[str, str], ...], charset: str = "utf-8") -> bytes:
    """Encode pairs the way a careful client does (brackets and spaces percent-encoded, `+` for space)."""
    return "&".join(
        f"{quote_plus(k, safe='', encoding=charset)}={quote_plus(v, safe='', encoding=charset)}"
        for k, v in fields
    ).encode("ascii")


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        if (f.kind, f.fragment) not in seen:
            seen.add((f.kind, f.fragment))
            out.append(f)
    return out


def _looks_like_form(body: bytes) -> bool:
    return bool(re.match(rb"^[^\s{}\[\]<>=&]+=", body))


def _content_type_findings(body: bytes, content_type: str | None) -> list[Finding]:
    media = media_type_of(content_type)
    stripped = body.lstrip()
    if media == FORM_TYPE:
        if stripped[:1] in (b"{", b"["):
            return [Finding("not-form", "the body looks like JSON but Content-Type says "
                            f"{FORM_TYPE}; GMS Open Media takes form fields (key=value&...)",
                            body[:60].decode("utf-8", "replace"))]
        if stripped.startswith(b"--") and b"content-disposition" in body[:400].lower():
            return [Finding("not-form", "the body is multipart/form-data but Content-Type says "
                            f"{FORM_TYPE}; send url-encoded fields instead",
                            body[:60].decode("utf-8", "replace"))]
        return []
    if not body:
        return []
    if not media:
        return [Finding("content-type", f"no Content-Type header; GMS Open Media expects {FORM_TYPE}")]
    if _looks_like_form(body):
        return [Finding("content-type", f"the body is form-encoded but Content-Type is '{media}'; "
                        f"send Content-Type: {FORM_TYPE}", media)]
    return [Finding("content-type", f"Content-Type '{media}' is not {FORM_TYPE}, which GMS Open Media requires",
                    media)]


def _literal_findings(body: bytes) -> list[Finding]:
    findings = []
    for segment in body.split(b"&"):
        chars = sorted({b for b in segment if b in _MUST_ENCODE})
        if not chars:
            continue
        shown = segment.decode("utf-8", "replace")
        if 0x20 in chars:
            findings.append(Finding("literal-space", "a literal space is not valid form encoding (lenient "
                                    "servers keep it); encode it as '+' or '%20'", shown))
        others = [c for c in chars if c != 0x20]
        if others:
            names = ", ".join(repr(chr(c)) if 0x20 < c < 0x7F else f"byte 0x{c:02X}" for c in others)
            findings.append(Finding("unencoded-character", f"characters that must be percent-encoded: {names}",
                                    shown))
    return findings


def _shape_findings(body: bytes, fields: list[tuple[str, str]]) -> list[Finding]:
    findings = []
    if fields and b"=" not in body and any("=" in k for k, _ in fields):
        key = fields[0][0]
        once_more = "&".join(f"{k}={v}" for k, v in decode(key.encode()).fields)
        findings.append(Finding(
            "double-encoded",
            "the whole body was percent-encoded twice: a form parser sees one key and no value; "
            f"decoded once more it reads '{once_more}'. Encode each key and value once, not the joined body",
            body[:80].decode("utf-8", "replace")))
    else:
        for k, v in fields:
            for text, what in ((k, "key"), (v, "value")):
                m = _ESCAPE_AFTER_DECODE.search(text)
                if m:
                    findings.append(Finding(
                        "double-encoded",
                        f"the {what} '{text}' still holds a percent escape ({m.group()}) after decoding: "
                        "it was probably encoded twice",
                        text))
    values: dict[str, str] = {}
    for k, v in fields:
        if ("[" in k or "]" in k) and split_key(k) is None:
            findings.append(Finding("malformed-key", f"'{k}' is not a well-formed bracket key; expected "
                                    "name[key] with one non-empty key in one pair of brackets", k))
        if k in values and values[k] != v:
            findings.append(Finding("conflicting-duplicate", f"'{k}' is sent twice with different values "
                                    f"('{values[k]}' then '{v}'); which one wins depends on the server", k))
        values.setdefault(k, v)
    return findings
