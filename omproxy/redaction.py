"""Keep secrets out of cassettes and logs: masks header values, decoded form values (whatever the
client's percent-encoding) and JSON fields, including where GMS echoes a redacted user-data key
(`change[K]`, `delete[K]`, the `K` entry of `interactionUserData`); or, for `redact.pseudonymize`
keys, replaces a value by its pseudonym (`PSEUDO-` and 12 hex of an HMAC-SHA256 under a secret key),
the same everywhere, so a story still correlates and replay still matches. Finds what is left in
clear (`leaks`: one rule for `lint` and `redact.block_on`). Pure but for reading the key. Redaction
changes what is stored and logged, never what is forwarded."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from omproxy.config.options import Redaction
from omproxy.errors import ConfigError
from omproxy.gms.formcodec import charset_of, decoded, split_key, unescape, wide_charset
from omproxy.model import Request, Response, headers_of

MASK = "REDACTED"
SECRET_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie")
KEY_ENV = "OMPROXY_REDACT_KEY"  # the pseudonyms' key, when redact.key_file is not set
PSEUDONYM = re.compile(r"PSEUDO-[0-9a-f]{12}")
_USER_DATA_PREFIXES = ("userData", "change", "delete")


def pseudonym_key(rules: Redaction) -> bytes | None:
    """The pseudonyms' secret key: redact.key_file's bytes, else $OMPROXY_REDACT_KEY; None when no
    key is pseudonymised. Refuses (ConfigError) to go on without one, or with one under 16 bytes."""
    if not rules.pseudonymize:
        return None
    if rules.key_file:
        try:
            key = Path(rules.key_file).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"redact.key_file: cannot read {rules.key_file}: {e.strerror or e}") from None
        where = f"redact.key_file {rules.key_file}"
    else:
        key, where = os.environ.get(KEY_ENV, "").strip().encode(), KEY_ENV
        if not key:
            raise ConfigError(f"redact.pseudonymize needs a secret key: set redact.key_file to a file holding one, or "
                              f"{KEY_ENV} (e.g. `openssl rand -hex 32`); every instance needs the same key")
    if len(key) < 16:
        raise ConfigError(f"{where}: the pseudonyms' key is {len(key)} bytes; 16 at least (`openssl rand -hex 32`)")
    return key


DEPTH = 4  # how many times a key or value is decoded again, at most, to see what it holds


def _decodings(text: str) -> list[str]:
    """A text, then decoded again while it still holds percent escapes and changes (DEPTH times at
    most): every reading a decoder, a server or a finding might make of it."""
    out = [text]
    while "%" in out[-1] and len(out) <= DEPTH:
        again = unescape(out[-1].encode("utf-8", "surrogateescape"))[0].decode("utf-8", "replace")
        if again == out[-1]:
            break
        out.append(again)
    return out


def _expanded(keys: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """Decoded form keys, and the user-data keys among them: a user-data key in any of its spellings
    (`userData[K]`, `change[K]`, `delete[K]`, and `externalId` for `ExternalId`)."""
    user_data: set[str] = set()
    form: set[str] = set()
    for key in keys:
        parts = split_key(key)
        if parts and parts[0] in _USER_DATA_PREFIXES:
            user_data.add(parts[1])
        elif key == "externalId":
            user_data.add("ExternalId")
        form.add(key)
    for name in user_data:
        form.update(f"{p}[{name}]" for p in _USER_DATA_PREFIXES)
    if "ExternalId" in user_data:
        form.add("externalId")
    return form, user_data


class Redactor:
    def __init__(self, rules: Redaction) -> None:
        self.use(rules)

    def use(self, rules: Redaction) -> None:
        """Redact by these rules from now on (a reload: every holder of this redactor sees them)."""
        key = pseudonym_key(rules)  # first: a bad key leaves the rules as they were
        self.rules = rules
        self.header_names = {h.lower() for h in (*SECRET_HEADERS, *rules.headers)}
        self.form_keys, self.user_data_keys = _expanded(rules.form_keys)
        pseudo_form, pseudo_user_data = _expanded(rules.pseudonymize)
        self.pseudo_keys = pseudo_form - self.form_keys  # a key both masked and pseudonymised is masked
        self.pseudo_user_data = pseudo_user_data - self.user_data_keys
        self._key = key or b""
        self.json_paths = [tuple(p.split(".")) for p in rules.json_fields]

    def also(self, keys: frozenset[str]) -> Redactor:
        """This redactor masking these form/query keys and header names too (those `leaks` found in an
        exchange: what shows it masks them, whether or not it was recorded); itself when none."""
        if not keys:
            return self
        more = copy.copy(self)
        more.form_keys = self.form_keys | keys
        more.header_names = self.header_names | {k.lower() for k in keys}
        return more

    def pseudonym(self, value: str) -> str:
        """`PSEUDO-` and 12 hex of HMAC-SHA256(key, value): one value, one pseudonym, wherever and by
        whichever instance (same key) it is made. A pseudonym (or the mask) is kept as it is."""
        if value == MASK or PSEUDONYM.fullmatch(value):
            return value
        digest = hmac.new(self._key, value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
        return f"PSEUDO-{digest[:12]}"

    def value_of(self, key: str, value: str) -> str:
        """A decoded form field's value as stored: masked, pseudonymised or as it is."""
        if not value:
            return value
        if self.secret_key(key):
            return MASK
        if self.pseudo_key(key):
            return self.pseudonym(value)
        return value

    def pseudo_key(self, key: str) -> bool:
        return bool(self.pseudo_keys) and any(n in self.pseudo_keys for n in _decodings(key))

    def request(self, req: Request) -> Request:
        """The request as it may be stored and shown: secret headers, form and query values masked
        (`req` itself when it holds nothing to mask)."""
        query, body = self.query(req.query), self.form_body(req.body, req.headers.get("Content-Type"))
        if query == req.query and body == req.body and not self._secret_header(req.headers):
            return req
        return replace(req, query=query, headers=headers_of(self.headers(req.headers.items())), body=body)

    def response(self, resp: Response) -> Response:
        body = self.json_body(resp.body)
        if body == resp.body and not self._secret_header(resp.headers):
            return resp
        return replace(resp, headers=headers_of(self.headers(resp.headers.items())), body=body)

    def _secret_header(self, headers: Any) -> bool:
        return any(k.lower() in self.header_names for k in headers)

    def headers(self, pairs: Any) -> list[tuple[str, str]]:
        return [(k, MASK if k.lower() in self.header_names else v) for k, v in pairs]

    def fields(self, fields: Any) -> list[tuple[str, str]]:
        return [(self._key_shown(k, v), self.value_of(k, v)) for k, v in fields]

    def _inner(self, key: str, value: str) -> list[tuple[str, str]]:
        """The fields a key holds when a whole body was encoded once more (`a%3D1%26b%3D2` is one key,
        `a=1&b=2`, with no value); [] for any other key."""
        if value or "=" not in key:
            return []
        return list(decoded(key.encode("utf-8", "surrogateescape"), None).fields)

    def _key_shown(self, key: str, value: str) -> str:
        inner = self._inner(key, value)
        if not inner or not any(self.secret_key(k) or self.pseudo_key(k) for k, _ in inner):
            return key
        return "&".join(f"{k}={self.value_of(k, v)}" for k, v in inner)

    def secret_key(self, key: str) -> bool:
        """A decoded form key whose value is masked (a key still percent-encoded is decoded until it
        is stable: `userData%25255BCard%25255D`, encoded three times, is `userData[Card]`)."""
        return bool(self.form_keys) and any(n in self.form_keys for n in _decodings(key))

    def form_body(self, body: bytes, content_type: str | None) -> bytes:
        """Mask (or pseudonymise) redacted values in the raw body, keeping every other byte as the
        client sent it."""
        if not (self.form_keys or self.pseudo_keys) or not body:
            return body
        wide = wide_charset(content_type)
        if wide is not None:  # UTF-16/32: redacted as the text it holds, written back in its charset
            text = body.decode(wide, "replace").encode("utf-8")
            done = self.form_body(text, None)
            return body if done == text else done.decode("utf-8").encode(wide)
        # An empty value stays empty: `delete[CreditCard]=` holds no secret, and a mask there would
        # read as a delete-with-value finding.
        return b"&".join(raw_key + b"=" + self._stored(raw_value, how, content_type)
                         if how in ("mask", "pseudonym") and raw_value else segment
                         for segment, raw_key, raw_value, how in self._segments(body, content_type))

    def _stored(self, raw_value: bytes, how: str, content_type: str | None) -> bytes:
        if how == "mask":
            return MASK.encode()
        value = unescape(raw_value)[0].decode(charset_of(content_type), "surrogateescape")
        return self.pseudonym(value).encode()

    def _segments(self, body: bytes, content_type: str | None) -> Iterator[tuple[bytes, bytes, bytes, str]]:
        """Each raw `key=value` segment, its raw key and value, and what its value becomes: "mask",
        "pseudonym" or "" — its key decoded once, or twice (a double-encoded `userData%255BCard%255D`)."""
        charset = charset_of(content_type)
        for segment in body.split(b"&"):
            raw_key, _, raw_value = segment.partition(b"=")
            names = _decodings(unescape(raw_key)[0].decode(charset, "replace"))
            how = ("mask" if any(n in self.form_keys for n in names)
                   else "pseudonym" if any(n in self.pseudo_keys for n in names) else "")
            if not how and not raw_value and "=" in names[0]:  # a whole body encoded once more: a form inside
                inner = unescape(raw_key)[0]
                done = self.form_body(inner, content_type)
                if done != inner:
                    how = "inner"
                    raw_key = quote(done.decode(charset, "replace"), safe="", encoding=charset).encode("ascii")
                    segment = raw_key
            yield segment, raw_key, raw_value, how

    def query(self, query: str) -> str:
        """The query string with redacted keys masked (same rules as the form)."""
        return self.form_body(query.encode("latin-1", "replace"), None).decode("latin-1") if query else query

    def target(self, path: str, query: str) -> str:
        masked = self.query(query)
        return f"{path}?{masked}" if masked else path

    def secrets_in(self, fields: Any, body: bytes, content_type: str | None) -> list[tuple[str, str]]:
        """The redacted values of one request, decoded and as sent, with what replaces each in free
        text (the mask, or the pseudonym), longest first."""
        if not (self.form_keys or self.pseudo_keys):
            return []
        found = {}
        fields = list(fields)
        held = [pair for key, value in fields for pair in self._inner(key, value)]  # a body encoded once more
        for k, v in [*fields, *held]:
            if v and (self.secret_key(k) or self.pseudo_key(k)):
                for seen in _decodings(v):  # and the value decoded again, as a finding may quote it
                    found[seen] = self.value_of(k, v)
        for _, _, raw_value, how in self._segments(body, content_type):
            if how in ("mask", "pseudonym") and raw_value:
                found[raw_value.decode("latin-1")] = self._stored(raw_value, how, content_type).decode()
        return sorted(found.items(), key=lambda pair: len(pair[0]), reverse=True)

    @staticmethod
    def scrub(text: str, secrets: list[tuple[str, str]]) -> str:
        for secret, instead in secrets:
            text = text.replace(secret, instead)
        return text

    def json_body(self, body: bytes) -> bytes:
        if not (self.json_paths or self.user_data_keys or self.pseudo_user_data) or not body:
            return body
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return body
        if self.json_value(data):
            return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        return body

    def json_value(self, data: Any) -> bool:
        """Mask in place; True when anything was masked."""
        changed = False
        for path in self.json_paths:
            changed |= _mask_path(data, path)
        if self.user_data_keys or self.pseudo_user_data:
            changed |= _user_data(data, self._echoed)
        return changed

    def _echoed(self, key: Any, value: Any) -> Any:
        """What an echoed user-data value (`{"key": K, "value": V}`) is stored as."""
        if key in self.user_data_keys:
            return MASK
        if key in self.pseudo_user_data and isinstance(value, str | int | float) and not isinstance(value, bool):
            return self.pseudonym(str(value)) if str(value) else value
        return value


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _mask_path(data: Any, path: tuple[str, ...]) -> bool:
    if not isinstance(data, dict) or path[0] not in data:
        if isinstance(data, list):
            # A list, not a generator: any() over a generator stops at the first True and would leave
            # every later element unmasked (tested: test_json_field_masks_every_array_element).
            return any([_mask_path(item, path) for item in data])  # noqa: C419
        return False
    if len(path) == 1:
        data[path[0]] = MASK
        return True
    return _mask_path(data[path[0]], path[1:])


