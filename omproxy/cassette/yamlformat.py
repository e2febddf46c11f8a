"""How a cassette is encoded: YAML, one entry appended at a time. Reading builds only what replay
uses (the `form` and `json` views for people are tag-checked, not constructed: half the load time),
refuses every object-constructing tag, and refuses alias bombs before anything is expanded.
Siblings for other formats (VCR.py, HAR) convert to and from the same entry shape (`cassette`)."""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

import yaml

from omproxy import yamlsafe
from omproxy.cassette.entry import VERSION
from omproxy.errors import CassetteError

HEADER = f"version: {VERSION}\ninteractions:\n"
_HEADER = HEADER.encode()
# A cassette needs no aliases but a few hand-written merge keys: nodes as expanded, at most this many
# beyond the nodes written (a 550-byte "billion laughs" file would otherwise expand to gigabytes).
MAX_ALIAS_EXPANSION = 100_000


def dump_entry(entry: dict[str, Any]) -> bytes:
    """One entry as a block-style YAML list item: what `yamlsafe.dump([entry])` writes, ten times faster
    (PyYAML's representer is pure Python). Strings are plain where every YAML 1.1 reader reads them back
    as the same string, else double-quoted with escapes; `tests/test_cassette.py` holds the round trip."""
    try:
        return ("\n".join(_item(entry, 0)) + "\n").encode("utf-8")
    except RecursionError:  # a JSON view nested past Python's stack: the safe dumper says what it can
        return yamlsafe.dump([entry]).encode("utf-8")


def _item(value: Any, indent: int) -> list[str]:
    """`value` as one item of a block sequence at `indent`."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = _mapping(value, indent + 2)
        return [pad + "- " + lines[0][indent + 2:], *lines[1:]]
    if isinstance(value, list) and value:
        lines = [line for item in value for line in _item(item, indent + 2)]
        return [pad + "- " + lines[0][indent + 2:], *lines[1:]]
    return [pad + "- " + _scalar(value)]


def _mapping(value: dict[Any, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, item in value.items():
        head = pad + (_string(key) if type(key) is str else _scalar(key)) + ":"
        if type(item) is str:  # most values: first, and without the general dispatch
            lines.append(f"{head} {_string(item)}")
        elif isinstance(item, dict) and item:
            lines.append(head)
            lines += _mapping(item, indent + 2)
        elif isinstance(item, list) and item:
            lines.append(head)
            for element in item:  # block sequences under a key sit at the key's indent, as PyYAML writes them
                lines += _item(element, indent)
        else:
            lines.append(f"{head} {_scalar(item)}")
    return lines


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ".nan" if value != value else ".inf" if value > 0 else "-.inf"
        text = repr(value)  # YAML 1.1 reads 1e-05 as a string: a float needs its dot (1.0e-05)
        return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    return _string(str(value))


# Plain only when it is plainly a string: no indicator first, no `: ` or ` #`, no edge spaces, and no
# implicit resolver of YAML 1.1 (PyYAML's safe loader: yes/on/0x1F/1e3/~/2026-11-28...) claims it.
_PLAIN = re.compile(r"[A-Za-z0-9_/.(][A-Za-z0-9 _./()+=%;~@$^<>*'\"-:]*")
_RESOLVERS = yaml.SafeLoader.yaml_implicit_resolvers
# What a YAML stream may not hold raw, or what double quotes would fold: escaped.
_CONTROL = re.compile("[\x00-\x1f]")
_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


@lru_cache(maxsize=16384)
def _string(text: str) -> str:
    if (_PLAIN.fullmatch(text) and not text.endswith((" ", ":")) and ": " not in text and " #" not in text
            and not any(rx.match(text) for _, rx in _RESOLVERS.get(text[0], ()))):
        return text
    if not _CONTROL.search(text) and not _ESCAPE.search(text):
        return "'" + text.replace("'", "''") + "'"  # single quotes: a JSON body stays readable
    return _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


def dump(document: dict[str, Any]) -> bytes:
    head = {k: v for k, v in document.items() if k != "interactions"}
    entries = document.get("interactions") or []
    text = yamlsafe.dump(head) + ("interactions:\n" if entries else "interactions: []\n")
    return text.encode("utf-8") + b"".join(dump_entry(e) for e in entries)


_NEWLINE_ENTRY = re.compile(rb"\n- ")  # a literal search: six times faster than `^- ` in MULTILINE mode


HEAD_ROOM = 4096  # bytes a file's start is read for its header (provenance comments included)


def header_length(raw: bytes) -> int | None:
    """Where a file omproxy wrote has its first entry: past its comment lines (the provenance a recorder
    writes first: readers ignore it) and HEADER. None: not a file in omproxy's layout."""
    pos = 0
    while raw.startswith(b"#", pos):
        end = raw.find(b"\n", pos)
        if end < 0:
            return None
        pos = end + 1
    return pos + len(_HEADER) if raw.startswith(_HEADER, pos) else None


