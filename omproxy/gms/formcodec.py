"""Decode and encode application/x-www-form-urlencoded bodies, build the bracket view
(`userData[Key]=v` -> {"userData": {"Key": "v"}}) and name encoding anomalies.

Pure and generic: it knows nothing of GMS operations (that is `gms`) and never raises on any bytes.
Defined behaviour for bad input: an invalid `%` escape is kept literally (`%zz` stays `%zz`); bytes
that are not valid in the charset decode to U+FFFD. Both are reported as findings; the raw bytes are
always kept by the caller, so nothing is lost.

One job, ~410 lines: the decoder, its findings and the repair belong together (a finding is what
the repair fixes); property-tested as one.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus

FORM_TYPE = "application/x-www-form-urlencoded"
_HEX = b"0123456789abcdefABCDEF"
# Bytes that a form encoder must percent-encode but that lenient servers (Jetty) accept literally.
_MUST_ENCODE = set(b' "#<>\\^`{|}') | set(range(0x00, 0x20)) | {0x7F} | set(range(0x80, 0x100))
_MAY_STAY = bytes(b for b in range(256) if b not in _MUST_ENCODE)
_BRACKET_KEY = re.compile(r"^([^\[\]]+)\[([^\[\]]*)\]$")
_ESCAPE_AFTER_DECODE = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True)
class Finding:
    """One encoding anomaly: a stable name, a sentence a person can act on, the offending text."""

    kind: str
    message: str
    fragment: str = ""
    key: str = ""  # the decoded form key it concerns, when one (not shown; for repairs and GMS checks)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "fragment": self.fragment}


@dataclass(frozen=True)
class DecodedForm:
    """The decoded body: ordered (key, value) pairs, repeated keys and empty values kept."""

    fields: tuple[tuple[str, str], ...]
    findings: tuple[Finding, ...] = ()
    charset: str = "utf-8"
    raw: tuple[tuple[bytes, bytes], ...] = field(default=(), compare=False, repr=False)  # percent-decoded bytes

    @property
    def exact(self) -> tuple[tuple[str, str], ...]:
        """The fields with bytes that are not valid in the charset kept distinct (as surrogate escapes),
        not all alike as U+FFFD: what matching compares, so `M%E4ller` never matches `M%FCller`."""
        if not self.findings or not any(f.kind == "invalid-charset" for f in self.findings):
            return self.fields
        return tuple((_exact(k, self.charset), _exact(v, self.charset)) for k, v in self.raw)

    def view(self) -> dict[str, Any]:
        """The bracket view (a new dict each call: callers may change it)."""
        return bracket_view(self.fields)

    @property
    def not_form(self) -> bool:
        """The body is not form fields at all (JSON, multipart, ...): no form view, no parameter findings."""
        return bool(self.findings) and any(f.kind == "not-form" for f in self.findings)

    def get(self, key: str) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        return None


def _exact(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset, "surrogateescape")
    except UnicodeError:  # a codec the handler cannot serve: every byte kept apart all the same
        return raw.decode("latin-1")


EMPTY = DecodedForm(())


def charset_of(content_type: str | None) -> str:
    """The charset parameter of a Content-Type header, UTF-8 when absent or not a text charset."""
    return _charset(content_type)[0]


def _charset(content_type: str | None) -> tuple[str, str | None]:
    """The charset to decode with, and the declared one when it cannot be used (unknown, or a Python
    codec that is not a text charset: rot13, base64, zlib, ...)."""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            value = value.strip().strip('"')
            try:
                info = codecs.lookup(value)
            except LookupError:
                return "utf-8", value
            if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS or not _ascii_safe(info.name):
                return "utf-8", value
            return info.name, None
    return "utf-8", None


@lru_cache(maxsize=64)
def _ascii_safe(charset: str) -> bool:
    """Whether a charset writes `key=value&` as those ASCII bytes (UTF-16 and UTF-32 do not: a form
    split on `&` and `=` before decoding would cut their characters in two)."""
    try:
        return "k=v&+%".encode(charset) == b"k=v&+%"
    except (UnicodeError, LookupError):
        return False


def wide_charset(content_type: str | None) -> str | None:
    """The declared charset when it is a text charset that is not ASCII-safe (UTF-16, UTF-32): such a
    body is decoded whole first, then read as a form (as Jetty does)."""
    declared = _charset(content_type)[1]
    if declared is None or not _known(declared):
        return None
    name = codecs.lookup(declared).name
    return None if name in _NOT_CHARSETS or _ascii_safe(name) else name


def _known(name: str) -> bool:
    try:
        return getattr(codecs.lookup(name), "_is_text_encoding", True)
    except LookupError:
        return False


# Text codecs Python has that no HTTP client declares as a charset, and that do not map bytes to text.
_NOT_CHARSETS = {"idna", "punycode", "raw-unicode-escape", "unicode-escape", "utf-7", "mbcs", "oem"}


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
    if b"%" not in raw:
        return raw.replace(b"+", b" ") if b"+" in raw else raw, []
    out = bytearray()
    bad: list[str] = []
    i, n = 0, len(raw)
    while (j := raw.find(b"%", i)) >= 0:  # the text between escapes copied whole, not byte by byte
        out += raw[i:j].replace(b"+", b" ")
        if j + 2 < n and raw[j + 1] in _HEX and raw[j + 2] in _HEX:
            out.append(int(raw[j + 1 : j + 3], 16))
            i = j + 3
        else:
            if len(bad) < 20:  # the first few, and that there were more: a megabyte of % stays small
                bad.append(raw[j : j + 3].decode("latin-1"))
            elif len(bad) == 20:
                bad.append("…")
            out.append(0x25)
            i = j + 1
    out += raw[i:].replace(b"+", b" ")
    return bytes(out), bad


SMALL = 16 * 1024  # bodies longer than this are decoded each time they are asked about, never remembered


def decoded(body: bytes, content_type: str | None) -> DecodedForm:
    """`decode`, remembered for bodies up to SMALL bytes (a replayed suite sends the same ones again);
    the key is the whole input, and a DecodedForm is immutable."""
    if len(body) > SMALL:
        return decode(body, content_type)
    return _remembered(body, content_type)


@lru_cache(maxsize=1024)  # at most 1024 x SMALL bytes of bodies, and what they decode to
def _remembered(body: bytes, content_type: str | None) -> DecodedForm:
    return decode(body, content_type)


def decode(body: bytes, content_type: str | None = FORM_TYPE) -> DecodedForm:
    """Decode a form body. Never raises; anomalies are returned as findings. A body that is not form
    fields at all (JSON, multipart, text) gets one finding and no fields."""
    wide = wide_charset(content_type) if body else None
    if wide is not None:  # UTF-16/32: decoded whole, then read as the form it holds
        inner = decode(body.decode(wide, "replace").encode("utf-8"), FORM_TYPE)
        said = Finding("wide-charset", f"the body is in {wide}, which writes '=' and '&' as more than one byte; "
                       "read whole first, as Jetty does — most servers and proxies expect utf-8: send that", wide)
        return DecodedForm(inner.fields, (said, *inner.findings), "utf-8", inner.raw)
    charset, unusable = _charset(content_type)
    findings, is_form = _content_type_findings(body, content_type)
    if unusable is not None:
        why = "is not a text charset omproxy knows"
        findings.append(Finding("unknown-charset", f"charset '{unusable}' {why}; decoded as utf-8 — declare "
                                "charset=utf-8 (or send no charset)", unusable))
    if not is_form:
        return DecodedForm((), tuple(findings), charset)
    fields: list[tuple[str, str]] = []
    raw_fields: list[tuple[bytes, bytes]] = []
    previous: tuple[str, str] | None = None
    for segment in body.split(b"&"):
        if not segment:
            continue
        raw_key, has_eq, raw_value = segment.partition(b"=")
        texts, raws = [], []
        shown = _excerpt(segment)
        for raw in (raw_key, raw_value):
            decoded, bad = unescape(raw)
            if bad:  # one finding a key or value, however many escapes: memory linear in the body
                more = (f" (and {len(bad) - 1} more)" if bad[-1] != "…" else " (and many more)") if len(bad) > 1 else ""
                findings.append(Finding(
                    "invalid-escape",
                    f"'{bad[0]}' is not a valid percent escape{more} (a % must be followed by two hex digits); "
                    "kept literally — encode a literal % as %25", shown))
            try:
                text = decoded.decode(charset)
            except UnicodeDecodeError:
                text = decoded.decode(charset, errors="replace")
                findings.append(Finding(
                    "invalid-charset",
                    f"bytes that are not valid {charset} (shown as U+FFFD); encode the text as {charset} "
                    "or declare its charset in Content-Type", shown))
            texts.append(text)
            raws.append(decoded)
        if not has_eq and previous is not None and previous[1]:
            findings.append(Finding(
                "unencoded-ampersand",
                f"'{texts[0]}' has no '=': the value of '{previous[0]}' probably held a raw '&' that needed "
                f"%26 (it would read '{previous[1]}&{texts[0]}')", shown, texts[0]))
        fields.append((texts[0], texts[1]))
        raw_fields.append((raws[0], raws[1]))
        previous = (texts[0], texts[1]) if has_eq else None
    findings += _literal_findings(body, charset)
    findings += _line_findings(body, fields)
    findings += _shape_findings(body, fields, charset)
    return DecodedForm(tuple(fields), tuple(_unique(findings)), charset, tuple(raw_fields))


_REPAIRABLE = {"double-encoded", "literal-space", "unencoded-character", "invalid-escape", "invalid-charset",
               "unencoded-ampersand", "line-separated"}
# What a careful form encoder percent-encodes and what double encoding therefore leaves behind.
_ENCODED_BY_CLIENTS = set(" /[]=&+,:;@?#%$!'()*\"\"<>{}|^`")


def intended(form: DecodedForm) -> DecodedForm:
    """The fields the client meant: for a whole body percent-encoded as one string, the body decoded
    once more."""
    if len(form.fields) == 1 and "=" in form.fields[0][0] and any(
            f.kind == "double-encoded" and not f.key for f in form.findings):
        return decode(form.fields[0][0].encode(form.charset))
    return form


@dataclass(frozen=True)
class Repair:
    """The body as a careful client would have encoded it (`text`), or why there is none (`reason`)."""

    text: str | None
    reason: str = ""


def repaired(form: DecodedForm) -> Repair | None:
    """The body as a careful client would have encoded what this one meant, when its encoding was off:
    a repair fixes what each finding names, or there is none (and `reason` says why)."""
    kinds = {f.kind for f in form.findings}
    if "not-form" in kinds:
        return None
    if "malformed-key" in kinds:  # said even when it is the only finding
        return Repair(None, "a malformed key cannot be repaired: which key was meant is not known")
    if not kinds & _REPAIRABLE:
        return None
    meant = intended(form)
    note = ""
    fields = list(meant.fields)
    if "invalid-charset" in {f.kind for f in meant.findings} and meant.raw:
        guess = "cp1252"  # what a Windows client or a latin-1 default sends; every byte maps
        fields = [(k.decode(meant.charset, "strict") if _valid(k, meant.charset) else k.decode(guess, "replace"),
                   v.decode(meant.charset, "strict") if _valid(v, meant.charset) else v.decode(guess, "replace"))
                  for k, v in meant.raw]
        note = f" (the bytes that were not {meant.charset} read as {guess}, a guess)"
    twice = {f.key for f in meant.findings if f.kind == "double-encoded" and f.key and "likely" in f.message}
    fields = [(_once_more(k, meant.charset) if k in twice else k, _once_more(v, meant.charset) if v in twice else v)
              for k, v in fields]
    if "line-separated" in kinds:  # one field a line, as a pasted file has them: the lines made fields
        fields = [part for k, v in fields for part in _lines_as_fields(k, v)]
        note = (note + "; " if note else "") + "one field a line: each line made a field"
        return _checked(fields, meant.charset, note)
    joined: list[tuple[str, str]] = []
    loose = {f.key for f in meant.findings if f.kind == "unencoded-ampersand"}
    # by position: a field read again from its bytes (the cp1252 guess) no longer has the key's text
    loose_at = {i for i, (k, v) in enumerate(meant.fields) if k in loose and not v}
    for i, (k, v) in enumerate(fields):
        if i in loose_at and joined:
            joined[-1] = (joined[-1][0], f"{joined[-1][1]}&{k}")
        else:
            joined.append((k, v))
    return _checked(joined, meant.charset, note)


def _checked(fields: list[tuple[str, str]], charset: str, note: str) -> Repair:
    """The fields encoded, if that encoding reads back clean in its charset."""
    try:
        text = encode(fields, charset).decode("ascii")
    except UnicodeEncodeError:
        return Repair(None, f"the text cannot be encoded in the declared charset {charset}")
    declared = f"{FORM_TYPE}; charset={charset}"  # checked as it will be read: in its charset
    left = {f.kind for f in decode(text.encode("ascii"), declared).findings} & _REPAIRABLE
    if left:
        return Repair(None, f"no encoding of these fields is clean ({', '.join(sorted(left))} would remain)")
    return Repair(text, note.strip(" ()"))


def _lines_as_fields(key: str, value: str) -> list[tuple[str, str]]:
    """A field whose value runs over lines: its first line its value, each other line a field."""
    first, *rest = re.split(r"\r?\n", value)
    out = [(key.strip(), first)]
    for line in rest:
        if line.strip():
            k, _, v = line.partition("=")
            out.append((k, v))
    return out


def _valid(raw: bytes, charset: str) -> bool:
    try:
        raw.decode(charset)
    except UnicodeDecodeError:
        return False
    return True


def _once_more(text: str, charset: str) -> str:
    return unescape(text.encode(charset, "replace"))[0].decode(charset, "replace")


def encode(fields: list[tuple[str, str]] | tuple[tuple[str, str], ...], charset: str = "utf-8") -> bytes:
    """Encode pairs the way a careful client does (brackets and spaces percent-encoded, `+` for space)."""
    return "&".join(
        f"{quote_plus(k, safe='', encoding=charset)}={quote_plus(v, safe='', encoding=charset)}"
        for k, v in fields
    ).encode("ascii")


EXCERPT = 200  # characters of a field a finding quotes, at most


def _excerpt(raw: bytes, charset: str = "latin-1") -> str:
    """A field as a finding quotes it: whole when short, else its start (a finding holds no copy of a
    megabyte field)."""
    if len(raw) <= EXCERPT:
        return raw.decode(charset, "replace")
    return raw[:EXCERPT].decode(charset, "replace") + f"… ({len(raw)} bytes)"


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


def _content_type_findings(body: bytes, content_type: str | None) -> tuple[list[Finding], bool]:
    """What the Content-Type and the body's shape say, and whether the body is form fields at all."""
    media = media_type_of(content_type)
    stripped = body.lstrip()
    shown = body[:60].decode("utf-8", "replace")
    formish = _looks_like_form(body)
    ends = stripped.rstrip()[-1:]
    looks_json = (stripped[:1], ends) in ((b"{", b"}"), (b"[", b"]")) or (
        media.endswith(("/json", "+json")) and not formish)
    looks_multipart = (media.startswith("multipart/") and not formish) or (
        stripped.startswith(b"--") and b"content-disposition" in body[:400].lower())
    if not body:
        return [], True
    if looks_json or looks_multipart:
        what = "JSON" if looks_json else "multipart/form-data"
        under = f"Content-Type says {media}" if media else "there is no Content-Type"
        return [Finding("not-form", f"the body is {what} ({under}); GMS Open Media takes form fields: "
                        f"Content-Type: {FORM_TYPE} and key=value&...", shown)], False
    if media == FORM_TYPE:
        return [], True
    if not media:
        return [Finding("content-type", f"no Content-Type header; GMS Open Media expects {FORM_TYPE}")], True
    if formish:
        return [Finding("content-type", f"the body is form-encoded but Content-Type is '{media}'; "
                        f"send Content-Type: {FORM_TYPE}", media)], True
    return [Finding("not-form", f"Content-Type '{media}' is not {FORM_TYPE}, which GMS Open Media requires, "
                    "and the body is not form fields", shown)], False


