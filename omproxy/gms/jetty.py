"""What GMS will read from a form body: GMS runs in Jetty, and a servlet's form parameters are what
Jetty's `UrlEncoded` makes of the bytes (9.4's `decodeUtf8To`, `decode88591To` and `decodeTo`), not
what the client meant. Pure; `differences` says, field by field, where the two part.

Jetty's rules, as its code has them:
- fields are split at every `&` (a raw `&` in a value splits it); an empty field is dropped; a
  field with no `=` is a key with an empty value;
- the first `=` ends the key; a later `=` is part of the value;
- `+` is a space; `%XX` is the byte XX; a `%` not followed by two hex digits (`50% off`, a `%` at
  the end) makes Jetty refuse the whole body (IllegalArgumentException "Not valid encoding"): the
  servlet answers 400 and reads no field at all;
- the bytes of a key or value are decoded in the charset the Content-Type declares, else UTF-8
  (Jetty's default); bytes that are not valid UTF-8 become U+FFFD; ISO-8859-1 maps each byte to a
  character; raw bytes (a space, a latin-1 letter) are taken as they are.

What we decided where Jetty's code does not say what GMS does: a key sent twice is read as its
first value (`getParameter`), and a charset Java does not know is read as UTF-8."""

from __future__ import annotations

from dataclasses import dataclass

from omproxy.gms.formcodec import FORM_TYPE, DecodedForm, Repair, charset_of, decode, intended, wide_charset

_HEX = b"0123456789abcdefABCDEF"


@dataclass(frozen=True)
class Read:
    """The fields as GMS's servlet container reads them, in order; or, `refused`, why it reads none."""

    fields: tuple[tuple[str, str], ...]
    charset: str
    refused: str = ""


def read(body: bytes, content_type: str | None) -> Read:
    """Jetty's reading of a form body (its `UrlEncoded`, byte by byte; a UTF-16 or UTF-32 body decoded
    whole first, as its `decodeUtf16To` does)."""
    wide = wide_charset(content_type)
    if wide is not None:
        got = read(body.decode(wide, "replace").encode("utf-8"), FORM_TYPE)
        return Read(got.fields, wide, got.refused)
    charset = charset_of(content_type)
    latin1 = charset.replace("_", "-").lower() in ("iso8859-1", "iso-8859-1", "latin-1", "latin1", "cp819")

    def text(raw: bytearray) -> str:
        return raw.decode("latin-1" if latin1 else charset, "replace")

    fields: list[tuple[str, str]] = []
    key: str | None = None
    buf = bytearray()
    i, n = 0, len(body)
    while i < n:
        b = body[i]
        if b == 0x26:  # &
            value = text(buf)
            if key is not None:
                fields.append((key, value))
            elif value:
                fields.append((value, ""))
            key, buf = None, bytearray()
        elif b == 0x3D and key is None:  # the first =
            key, buf = text(buf), bytearray()
        elif b == 0x2B:  # +
            buf.append(0x20)
        elif b == 0x25:  # %
            hi, lo = body[i + 1:i + 2], body[i + 2:i + 3]
            if not (hi and lo and hi[0] in _HEX and lo[0] in _HEX):
                shown = (b"%" + hi + lo).decode("latin-1")
                return Read((), charset, f"Jetty refuses the whole body: '{shown}' is not a valid percent escape "
                            "(Not valid encoding), so the servlet answers 400 and reads no field")
            buf.append(int(body[i + 1:i + 3], 16))
            i += 2
        else:
            buf.append(b)
        i += 1
    if key is not None:
        fields.append((key, text(buf)))
    elif buf:
        fields.append((text(buf), ""))
    return Read(tuple(fields), charset)


def differences(meant: tuple[tuple[str, str], ...] | list[tuple[str, str]], got: Read,
                raw_bytes: bool = False) -> list[str]:
    """Where GMS reads otherwise than the client meant, a sentence a field: a value that differs, a
    field GMS sees that was not meant, one it will not see. `raw_bytes`: the body held bytes that are
    not ASCII, so a '?' may be a character a client's ISO-8859-1 encoder could not write."""
    if got.refused:
        return [f"GMS will read nothing: {got.refused}"]
    out = []
    first: dict[str, str] = {}
    for k, v in got.fields:
        first.setdefault(k, v)  # getParameter: a key's first value
    wanted: dict[str, str] = {}
    for k, v in meant:
        wanted.setdefault(k, v)
    for k, v in wanted.items():
        if k not in first:
            out.append(f"GMS will not see '{k}' (meant {v!r})")
        elif first[k] != v:
            lost = "\ufffd" in first[k] and "\ufffd" not in v
            why = " (bytes that are not valid UTF-8 became U+FFFD)" if lost else ""
            out.append(f"GMS will store '{k}' = {first[k]!r} where the client meant {v!r}{why}")
    for k, v in first.items():
        if k not in wanted:
            out.append(f"GMS will also see a field {k!r}" + (f" = {v!r}" if v else " with no value"))
    if raw_bytes:
        for k, v in got.fields:
            if "?" in v and any(c.isalnum() for c in v):
                out.append(f"'{k}' holds a '?' in {v!r}: with raw non-ASCII bytes and no charset, the client "
                           "probably encoded in ISO-8859-1 (Java's default), which writes '?' for what it cannot "
                           "encode (a '€'): that character was lost before GMS saw it")
                break
    return out


def compared(body: bytes, content_type: str | None, form: DecodedForm,
             fixed: Repair | None = None) -> tuple[Read, list[str]]:
    """GMS's reading of a body, and where it differs from what the client meant: the repaired body's
    fields when the body needs repair (`fixed`: `vocabulary.repair`, its parameters renamed), else
    the careful decoder's (a body encoded whole once more: decoded once more)."""
    if fixed is not None and fixed.text is not None:
        meant = decode(fixed.text.encode("ascii"), f"{FORM_TYPE}; charset={form.charset}").fields
    else:
        meant = intended(form).fields
    got = read(body, content_type)
    raw_bytes = any(b >= 0x80 for b in body) and "charset" not in (content_type or "").lower()
    return got, differences(meant, got, raw_bytes)


def as_dict(got: Read, differs: list[str]) -> dict[str, object]:
    return {"charset": got.charset, "fields": [list(f) for f in got.fields], "refused": got.refused or None,
            "differences": differs}
