"""A fast reader for exactly the YAML omproxy writes (`yamlformat.dump_entry`): block mappings and
sequences, plain scalars only where the writer would write them plain, single-quoted and JSON-escaped
double-quoted strings. It reads a run of entries the way PyYAML's safe loader would (the views for
people, `form` and `json`, skipped as `yamlformat` skips them) — or answers None the moment anything is
not in that subset (a comment, a tag, an anchor, a flow collection, another indentation, a scalar the
writer would have quoted), and then PyYAML reads it. Nothing is ever constructed but plain data.
A property test holds the two readers equal on everything the writer writes."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from omproxy.cassette.yamlformat import _string

_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+(e[-+][0-9]+)?|-?[0-9]+\.0e[-+][0-9]+")
# In the lines of a skipped view: a tag, anchor, alias, complex key or non-empty flow collection where
# a token starts (conservatively: such text inside a quoted string makes PyYAML read the batch).
_SPECIAL = re.compile(r"[!&*?\[{]")  # what _RISKY_LINES needs, at all: a quick first look
_RISKY_LINES = re.compile(r"(?:^ *|: |- )(?:[!&*]|\? |[\[{](?![\]}]$))", re.MULTILINE)
_VIEWS = {"request": "form", "response": "json"}  # views for people: tag-checked by yamlformat, never built


class _NotOurs(Exception):
    """Not the subset this reader knows: let PyYAML read it."""


def entries(text: str) -> list[Any] | None:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        out, i = _sequence(lines, 0, 0, depth=0)
    except (_NotOurs, IndexError, ValueError):
        return None
    return out if i == len(lines) else None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _sequence(lines: list[str], i: int, indent: int, depth: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    prefix = " " * indent + "- "
    while i < len(lines) and lines[i].startswith(prefix):
        rest = lines[i][len(prefix):]
        item: Any
        if rest.startswith("- "):  # a sequence in a sequence: its first item on this line
            lines[i] = " " * (indent + 2) + rest
            item, i = _sequence(lines, i, indent + 2, depth + 1)
        elif _key_end(rest) is not None:  # a mapping item: its first key on this line
            lines[i] = " " * (indent + 2) + rest
            item, i = _mapping(lines, i, indent + 2, depth + 1)
        else:
            item, i = _scalar(rest), i + 1
        items.append(item)
    return items, i


def _mapping(lines: list[str], i: int, indent: int, depth: int,
             view: str | None = None) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    pad = " " * indent
    deeper, item = pad + " ", pad + "- "
    while i < len(lines) and lines[i].startswith(pad) and not lines[i].startswith(deeper) and \
            not lines[i].startswith(item):
        body = lines[i][indent:]
        if body[:1] in ("'", '"'):
            end = _key_end(body)
        else:  # a plain key, as most are: _key_end's first case, inline
            colon = body.find(": ")
            end = colon if colon >= 0 else (len(body) - 1 if body.endswith(":") else None)
        if end is None:
            raise _NotOurs
        key = _scalar(body[:end])
        if not isinstance(key, str) or key in out or body[:end] == "<<":  # a plain << is a merge key
            raise _NotOurs
        value = body[end + 1:]
        i += 1
        if key == view and value.startswith(" "):  # a view on one line: checked, not built
            _scalar(value[1:])
        elif value.startswith(" "):
            out[key] = _scalar(value[1:])
        elif value:
            raise _NotOurs
        elif key == view:  # skip the view, checking it holds nothing to construct
            j = i
            while j < len(lines) and (lines[j].startswith(deeper) or lines[j].startswith(item)):
                j += 1
            block = "\n".join(lines[i:j])
            if _SPECIAL.search(block) and _RISKY_LINES.search(block):
                raise _NotOurs
            i = j
        elif i < len(lines) and lines[i].startswith(pad + "- "):
            out[key], i = _sequence(lines, i, indent, depth + 1)
        elif i < len(lines) and _indent(lines[i]) == indent + 2:
            out[key], i = _mapping(lines, i, indent + 2, depth + 1, _VIEWS.get(key) if depth == 1 else None)
        else:
            raise _NotOurs  # `key:` with nothing under it is null in YAML; the writer never writes it
    return out, i


def _key_end(text: str) -> int | None:
    """Where a `key:` ends (the colon), for a key the writer writes: plain, '...' or "..."."""
    if text.startswith("'"):
        j = 1
        while True:
            j = text.index("'", j)
            if text.startswith("''", j):
                j += 2
                continue
            break
        end = j + 1
    elif text.startswith('"'):
        j = 1
        while text[j] != '"':
            j += 2 if text[j] == "\\" else 1
        end = j + 1
    else:
        colon = text.find(": ")
        end = colon if colon >= 0 else (len(text) - 1 if text.endswith(":") else -1)
        if end < 0:
            return None
    return end if text[end:end + 1] == ":" and (end + 1 == len(text) or text[end + 1] == " ") else None


_KNOWN: dict[str, Any] = {}  # short scalars read before: keys and many values repeat from entry to entry
_UNKNOWN = object()


def forget() -> None:
    """Drop the scalars remembered while reading (call after a load: kept, they would pin the memory
    the load is done with)."""
    _KNOWN.clear()


def _scalar(text: str) -> Any:
    value = _KNOWN.get(text, _UNKNOWN)
    if value is _UNKNOWN:
        value = _read_scalar(text)
        if len(text) <= 100 and not isinstance(value, dict | list):  # immutable values only
            if len(_KNOWN) >= 100_000:
                _KNOWN.clear()
            _KNOWN[text] = value
    return value


def _read_scalar(text: str) -> Any:
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2 or "'" in text[1:-1].replace("''", ""):
            raise _NotOurs
        return text[1:-1].replace("''", "'")
    if text.startswith('"'):
        value = json.loads(text)
        if not isinstance(value, str):
            raise _NotOurs
        return value
    if text in ("null", "true", "false"):
        return None if text == "null" else text == "true"
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        number = float(text)
        if not math.isfinite(number):
            raise _NotOurs
        return number
    if text in (".inf", "-.inf", ".nan"):
        return {".inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}[text]
    if text and _string(text) == text:  # what the writer writes plain is a string to every reader
        return text
    raise _NotOurs