def _double_encoded(text: str, what: str, charset: str) -> Finding | None:
    """A key or value that still holds percent escapes after decoding. Likely encoded twice when the
    escapes are of what form encoders encode (or decoding again gives a bracket key or a form); only
    possibly when they are not; never said of a URL, which carries escapes on purpose."""
    escapes = _ESCAPE_AFTER_DECODE.findall(text)
    if not escapes or "://" in text:
        return None
    once = _once_more(text, charset)
    decoded = [unescape(e.encode("ascii"))[0] for e in escapes]
    likely = (split_key(once) is not None or "=" in once or
              all(d[0] >= 0x80 or chr(d[0]) in _ENCODED_BY_CLIENTS for d in decoded))
    how = "likely encoded twice" if likely else "possibly encoded twice (or percent-encoded text on purpose)"
    return Finding("double-encoded", f"the {what} '{text}' still holds percent escapes after decoding "
                   f"({', '.join(dict.fromkeys(escapes))}): {how}; decoded once more it reads '{once}'", text, text)


def _literal_findings(body: bytes, charset: str = "utf-8") -> list[Finding]:
    findings = []
    for segment in body.split(b"&"):
        chars = list(dict.fromkeys(segment.translate(None, _MAY_STAY)))  # the bytes to encode, as they come
        if not chars:
            continue
        shown = _excerpt(segment, charset)
        if 0x20 in chars:
            findings.append(Finding("literal-space", "a literal space is not valid form encoding (lenient "
                                    "servers keep it); encode it as '+' or '%20'", shown))
        others = [c for c in chars if c != 0x20]
        if others:
            names = ", ".join(repr(chr(c)) if 0x20 < c < 0x7F else f"byte 0x{c:02X}" for c in others)
            findings.append(Finding("unencoded-character", f"characters that must be percent-encoded: {names}",
                                    shown))
    return findings


