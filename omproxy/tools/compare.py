"""Comparing two answers to the same request — recorded and live (`verify`), or from two recordings
(`diff`) — field by field, ignoring noise by rule and interaction ids modulo a mapping. Pure.

Noise, by default: every interaction id (`interactionId`, anywhere), every `interaction*At` timestamp,
`interactionSubmitSeq`, `interactionPlaceInQueueSeq`, and the `Date` and `Server` headers. More with
JSON paths in `verify.ignore` (dotted, `*` for any key or index: `interactionProperties.interactionQueue`,
`errors.*.advice`)."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from omproxy.gms import vocabulary as gms
from omproxy.model import Response

NOISY_HEADERS = frozenset({"date", "server"})
_ID = re.compile(r"[0-9A-Za-z]{16}")


@dataclass
class Ids:
    """Interaction ids of one side (recorded) and the other (live), learned as answers come in."""

    to_live: dict[str, str] = field(default_factory=dict)

    def learn(self, recorded: Response, live: Response, op: gms.Operation | None) -> None:
        for old, new in zip(gms.ids_in_reply(op, recorded.reply), gms.ids_in_reply(op, live.reply), strict=False):
            self.to_live[old] = new

    def translate(self, text: str) -> str:
        """Recorded ids in a text, as the live side knows them."""
        if not self.to_live:
            return text
        return _ID.sub(lambda m: self.to_live.get(m.group(), m.group()), text)


@dataclass(frozen=True)
class Noise:
    keys: tuple[str, ...] = gms.VOLATILE_FIELDS  # key names ignored at any depth (fnmatch patterns)
    paths: tuple[str, ...] = ()  # dotted paths, `*` for any key or index

    def ignores(self, path: tuple[str, ...]) -> bool:
        return _ignores(self, path)  # the same few paths in every answer of a capture: judged once

    def plus(self, paths: Iterable[str]) -> Noise:
        return Noise(self.keys, tuple(dict.fromkeys((*self.paths, *paths))))


@lru_cache(maxsize=8192)
def _ignores(noise: Noise, path: tuple[str, ...]) -> bool:
    if path and any(fnmatch.fnmatchcase(path[-1], k) for k in noise.keys):
        return True
    return any(_path_matches(path, p.split(".")) for p in noise.paths)


def _path_matches(path: tuple[str, ...], pattern: list[str]) -> bool:
    return len(path) == len(pattern) and all(p == "*" or fnmatch.fnmatchcase(s, p) for s, p in zip(path, pattern,
                                                                                                 strict=True))


def unmatched(patterns: Iterable[str], replies: Iterable[Any]) -> list[str]:
    """The `verify.ignore` paths that no field of these answers has: a typo, probably (an ignore path
    that matches nothing ignores nothing, silently)."""
    left = {p: p.split(".") for p in patterns}
    for reply in replies:
        if not left:
            break
        for path in _paths(reply, ()):
            for name in [n for n, pattern in left.items() if _path_matches(path, pattern)]:
                del left[name]
    return list(left)


def _paths(data: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if path:
        yield path
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, (*path, str(k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, (*path, str(i)))


Sides = tuple[str, str]  # what the two answers are called: verify's recorded and live, diff's first and second
VERIFY: Sides = ("recorded", "live")
DIFF: Sides = ("first", "second")


def differences(recorded: Response, live: Response, ids: Ids, noise: Noise, sides: Sides = VERIFY) -> list[str]:
    """What differs, one readable line each: `a.b[2].c: recorded 'x', live 'y'`; [] when the same."""
    a, b = sides
    out = []
    if recorded.status != live.status:
        out.append(f"HTTP status: {a} {recorded.status}, {b} {live.status}")
    want, got = recorded.reply, live.reply
    if want is not None and got is not None:
        out += _walk(want, got, (), ids, noise, sides)
    elif want is not None or got is not None:
        out.append(f"body: {a} " + ("JSON" if want is not None else "not JSON") + f", {b} " +
                   ("JSON" if got is not None else "not JSON"))
    elif ids.translate(recorded.body.decode("utf-8", "replace")) != live.body.decode("utf-8", "replace"):
        out.append(f"body: {a} {_short(recorded.body)}, {b} {_short(live.body)}")
    return out


def _walk(want: Any, got: Any, path: tuple[str, ...], ids: Ids, noise: Noise, sides: Sides) -> list[str]:
    a, b = sides
    if noise.ignores(path):
        return []
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in list(want) + [k for k in got if k not in want]:
            sub = (*path, str(key))
            if key not in got:
                out += [] if noise.ignores(sub) else [f"{_show(sub)}: {a} {_value(want[key])}, {b} absent"]
            elif key not in want:
                out += [] if noise.ignores(sub) else [f"{_show(sub)}: {a} absent, {b} {_value(got[key])}"]
            else:
                out += _walk(want[key], got[key], sub, ids, noise, sides)
        return out
    if isinstance(want, list) and isinstance(got, list):
        out = []
        for i in range(max(len(want), len(got))):
            sub = (*path, str(i))
            if i >= len(got):
                out.append(f"{_show(sub)}: {a} {_value(want[i])}, {b} absent")
            elif i >= len(want):
                out.append(f"{_show(sub)}: {a} absent, {b} {_value(got[i])}")
            else:
                out += _walk(want[i], got[i], sub, ids, noise, sides)
        return out
    if isinstance(want, str) and isinstance(got, str) and ids.translate(want) == got:
        return []
    if want == got and type(want) is type(got):
        return []
    return [f"{_show(path)}: {a} {_value(want)}, {b} {_value(got)}"]


def _show(path: tuple[str, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(the answer)"


def _value(value: Any) -> str:
    return repr(value) if not isinstance(value, dict | list) else _short(json.dumps(value).encode())


def shown(body: bytes) -> str:
    """A body as a report quotes it: its start, quoted."""
    return _short(body)


def _short(body: bytes, limit: int = 80) -> str:
    text = body.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "…")


def header_differences(recorded: Response, live: Response, names: Iterable[str]) -> list[str]:
    """The named headers that differ (Date and Server never count)."""
    return [f"header {n}: recorded {recorded.headers.get(n)!r}, live {live.headers.get(n)!r}" for n in names
            if n.lower() not in NOISY_HEADERS and recorded.headers.get(n) != live.headers.get(n)]


def learned(first: Any, second: Any, path: tuple[str, ...] = ()) -> list[str]:
    """The paths (list indexes as `*`) whose values differ between two answers to the same request:
    what `--learn-noise` adds to the ignored paths."""
    if isinstance(first, dict) and isinstance(second, dict):
        return [p for k in first if k in second for p in learned(first[k], second[k], (*path, str(k)))]
    if isinstance(first, list) and isinstance(second, list):
        return list(dict.fromkeys(p for a, b in zip(first, second, strict=False) for p in learned(a, b, (*path, "*"))))
    return [] if first == second else [".".join(path)]
