"""Every Prometheus metric of the controller, on one registry.

Names follow client-go (work queue, REST client) and controller-runtime (reconcile) so existing
dashboards work; our own metrics carry the `stormservice_` prefix. Register new metrics on
`REGISTRY` (not prometheus_client's global default registry) so tests and /metrics see one set.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sized

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    # The default collectors are singletons registered on the global registry; registering the
    # same objects here too exposes process_* / python_* on our /metrics.
    REGISTRY.register(_collector)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render_latest() -> bytes:
    """The /metrics body (Prometheus text format)."""
    return generate_latest(REGISTRY)


# --- work queue (client-go util/workqueue/metrics.go names) -----------------------------------
_WQ_BUCKETS = tuple(
    10.0**e for e in range(-8, 2)
)  # 10ns .. 10s, client-go's ExponentialBuckets(1e-8, 10, 10)

WORKQUEUE_DEPTH = Gauge("workqueue_depth", "Current depth of workqueue", ["name"], registry=REGISTRY)
WORKQUEUE_ADDS = Counter(
    "workqueue_adds_total", "Total number of adds handled by workqueue", ["name"], registry=REGISTRY
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested",
    ["name"],
    buckets=_WQ_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes",
    ["name"],
    buckets=_WQ_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_UNFINISHED_WORK = Gauge(
    "workqueue_unfinished_work_seconds",
    "How many seconds of work has been done that is in progress and hasn't been observed by "
    "work_duration. Large values indicate stuck threads.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_LONGEST_RUNNING = Gauge(
    "workqueue_longest_running_processor_seconds",
    "How many seconds has the longest running processor for workqueue been running.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries_total", "Total number of retries handled by workqueue", ["name"], registry=REGISTRY
)

# --- REST client (client-go tools/metrics names) ----------------------------------------------
REST_CLIENT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
REST_CLIENT_REQUESTS = Counter(
    "rest_client_requests_total",
    "Number of HTTP requests, partitioned by status code, method, and host.",
    ["code", "method", "host"],
    registry=REGISTRY,
)
REST_CLIENT_REQUEST_DURATION = Histogram(
    "rest_client_request_duration_seconds",
    "Request latency in seconds. Broken down by verb and host.",
    ["verb", "host"],
    buckets=REST_CLIENT_BUCKETS,
    registry=REGISTRY,
)
REST_CLIENT_RATE_LIMITER_DURATION = Histogram(
    "rest_client_rate_limiter_duration_seconds",
    "Client side rate limiter latency in seconds. Broken down by verb and host.",
    ["verb", "host"],
    buckets=REST_CLIENT_BUCKETS,
    registry=REGISTRY,
)
REST_CLIENT_REQUEST_RETRIES = Counter(
    "rest_client_request_retries_total",
    "Number of request retries, partitioned by status code, verb, and host.",
    ["code", "verb", "host"],
    registry=REGISTRY,
)
API_WRITES = Counter(
    "stormservice_api_writes_total",
    "Write requests sent to the API server, by verb (create, update, patch, delete) and resource "
    "(plural, or plural/subresource).",
    ["verb", "resource"],
    registry=REGISTRY,
)

# --- reconcile loop (controller-runtime names) ------------------------------------------------
RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")
RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller",
    ["controller", "result"],  # result: one of RECONCILE_RESULTS
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=(
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.15,
        0.2,
        0.25,
        0.3,
        0.35,
        0.4,
        0.45,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
        1.25,
        1.5,
        1.75,
        2.0,
        2.5,
        3.0,
        3.5,
        4.0,
        4.5,
        5.0,
        6.0,
        7.0,
        8.0,
        9.0,
        10.0,
        15.0,
        20.0,
        25.0,
        30.0,
        40.0,
        50.0,
        60.0,
    ),
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    ["controller"],
    registry=REGISTRY,
)
MAX_CONCURRENT_RECONCILES = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    ["controller"],
    registry=REGISTRY,
)


# --- leader election (client-go tools/leaderelection/metrics.go name) ---------------------------
LEADER_ELECTION_MASTER_STATUS = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 "
    "indicates master. 'name' is the string used to identify the lease.",
    ["name"],
    registry=REGISTRY,
)


class CachedObjects(Collector):
    """`stormservice_informer_cached_objects{resource}`: the objects in the caches of the running
    informers, per resource. Read at scrape time, so the event path pays nothing for it; with
    process_resident_memory_bytes it says what the memory holds."""

    NAME = "stormservice_informer_cached_objects"

    def __init__(self) -> None:
        self._caches: dict[int, tuple[str, Sized]] = {}
        # One token per tracking, so that a finished run's untrack never drops a newer run's.
        self._tokens = itertools.count()

    def track(self, resource: str, cache: Sized) -> Callable[[], None]:
        """Counts `cache` under `resource` until the returned function is called."""
        token = next(self._tokens)
        self._caches[token] = (resource, cache)

        def untrack() -> None:
            self._caches.pop(token, None)

        return untrack

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self.NAME, "Objects in the caches of the running informers", labels=["resource"]
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals: dict[str, int] = {}
        for resource, cache in list(self._caches.values()):
            totals[resource] = totals.get(resource, 0) + len(cache)
        family = self._family()
        for resource, count in sorted(totals.items()):
            family.add_metric([resource], count)
        yield family


CACHED_OBJECTS = CachedObjects()
REGISTRY.register(CACHED_OBJECTS)


class KeyedGauge:
    """Keeps a labelled gauge exact per object key: each `set` replaces every series the key
    had, removing label sets that no longer occur, and `forget` removes them all (the object is
    gone). Label values are in the gauge's label order; the first one is usually the key."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._series: dict[str, dict[tuple[str, ...], float]] = {}

    def set(self, key: str, values: Mapping[tuple[str, ...], float]) -> None:
        previous = self._series.get(key) or {}
        for labels in previous.keys() - values.keys():
            self._gauge.remove(*labels)
        for labels, value in values.items():
            # Every pass of every object sets its series, and most values have not changed: a
            # `labels()` lookup is the costly part of setting one.
            if previous.get(labels) != value:
                self._gauge.labels(*labels).set(value)
        if values:
            self._series[key] = dict(values)
        else:
            self._series.pop(key, None)

    def forget(self, key: str) -> None:
        for labels in self._series.pop(key, {}):
            self._gauge.remove(*labels)


def sample_value(name: str, labels: dict[str, str] | None = None) -> float | None:
    """The current value of one sample on REGISTRY (tests and diagnostics)."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return None if value is None else float(value)
