"""The cassette file format: one YAML file a person can read and edit, appended to one interaction
at a time, loaded with the safe loader only, a torn last entry (killed mid-write) detected and
dropped. Owns entry <-> (Request, Response) conversion and the on-disk layout; not matching.

    version: 1
    interactions:
    - recorded_at: '2026-11-28T10:15:02.114Z'
      duration_ms: 12.4
      request:  {method, path, query, headers, body | body_base64, form}
      response: {status, headers, body | body_base64, content_encoding?, json?}
"""

from __future__ import annotations

import base64
import gc
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from omproxy import formcodec, yamlsafe
from omproxy.errors import CassetteError
from omproxy.model import SESSION_HEADER, Request, Response, headers_of
from omproxy.redaction import Redactor

VERSION = 1
HEADER = f"version: {VERSION}\ninteractions:\n"
_ENTRY_START = re.compile(r"^- ", re.MULTILINE)


@dataclass(frozen=True)
class Recorded:
    """One interaction of a loaded cassette, with where it came from."""

    cassette: str
    index: int  # 0-based position in its cassette
    line: int
    request: Request
    response: Response

    @property
    def where(self) -> str:
        return f"{self.cassette} #{self.index}"


@dataclass(frozen=True)
class Cassette:
    path: str
    interactions: tuple[Recorded, ...]
    dropped: str | None = None  # the torn-tail report, when one was dropped


# ---- entries --------------------------------------------------------------------------------

