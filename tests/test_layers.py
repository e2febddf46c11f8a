"""The pure modules decide without aiohttp: importing them must not import it."""

from __future__ import annotations

import subprocess
import sys

PURE = ["formcodec", "gms", "model", "simulator", "config", "redaction", "journal", "accesslog", "yamlsafe",
        "errors", "matching", "replay", "cassette", "record"]


def test_pure_modules_do_not_import_aiohttp() -> None:
    code = ("import sys\n" + "".join(f"import omproxy.{m}\n" for m in PURE) +
            "bad = [m for m in sys.modules if m == 'aiohttp' or m.startswith('aiohttp.')]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
