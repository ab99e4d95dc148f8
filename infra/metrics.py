"""Prometheus metrics (prometheus-client), served by ``GET /metrics`` (api/routes/metrics.py).

Two kinds, because ``dancu up`` is two processes (the public API, and the store's owner
on ``store_port`` running the Faust worker, ClickHouse and analytics):

- **Kept in this process** (:data:`REGISTRY`): scans accepted, gate decision latency,
  HTTP requests, alerts sent, plus the process's CPU, memory and GC. Each process serves
  its own; the public API's are the ones devices and officials cause. Several API
  processes (uvicorn ``--workers``, gunicorn) would each count apart: scrape each one, or
  switch prometheus-client to its multiprocess mode; nothing here adds processes up.
- **Read at scrape time from the shared stores** (:func:`store_families`): scans processed
  by the worker (Redis), the worker group's consumer lag and the dead letters written
  (Kafka offsets). These are the same whichever process is scraped, so the worker's
  figures are at the public port although the worker runs elsewhere, and they survive
  restarts.

Label values are bounded: a route's declared template (never the raw path, which holds
person IDs), a known method, a status code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import wraps
from time import perf_counter
from typing import Protocol, TypeVar

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infra import topics

REGISTRY = CollectorRegistry()
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

SCANS_ACCEPTED = Counter(
    "dancu_scans_accepted",
    "Scans accepted by POST /v1/scans and durable in Kafka (rate() gives scans/s)",
    registry=REGISTRY,
)

# A gate answer is a Redis round trip or two: buckets from half a millisecond.
_GATE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GATE_DECISION_SECONDS = Histogram(
    "dancu_gate_decision_seconds",
    "Time to decide a gate check (registry read, audit entry, rules), by decision",
    ["decision"],
    buckets=_GATE_BUCKETS,
    registry=REGISTRY,
)
_GATE_ALLOW = GATE_DECISION_SECONDS.labels("allow")
_GATE_DENY = GATE_DECISION_SECONDS.labels("deny")

HTTP_REQUESTS = Counter(
    "dancu_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "dancu_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template",
    ["method", "route"],
    registry=REGISTRY,
)

ALERTS_SENT = Counter(
    "dancu_alerts_sent",
    "Exposure alerts delivered to officials, by channel (sse, webhook)",
    ["channel"],
    registry=REGISTRY,
)
"""Increment where an alert reaches its receiver: ``ALERTS_SENT.labels("webhook").inc()``
once a webhook acknowledged, ``ALERTS_SENT.labels("sse").inc()`` once an event is written
to a stream. Counted in the process that sends."""
for _channel in ("sse", "webhook"):
    ALERTS_SENT.labels(_channel)  # shown as 0 before the first alert

# The topics the worker's consumer group (Settings.app_id) reads: see streams/app.py.
WORKER_TOPICS = (topics.SCANS, topics.HEALTH_RECORDS, topics.F0_REPORTS, topics.EXPOSURES)
SINK_TOPICS = (topics.STORE_ROWS, topics.EXPOSURES, topics.REPORT_STATUS)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Decided(Protocol):
    @property
    def decision(self) -> str: ...


D = TypeVar("D", bound=_Decided)


def timed_gate(decide: Callable[..., Awaitable[D]]) -> Callable[..., Awaitable[D]]:
    """Time a gate decision into :data:`GATE_DECISION_SECONDS` (refusals, which raise, are
    left to the HTTP metrics by status). One histogram observe: no allocation per call."""

    @wraps(decide)
    async def timed(*args: object, **kwargs: object) -> D:
        started = perf_counter()
        result = await decide(*args, **kwargs)
        (_GATE_ALLOW if result.decision == "allow" else _GATE_DENY).observe(
            perf_counter() - started
        )
        return result

    return timed


_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request; label children are cached (bounded: routes × methods ×
    statuses), so a request costs two dict lookups and two increments."""
    key = (method, route, status)
    found = _children.get(key)
    if found is None:
        m = method if method in _METHODS else "other"
        found = (HTTP_REQUESTS.labels(m, route, str(status)), HTTP_SECONDS.labels(m, route))
        _children[key] = found
    found[0].inc()
    found[1].observe(seconds)


class LagSource(Protocol):
    async def lag(self, logical_topic: str = ..., group: str | None = ...) -> int: ...

    async def produced(self, logical_topic: str) -> int: ...


class ProcessedSource(Protocol):
    async def processed(self) -> int: ...


async def store_families(
    lag: LagSource, index: ProcessedSource, timeout: float = 3.0, sink_group: str = "dancu-sink"
) -> list[Metric]:
    """The figures that live in Kafka and Redis, read now. A store that does not answer
    within ``timeout`` leaves its figures out and shows ``dancu_metrics_source_up 0``:
    a scrape never fails because a store is away."""
    up = GaugeMetricFamily(
        "dancu_metrics_source_up",
        "1 when the store answered this scrape (its figures below are current)",
        labels=["source"],
    )
    families: list[Metric] = [up]

    async def from_redis() -> list[Metric]:
        processed = CounterMetricFamily(
            "dancu_scans_processed",
            "Scans recorded by the worker (all worker processes, from Redis)",
            value=await index.processed(),
        )
        return [processed]

    async def from_kafka() -> list[Metric]:
        lags = GaugeMetricFamily(
            "dancu_consumer_lag",
            "Records not yet processed by the workers' (group=worker) or the ClickHouse "
            "sink's (group=sink) consumer group, by topic",
            labels=["topic", "group"],
        )
        for name in WORKER_TOPICS:
            lags.add_metric([name, "worker"], await lag.lag(name))
        for name in SINK_TOPICS:
            lags.add_metric([name, "sink"], await lag.lag(name, sink_group))
        dead = CounterMetricFamily(
            "dancu_dead_letters",
            "Records sent to the dead-letter topic (all processes; from Kafka's offsets)",
            value=await lag.produced(topics.DEAD_LETTERS),
        )
        return [lags, dead]

    for source, read in (("redis", from_redis), ("kafka", from_kafka)):
        try:
            families.extend(await asyncio.wait_for(read(), timeout))
            up.add_metric([source], 1)
        except Exception:  # away or slow: said by the gauge, never a failed scrape
            up.add_metric([source], 0)
    return families


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:  # type: ignore[override]  # a list is an iterable
        return self.families


def render(extra: list[Metric]) -> bytes:
    """This process's metrics and ``extra`` (see :func:`store_families`) in the Prometheus
    text format 0.0.4."""
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(extra))
    return generate_latest(REGISTRY) + generate_latest(snapshot)