def _user_data(data: Any, stored: Callable[[Any, Any], Any]) -> bool:
    """Each `{"key": K, "value": V}` (GMS's user-data echo) given the value `stored(K, V)` says, in
    place; True when any changed."""
    changed = False
    if isinstance(data, dict):
        if "key" in data and "value" in data and isinstance(data["key"], str):
            new = stored(data["key"], data["value"])
            if new != data["value"]:
                data["value"] = new
                changed = True
        for value in data.values():
            changed |= _user_data(value, stored)
    elif isinstance(data, list):
        for value in data:
            changed |= _user_data(value, stored)
    return changed


# ---- what is left in clear: one rule for lint and redact.block_on ---------------------------

# Form keys, query keys and JSON fields named like secrets (their last bracket part, lower case).
SECRET_NAMES = frozenset({"password", "passwd", "pwd", "secret", "token", "client_secret", "refresh_token",
                          "access_token", "id_token", "api_key", "apikey", "private_key", "auth_token"})
_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_key")
# Header names that carry secrets, beyond SECRET_HEADERS: X-Api-Key, Api-Key, X-Auth-Token, *-Token,
# *-Secret, *-Key (but the two *-Key headers that hold none).
_SECRET_HEADER = re.compile(r"^(x-)?(api-key|auth-token)$|-(token|secret|key)$", re.IGNORECASE)
_NOT_SECRET_HEADERS = frozenset({"idempotency-key", "sec-websocket-key"})
_TOKENISH = re.compile(r"[A-Za-z0-9+/=_.~-]{24,}")  # what a key, token or password hash looks like
ENTROPY = 4.0  # bits a character, at least, for a token-like value to be called random