def comments(raw: bytes) -> bytes:
    """The comment lines a file starts with (a recorder's provenance), to keep when it is written anew."""
    pos = 0
    while raw.startswith(b"#", pos) and (end := raw.find(b"\n", pos)) >= 0:
        pos = end + 1
    return raw[:pos]


def entry_starts(data: bytes) -> list[int]:
    """Where each top-level `- ` entry starts: at the start of the data or of a line."""
    first = [0] if data.startswith(b"- ") else []
    return first + [m.start() + 1 for m in _NEWLINE_ENTRY.finditer(data)]


def entry_lines(data: bytes, starts: list[int] | None = None) -> list[int]:
    """1-based line of each top-level `- ` entry; cheap, for messages and torn-tail recovery."""
    lines, line, pos = [], 1, 0
    for start in entry_starts(data) if starts is None else starts:
        line += data.count(b"\n", pos, start)
        pos = start
        lines.append(line)
    return lines


SKIP = "skip"
_PLAN: Any = {"interactions": [{"request": {"form": SKIP, "headers": {}},
                                 "response": {"json": SKIP, "headers": {}}}]}


class _Refused(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.line, self.message = node.start_mark.line + 1, message


def parse(text: str, name: str) -> Any:
    """The cassette document, as the safe loader would build it, minus the views for people."""
    return _parse(text, name, _PLAN)


def parse_entries(text: str, name: str) -> list[Any]:
    """A run of whole top-level entries (`- ...` lines at column 0, as omproxy writes them): a part of
    a cassette parsed on its own, so that a big capture never has its whole node graph in memory."""
    entries = _parse(text, name, _PLAN["interactions"])
    if not isinstance(entries, list):
        raise CassetteError(f"{name}: not a run of entries")
    return entries


def _parse(text: str, name: str, plan: Any) -> Any:
    loader = yamlsafe.Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expansion(root)
        return _build(loader, root, plan)
    except _Refused as e:
        raise CassetteError(f"{name}:{e.line}: {e.message}") from None
    except yaml.constructor.ConstructorError as e:
        raise CassetteError(f"{name}:{yamlsafe.error_line(e)}: refused YAML tag ({e.problem}); cassettes hold "
                            "plain data only and nothing in them is ever constructed or executed") from None
    except yaml.YAMLError as e:
        line = yamlsafe.error_line(e)
        where = f"{name}:{line}" if line else name
        raise CassetteError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes as construction would expand them (aliases are shared node objects), without
    expanding anything; refuse past the cap, and refuse a node that contains itself."""
    size: dict[int, int] = {}
    unique = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            size[key] = total
            if total > unique + MAX_ALIAS_EXPANSION:
                raise _Refused(node, f"aliases expand to more than {MAX_ALIAS_EXPANSION:,} nodes; refused "
                               "(a cassette needs at most a few merge keys)")
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Refused(node, "an alias refers to a node that contains it; refused")
        unique += 1
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def _build(loader: Any, node: yaml.Node, plan: Any) -> Any:
    """Construct `node` as the safe loader would, leaving out what `plan` marks SKIP."""
    if isinstance(plan, dict) and isinstance(node, yaml.MappingNode):
        own: set[str] = set()  # a key given twice is a mistake; one a merge key (`<<:`) brings is not
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in own:
                    raise _Refused(key_node, f"the key '{key_node.value}' is given twice")
                own.add(key_node.value)
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
        stack.extend(_children(n))
