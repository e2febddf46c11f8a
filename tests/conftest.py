from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

from omproxy.gms.simulator import Simulator
from tests.support import FakeGms, deterministic_simulator

pytest_plugins = ["pytester"]

# No per-example deadline (a loaded CI machine is slow, not wrong); in CI, the same examples every
# run, so a red build is always reproducible — exploration happens on developers' machines.
settings.register_profile("omproxy", deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("omproxy")


@pytest.fixture
def make_simulator() -> Callable[..., Simulator]:
    return deterministic_simulator


@pytest.fixture
async def gms(aiohttp_server: Any) -> FakeGms:
    """A fake GMS (a real aiohttp app) on a real socket; its base URL in `.url`."""
    fake = FakeGms()
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port nothing listens on, held for the test: bound but not listening, so connecting is
    refused and no other process can take it meanwhile (unlike a port found free and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(autouse=True)
def omproxy_logging_restored() -> Iterator[None]:
    """The command line's `main` configures the "omproxy" logger for its process (a handler on the
    stderr of the moment); a test that calls it in process must not leave that to the tests after it."""
    import logging

    logger = logging.getLogger("omproxy")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
