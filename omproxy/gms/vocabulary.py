"""The GMS Open Media vocabulary: which operation a path names, which body parameters each takes,
the GMS-shaped JSON replies, and the findings only GMS knowledge can make (unknown parameters,
an empty update, ...). Pure: no I/O, no aiohttp. Error codes other than 248 are omproxy's own
and listed in the README; they are all defined here so they change in one place.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

from omproxy.gms.formcodec import (
    FORM_TYPE,
    SMALL,
    DecodedForm,
    Finding,
    Repair,
    decode,
    encode,
    intended,
    media_type_of,
    repaired,
    split_key,
    unescape,
)

BASE = "/genesys/2/openmedia/"
OPERATIONS = ("create", "get", "update", "stop")

# Documented by Genesys.
NOT_FOUND = 248
# omproxy's own codes [ours]: GMS documents no others.
UNKNOWN_SERVICE = 901
EMPTY_UPDATE = 902
NOT_FORM = 903
BAD_BOOLEAN = 904
UNKNOWN_OPERATION = 905
NO_MATCH = 910

_PARAMETERS: dict[str, tuple[str, ...]] = {
    "create": ("externalId", "interactionType", "interactionSubType", "mediaType", "userData[]"),
    "get": ("searchByExternalId",),
    "update": ("change[]", "delete[]"),
    "stop": ("reasonSystemName", "reasonDescription"),
}


@dataclass(frozen=True)
class Operation:
    """What a request path names: the operation, the service and (but for create) the id."""

    kind: str
    service: str
    id: str | None = None


@lru_cache(maxsize=8192)
def parse_path(path: str) -> Operation | None:
    """`/genesys/2/openmedia/svc/ID/get` -> Operation("get", "svc", "ID"). `path` is the raw path
    (no query); segments are split before percent-decoding so `%2F` never makes a new segment."""
    path = path.split("?", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    if not path.startswith(BASE):
        return None
    parts = [unquote(p) for p in path[len(BASE):].split("/")]
    if len(parts) == 1 and parts[0]:
        return Operation("create", parts[0])
    if len(parts) == 3 and parts[0] and parts[1] and parts[2] in OPERATIONS[1:]:
        return Operation(parts[2], parts[0], parts[1])
    return None


@lru_cache(maxsize=8192)
def service_of(path: str) -> str | None:
    """The service segment of any path under the Open Media base, even an unknown operation (remembered
    as `parse_path` is: every request asks, from the recorder, the metrics, the inspector)."""
    path = path.split("?", 1)[0]
    if not path.startswith(BASE):
        return None
    return unquote(path[len(BASE):].split("/")[0]) or None


@dataclass(frozen=True)
class Target:
    """The interaction a request addresses: by its interaction id, or (a get with
    searchByExternalId=true) by its external id."""

    id: str
    external: bool = False


def by_external_id(form: DecodedForm) -> bool:
    return (form.get("searchByExternalId") or "").lower() == "true"


def target_of(op: Operation | None, form: DecodedForm) -> Target | None:
    """Which interaction a request addresses; None for create and for what is not Open Media."""
    if op is None or op.kind == "create" or op.id is None:
        return None
    return Target(op.id, external=op.kind == "get" and by_external_id(form))


def ids_in_reply(op: Operation | None, reply: dict[str, Any] | None) -> list[str]:
    """The interaction ids an answer carries: create's interactionId, get's
    interactionProperties.interactionId (what `verify` maps between recorded and live ids)."""
    if op is None or reply is None or reply.get("statusCode") != 0:
        return []
    if op.kind == "create" and isinstance(reply.get("interactionId"), str):
        return [reply["interactionId"]]
    props = reply.get("interactionProperties")
    if op.kind == "get" and isinstance(props, dict) and isinstance(props.get("interactionId"), str):
        return [props["interactionId"]]
    return []


def is_not_found(reply: dict[str, Any] | None) -> bool:
    """A 248 answer: GMS does not know (or no longer knows) the interaction."""
    errors = (reply or {}).get("errors")
    return (reply or {}).get("statusCode") == 2 and isinstance(errors, list) and any(
        isinstance(e, dict) and e.get("code") == NOT_FOUND for e in errors)


def with_id(path: str, old: str, new: str) -> str:
    """A raw Open Media path with its interaction-id segment `old` replaced by `new` (other segments
    and their encoding untouched)."""
    if not path.startswith(BASE):
        return path
    parts = path[len(BASE):].split("/")
    if len(parts) == 3 and unquote(parts[1]) == old:
        parts[1] = quote(new, safe="")
    return BASE + "/".join(parts)


# Fields of an interaction that differ between two runs of the same story (for diffs and verify).
# (fnmatch patterns: `interaction*At` is every timestamp of interactionProperties)
VOLATILE_FIELDS = ("interactionId", "interaction*At", "interactionSubmitSeq", "interactionPlaceInQueueSeq")

# The simulator's option sections: `openmedia` is the catch-all every service inherits from.
CATCH_ALL = "openmedia"
DEFAULT_SECTION: dict[str, Any] = {
    "interaction_type": "Inbound",
    "interaction_subtype": "InboundNew",
    "media_type": "workitem",
    "allow_overwrite": False,
    "queue": "Open Media Inbound Queue",
}


# ---- replies --------------------------------------------------------------------------------

def reply(status_code: int = 0, **fields: Any) -> bytes:
    text = json.dumps({"statusCode": status_code, **fields}, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")  # a client's undecodable bytes, quoted back, stay visible


def failure(code: int, advice: str) -> bytes:
    return reply(2, errors=[{"code": code, "advice": advice}])


def retry(advice: str) -> bytes:
    """statusCode 1: 'may succeed if retried' (server down, network failure)."""
    return reply(1, errors=[{"advice": advice}])


def not_found(kind: str, interaction_id: str) -> bytes:
    if kind == "get":
        return failure(NOT_FOUND, f"Specified interaction Id[{interaction_id}] was not found")
    return failure(NOT_FOUND, f"Interaction with specified id[{interaction_id}] was not found")


def parse_reply(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested past Python's stack
        return None
    return data if isinstance(data, dict) else None


# ---- parameter findings ---------------------------------------------------------------------

def _known(kind: str, key: str) -> bool:
    parts = split_key(key)
    return (parts is not None and f"{parts[0]}[]" in _PARAMETERS[kind]) or key in _PARAMETERS[kind]


def _suggest(kind: str, key: str) -> str | None:
    if "%" in key:  # a key encoded twice: the one it decodes to, when that is a parameter
        once = unescape(key.encode("utf-8"))[0].decode("utf-8", "replace")
        if once != key and _known(kind, once):
            return once
    parts = split_key(key)
    if parts is None and "[" in key:  # malformed: suggest the well-formed key, never 'userData[]'
        name, _, inner = key.partition("[")
        inner = inner.strip("[]")
        return f"{name}[{inner}]" if inner and _known(kind, f"{name}[{inner}]") else None
    names = [p.replace("[]", f"[{parts[1]}]" if parts else "[key]") if p.endswith("[]") else p
             for p in _PARAMETERS[kind]]
    lowered = {n.lower(): n for n in names}
    if key.lower() in lowered:
        return lowered[key.lower()]
    prefixed = [n for n in names if n.lower().startswith(key.lower()) or n.lower().endswith(key.lower())]
    if prefixed:
        return prefixed[0]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    return close[0] if close else None


def findings(op: Operation | None, form: DecodedForm) -> tuple[Finding, ...]:
    """The parameter findings of a request for its operation, judged on the parameters the client
    meant (a body percent-encoded twice as a whole is judged decoded once more, and says so);
    remembered for small forms (the key is the whole input: both are immutable)."""
    if op is None:
        return ()
    if sum(len(k) + len(v) for k, v in form.fields) > SMALL:
        return _findings(op, form)
    return _remembered_findings(op, form)


@lru_cache(maxsize=1024)
def _remembered_findings(op: Operation, form: DecodedForm) -> tuple[Finding, ...]:
    return _findings(op, form)


def _findings(op: Operation, form: DecodedForm) -> tuple[Finding, ...]:
    meant = intended(form)
    suffix = " (in the body decoded once more)" if meant is not form else ""
    return tuple(Finding(f.kind, f.message + suffix, f.fragment) for f in parameter_findings(op, meant))


_REPR = re.compile(r"""^([ub])(['"])(.*)\2$""", re.DOTALL)  # u'ABC', b'ABC', b"ABC"


def repair(op: Operation | None, form: DecodedForm) -> Repair | None:
    """`formcodec.repaired`, with the parameters the findings suggest another name for renamed
    (the reference page's `reason` and `description` of a stop: `reasonSystemName`,
    `reasonDescription`), so that the repair is the body GMS needs."""
    fixed = repaired(form)
    if op is None or fixed is None or fixed.text is None:
        return fixed
    charset = form.charset
    again = decode(fixed.text.encode("ascii"), f"{FORM_TYPE}; charset={charset}")
    renames = {key: hint for key, _ in again.fields if not _known(op.kind, key)
               and not any(k != op.kind and _known(k, key) for k in OPERATIONS)
               and (hint := _suggest(op.kind, key)) is not None}
    if not renames:
        return fixed
    text = encode([(renames.get(k, k), v) for k, v in again.fields], charset).decode("ascii")
    said = ", ".join(f"{a} -> {b}" for a, b in renames.items())
    return Repair(text, "; ".join(filter(None, [fixed.reason, f"renamed as the findings suggest: {said}"])))


def parameter_findings(op: Operation, form: DecodedForm) -> list[Finding]:
    """What GMS would ignore or refuse in this body, for this operation."""
    findings: list[Finding] = []
    if form.not_form:
        return findings  # not form fields at all: naming "parameters" would only add noise
    seen: set[str] = {f.key for f in form.findings if f.kind == "unencoded-ampersand"}  # said already
    for key, value in form.fields:
        if not _known(op.kind, key) and key not in seen:
            seen.add(key)
            hint = _suggest(op.kind, key)
            owners = [k for k in OPERATIONS if k != op.kind and _known(k, key)]
            msg = f"'{key}' is not a parameter of {op.kind}; GMS ignores it"
            if owners:
                msg += f" — it belongs to {owners[0]}: is the path for the wrong operation?"
            elif hint:
                msg += f" — did you mean '{hint}'?"
            else:
                msg += f" (known: {', '.join(p.replace('[]', '[key]') for p in _PARAMETERS[op.kind])})"
            findings.append(Finding("unknown-parameter", msg, key))
        parts = split_key(key)
        if op.kind == "update" and parts and parts[0] == "delete" and value:
            findings.append(Finding("delete-with-value", f"'{key}' carries the value '{value}', which GMS "
                                    "ignores: delete[key] removes the key whatever the value", f"{key}={value}"))
        name = parts[1] if parts else key
        if parts and re.match(r"^0[a-z]", name):
            findings.append(Finding("zero-for-o", f"the key '{name}' starts with the digit zero before a "
                                    f"letter — legal, but did you mean 'O{name[1:]}'?", key))
        quoted = _REPR.match(value)
        if quoted:
            what = ("Python 3's str() of bytes (b'...'): decode the bytes first" if quoted.group(1) == "b"
                    else "a Python 2 repr of a unicode string (u'...')")
            findings.append(Finding("python-repr", f"the value '{value}' is {what}; real clients send "
                                    f"'{quoted.group(3)}'", f"{key}={value}"))
        elif re.match(r"^u[A-Z]", value):
            findings.append(Finding("python-repr", f"the value '{value}' starts with 'u' before a capital: it "
                                    f"looks like a Python 2 u'...' repr; real clients send '{value[1:]}'",
                                    f"{key}={value}"))
    for rule in (empty_update, bad_boolean):
        found = rule(op, form)
        if found is not None:
            findings.append(found)
    return findings


# ---- rules: each is a finding for `decode` and the log, and the simulator's refusal -------------

def empty_update(op: Operation, form: DecodedForm) -> Finding | None:
    if op.kind == "update" and not any((split_key(k) or ("",))[0] in ("change", "delete") for k, _ in form.fields):
        return Finding("empty-update", "an update must change or delete at least one key "
                       "(change[key]=value or delete[key]=)")
    return None


def bad_boolean(op: Operation, form: DecodedForm) -> Finding | None:
    flag = form.get("searchByExternalId") if op.kind == "get" else None
    if flag is not None and flag.lower() not in ("true", "false"):
        return Finding("bad-boolean", f"searchByExternalId must be true or false, not '{flag}'",
                       f"searchByExternalId={flag}")
    return None


def not_form(body: bytes, content_type: str | None, form: DecodedForm) -> Finding | None:
    """Why GMS could not read this body as form fields, or None. An empty body needs no Content-Type."""
    if not body:
        return None
    media = media_type_of(content_type)
    if media != FORM_TYPE:
        return Finding("content-type", f"Content-Type must be {FORM_TYPE}, not '{media or 'none'}'")
    return next((f for f in form.findings if f.kind == "not-form"), None)


def path_findings(path: str) -> list[Finding]:
    if path and not path.startswith("/"):
        return [Finding("path-without-slash", f"the path '{path}' has no leading '/'", path)]
    return []
