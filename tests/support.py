"""Shared constants and helpers of the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

from omproxy.simulator import Simulator

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BASE = "/genesys/2/openmedia"


def fixed_clock() -> datetime:
    return datetime(2026, 11, 28, 10, 15, 2, tzinfo=timezone.utc)


def deterministic_simulator(sections=None, prefix: str = "01QG0Q2S5S50G") -> Simulator:
    n = itertools.count(0)
    return Simulator(sections, clock=fixed_clock, new_id=lambda: f"{prefix}{next(n):03d}")
