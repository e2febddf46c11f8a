"""The one YAML reader of omproxy: PyYAML's SafeLoader (nothing in a file is ever constructed into
an object or executed), with YAML 1.2 booleans so `on:`, `yes`, `no`, `off` stay strings."""

from __future__ import annotations

import re
from typing import Any

import yaml

BOOL_TAG = "tag:yaml.org,2002:bool"


# libyaml's parser when PyYAML was built with it (10x faster on big cassettes); the constructor is
# SafeConstructor either way.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class Loader(_Base):  # type: ignore[misc]
    pass


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load(text: str | bytes) -> Any:
    return yaml.load(text, Loader=Loader)  # noqa: S506 — Loader is a SafeLoader


def dump(data: Any) -> str:
    """Block style, keys in insertion order, unicode kept; strings that would load as another type
    (`'00012'`, `'true'`, `'on'`) are quoted by the safe dumper."""
    return yaml.dump(data, Dumper=Dumper, default_flow_style=False, sort_keys=False, allow_unicode=True,
                     width=100_000)


def error_line(error: yaml.YAMLError) -> int | None:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return mark.line + 1 if mark is not None else None