def _headers(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        key = str(key)  # aiohttp's header names are istr, which YAML cannot represent
        if key in out:
            out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [value]
        else:
            out[key] = value
    return out


def _body(target: dict[str, Any], body: bytes) -> None:
    """Exact text when the bytes are UTF-8 text; otherwise base64 (a documented lossless form)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        target["body_base64"] = base64.b64encode(body).decode("ascii")
        return
    if "\r" in text or any(ord(c) < 0x20 and c not in "\n\t" for c in text):
        target["body_base64"] = base64.b64encode(body).decode("ascii")  # YAML would not keep it exact
    else:
        target["body"] = text


def entry(req: Request, resp: Response, duration_ms: float, redactor: Redactor,
          now: datetime | None = None) -> dict[str, Any]:
    """A cassette entry for an exchange, with secrets masked."""
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    # Content-Length is derived from the body; the session header is omproxy's own.
    dropped = ("content-length", SESSION_HEADER.lower())
    kept = [(k, v) for k, v in req.headers.items() if k.lower() not in dropped]
    request: dict[str, Any] = {"method": req.method, "path": req.path, "query": redactor.query(req.query),
                               "headers": _headers(redactor.headers(kept))}
    _body(request, redactor.form_body(req.body, req.headers.get("Content-Type")))
    if req.form.fields:
        request["form"] = formcodec.bracket_view(redactor.fields(req.form.fields))
    response: dict[str, Any] = {"status": resp.status,
                                "headers": _headers(redactor.headers(resp.headers.items()))}
    if resp.content_encoding:
        response["content_encoding"] = resp.content_encoding
    body = redactor.json_body(resp.body)
    _body(response, body)
    if resp.reply is not None:
        response["json"] = json.loads(body)
    return {"recorded_at": when, "duration_ms": round(duration_ms, 1), "request": request, "response": response}


def dump_entry(data: dict[str, Any]) -> bytes:
    return yamlsafe.dump([data]).encode("utf-8")


def _problem(where: str, message: str) -> CassetteError:
    return CassetteError(f"{where}: {message}")


def _read_body(where: str, part: dict[str, Any]) -> bytes:
    if "body_base64" in part:
        try:
            return base64.b64decode(str(part["body_base64"]), validate=True)
        except ValueError:
            raise _problem(where, "body_base64 is not valid base64") from None
    body = part.get("body", "")
    if not isinstance(body, str):
        raise _problem(where, f"body must be a string (quote it), not {type(body).__name__}")
    return body.encode("utf-8")


def _read_headers(where: str, value: Any) -> Any:
    if value is None:
        return headers_of()
    if not isinstance(value, dict):
        raise _problem(where, "headers must be a mapping of name: value")
    pairs = []
    for k, v in value.items():
        for item in v if isinstance(v, list) else [v]:
            pairs.append((str(k), str(item)))
    return headers_of(pairs)


def to_recorded(data: Any, cassette: str, index: int, line: int) -> Recorded:
    where = f"{cassette}:{line}: interaction #{index}"
    if not isinstance(data, dict):
        raise _problem(where, "expected a mapping with request and response")
    for part in ("request", "response"):
        if not isinstance(data.get(part), dict):
            raise _problem(where, f"missing {part}")
    rq, rs = data["request"], data["response"]
    for key, kind in (("method", str), ("path", str)):
        if not isinstance(rq.get(key), kind):
            raise _problem(where, f"missing request.{key}")
    if not isinstance(rs.get("status"), int) or isinstance(rs.get("status"), bool):
        raise _problem(where, "missing response.status (a number)")
    request = Request(rq["method"].upper(), rq["path"], str(rq.get("query") or ""),
                      _read_headers(where, rq.get("headers")), _read_body(where, rq))
    body = _read_body(where, rs)
    headers = _read_headers(where, rs.get("headers"))
    if "Content-Type" not in headers and ("json" in rs or body.lstrip()[:1] in (b"{", b"[")):
        headers = headers_of([*headers.items(), ("Content-Type", "application/json")])  # hand-written entries
    response = Response(rs["status"], body, headers, "cassette", note=f"{cassette} #{index}")
    return Recorded(cassette, index, line, request, response)


# ---- files ----------------------------------------------------------------------------------

def _entry_lines(text: str) -> list[int]:
    """1-based line of each top-level `- ` entry; cheap, for messages and torn-tail recovery."""
    lines, line, pos = [], 1, 0
    for m in _ENTRY_START.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        lines.append(line)
    return lines


# What to construct of a cassette. The views for people (form, json) are most of its nodes and
# replay matches on the raw body, so they are tag-checked (SKIP) but not built: half the load time.
SKIP = "skip"
_PLAN: Any = {"interactions": [{"request": {"form": SKIP}, "response": {"json": SKIP}}]}


def _parse(text: str, path: str) -> Any:
    loader = yamlsafe.Loader(text)
    try:
        root = loader.get_single_node()
        return None if root is None else _build(loader, root, _PLAN)
    except yaml.constructor.ConstructorError as e:
        line = yamlsafe.error_line(e)
        raise _problem(f"{path}:{line}", f"refused YAML tag ({e.problem}); cassettes hold plain data only "
                       "and nothing in them is ever constructed or executed") from None
    except yaml.YAMLError as e:
        line = yamlsafe.error_line(e)
        raise _problem(f"{path}:{line}" if line else path,
                       f"not valid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()


def _build(loader: Any, node: yaml.Node, plan: Any) -> Any:
    """Construct `node` as the safe loader would, leaving out what `plan` marks SKIP."""
    if isinstance(plan, dict) and isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # hand-written cassettes may use `<<: *anchor` merge keys
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            sub = plan.get(key) if isinstance(key, str) else None
            if sub == SKIP:
                _check_tags(loader, value_node)
            else:
                out[key] = _build(loader, value_node, sub)
        return out
    if isinstance(plan, list) and isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, plan[0]) for item in node.value]
    return loader.construct_object(node, deep=True)


def _check_tags(loader: Any, node: yaml.Node) -> None:
    """Refuse an object-constructing tag even where nothing is constructed."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.tag not in loader.yaml_constructors:
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {n.tag!r}", n.start_mark)
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend(x for pair in n.value for x in pair)


def load(path: Path) -> Cassette:
    """Load and validate a cassette; a torn last entry is dropped and reported in `dropped`."""
    # Building millions of small objects triggers the cyclic GC over and over for nothing (none of
    # them is garbage yet): off during the load, it halves the time of a 100,000-interaction cassette.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(path)
    finally:
        if was_enabled:
            gc.enable()


def _load(path: Path) -> Cassette:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CassetteError(f"{name}: cassette not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CassetteError(f"{name}: cannot read the cassette: {e}") from None
    lines = _entry_lines(text)
    try:
        return Cassette(name, tuple(_records(_parse(text, name), name, lines)))
    except CassetteError as error:
        # A torn tail (killed mid-write) leaves a last entry not ended by a newline (omproxy writes
        # whole lines); everything before it must still be whole, or the file is bad for real.
        torn = lines and not text.endswith("\n")
        if not torn:
            raise
        cut = len("\n".join(text.split("\n")[: lines[-1] - 1])) + 1
        try:
            recorded = _records(_parse(text[:cut], name), name, lines)
        except CassetteError:
            raise error from None
        return Cassette(name, tuple(recorded), f"{name}:{lines[-1]}: dropped a torn last interaction "
                        f"(#{len(recorded)}, cut short while being written)")


def _records(data: Any, name: str, lines: list[int]) -> list[Recorded]:
    entries = _validate_top(data, name)
    return [to_recorded(e, name, i, lines[i] if i < len(lines) else 0) for i, e in enumerate(entries)]


def _validate_top(data: Any, name: str) -> list[Any]:
    if not isinstance(data, dict):
        raise _problem(name, "not a cassette: expected 'version' and 'interactions'")
    if data.get("version") != VERSION:
        raise _problem(name, f"unknown cassette version {data.get('version')!r}; this omproxy reads version "
                       f"{VERSION}")
    entries = data.get("interactions")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _problem(name, "interactions must be a list")
    return entries


def load_all(target: Path) -> list[Cassette]:
    """A cassette file, or every *.yaml / *.yml file directly in a folder, in name order."""
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        return [load(p) for p in files]
    return [load(target)]


def load_spec(spec: str, *, must_exist: bool) -> list[Cassette]:
    """The cassettes named by --cassette: a file, a folder, or a {service} template (its folder)."""
    path = Path(spec).parent if "{service}" in spec else Path(spec)
    if not path.exists():
        if must_exist:
            raise CassetteError(f"{path}: cassette not found")
        return []
    found = load_all(path)
    if must_exist and not found:
        raise CassetteError(f"{path}: no cassettes (*.yaml) in this folder; record some with 'omproxy record', "
                            "or try --cassette cassettes/examples/reference-story.yaml")
    return found


def repair_tail(fd: int, name: str) -> str | None:
    """Before appending: make an open cassette end on a whole entry, as `load` would read it — a last
    entry cut short is cut off; one that is whole but for its final newline gets the newline."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    tail_len = min(size, 1 << 20)
    tail = os.pread(fd, tail_len, size - tail_len)
    starts = [m.start() for m in re.finditer(rb"^- ", tail, re.MULTILINE)]
    if not starts:
        os.write(fd, b"\n")
        return None
    try:
        (entry,) = yamlsafe.load(tail[starts[-1]:])
        to_recorded(entry, name, 0, 0)
    except (yaml.YAMLError, CassetteError, TypeError, ValueError):
        keep = size - tail_len + starts[-1]
        os.ftruncate(fd, keep)
        return f"{name}: cut a torn last interaction off before appending ({size - keep} bytes)"
    os.write(fd, b"\n")
    return None
