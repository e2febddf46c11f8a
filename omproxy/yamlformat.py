"""How a cassette is encoded: YAML, one entry appended at a time. Reading builds only what replay
uses (the `form` and `json` views for people are tag-checked, not constructed: half the load time),
refuses every object-constructing tag, and refuses alias bombs before anything is expanded.
Siblings for other formats (VCR.py, HAR) convert to and from the same entry shape (`cassette`)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from omproxy import yamlsafe
from omproxy.cassette import VERSION
from omproxy.errors import CassetteError

HEADER = f"version: {VERSION}\ninteractions:\n"
ENTRY_START = re.compile(rb"^- ", re.MULTILINE)
# A cassette needs no aliases but a few hand-written merge keys: nodes as expanded, at most this many
# beyond the nodes written (a 550-byte "billion laughs" file would otherwise expand to gigabytes).
MAX_ALIAS_EXPANSION = 100_000


def dump_entry(entry: dict[str, Any]) -> bytes:
    return yamlsafe.dump([entry]).encode("utf-8")


def dump(document: dict[str, Any]) -> bytes:
    head = {k: v for k, v in document.items() if k != "interactions"}
    entries = document.get("interactions") or []
    text = yamlsafe.dump(head) + ("interactions:\n" if entries else "interactions: []\n")
    return text.encode("utf-8") + b"".join(dump_entry(e) for e in entries)


def entry_lines(data: bytes) -> list[int]:
    """1-based line of each top-level `- ` entry; cheap, for messages and torn-tail recovery."""
    lines, line, pos = [], 1, 0
    for m in ENTRY_START.finditer(data):
        line += data.count(b"\n", pos, m.start())
        pos = m.start()
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
