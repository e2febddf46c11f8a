"""omproxy: a recording/replay reverse proxy for Genesys Mobile Services Open Media traffic.

The public Python API, for a conftest.py or a script (docs/python-api.md):

    from omproxy import Config, Mode, load_config, build_runtime, start, build_app, load_cassette

Each name is imported when first used, so `import omproxy` (and the command line's `--help`) does not
import the server side."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute): what `from omproxy import NAME` gives
_PUBLIC = {
    "Config": ("omproxy.config.options", "Config"),
    "Mode": ("omproxy.config.options", "Mode"),
    "Fallback": ("omproxy.config.options", "Fallback"),
    "Repeat": ("omproxy.config.options", "Repeat"),
    "load_config": ("omproxy.config.file", "load"),
    "Request": ("omproxy.model", "Request"),
    "Response": ("omproxy.model", "Response"),
    "Recorded": ("omproxy.model", "Recorded"),
    "load_cassette": ("omproxy.cassette.storage", "load"),
    "build_runtime": ("omproxy.serve.runtime", "build_runtime"),
    "start": ("omproxy.serve.http.front", "start"),
    "build_app": ("omproxy.serve.http.front", "build_app"),
    "OmproxyError": ("omproxy.errors", "OmproxyError"),
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'omproxy' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
