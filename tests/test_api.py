"""The public Python API: every name in `omproxy.__all__` is there and is what its module defines,
and importing omproxy (or its command line) imports no server side."""

from __future__ import annotations

import subprocess
import sys

import omproxy


def test_every_public_name_resolves() -> None:
    for name in omproxy.__all__:
        assert getattr(omproxy, name) is not None, name
    from omproxy.config.options import Config
    from omproxy.serve.http.front import build_app, start

    assert omproxy.Config is Config and omproxy.build_app is build_app and omproxy.start is start


def test_importing_omproxy_or_its_command_line_imports_no_aiohttp() -> None:
    code = "import sys, omproxy, omproxy.cli\nprint(any(m.split('.')[0] == 'aiohttp' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


async def test_a_script_serves_a_cassette_with_the_public_api() -> None:
    import aiohttp

    from tests.test_pytest_plugin import STORY

    config = omproxy.Config(port=0, cassette=str(STORY), fallback="none")
    listener = await omproxy.start(omproxy.build_runtime(config, omproxy.Mode.REPLAY), config)
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{listener.port}/genesys/2/openmedia/customer-support/01QG0Q2S5S50G000/get") as r:
            assert r.headers["X-Omproxy-Source"] == "cassette"
    finally:
        await listener.close()
    assert len(omproxy.load_cassette(STORY).interactions) == 6
