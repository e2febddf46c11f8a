"""Every option of omproxy, declared once in OPTIONS (config.yaml key, type or enum, default, flag,
help, the modes that honour it); from that table come the Config's validation, config.yaml's
reading (`configfile`) and each mode's command-line flags (`cli`). Defaults < file < flags, resolved once. Every
error names the file and the key: `config.yaml: match.ignore: expected a list of strings`. Paths in a
config file are relative to its folder. Nothing else in omproxy reads the config file or argv."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omproxy.config.faults import Match, Rule, matches_of, rules
from omproxy.errors import ConfigError
from omproxy.gms.vocabulary import CATCH_ALL, DEFAULT_SECTION


class Mode(StrEnum):
    SIMULATE = "simulate"
    RECORD = "record"
    PASSTHROUGH = "passthrough"
    REPLAY = "replay"
    AUTO = "auto"


class Repeat(StrEnum):
    LAST = "last"  # used-up recordings repeat the last one
    MISS = "miss"  # used-up recordings are a miss


class SampleBy(StrEnum):
    INTERACTION = "interaction"  # a story: a create and all that names its interaction id
    EXTERNAL_ID = "external_id"  # a story: all that names one external id (and the ids created for it)


class Durability(StrEnum):
    EACH = "each"  # each entry fsync'd before its answer
    INTERVAL = "interval"  # answered once queued; written at once, fsync'd within SYNC_EVERY


class Fallback(StrEnum):
    SIMULATOR = "simulator"  # the seeded simulator answers a miss
    NONE = "none"  # a miss is a 404 with the near-miss report


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


MATCHERS = ("method", "path", "query", "form")
SERVING = frozenset(Mode)
FORWARDING = frozenset({Mode.RECORD, Mode.PASSTHROUGH, Mode.AUTO})
CASSETTES = frozenset({Mode.RECORD, Mode.REPLAY, Mode.AUTO})


class BlockOn(StrEnum):
    SECRET = "secret"  # an entry lint would flag as holding a secret in clear is not written


@dataclass(frozen=True)
class Redaction:
    headers: tuple[str, ...] = ()
    form_keys: tuple[str, ...] = ()
    json_fields: tuple[str, ...] = ()
    pseudonymize: tuple[str, ...] = ()
    key_file: str | None = None
    block_on: tuple[BlockOn, ...] = ()


@dataclass(frozen=True)
class Matching:
    on: tuple[str, ...] = MATCHERS
    headers: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


# ---- value kinds: one checker each, for the file and the flags alike ------------------------

Check = Callable[[str, Any], Any]  # (where, value) -> the value, or ConfigError


def text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, not {value!r}")
    return value


def _number(where: str, value: Any, kind: type[int] | type[float], what: str) -> Any:
    """A number from the file (an int or float) or a flag (a string), never a bool."""
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise ConfigError(f"{where}: expected {what}, not {value!r}") from None
    allowed = int if kind is int else int | float
    if isinstance(value, bool) or not isinstance(value, allowed) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected {what}, not {value!r}")
    return value


def boolean(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def whole(minimum: int, maximum: int | None = None) -> Check:
    def check(where: str, value: Any) -> int:
        number: int = _number(where, value, int, "a whole number")
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigError(f"{where}: must be {bound}, not {number}")
        return number
    return check


def seconds(where: str, value: Any) -> float:
    number = float(_number(where, value, float, "a number of seconds"))
    if number <= 0:
        raise ConfigError(f"{where}: must be more than 0 seconds, not {number:g}")
    return number


def fault_rules(where: str, value: Any) -> tuple[Rule, ...]:
    return rules(where, value)


def fraction(where: str, value: Any) -> float:
    number = float(_number(where, value, float, "a number from 0 to 1"))
    if not 0 <= number <= 1:
        raise ConfigError(f"{where}: expected a number from 0 to 1, not {number:g}")
    return number


def positive(where: str, value: Any) -> float:
    number = float(_number(where, value, float, "a number"))
    if not number > 0:
        raise ConfigError(f"{where}: must be more than 0, not {number:g}")
    return number


BYTE_UNITS = {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "b": 1}


def byte_size(where: str, value: Any) -> int:
    """64MB, 512KiB, or a number of bytes."""
    text = str(value).strip().lower().replace(" ", "")
    unit = next((u for u in sorted(BYTE_UNITS, key=len, reverse=True) if text.endswith(u)), "")
    try:
        number = float(text[:len(text) - len(unit)]) * BYTE_UNITS.get(unit, 1)
    except ValueError:
        raise ConfigError(f"{where}: expected a size like 64MB or 512KiB, not {value!r}") from None
    if not 1024 <= number < 2**50:
        raise ConfigError(f"{where}: expected a size of at least 1KiB, not {value!r}")
    return int(number)


AGE_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def age(where: str, value: Any) -> float:
    """An age: 180d, 12h, 30m, 45s, or a number of seconds."""
    text = str(value).strip()
    unit = AGE_UNITS.get(text[-1:].lower()) if text else None
    try:
        number = float(text[:-1] if unit else text) * (unit or 1.0)
    except ValueError:
        raise ConfigError(f"{where}: expected an age like 180d, 12h, 30m or 45s, not {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{where}: must be more than 0, not {value!r}")
    return number


def choice(enum: type[Enum]) -> Check:
    def check(where: str, value: Any) -> Enum:
        try:
            return enum(value)
        except ValueError:
            valid = ", ".join(str(m.value) for m in enum)
            raise ConfigError(f"{where}: expected one of {valid}, not {value!r}") from None
    return check


def strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return tuple(value)


def matchers(where: str, value: Any) -> tuple[str, ...]:
    names = strings(where, value)
    for name in names:
        if name not in MATCHERS:
            raise ConfigError(f"{where}: expected one of {', '.join(MATCHERS)}, not {name!r}")
    return names


def upstream(where: str, value: Any) -> str:
    url = text(where, value)
    if url == "builtin":
        return url
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
        raise ConfigError(f"{where}: expected 'builtin' or a GMS base URL like http://gms.example:8080, "
                          f"not {url!r}")
    return url


def state(where: str, value: Any) -> str:
    url = text(where, value)
    if url != "memory" and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{where}: expected 'memory' or a Redis URL like redis://127.0.0.1:6379/0, not {url!r}")
    return url


def _mapping(where: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    for key in value:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" — did you mean '{near[0]}'?" if near else f" (known: {', '.join(allowed)})"
            at = f"{where} {key}" if where.endswith(":") else f"{where}.{key}"
            raise ConfigError(f"{at}: unknown key{hint}")
    return value


def sections(where: str, value: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, options in _mapping(where, value, tuple(value) if isinstance(value, dict) else ()).items():
        if name != CATCH_ALL and not str(name).startswith(CATCH_ALL + "."):
            raise ConfigError(f"{where}.{name}: a section is named '{CATCH_ALL}' or '{CATCH_ALL}.<serviceName>'")
        opts = _mapping(f"{where}.{name}", options, tuple(DEFAULT_SECTION))
        for key, val in opts.items():
            if key == "allow_overwrite":
                if not isinstance(val, bool) and str(val).lower() not in ("true", "false"):
                    raise ConfigError(f"{where}.{name}.allow_overwrite: expected true or false, not {val!r}")
            elif not isinstance(val, str | int):
                raise ConfigError(f"{where}.{name}.{key}: expected a string")
        out[str(name)] = dict(opts)
    return out


def block_on(where: str, value: Any) -> tuple[BlockOn, ...]:
    """`secret`, or a list of such (one kind today)."""
    out = []
    for v in strings(where, [value] if isinstance(value, str) else value):
        found = choice(BlockOn)(where, v)
        assert isinstance(found, BlockOn)
        out.append(found)
    return tuple(out)


# ---- the options ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    key: str  # in config.yaml (dotted: replay.fallback) and, dots for underscores, the Config attribute
    check: Check
    help: str
    flag: str | None = None  # its command-line flag, when it has one
    modes: frozenset[Mode] = SERVING  # the modes whose flags include it
    path: bool = False  # a path: relative to the config file's folder when read from one
    name: str = ""  # its Config attribute, when not the key's last part
    nullable: bool = False  # `null` in the file means "not set"

    @property
    def attr(self) -> str:
        """Its Config attribute (of Config.redact / Config.match for those groups)."""
        return self.name or self.key.split(".")[-1]


OPTIONS: tuple[Option, ...] = (
    Option("host", text, "address to listen on (default 127.0.0.1; 0.0.0.0 exposes omproxy and its admin API)",
           "--host"),
    Option("port", whole(0, 65535), "port to listen on (default 8080; 0 picks a free one)", "--port"),
    Option("upstream", upstream, "GMS base URL, e.g. http://gms.example:8080, or 'builtin' for the in-process "
           "simulator (default)", "--upstream", FORWARDING),
    Option("upstream_timeout", seconds, "seconds to wait for GMS's answer before a 504 (default 30)",
           "--upstream-timeout", FORWARDING),
    Option("max_body", whole(0), "largest request body accepted, in bytes; larger gets 413 (default 1 MiB)",
           "--max-body"),
    Option("max_response_body", whole(1), "largest upstream answer, in bytes, decompressed; larger gets 502 "
           "(default 8 MiB)", "--max-response-body", FORWARDING),
    Option("cassette", text, "a cassette file, a folder of them, or a template with {service} "
           "(default cassettes/{service}.yaml)", "--cassette", CASSETTES, path=True),
    Option("rewrite", boolean, "record and auto: this run's recordings replace the cassette (written beside it, "
           "renamed over it when omproxy stops cleanly) instead of being appended (default false)", "--rewrite",
           frozenset({Mode.RECORD, Mode.AUTO})),
    Option("rotate.size", byte_size, "record and auto: past this size (64MB), a cassette goes on in name.0002.yaml, "
           "name.0003.yaml, ... (replay reads them as one; default: no limit)", "--rotate-size",
           frozenset({Mode.RECORD, Mode.AUTO}), name="rotate_size", nullable=True),
    Option("durability", choice(Durability), "record and auto: each (an entry is fsync'd before its answer) or "
           "interval (answered once queued, fsync'd within 0.1 s: lower latency; a power cut may lose the last "
           "0.1 s) (default each)", "--durability", frozenset({Mode.RECORD, Mode.AUTO})),
    Option("record.queue", byte_size, "bytes of entries waiting to be written, at most; beyond, an exchange is "
           "answered and not recorded (back-pressure) rather than made to wait (default 16MiB)",
           name="record_queue"),
    Option("record.only", matches_of, "record only exchanges matching one of these (the fault rules' match: "
           "service, operation, path glob, method, header); the others are forwarded, not recorded",
           name="record_only"),
    Option("record.skip", matches_of, "never record exchanges matching one of these (forwarded all the same)",
           name="record_skip"),
    Option("sample.rate", fraction, "record this share of stories (0.1: one in ten), each whole: its create and "
           "all that names its id (default 1: all)", "--sample", frozenset({Mode.RECORD, Mode.AUTO}),
           name="sample_rate"),
    Option("sample.by", choice(SampleBy), "what a story is: interaction (its id) or external_id (default "
           "interaction)", name="sample_by"),
    Option("sample.seed", text, "the key of the sampling hash: instances with one seed sample the same stories "
           "(default: state_namespace)", name="sample_seed", nullable=True),
    Option("pending", boolean, "record and auto: this run's recordings go to a pending cassette beside the real "
           "one (x.pending.yaml), never replayed by replay, until `omproxy cassette accept` moves them in "
           "(default false)", "--pending", frozenset({Mode.RECORD, Mode.AUTO})),
    Option("tls.cert", text, "serve HTTPS: the certificate chain (PEM), with tls.key", "--tls-cert",
           name="tls_cert", path=True, nullable=True),
    Option("tls.key", text, "serve HTTPS: the certificate's private key (PEM)", "--tls-key", name="tls_key",
           path=True, nullable=True),
    Option("exit_after", age, "stop cleanly after this long (8h, 30m): a bounded capture (default: never)",
           "--exit-after", nullable=True),
    Option("max_interactions", whole(1), "record and auto: stop cleanly once this many exchanges are recorded "
           "(default: no limit)", "--max-interactions", frozenset({Mode.RECORD, Mode.AUTO}), nullable=True),
    Option("log_format", choice(LogFormat), "log lines as text or JSON lines (default text)", "--log-format"),
    Option("idle_timeout", seconds, "seconds an idle keep-alive connection is kept open (default 75)",
           "--idle-timeout"),
    Option("header_timeout", seconds, "seconds a client has to send a whole request head (default 10)",
           "--header-timeout"),
    Option("body_timeout", seconds, "seconds a request's body has to arrive once its head has (a slower one, or an "
           "Expect: 100-continue never followed by its body, is closed; default 30)", "--body-timeout"),
    Option("max_connections", whole(1), "open client connections at most; beyond, 503 (default 512)",
           "--max-connections"),
    Option("admin.token", text, "when set, every /_omproxy/ call but health needs 'Authorization: Bearer "
           "TOKEN'", "--admin-token", name="admin_token", nullable=True),
    Option("admin.allowed_hosts", strings, "Host names the admin API and inspector answer to, beyond localhost, "
           "IP addresses and the listen address (a name a web page's DNS could point here is refused: "
           "DNS rebinding)", name="admin_allowed_hosts"),
    Option("workers", whole(1, 64), "worker processes sharing the port (SO_REUSEPORT) under one supervisor; "
           "above 1, replay, auto, simulate and a builtin upstream need --state (default 1)", "--workers"),
    Option("state", state, "where sessions, playback positions and simulated interactions live: memory, or a "
           "Redis URL shared by several omproxy instances (omproxy[redis])", "--state"),
    Option("state_namespace", text, "the name a shared state's keys and recording stream are kept under: "
           "clusters sharing one Redis keep apart by it (default omproxy)", "--state-namespace"),
    Option("max_sessions", whole(1), "X-Omproxy-Session sessions kept at most (default 1000)"),
    Option("session_idle", seconds, "seconds after which an unused session is forgotten (default 3600)"),
    Option("redact.headers", strings, "header names to mask, beyond Authorization, Proxy-Authorization, "
           "Cookie, Set-Cookie"),
    Option("redact.form_keys", strings, "decoded form/query keys to mask, e.g. 'userData[CreditCard]'"),
    Option("redact.json_fields", strings, "dotted paths in JSON response bodies to mask"),
    Option("redact.pseudonymize", strings, "decoded form/query keys whose values become PSEUDO-<12 hex of an "
           "HMAC>: the same value, the same pseudonym, in requests and in GMS's echoes, so stories still correlate "
           "and replay still matches (e.g. 'userData[Phone]'; needs redact.key_file or OMPROXY_REDACT_KEY)"),
    Option("redact.key_file", text, "a file holding the pseudonyms' secret key (16 bytes at least); else the "
           "OMPROXY_REDACT_KEY environment variable", path=True, nullable=True),
    Option("redact.block_on", block_on, "[secret]: record does not write an entry lint would flag as holding a "
           "secret in clear (answered all the same, logged NOT RECORDED, naming the key)"),
    Option("match.on", matchers, "the named matchers: method, path, query, form"),
    Option("match.headers", strings, "request headers that must be equal too"),
    Option("match.ignore", strings, "form keys left out of matching"),
    Option("replay.repeat", choice(Repeat), "when a request's recordings are used up: repeat the last, or "
           "miss (default last)", "--repeat", frozenset({Mode.REPLAY})),
    Option("replay.restart", boolean, "a create whose recordings this session has all played starts the "
           "session's recordings again (the session is reset first), so a story run twice gets the same answers "
           "twice; false: the create gets its last recording again (default true)", "--restart",
           frozenset({Mode.REPLAY})),
    Option("replay.max_age", age, "recordings older than this (180d, 12h) are said to be: the log line notes it, "
           "and a pytest test using one fails (default: no limit)", "--max-age", frozenset({Mode.REPLAY, Mode.AUTO}),
           nullable=True),
    Option("replay.fallback", choice(Fallback), "who answers a request no recording matches: simulator or "
           "none (a 404 with the nearest recordings; default simulator)", "--fallback", frozenset({Mode.REPLAY})),
    Option("faults", fault_rules, "fault rules, first match wins: match (service, operation, path, method, "
           "session, header), times / probability / nth, answer (retry, {gms_error: 249}, {http: 503}, reset, "
           "timeout, truncate) and/or delay (1500ms, {recorded: true}, {p50: 80ms, p99: 900ms})"),
    Option("faults_seed", whole(0), "the seed of fault rules' probability: the same seed, the same faults (default 0)"),
    Option("latency.scale", positive, "every fault delay multiplied by this: 0.1 plays recorded pacing ten times "
           "faster (default 1)", name="latency_scale"),
    Option("simulator.sections", sections, "GMS option sections: openmedia and openmedia.<service>"),
    Option("verify.ignore", strings, "JSON paths verify and diff ignore, `*` for any key or index",
           name="verify_ignore"),
)
BY_KEY = {o.key: o for o in OPTIONS}


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    upstream: str = "builtin"
    upstream_timeout: float = 30.0
    max_body: int = 1024 * 1024
    max_response_body: int = 8 * 1024 * 1024
    cassette: str = "cassettes/{service}.yaml"
    rewrite: bool = False
    pending: bool = False
    durability: Durability = Durability.EACH
    record_queue: int = 16 << 20
    record_only: tuple[Match, ...] = ()
    record_skip: tuple[Match, ...] = ()
    sample_rate: float = 1.0
    sample_by: SampleBy = SampleBy.INTERACTION
    sample_seed: str | None = None
    rotate_size: int | None = None
    rewrite_run: str = ""  # a rewrite by several processes: the run's name; its coordinator renames (not an option)
    exit_after: float | None = None  # seconds
    max_interactions: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    log_format: LogFormat = LogFormat.TEXT
    idle_timeout: float = 75.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 512
    admin_token: str | None = None
    admin_allowed_hosts: tuple[str, ...] = ()
    state: str = "memory"
    state_namespace: str = "omproxy"
    workers: int = 1
    max_sessions: int = 1000
    session_idle: float = 3600.0
    verbose: int = 0
    repeat: Repeat = Repeat.LAST
    restart: bool = True
    max_age: float | None = None  # seconds
    fallback: Fallback = Fallback.SIMULATOR
    verify_ignore: tuple[str, ...] = ()
    faults: tuple[Rule, ...] = ()
    faults_seed: int = 0
    latency_scale: float = 1.0
    redact: Redaction = field(default_factory=Redaction)
    match: Matching = field(default_factory=Matching)
    sections: dict[str, dict[str, Any]] = field(default_factory=lambda: {CATCH_ALL: dict(DEFAULT_SECTION)})
    source: str = "built-in defaults"
    given: frozenset[str] = frozenset()  # the options `source` names (Config attributes; redact/match as groups)

    def __post_init__(self) -> None:  # enums may be given by value (Config(fallback="none"))
        for name, enum in (("log_format", LogFormat), ("repeat", Repeat), ("fallback", Fallback),
                           ("sample_by", SampleBy), ("durability", Durability)):
            object.__setattr__(self, name, choice(enum)(name, getattr(self, name)))


def from_mapping(data: Any, source: str, base: Path | None = None) -> Config:
    """Build a Config from a parsed config file; `source` names it in errors, `base` anchors its paths."""
    top = tuple(dict.fromkeys(o.key.split(".")[0] for o in OPTIONS))
    data = _mapping(f"{source}:", data, top)
    values: dict[str, Any] = {"source": source}
    nested: dict[str, dict[str, Any]] = {"redact": {}, "match": {}}
    for group in top:
        children = tuple(o.key.split(".", 1)[1] for o in OPTIONS if o.key.startswith(group + "."))
        if children:
            _mapping(f"{source}: {group}", data.get(group), children)
    for option in OPTIONS:
        head, _, tail = option.key.partition(".")
        present = head in data and (not tail or (isinstance(data[head], dict) and tail in data[head]))
        if not present:
            continue
        raw = data[head][tail] if tail else data[head]
        if raw is None and option.nullable:
            continue
        value = option.check(f"{source}: {option.key}", raw)
        if option.path and base is not None and not Path(value).is_absolute():
            value = str(base / value) + ("/" if value.endswith("/") else "")
        if head in nested:
            nested[head][tail] = value
        else:
            values[option.attr] = value
    given = frozenset(values) - {"source"} | {h for h, v in nested.items() if v}
    return Config(**values, redact=Redaction(**nested["redact"]), match=Matching(**nested["match"]), given=given)
