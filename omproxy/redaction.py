"""Keep secrets out of cassettes and logs: masks header values, decoded form values (whatever the
client's percent-encoding) and JSON fields, including where GMS echoes a redacted user-data key
(`change[K]`, `delete[K]`, the `K` entry of `interactionUserData`). Pure. Redaction changes what is
stored and logged, never what is forwarded."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from omproxy.config.options import Redaction
from omproxy.gms.formcodec import charset_of, split_key, unescape
from omproxy.model import Request, Response, headers_of

MASK = "REDACTED"
SECRET_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie")
_USER_DATA_PREFIXES = ("userData", "change", "delete")


class Redactor:
    def __init__(self, rules: Redaction) -> None:
        self.use(rules)

    def use(self, rules: Redaction) -> None:
        """Redact by these rules from now on (a reload: every holder of this redactor sees them)."""
        self.header_names = {h.lower() for h in (*SECRET_HEADERS, *rules.headers)}
        self.user_data_keys: set[str] = set()
        self.form_keys: set[str] = set()
        for key in rules.form_keys:
            parts = split_key(key)
            if parts and parts[0] in _USER_DATA_PREFIXES:
                self.user_data_keys.add(parts[1])
            elif key == "externalId":
                self.user_data_keys.add("ExternalId")
            self.form_keys.add(key)
        for name in self.user_data_keys:
            self.form_keys.update(f"{p}[{name}]" for p in _USER_DATA_PREFIXES)
        if "ExternalId" in self.user_data_keys:
            self.form_keys.add("externalId")
        self.json_paths = [tuple(p.split(".")) for p in rules.json_fields]

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
        return [(k, MASK if v and self.secret_key(k) else v) for k, v in fields]

    def secret_key(self, key: str) -> bool:
        """A decoded form key whose value is masked (a key still percent-encoded is decoded once more)."""
        return key in self.form_keys or ("%" in key and unescape(key.encode("utf-8"))[0].decode(
            "utf-8", "replace") in self.form_keys)

    def form_body(self, body: bytes, content_type: str | None) -> bytes:
        """Mask redacted values in the raw body, keeping every other byte as the client sent it."""
        if not self.form_keys or not body:
            return body
        # An empty value stays empty: `delete[CreditCard]=` holds no secret, and a mask there would
        # read as a delete-with-value finding.
        return b"&".join(raw_key + b"=" + MASK.encode() if secret and raw_value else segment
                         for segment, raw_key, raw_value, secret in self._segments(body, content_type))

    def _segments(self, body: bytes, content_type: str | None) -> Iterator[tuple[bytes, bytes, bytes, bool]]:
        """Each raw `key=value` segment, its raw key and value, and whether its key is redacted —
        decoded once, or decoded twice (a double-encoded `userData%255BCreditCard%255D` too)."""
        charset = charset_of(content_type)
        for segment in body.split(b"&"):
            raw_key, _, raw_value = segment.partition(b"=")
            once = unescape(raw_key)[0]
            secret = once.decode(charset, "replace") in self.form_keys or (
                b"%" in once and unescape(once)[0].decode(charset, "replace") in self.form_keys)
            yield segment, raw_key, raw_value, secret

    def query(self, query: str) -> str:
        """The query string with redacted keys masked (same rules as the form)."""
        return self.form_body(query.encode("latin-1", "replace"), None).decode("latin-1") if query else query

    def target(self, path: str, query: str) -> str:
        masked = self.query(query)
        return f"{path}?{masked}" if masked else path

    def secrets_in(self, fields: Any, body: bytes, content_type: str | None) -> list[str]:
        """The redacted values of one request, decoded and as sent, to scrub from free text."""
        if not self.form_keys:
            return []
        found = {v for k, v in fields if v and self.secret_key(k)}
        found |= {raw_value.decode("latin-1") for _, _, raw_value, secret in self._segments(body, content_type)
                  if secret and raw_value}
        return sorted(found, key=len, reverse=True)

    @staticmethod
    def scrub(text: str, secrets: list[str]) -> str:
        for secret in secrets:
            text = text.replace(secret, MASK)
        return text

    def suspects(self, fields: Any) -> list[str]:
        """Form keys recorded in clear whose values look like secrets: a payment card number
        (13-19 digits passing the Luhn check) or an HTTP credential. Only the keys are reported."""
        found = []
        for key, value in fields:
            if key in self.form_keys or key in found:
                continue
            digits = re.sub(r"[ -]", "", value)
            if (digits.isdigit() and 13 <= len(digits) <= 19 and _luhn(digits)) or _CREDENTIAL.match(value):
                found.append(key)
        return found

    def json_body(self, body: bytes) -> bytes:
        if not (self.json_paths or self.user_data_keys) or not body:
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
        if self.user_data_keys:
            changed |= _mask_user_data(data, self.user_data_keys)
        return changed


_CREDENTIAL = re.compile(r"^(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}$")


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


def _mask_user_data(data: Any, keys: set[str]) -> bool:
    changed = False
    if isinstance(data, dict):
        if data.get("key") in keys and "value" in data:
            data["value"] = MASK
            changed = True
        for value in data.values():
            changed |= _mask_user_data(value, keys)
    elif isinstance(data, list):
        for value in data:
            changed |= _mask_user_data(value, keys)
    return changed