def _line_findings(body: bytes, fields: list[tuple[str, str]]) -> list[Finding]:
    """Fields separated by line breaks, not `&` (a pasted file, one `key=value` a line)."""
    lines = [line.strip(b"\r") for line in body.strip().split(b"\n")]
    if len(lines) < 2 or not all(b"=" in line and not line.startswith(b"=") for line in lines):
        return []
    crlf = "CR LF" if b"\r\n" in body else "LF"
    return [Finding("line-separated", f"the fields are separated by line breaks ({crlf}), not '&': a form parser "
                    f"reads {len(fields)} field(s) where {len(lines)} were meant, the line breaks inside values; "
                    "join the fields with '&'", body[:80].decode("utf-8", "replace"))]


def _shape_findings(body: bytes, fields: list[tuple[str, str]], charset: str) -> list[Finding]:
    findings = []
    if fields and b"=" not in body and any("=" in k for k, _ in fields):
        key = fields[0][0]
        once_more = "&".join(f"{k}={v}" for k, v in decode(key.encode(charset, "replace")).fields)
        findings.append(Finding(
            "double-encoded",
            "the whole body was percent-encoded as one string (its '=' and '&' arrived as %3D and %26), so a "
            f"form parser sees one key and no value; decoded once more it reads '{once_more}'. Encode each "
            "key and value, then join them with '=' and '&'",
            body[:80].decode("utf-8", "replace")))
    else:
        for k, v in fields:
            for text, what in ((k, "key"), (v, "value")):
                finding = _double_encoded(text, what, charset)
                if finding is not None:
                    findings.append(finding)
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
