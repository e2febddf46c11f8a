"""The module map holds: the deciding modules never import aiohttp, and dependencies point one way."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = ["formcodec", "gms", "model", "state", "exchange", "pipeline", "admin", "simulator", "config", "redaction",
        "journal", "accesslog", "yamlsafe", "errors", "matching", "replay", "cassette", "yamlformat", "storage",
        "record", "compare", "verify", "reports", "lint", "listing", "indexcache", "interchange", "metrics",
        "redisstate", "supervisor", "inspector", "quickyaml"]


def imported_by(module: str) -> set[str]:
    code = f"import sys\nimport omproxy.{module}\nprint(','.join(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.strip().split(","))


def test_pure_modules_do_not_import_aiohttp() -> None:
    code = ("import sys\n" + "".join(f"import omproxy.{m}\n" for m in PURE) +
            "bad = [m for m in sys.modules if m == 'aiohttp' or m.startswith('aiohttp.')]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("module,forbidden", [
    ("matching", {"yaml", "omproxy.simulator", "omproxy.cassette", "omproxy.storage"}),
    ("replay", {"yaml", "omproxy.storage", "omproxy.yamlformat"}),
    ("config", {"omproxy.simulator"}),
    ("redaction", {"omproxy.simulator"}),
    ("cassette", {"yaml", "omproxy.redaction"}),
    ("cli", {"aiohttp"}),  # --help and decode stay quick: the server side is imported only to serve
    ("verify", {"aiohttp"}),
    ("lint", {"aiohttp"}),
])
def test_dependencies_point_one_way(module: str, forbidden: set[str]) -> None:
    assert imported_by(module) & forbidden == set()
