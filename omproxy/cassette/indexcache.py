"""What a big cassette parsed to, remembered by its content, so that a restart on an unchanged capture
skips YAML: JSON files in `$XDG_CACHE_HOME/omproxy/` (else `~/.cache/omproxy/`), named by the SHA-256
of the cassette's bytes. Never trusted when it does not match (another content is another name, and
the file repeats the hash), validated like a cassette on every use, never executed (JSON data only),
safe to delete at any time; a cache that cannot be read or written is simply not used. Only cassettes
of at least MIN_SIZE are remembered: small ones parse faster than they hash."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FORMAT = "omproxy-index/2"
MIN_SIZE = 4 << 20


def folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omproxy"


def key_of(raw: bytes) -> str | None:
    """The name a cassette's content is remembered under; None for a small one (never remembered)."""
    return hashlib.sha256(raw).hexdigest() if len(raw) >= MIN_SIZE else None


def _file(key: str, requests_only: bool) -> str:
    return f"{key}.requests.json" if requests_only else f"{key}.json"


def get(key: str | None, requests_only: bool = False) -> tuple[list[Any], bool] | None:
    """The entries remembered, and whether each was read alone (by the quick reader). `requests_only`:
    those remembered for a lazy load, whose answers are read from the cassette when played."""
    if key is None:
        return None
    try:
        data = json.loads((folder() / _file(key, requests_only)).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("sha256") != key:
        return None
    entries, alone = data.get("entries"), data.get("alone")
    return (entries, alone) if isinstance(entries, list) and isinstance(alone, bool) else None


def seen(path: Path, raw: bytes) -> None:
    """A cassette read from `path`: when its content is not what this path held when last read, what
    was remembered of that earlier content is removed (a cassette scrubbed by hand must not leave its
    old values here). One small pointer file a path, in `paths/`."""
    key = key_of(raw)
    try:
        named = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
        pointer = folder() / "paths" / named
        try:
            old: str | None = pointer.read_text().strip()
        except FileNotFoundError:
            old = None
        if old == (key or ""):
            return
        if old:
            for requests_only in (False, True):
                (folder() / _file(old, requests_only)).unlink(missing_ok=True)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(key or "")
    except OSError:  # a cache that cannot be read or written is simply not used
        return


def forget(raw: bytes) -> None:
    """What was remembered of a cassette with these bytes, removed (the file is being rewritten: a
    redaction must not leave the old values here)."""
    key = key_of(raw)
    if key is not None:
        for requests_only in (False, True):
            (folder() / _file(key, requests_only)).unlink(missing_ok=True)


Steps = Iterator[None]  # work done a step at a time: the caller may do other things between steps
_later: list[Callable[[], Steps]] | None = None


@contextmanager
def deferred() -> Iterator[list[Callable[[], Steps]]]:
    """Within it, what `put` would write waits in the list given, to be written after start-up (by
    `app.Runtime.start`, a step at a time between requests): a first start is ready that much sooner."""
    global _later
    writes: list[Callable[[], Steps]] = []
    _later = writes
    try:
        yield writes
    finally:
        _later = None


def put(key: str | None, entries: list[Any], alone: bool, requests_only: bool = False) -> None:
    if key is None:
        return
    if _later is not None:
        _later.append(lambda: _write(_file(key, requests_only), key, entries, alone))
    else:
        for _ in _write(_file(key, requests_only), key, entries, alone):
            pass


CHUNK = 1000  # entries encoded in one step


def _write(name: str, key: str, entries: list[Any], alone: bool) -> Steps:
    try:
        parts = []
        for k in range(0, len(entries), CHUNK):
            parts.append(json.dumps(entries[k:k + CHUNK], ensure_ascii=False, separators=(",", ":"))[1:-1])
            yield
    except (TypeError, ValueError):  # a hand-written value JSON cannot hold (a YAML timestamp): not remembered
        return
    head = json.dumps({"format": FORMAT, "sha256": key, "alone": alone}, separators=(",", ":"))[:-1]
    try:
        target = folder()
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.glob(f".{key}.*"):  # what a write of this content left when stopped midway
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=target)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(head + ',"entries":[')
                for n, part in enumerate(parts):
                    f.write("," + part if n and part else part)
                f.write("]}")
            os.replace(tmp, target / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except (OSError, ValueError):  # ValueError: text a UTF-8 file cannot hold (a lone surrogate)
        return
