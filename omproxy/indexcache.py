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
from pathlib import Path
from typing import Any

FORMAT = "omproxy-index/1"
MIN_SIZE = 4 << 20


def folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omproxy"


def _key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def get(raw: bytes) -> list[Any] | None:
    if len(raw) < MIN_SIZE:
        return None
    key = _key(raw)
    try:
        data = json.loads((folder() / f"{key}.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("sha256") != key:
        return None
    entries = data.get("entries")
    return entries if isinstance(entries, list) else None


def put(raw: bytes, entries: list[Any]) -> None:
    if len(raw) < MIN_SIZE:
        return
    key = _key(raw)
    try:
        text = json.dumps({"format": FORMAT, "sha256": key, "entries": entries}, ensure_ascii=False,
                          separators=(",", ":"))
    except (TypeError, ValueError):  # a hand-written value JSON cannot hold (a YAML timestamp): not remembered
        return
    try:
        target = folder()
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=target)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, target / f"{key}.json")
        finally:
            Path(tmp).unlink(missing_ok=True)
    except (OSError, ValueError):  # ValueError: text a UTF-8 file cannot hold (a lone surrogate)
        return
