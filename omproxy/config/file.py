"""Reading config.yaml (the safe loader, YAML 1.2 booleans) and applying command-line overrides on
top: defaults < file < flags, resolved once."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from omproxy import yamlsafe
from omproxy.config.options import Config, from_mapping
from omproxy.errors import ConfigError


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the config file (when given) and apply command-line overrides (None values skipped), each
    checked by its option's rule."""
    config = Config()
    if path is not None:
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the config file: {getattr(e, 'strerror', None) or e}") from None
        try:
            data = yamlsafe.load(raw)
        except yaml.YAMLError as e:
            line = yamlsafe.error_line(e)
            where = f"{path}:{line}" if line else str(path)
            raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
        config = from_mapping(data if data is not None else {}, str(path), path.parent)
    known = {f.name for f in fields(Config)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None and k in known}
    return replace(config, **given)