@dataclass(frozen=True)
class Leak:
    """A secret left in clear in a stored exchange: where (never the value) and why it looks like one."""

    place: str  # header, response header, form, query, answer
    key: str  # the header name, the decoded form key or the answer's JSON path
    why: str

    @property
    def where(self) -> str:
        return f"{self.place} {self.key}"

    @property
    def option(self) -> str:
        """The redact option that would keep it out."""
        return {"header": "redact.headers", "response header": "redact.headers",
                "answer": "redact.json_fields"}.get(self.place, "redact.form_keys")


@lru_cache(maxsize=4096)  # keyed by the whole input: an answer's field names repeat from one to the next
def secret_name(key: str) -> bool:
    """A form key or JSON field named like a secret: `password`, `client_secret`, `userData[Token]`."""
    parts = split_key(key)
    name = (parts[-1] if parts else key).lower().replace("-", "_")
    return name in SECRET_NAMES or (name != "key" and name.endswith(_SECRET_SUFFIXES))


_SECRET_HEADERS_LOWER = frozenset(h.lower() for h in SECRET_HEADERS)


@lru_cache(maxsize=1024)  # keyed by the whole input: header names repeat
def secret_header(name: str) -> bool:
    lower = name.lower()
    return lower in _SECRET_HEADERS_LOWER or (
        lower not in _NOT_SECRET_HEADERS and _SECRET_HEADER.search(lower) is not None)


