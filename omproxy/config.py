"""config.yaml + command-line flags -> one frozen Config, resolved once (by `cli`). Defaults <
file < flags. Every error names the file and the key: `config.yaml: match.ignore: expected a list
of strings`. Nothing else in omproxy reads the config file, argv or the environment."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from omproxy import yamlsafe
from omproxy.errors import ConfigError
from omproxy.simulator import CATCH_ALL, DEFAULT_SECTION


class Mode(Enum):
    SIMULATE = "simulate"
    RECORD = "record"
    PASSTHROUGH = "passthrough"
    REPLAY = "replay"
    AUTO = "auto"


@dataclass(frozen=True)
class Redaction:
    headers: tuple[str, ...] = ()
    form_keys: tuple[str, ...] = ()
    json_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Matching:
    on: tuple[str, ...] = ("method", "path", "query", "form")
    headers: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


MATCHERS = ("method", "path", "query", "form")


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    upstream: str = "builtin"
    upstream_timeout: float = 30.0
    max_body: int = 1024 * 1024
    cassette: str = "cassettes/{service}.yaml"
    log_format: str = "text"
    verbose: int = 0
    repeat: str = "last"
    fallback: str = "simulator"
    redact: Redaction = field(default_factory=Redaction)
    match: Matching = field(default_factory=Matching)
    sections: dict[str, dict[str, Any]] = field(default_factory=lambda: {CATCH_ALL: dict(DEFAULT_SECTION)})
    source: str = "built-in defaults"


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return tuple(value)


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _number(where: str, value: Any, kind: type, minimum: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where}: expected a {'whole ' if kind is int else ''}number, not {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}")
    return kind(value)


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


def _sections(where: str, value: Any) -> dict[str, dict[str, Any]]:
    sections = _mapping(where, value, tuple(value) if isinstance(value, dict) else ())
    out: dict[str, dict[str, Any]] = {}
    for name, options in sections.items():
        if name != CATCH_ALL and not str(name).startswith(CATCH_ALL + "."):
            raise ConfigError(f"{where}.{name}: a section is named '{CATCH_ALL}' or '{CATCH_ALL}.<serviceName>'")
        opts = _mapping(f"{where}.{name}", options, tuple(DEFAULT_SECTION))
        for key, val in opts.items():
            if key == "allow_overwrite":
                if not isinstance(val, bool) and str(val).lower() not in ("true", "false"):
                    raise ConfigError(f"{where}.{name}.allow_overwrite: expected true or false, not {val!r}")
            elif not isinstance(val, (str, int)):
                raise ConfigError(f"{where}.{name}.{key}: expected a string")
        out[str(name)] = dict(opts)
    return out


def from_mapping(data: Any, source: str) -> Config:
    """Build a Config from a parsed config file; `source` names it in error messages."""
    top = ("host", "port", "upstream", "upstream_timeout", "max_body", "cassette", "log_format",
           "redact", "match", "replay", "simulator")
    data = _mapping(f"{source}:", data, top)
    values: dict[str, Any] = {"source": source}
    s = f"{source}: "
    for key in ("host", "upstream", "cassette"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise ConfigError(f"{s}{key}: expected a non-empty string")
            values[key] = data[key]
    if "port" in data:
        values["port"] = _number(f"{s}port", data["port"], int, 0)
    if "upstream_timeout" in data:
        values["upstream_timeout"] = _number(f"{s}upstream_timeout", data["upstream_timeout"], float, 0.001)
    if "max_body" in data:
        values["max_body"] = _number(f"{s}max_body", data["max_body"], int, 0)
    if "log_format" in data:
        values["log_format"] = _choice(f"{s}log_format", data["log_format"], ("text", "json"))
    redact = _mapping(f"{s}redact", data.get("redact"), ("headers", "form_keys", "json_fields"))
    values["redact"] = Redaction(**{k: _strings(f"{s}redact.{k}", v) for k, v in redact.items()})
    match = _mapping(f"{s}match", data.get("match"), ("on", "headers", "ignore"))
    matching = {k: _strings(f"{s}match.{k}", v) for k, v in match.items()}
    for name in matching.get("on", ()):
        _choice(f"{s}match.on", name, MATCHERS)
    values["match"] = Matching(**matching)
    replay = _mapping(f"{s}replay", data.get("replay"), ("repeat", "fallback"))
    if "repeat" in replay:
        values["repeat"] = _choice(f"{s}replay.repeat", replay["repeat"], ("last", "miss"))
    if "fallback" in replay:
        values["fallback"] = _choice(f"{s}replay.fallback", replay["fallback"], ("simulator", "none"))
    simulator = _mapping(f"{s}simulator", data.get("simulator"), ("sections",))
    if "sections" in simulator:
        values["sections"] = _sections(f"{s}simulator.sections", simulator["sections"])
    return Config(**values)


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the config file (when given) and apply command-line overrides (None values skipped)."""
    config = Config()
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from None
        try:
            data = yamlsafe.load(text)
        except yaml.YAMLError as e:
            line = yamlsafe.error_line(e)
            where = f"{path}:{line}" if line else str(path)
            raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
        config = from_mapping(data if data is not None else {}, str(path))
    known = {f.name for f in fields(Config)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None and k in known}
    config = replace(config, **given)
    check_upstream(config.upstream, f"{path}: upstream" if "upstream" not in given and path else "--upstream")
    return config


def check_upstream(upstream: str, where: str) -> None:
    if upstream == "builtin":
        return
    parsed = urlsplit(upstream)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
        raise ConfigError(f"{where}: expected 'builtin' or a GMS base URL like http://gms.example:8080, "
                          f"not {upstream!r}")
