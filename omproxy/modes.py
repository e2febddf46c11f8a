"""The cassette-backed chains: record, replay and auto. Each line of `assemble` is one mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omproxy.config import Mode
from omproxy.record import CassetteWriter, Recorder
from omproxy.simulator import Simulator

if TYPE_CHECKING:
    from omproxy.app import Runtime
    from omproxy.proxy import Forwarder


def assemble(rt: Runtime, simulator: Simulator | None) -> Forwarder | None:
    """Fill `rt.responders` for the mode; returns the Forwarder to start and close, if any."""
    from omproxy.app import Counting, upstream_of

    upstream, forwarder = upstream_of(rt.config, simulator)
    if rt.mode is Mode.RECORD:
        writer = CassetteWriter(rt.config.cassette)
        rt.admin["closers"] = [writer.drain]
        rt.responders = [Recorder(Counting(upstream, rt.journal, "forwarded"), writer, rt.redactor, rt.journal)]
        return forwarder
    raise NotImplementedError(rt.mode)
