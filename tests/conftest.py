from __future__ import annotations

import pytest

from tests.support import deterministic_simulator


@pytest.fixture
def make_simulator():
    return deterministic_simulator
