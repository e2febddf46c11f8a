"""Prometheus metrics, an observer of every exchange, served at `GET /_omproxy/metrics` when the
optional `prometheus-client` package is installed (`pip install 'omproxy[metrics]'`). Each omproxy has
its own registry. Label values are bounded: operations and sources are fixed sets, statuses are HTTP
statuses, and services beyond the first MAX_SERVICES seen collapse into `other`, so a scan of random
paths cannot grow memory."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from omproxy.exchange import Exchange, Outcome
from omproxy.gms.vocabulary import OPERATIONS

MAX_SERVICES = 50
OTHER = "other"

prometheus_client: Any
CounterMetricFamily: Any
HistogramMetricFamily: Any
try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
except ImportError:  # the optional extra is not installed
    prometheus_client = CounterMetricFamily = HistogramMetricFamily = None

BUCKETS = (.005, .01, .025, .05, .075, .1, .25, .5, .75, 1.0, 2.5, 5.0, 7.5, 10.0)  # prometheus-client's own


class Metrics:
    def __init__(self, mode: str) -> None:
        assert prometheus_client is not None
        p = prometheus_client
        self.mode = mode
        self.registry = p.CollectorRegistry()
        # Requests are counted in a plain dict (a replayed request costs one dict update, not a
        # Counter's lock) and read by the registry when scraped, as a custom collector.
        self.requests: Counter[tuple[str, str, str, str]] = Counter()
        self.registry.register(RequestCounts(self))
        self.misses = p.Counter("omproxy_replay_misses", "Requests no recording matched (answered by the simulator "
                                "or a 404)", ["service"], registry=self.registry)
        self.findings = p.Counter("omproxy_encoding_findings", "Encoding findings on requests, by kind", ["kind"],
                                  registry=self.registry)
        self.upstream = Timings("omproxy_upstream_seconds", "Time to the upstream GMS's answer")
        self.appends = Timings("omproxy_cassette_append_seconds", "Time to append one exchange to its cassette "
                               "(written and fsync'd)")
        self.registry.register(TimingsCollector([self.upstream, self.appends]))
        self.faults = p.Counter("omproxy_faults", "Requests a fault rule fired on (answered instead, or delayed), "
                                "by rule (rules added for one session: 'session')", ["rule"], registry=self.registry)
        self.written = p.Counter("omproxy_cassette_written_bytes", "Bytes appended to cassettes",
                                 registry=self.registry)
        self.services: set[str] = set()

    def service(self, name: str | None) -> str:
        if not name:
            return OTHER
        if name in self.services:
            return name
        if len(self.services) < MAX_SERVICES:
            self.services.add(name)
            return name
        return OTHER

    def key(self, ex: Exchange) -> tuple[str, str, str, str]:
        req, resp = ex.request, ex.response
        op = req.operation
        operation = op.kind if op is not None and op.kind in OPERATIONS else OTHER
        service = self.service(op.service if op is not None else req.service)
        status = str(resp.status) if resp is not None else "0"
        source = resp.source.value if resp is not None else "omproxy"
        return source, operation, service, status

    def __call__(self, ex: Exchange) -> None:
        key = self.key(ex)
        self.requests[key] += 1
        req = ex.request
        if req.findings:
            for finding in req.findings:
                self.findings.labels(finding.kind).inc()
        if ex.miss is not None and not ex.owned:
            self.misses.labels(key[2]).inc()
        if ex.outcome is Outcome.FORWARDED and ex.upstream_ms is not None:
            self.upstream.observe(ex.upstream_ms / 1000)
        if ex.fault is not None:
            self.faults.labels("session" if ex.fault.startswith("session ") else ex.fault).inc()
        if ex.append_ms is not None:
            self.appends.observe(ex.append_ms / 1000)
            self.written.inc(ex.appended_bytes)

    def exposition(self) -> tuple[bytes, str]:
        assert prometheus_client is not None
        return prometheus_client.generate_latest(self.registry), str(prometheus_client.CONTENT_TYPE_LATEST)


class RequestCounts:
    """The `omproxy_requests` counter family, read from `Metrics.requests` when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        assert prometheus_client is not None
        family = CounterMetricFamily(
            "omproxy_requests", "Requests answered, by mode, source, operation, service and HTTP status",
            labels=["mode", "source", "operation", "service", "status"])
        for labels, count in list(self.metrics.requests.items()):
            family.add_metric([self.metrics.mode, *labels], count)
        yield family


class Timings:
    """A histogram of durations as plain counts (an observation: a bisection and two additions, no
    lock: omproxy observes on its event loop), read when scraped by `TimingsCollector`."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: above every bucket (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        self.sum += seconds

    def family(self) -> Any:
        bounds = [*(prometheus_client.utils.floatToGoString(b) for b in BUCKETS), "+Inf"]
        return HistogramMetricFamily(self.name, self.documentation, sum_value=self.sum,
                                     buckets=list(zip(bounds, accumulate(self.counts), strict=True)))


class TimingsCollector:
    """Histograms kept as `Timings`, for the registry."""

    def __init__(self, timings: list[Timings]) -> None:
        self.timings = timings

    def collect(self) -> Iterator[Any]:
        for timing in self.timings:
            yield timing.family()


def make(mode: str) -> Any:
    """The metrics observer, or None when prometheus-client is not installed."""
    return Metrics(mode) if prometheus_client is not None else None
