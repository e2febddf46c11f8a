"""omproxy uses aiohttp's documented API only: every name the package takes from aiohttp is on an
allow-list of what aiohttp's reference documents (and exports in `__all__`), and no private
attribute of anything is touched where aiohttp is imported. A private name breaks on the next
aiohttp release, whatever pyproject.toml declares (3.13.5 and 3.9.5 broke the own front that way)."""

from __future__ import annotations

import ast
from pathlib import Path

import aiohttp
from aiohttp import web

PACKAGE = Path(__file__).resolve().parent.parent.parent / "omproxy"
ALLOWED = {
    "aiohttp": {"web", "ClientSession", "TCPConnector", "DummyCookieJar", "ClientTimeout", "ClientError",
                "ServerTimeoutError", "ClientConnectorCertificateError", "ClientSSLError", "ClientConnectorError",
                "InvalidURL"},
    "aiohttp.web": {"Server", "BaseRequest", "Request", "StreamResponse", "Response", "Application", "middleware",
                    "AppKey", "AppRunner", "TCPSite"},
}


DOCUMENTED_UNDERSCORE = {"os._exit"}  # the standard library's, documented


def uses(tree: ast.AST) -> tuple[set[tuple[str, str]], set[str]]:
    """What a module takes from aiohttp, as (module, name), and the private attributes it reads."""
    taken: set[tuple[str, str]] = set()
    aliases: dict[str, str] = {}  # a local name -> the aiohttp module it is
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "aiohttp":
                    taken.add(("import", alias.name))
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "aiohttp":
            for alias in node.names:
                taken.add((node.module or "", alias.name))
                if alias.name == "web":
                    aliases[alias.asname or "web"] = "aiohttp.web"
    private: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                taken.add((aliases[node.value.id], node.attr))
            elif node.attr.startswith("_") and not node.attr.startswith("__") and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                private.add(ast.unparse(node))
    private -= DOCUMENTED_UNDERSCORE
    return taken, private


def test_every_name_taken_from_aiohttp_is_documented_api() -> None:
    seen = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        taken, private = uses(ast.parse(path.read_text(), str(path)))
        for module, name in taken:
            if module == "import":
                assert name == "aiohttp", f"{path.name}: import {name}"
                continue
            assert name in ALLOWED.get(module, set()), f"{path.name}: {module}.{name} is not on the allow-list"
            seen.add((module, name))
        if taken:
            assert not private, f"{path.name} touches private attributes: {sorted(private)}"
    assert seen  # the scan found what omproxy uses


def test_the_allow_list_is_aiohttps_public_exports() -> None:
    for name in ALLOWED["aiohttp"] - {"web"}:  # web is the module of the web reference
        assert name in aiohttp.__all__, name
    for name in ALLOWED["aiohttp.web"]:
        assert name in web.__all__, name


def test_the_scan_finds_a_private_name() -> None:  # the rule above can fail
    taken, private = uses(ast.parse("from aiohttp.http_parser import HttpRequestParser\nfrom aiohttp import web\n"
                                    "web._internal\nproto._parser = None\n"))
    assert ("aiohttp.http_parser", "HttpRequestParser") in taken and ("aiohttp.web", "_internal") in taken
    assert "proto._parser" in private