def random_looking(value: str) -> bool:
    """A token-like value (24+ characters of a key's alphabet, lower and upper case and digits) whose
    characters carry ENTROPY bits each and whose letters are not words (about 0.4 of words' letters
    are vowels, 0.23 of random ones; the line is at 0.32): a key, a token, a password hash (about 85%
    of random 24-byte tokens), not an id, a date or `MyCompanyOrderNumber12345`."""
    if len(value) < 24 or not _TOKENISH.fullmatch(value) or PSEUDONYM.fullmatch(value):
        return False
    if not (any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)):
        return False
    letters = [c for c in value if c.isalpha()]
    if sum(c in "aeiouyAEIOUY" for c in letters) > 0.32 * len(letters):
        return False
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) >= ENTROPY


def _credential(value: str) -> bool:
    return _CREDENTIAL_VALUE.match(value) is not None


_CREDENTIAL_VALUE = re.compile(r"^(Bearer|Basic|Digest|Negotiate)\s+\S{8,}", re.IGNORECASE)


def _clear(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and value != MASK and not PSEUDONYM.fullmatch(value)


def leaks(req: Request, resp: Response | None = None) -> list[Leak]:
    """Every secret left in clear in an exchange as stored: headers named like secrets or holding a
    credential, form and query keys named like secrets, card numbers, credentials and random-looking
    values; the same in the answer's headers and JSON (and GMS's user-data echoes by their key)."""
    found: list[Leak] = []
    for place, headers in (("header", req.headers), ("response header", resp.headers if resp else {})):
        for name, value in headers.items():
            if not _clear(value):
                continue
            if secret_header(name):
                found.append(Leak(place, name, "a header that carries secrets"))
            elif _credential(value):
                found.append(Leak(place, name, "a credential"))
    for place, fields in (("form", req.form.fields if not req.form.not_form else ()),
                          ("query", req.query_form.fields if req.query else ())):
        for key, value in fields:
            if _clear(value) and (why := _field_secret(key, value)):
                found.append(Leak(place, key, why))
    reply = resp.reply if resp is not None else None
    if reply is not None:
        found += _answer(reply, "")
    return list({leak.where: leak for leak in found}.values())  # a key once, whatever its repeats


def _field_secret(key: str, value: str) -> str:
    if secret_name(key):
        return "named like a secret"
    digits = re.sub(r"[ -]", "", value)
    if digits.isdigit() and 13 <= len(digits) <= 19 and _luhn(digits):
        return "a card number"
    if _credential(value):
        return "a credential"
    if random_looking(value):
        return "a random-looking value (a key or token?)"
    return ""


def _answer(data: Any, path: str) -> list[Leak]:
    found: list[Leak] = []
    if isinstance(data, dict):
        echo = isinstance(data.get("key"), str) and "value" in data  # GMS's user-data echo: named by its key
        if echo and _clear(data["value"]) and (why := _field_secret(f"userData[{data['key']}]", data["value"])):
            found.append(Leak("answer", f"{path}[{data['key']}]", why))
        for k, v in data.items():
            if isinstance(v, dict | list):
                found += _answer(v, f"{path}.{k}" if path else str(k))
            elif (isinstance(v, str) and k not in ("key", "value")
                  and ((named := secret_name(str(k))) or random_looking(v)) and _clear(v)):
                found.append(Leak("answer", f"{path}.{k}" if path else str(k),
                                  "named like a secret" if named else "a random-looking value (a key or token?)"))
    elif isinstance(data, list):
        for item in data:
            found += _answer(item, path)
    return found
